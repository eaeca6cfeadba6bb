// The queues page: every queue's counts (pushed once a second over the page's socket), links
// to its tasks and dead letters, a purge button for a signed-in user, and the latest events.
"use strict";

(async () => {
  const { el, byId, api, notice } = tf;
  const session = await tf.start("index.html");
  const COLUMNS = ["queued", "scheduled", "running", "waiting", "dead"];
  const RECENT = 30;
  const page = byId("page");
  const body = el("tbody", { id: "queues" });
  const recent = el("tbody", { id: "recent" });
  tf.add(page, 
    el("h1", { text: "Queues" }),
    el("table", {}, el("thead", {}, el("tr", {},
      el("th", { text: "queue" }), COLUMNS.map((c) => el("th", { class: "num", text: c })),
      el("th", { class: "num", text: "done/s (1 min)" }), el("th", { class: "changes", text: "" }))), body),
    el("h2", { text: "Latest events" }),
    el("table", {}, el("thead", {}, el("tr", {}, ["at", "queue", "kind", "task", "name", "detail"].map(
      (c) => el("th", { text: c })))), recent),
  );

  function row(stats) {
    const q = encodeURIComponent(stats.queue);
    return el("tr", { "data-queue": stats.queue },
      el("td", {}, el("a", { href: `tasks.html?queue=${q}`, text: stats.queue })),
      COLUMNS.map((c) => el("td", { class: `num ${c}`, text: c === "dead" ? "" : stats[c] },
        c === "dead" ? el("a", { href: `dead.html?queue=${q}`, text: stats.dead }) : null)),
      el("td", { class: "num", text: (stats.finished_last_minute / 60).toFixed(2) }),
      el("td", { class: "changes" }, el("button", { class: "danger", text: "Purge", onclick: () => purge(stats.queue) })),
    );
  }

  function render(queues) {
    body.replaceChildren(...queues.map(row));
  }

  async function purge(queue) {
    if (!confirm(`Purge every ready task of queue ${queue}?`)) return;
    try {
      const answer = await api(`api/queues/${encodeURIComponent(queue)}/purge`, { method: "POST" });
      notice(`Purged ${answer.purged} tasks of ${queue}.`, "ok");
    } catch (error) {
      notice(`Purge refused: ${error.message}`);
    }
  }

  function showEvents(events) {
    for (const event of events.slice(-RECENT)) {
      recent.prepend(el("tr", {},
        el("td", { text: tf.time(event.at) }), el("td", { text: event.queue }),
        el("td", {}, tf.statusBadge(event.kind)), el("td", {}, tf.taskLink(event.task_id)),
        el("td", { text: event.name || "" }), el("td", { class: "mono", text: event.detail || "" })));
    }
    while (recent.children.length > RECENT) recent.lastChild.remove();
  }

  try {
    render((await api("api/queues")).queues);
  } catch (error) {
    notice(error.message);
  }
  const cursors = Object.fromEntries(session.queues.map((q) => [q, "$"]));
  tf.live({ queues: cursors, stats: true, onEvents: showEvents, onStats: (m) => render(m.queues) });
})();

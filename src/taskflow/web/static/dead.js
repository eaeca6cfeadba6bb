// A queue's dead letters, newest first and paged by the server, with requeue (of the ticked
// ones) for a signed-in user.
"use strict";

(async () => {
  const { el, byId, api, notice, query } = tf;
  const session = await tf.start("tasks.html");
  const queue = tf.param("queue") || session.queues[0] || "default";
  const body = el("tbody", { id: "dead" });
  const more = el("button", { id: "more", text: "Load more", onclick: () => loadPage() });
  let next = null;
  tf.add(byId("page"), el("h1", {}, "Dead letters of ", el("span", { text: queue })),
    el("div", { class: "toolbar changes" }, el("button", { id: "requeue", text: "Requeue ticked", onclick: requeue })),
    el("table", {}, el("thead", {}, el("tr", {}, ["", "task", "name", "attempts", "finished", "error"].map((c) => el("th", { text: c })))), body),
    el("p", {}, more));

  async function loadPage() {
    more.disabled = true;
    try {
      const answer = await api(`api/queues/${encodeURIComponent(queue)}/dead${query({ offset: next, limit: 50 })}`);
      body.append(...answer.items.map((t) => el("tr", { "data-task-id": t.id },
        el("td", {}, el("input", { type: "checkbox", value: t.id, class: "changes" })), el("td", {}, tf.taskLink(t.id)),
        el("td", { text: t.name }), el("td", { class: "num", text: t.attempts }), el("td", { text: tf.time(t.finished_at) }),
        el("td", { text: t.error_message ? `${t.error_type}: ${t.error_message}` : "" }))));
      next = answer.next;
    } catch (error) {
      notice(error.message);
    }
    more.disabled = next === null;
  }

  async function requeue() {
    const ids = [...body.querySelectorAll("input:checked")].map((i) => i.value);
    if (!ids.length) return;
    try {
      const answer = await api("api/dead/requeue", { method: "POST", body: { ids } });
      notice(`Requeued ${answer.new_ids.filter(Boolean).length} of ${ids.length}.`, "ok");
      body.replaceChildren();
      next = null;
      await loadPage();
    } catch (error) {
      notice(`Requeue refused: ${error.message}`);
    }
  }

  await loadPage();
})();

// The errors page: every failed attempt, newest first, with its message and traceback (as
// text), filtered by queue and task name. New failures arrive as `failed` / `retrying` events
// on the page's socket; the list is read again (at most once a second) when one does.
"use strict";

(async () => {
  const { el, byId, api, notice, query } = tf;
  const session = await tf.start("errors.html");
  const filters = { queue: tf.param("queue") || "", name: tf.param("name") || "" };
  const body = el("tbody", { id: "errors" });
  const queueSelect = el("select", { name: "queue" }, el("option", { value: "", text: "all queues" }),
    session.queues.map((q) => el("option", { value: q, selected: q === filters.queue, text: q })));
  tf.add(byId("page"), el("h1", { text: "Errors" }),
    el("form", { class: "toolbar", method: "get" }, queueSelect,
      el("input", { name: "name", placeholder: "task name", value: filters.name }), el("button", { type: "submit", text: "Filter" })),
    el("table", {}, el("thead", {}, el("tr", {}, ["at", "task", "name", "queue", "attempt", "error", "traceback"]
      .map((c) => el("th", { text: c })))), body));
  let last = 0, timer = null;

  function row(a) {
    return el("tr", { "data-task-id": a.task_id },
      el("td", { text: tf.time(a.at) }), el("td", {}, tf.taskLink(a.task_id)), el("td", { text: a.task }),
      el("td", { text: a.queue }), el("td", { class: "num", text: `${a.attempt}${a.retried ? " (retried)" : ""}` }),
      el("td", { class: "error-message" }, el("strong", { text: `${a.type}: ` }), a.message),
      el("td", {}, el("details", {}, el("summary", { class: "mono", text: a.last_frame || "traceback" }),
        el("pre", { text: a.traceback || "" }))));
  }

  async function load() {
    last = Date.now();
    try {
      const { items } = await api(`api/errors${query({ ...filters, limit: 200 })}`);
      body.replaceChildren(...items.map(row));
    } catch (error) {
      notice(error.message);
    }
  }

  function onEvents(batch) {
    if (!batch.some((e) => e.kind === "failed" || e.kind === "retrying")) return;
    if (timer) return;
    timer = setTimeout(() => { timer = null; load(); }, Math.max(0, 1000 - (Date.now() - last)));
  }

  await load();
  const queues = filters.queue ? [filters.queue] : session.queues;
  tf.live({ queues: Object.fromEntries(queues.map((q) => [q, "$"])), onEvents });
})();

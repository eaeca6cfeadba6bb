// The tasks page: one queue's tasks, paged by the server (a queue of 100,000 tasks loads one
// page at a time), filtered by name and status, a task id search, and live rows: an event
// updates its task's status, attempts and progress bar in place, and a task new since the page
// loaded is added at the top. Rows are kept in a map by task id, so the HTTP pages and the
// socket never show a task twice.
"use strict";

(async () => {
  const { el, byId, api, notice, query } = tf;
  const session = await tf.start("tasks.html");
  const STATUSES = ["", "queued", "scheduled", "running", "waiting", "done", "failed", "cancelled", "expired"];
  const MAX_LIVE_ROWS = 500; // rows added live; older live rows drop off the bottom of that part
  const queue = tf.param("queue") || session.queues[0] || "default";
  const filters = { name: tf.param("name") || "", status: tf.param("status") || "" };
  const rows = new Map(); // task id -> {tr, summary, bar}
  let next = null;
  let liveRows = 0;

  const page = byId("page");
  const queueSelect = el("select", { id: "queue", onchange: () => go({ queue: queueSelect.value }) },
    session.queues.map((q) => el("option", { value: q, selected: q === queue, text: q })));
  const nameInput = el("input", { id: "name", placeholder: "task name", value: filters.name });
  const statusSelect = el("select", { id: "status" },
    STATUSES.map((s) => el("option", { value: s, selected: s === filters.status, text: s || "any status" })));
  const idInput = el("input", { id: "task-id", placeholder: "task id", class: "mono" });
  const body = el("tbody", { id: "tasks" });
  const more = el("button", { id: "more", text: "Load more", onclick: () => loadPage() });
  tf.add(page, 
    el("h1", {}, "Tasks of ", el("span", { text: queue })),
    el("div", { class: "toolbar" },
      el("label", {}, "queue ", queueSelect),
      el("form", { onsubmit: (e) => { e.preventDefault(); go({ queue, name: nameInput.value, status: statusSelect.value }); } },
        nameInput, " ", statusSelect, " ", el("button", { type: "submit", text: "Filter" })),
      el("form", { onsubmit: (e) => { e.preventDefault(); search(idInput.value.trim()); } },
        idInput, " ", el("button", { type: "submit", text: "Find" })),
      el("a", { href: `dead.html?queue=${encodeURIComponent(queue)}`, text: "dead letters" })),
    el("table", {}, el("thead", {}, el("tr", {}, ["task", "name", "status", "attempts", "progress", "created", "error"]
      .map((c) => el("th", { text: c })))), body),
    el("p", {}, more, " ", el("span", { id: "scanned", class: "muted" })),
  );

  function go(params) {
    location.search = query(params);
  }

  async function search(id) {
    if (!id) return;
    const answer = await api(`api/search${query({ q: id })}`);
    if (answer.task) location.href = `task.html?id=${encodeURIComponent(answer.task.id)}`;
    else notice(`No task with id ${id}.`);
  }

  function matches(summary) {
    return (!filters.name || summary.name === filters.name) && (!filters.status || summary.status === filters.status);
  }

  function makeRow(summary) {
    const bar = tf.progressBar(summary.progress, summary.status);
    const tr = el("tr", { "data-task-id": summary.id },
      el("td", {}, tf.taskLink(summary.id)), el("td", { class: "name", text: summary.name }),
      el("td", { class: "status-cell" }, tf.statusBadge(summary.status)),
      el("td", { class: "num attempts", text: summary.attempts }), el("td", {}, bar),
      el("td", { text: tf.time(summary.created_at) }),
      el("td", { class: "error", text: summary.error_message ? `${summary.error_type}: ${summary.error_message}` : "" }));
    rows.set(summary.id, { tr, summary, bar });
    return tr;
  }

  async function loadPage() {
    more.disabled = true;
    try {
      const answer = await api(`api/queues/${encodeURIComponent(queue)}/tasks${query({ after: next, ...filters, limit: 50 })}`);
      for (const summary of answer.items) if (!rows.has(summary.id)) body.append(makeRow(summary));
      next = answer.next;
      byId("scanned").textContent = next ? "" : "the end of the queue's history";
    } catch (error) {
      notice(error.message);
    }
    more.disabled = next === null;
  }

  function addLive(event) {
    const summary = { id: event.task_id, name: event.name || "", queue: event.queue, status: tf.STATUS_OF_KIND[event.kind] || "queued",
      attempts: event.attempt || 0, progress: null, created_at: event.at, error_type: null, error_message: null };
    if (!matches(summary)) return null;
    body.prepend(makeRow(summary));
    liveRows += 1;
    if (liveRows > MAX_LIVE_ROWS) trimLive();
    return rows.get(summary.id);
  }

  function trimLive() {
    const last = body.children[MAX_LIVE_ROWS];
    if (last) { rows.delete(last.dataset.taskId); last.remove(); liveRows -= 1; }
  }

  function apply(event) {
    let row = rows.get(event.task_id);
    if (!row) {
      if (!["queued", "scheduled", "waiting"].includes(event.kind)) return;
      row = addLive(event);
      if (!row) return;
    }
    const s = row.summary;
    if (event.kind === "progress") s.progress = tf.progressOfEvent(event, s.progress);
    const status = tf.STATUS_OF_KIND[event.kind];
    if (status) s.status = status;
    if (event.attempt) s.attempts = event.attempt;
    if (event.kind === "failed") refreshError(row);
  }

  async function refreshError(row) {
    try {
      const task = await api(`api/tasks/${encodeURIComponent(row.summary.id)}`);
      if (task.error) row.tr.querySelector(".error").textContent = `${task.error.type}: ${task.error.message}`;
    } catch (_) { /* the row keeps its status; the task page shows the error */ }
  }

  function redraw(row) {
    const s = row.summary;
    row.tr.querySelector(".status-cell").replaceChildren(tf.statusBadge(s.status));
    row.tr.querySelector(".attempts").textContent = String(s.attempts);
    tf.setProgress(row.bar, s.progress, s.status);
  }

  function onEvents(events) {
    const touched = new Set();
    for (const event of events) {
      apply(event);
      if (rows.has(event.task_id)) touched.add(event.task_id);
    }
    for (const id of touched) {
      const row = rows.get(id); // gone if the cap dropped it later in this batch
      if (row) redraw(row); // one DOM update per task per frame
    }
  }

  // Socket first, then the first page: an event of a task on that page, arriving meanwhile,
  // updates its row, and a task both sent live and listed is shown once.
  const socket = tf.live({ queues: { [queue]: "$" }, onEvents });
  await socket.whenReady();
  await loadPage();
})();

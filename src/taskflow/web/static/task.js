// A task's page: its fields, arguments, result or error with traceback, failed attempts, a
// live progress bar, its events (history over HTTP, then live over the socket, each event
// shown once: the socket is opened first and events are keyed by cursor) and its artifacts,
// downloaded from the server (the download is the fetch of a delete-after-fetch artifact).
"use strict";

(async () => {
  const { el, byId, api, notice, query } = tf;
  await tf.start("task.html");
  const id = tf.param("id");
  const page = byId("page");
  const seen = new Set(); // cursors of the events shown
  let task = null;
  let refreshing = false;
  let refreshAgain = false;

  const summary = el("div", { id: "summary" });
  const bar = tf.progressBar(null, "queued");
  bar.id = "progress";
  const events = el("tbody", { id: "events" });
  const artifacts = el("tbody", { id: "artifacts" });
  const details = el("div", { id: "details" });
  tf.add(page, 
    el("h1", {}, "Task ", el("span", { class: "mono", text: id })),
    el("div", { class: "toolbar" }, bar, el("span", { class: "changes" },
      el("button", { id: "cancel", class: "danger", text: "Cancel", onclick: cancel }))),
    summary, details,
    el("h2", { text: "Artifacts" }),
    el("table", {}, el("thead", {}, el("tr", {}, ["name", "state", "size", "ready", "expires", "after fetch"]
      .map((c) => el("th", { text: c })))), artifacts),
    el("h2", { text: "Events" }),
    el("table", {}, el("thead", {}, el("tr", {}, ["at", "kind", "attempt", "detail"]
      .map((c) => el("th", { text: c })))), events),
  );

  function field(name, value) {
    return [el("dt", { text: name }), el("dd", {}, value)];
  }

  function renderSummary(t) {
    summary.replaceChildren(el("dl", { class: "fields" },
      field("name", el("span", { id: "task-name", text: t.name })),
      field("queue", el("a", { href: `tasks.html${query({ queue: t.queue })}`, text: t.queue })),
      field("status", tf.statusBadge(t.status)),
      field("attempts", `${t.attempts} of ${t.retries + 1}`),
      field("created", tf.time(t.created_at)), field("started", tf.time(t.started_at)),
      field("finished", tf.time(t.finished_at)), field("worker", t.worker_id || ""),
      t.flow_id ? field("flow", el("a", { href: `flow.html${query({ id: t.flow_id })}`, text: `${t.flow_id} (${t.node || ""})` })) : [],
      t.parent_id ? field("parent", tf.taskLink(t.parent_id)) : [],
      t.requeued_from ? field("requeued from", tf.taskLink(t.requeued_from)) : [],
      t.order_id ? field("order", t.order_id) : [],
      t.cancel_requested ? field("cancel", "requested") : [],
    ));
    tf.setProgress(bar, t.progress, t.status);
    byId("cancel").disabled = tf.ENDED.has(t.status);
  }

  function renderDetails(t) {
    const parts = [];
    if (t.args !== undefined) { // not every server version sends a task's arguments
      parts.push(el("h2", { text: "Arguments" }),
        el("pre", { id: "arguments", text: t.args === null ? "(not readable)" : tf.json({ args: t.args, kwargs: t.kwargs }) }));
    }
    if (t.error) {
      parts.push(el("h2", { text: "Error" }),
        el("p", { id: "error-message", class: "error" }, el("strong", { text: `${t.error.type}: ` }), t.error.message),
        el("pre", { id: "traceback", text: t.error.traceback || "" }));
    } else if (t.status === "done") {
      parts.push(el("h2", { text: "Result" }), el("pre", { id: "result", text: t.result_expired ? "(expired)" : tf.json(t.result) }));
    }
    if (t.failed_attempts && t.failed_attempts.length) {
      parts.push(el("h2", { text: "Failed attempts" }), el("table", {}, el("tbody", {}, t.failed_attempts.map((a) =>
        el("tr", {}, el("td", { text: tf.time(a.at) }), el("td", { text: `attempt ${a.attempt}` }),
          el("td", { text: `${a.type}: ${a.message}` }), el("td", { class: "mono", text: a.last_frame || "" }))))));
    }
    details.replaceChildren(...parts);
  }

  function renderArtifacts(items) {
    artifacts.replaceChildren(...items.map((a) => el("tr", { "data-artifact": a.name },
      el("td", {}, a.state === "ready"
        ? el("a", { href: `api/tasks/${encodeURIComponent(a.task_id)}/artifacts/${encodeURIComponent(a.name)}`, download: a.name, text: a.name })
        : el("span", { text: a.name })),
      el("td", { text: a.ended_why ? `${a.state} (${a.ended_why})` : a.state }), el("td", { class: "num", text: a.size ?? "" }),
      el("td", { text: tf.time(a.ready_at) }), el("td", { text: tf.time(a.expires_at) }),
      el("td", { text: a.delete_after_fetch ? "deleted" : "kept" }))));
  }

  function addEvents(items) {
    for (const event of items) {
      if (seen.has(event.cursor)) continue;
      seen.add(event.cursor);
      events.append(el("tr", { "data-kind": event.kind, "data-at": event.at },
        el("td", { text: tf.time(event.at) }), el("td", {}, tf.statusBadge(event.kind)),
        el("td", { class: "num", text: event.attempt ?? "" }), el("td", { class: "mono", text: event.detail || "" })));
    }
  }

  async function refresh() {
    // At most one read in flight; events arriving meanwhile ask for one more read after it.
    if (refreshing) { refreshAgain = true; return; }
    refreshing = true;
    try {
      task = await api(`api/tasks/${encodeURIComponent(id)}`);
      renderSummary(task);
      renderDetails(task);
      renderArtifacts(task.artifacts || []);
    } catch (error) {
      notice(error.status === 404 ? `No task with id ${id}.` : error.message);
    } finally {
      refreshing = false;
      if (refreshAgain) { refreshAgain = false; refresh(); }
    }
  }

  async function loadHistory() {
    let after = null;
    do {
      const answer = await api(`api/tasks/${encodeURIComponent(id)}/events${query({ after, limit: 500 })}`);
      addEvents(answer.items);
      after = answer.next;
    } while (after);
  }

  async function cancel() {
    try {
      const answer = await api(`api/tasks/${encodeURIComponent(id)}/cancel`, { method: "POST" });
      notice(`Cancel: ${answer.result}`, "ok");
      refresh();
    } catch (error) {
      notice(`Cancel refused: ${error.message}`);
    }
  }

  function onEvents(batch) {
    addEvents(batch);
    const progress = batch.filter((e) => e.kind === "progress").pop();
    if (progress && task) {
      task.progress = tf.progressOfEvent(progress, task.progress);
      tf.setProgress(bar, task.progress, task.status);
    }
    if (batch.some((e) => e.kind !== "progress")) refresh();
    else if (progress) refreshSoon(); // the progress message is in the record, not the event
  }

  let soon = null;
  function refreshSoon() {
    if (!soon) soon = setTimeout(() => { soon = null; refresh(); }, 1000);
  }

  await refresh();
  if (!task) return;
  const socket = tf.live({ queues: { [task.queue]: "$" }, tasks: [id], onEvents });
  await socket.whenReady();
  await loadHistory();
  // Live events that came in while the history loaded were appended first: order by time.
  events.append(...[...events.children].sort((a, b) => Number(a.dataset.at) - Number(b.dataset.at)));
  await refresh(); // anything that ended between the first read and the subscription
})();

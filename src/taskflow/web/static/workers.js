// The workers page: the registry (host, pid, role, processed, failed, running, heartbeat). A
// registry has no event stream: the page reads it again when the socket's stats push arrives
// (at most every 2 s), so it has no timer of its own.
"use strict";

(async () => {
  const { el, byId, api, notice } = tf;
  const session = await tf.start("workers.html");
  const body = el("tbody", { id: "workers" });
  tf.add(byId("page"), el("h1", { text: "Workers" }),
    el("table", {}, el("thead", {}, el("tr", {}, ["worker", "host", "pid", "queues", "roles", "concurrency", "running", "processed", "failed", "started", "heartbeat"]
      .map((c) => el("th", { text: c })))), body));
  let last = 0;

  async function load() {
    last = Date.now();
    try {
      const { items } = await api("api/workers");
      body.replaceChildren(...items.map((w) => el("tr", { "data-worker": w.id },
        el("td", { class: "mono", text: w.id }), el("td", { text: w.host }), el("td", { class: "num", text: w.pid }),
        el("td", { text: (w.queues || []).join(", ") }), el("td", { text: (w.roles || []).join(", ") }),
        el("td", { class: "num", text: w.concurrency }), el("td", { class: "num", text: w.running }),
        el("td", { class: "num", text: w.processed }), el("td", { class: "num", text: w.failed }),
        el("td", { text: tf.time(w.started_at) }), el("td", { text: `${(w.heartbeat_age_s ?? 0).toFixed(1)}s ago` }))));
      if (!items.length) body.append(el("tr", {}, el("td", { colspan: 11, class: "muted", text: "No worker is registered." })));
    } catch (error) {
      notice(error.message);
    }
  }

  await load();
  tf.live({ queues: Object.fromEntries(session.queues.map((q) => [q, "$"])), stats: true,
    onStats: () => { if (Date.now() - last > 2000) load(); } });
})();

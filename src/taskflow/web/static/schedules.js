// The schedules page: each periodic task (every / cron, next and last slot, paused) with a
// pause / resume button for a signed-in user. Read again after each change and when the
// socket's stats push arrives (at most every 5 s).
"use strict";

(async () => {
  const { el, byId, api, notice } = tf;
  const session = await tf.start("schedules.html");
  const body = el("tbody", { id: "schedules" });
  tf.add(byId("page"), el("h1", { text: "Schedules" }),
    el("table", {}, el("thead", {}, el("tr", {}, ["schedule", "task", "when", "next", "last", "state", ""]
      .map((c) => el("th", { text: c })))), body));
  let last = 0;

  async function toggle(s) {
    try {
      await api(`api/schedules/${encodeURIComponent(s.name)}/${s.paused ? "resume" : "pause"}`, { method: "POST" });
      await load();
    } catch (error) {
      notice(`Refused: ${error.message}`);
    }
  }

  async function load() {
    last = Date.now();
    try {
      const { items } = await api("api/schedules");
      body.replaceChildren(...items.map((s) => el("tr", { "data-schedule": s.name },
        el("td", { text: s.name }), el("td", { text: s.task }),
        el("td", { class: "mono", text: `${s.cron || (s.every_s ? `every ${s.every_s}s` : "")}${s.tz ? ` (${s.tz})` : ""}` }),
        el("td", { text: s.next_slot || "" }), el("td", { text: s.last_slot || "" }),
        el("td", { text: s.paused ? "paused" : "active" }),
        el("td", { class: "changes" }, el("button", { text: s.paused ? "Resume" : "Pause", onclick: () => toggle(s) })))));
      if (!items.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "No schedule." })));
    } catch (error) {
      notice(error.message);
    }
  }

  await load();
  tf.live({ queues: Object.fromEntries(session.queues.map((q) => [q, "$"])), stats: true,
    onStats: () => { if (Date.now() - last > 5000) load(); } });
})();

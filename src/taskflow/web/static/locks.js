// The locks page: every lock with its holders (owner, mode, fencing token, expiry) and its
// waiters. Locks have no event stream: the list is read again when the socket's stats push
// arrives, at most every 2 s.
"use strict";

(async () => {
  const { el, byId, api, notice } = tf;
  const session = await tf.start("locks.html");
  const body = el("tbody", { id: "locks" });
  tf.add(byId("page"), el("h1", { text: "Locks" }),
    el("table", {}, el("thead", {}, el("tr", {}, ["lock", "holders", "waiters"].map((c) => el("th", { text: c })))), body));
  let last = 0;

  function people(list, withToken) {
    return el("ul", {}, list.map((h) => el("li", { class: "mono",
      text: `${h.owner} (${h.mode}${withToken ? `, token ${h.token}` : `, since ${tf.time(h.since)}`}, until ${tf.time(h.expires_at)})` })));
  }

  async function load() {
    last = Date.now();
    try {
      const { items } = await api("api/locks");
      body.replaceChildren(...items.map((l) => el("tr", { "data-lock": l.name },
        el("td", { class: "mono", text: l.name }), el("td", {}, people(l.holders, true)), el("td", {}, people(l.waiters, false)))));
      if (!items.length) body.append(el("tr", {}, el("td", { colspan: 3, class: "muted", text: "No lock is held." })));
    } catch (error) {
      notice(error.message);
    }
  }

  await load();
  tf.live({ queues: Object.fromEntries(session.queues.map((q) => [q, "$"])), stats: true,
    onStats: () => { if (Date.now() - last > 2000) load(); } });
})();

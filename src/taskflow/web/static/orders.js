// The orders page: the active orders with their roll-up line, or one order (?id=) with its
// jobs (state, counts, reasons) and failures. An event of a task of an order (its `order_id`)
// makes the page read the orders again, at most once a second.
"use strict";

(async () => {
  const { el, byId, api, notice, query } = tf;
  const session = await tf.start("orders.html");
  const orderId = tf.param("id");
  const holder = el("div", { id: "orders" });
  tf.add(byId("page"), el("h1", {}, orderId ? ["Order ", el("span", { class: "mono", text: orderId })] : "Active orders"), holder);
  let last = 0, timer = null;

  function counts(c) {
    return Object.entries(c || {}).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(", ");
  }

  function orderRow(o) {
    return el("tr", { "data-order": o.order_id },
      el("td", {}, el("a", { href: `orders.html${query({ id: o.order_id })}`, class: "mono", text: o.order_id })),
      el("td", { text: o.label || "" }), el("td", {}, tf.statusBadge(o.state)),
      el("td", { class: "num", text: o.total }), el("td", { class: "summary", text: o.summary || "" }));
  }

  function renderList(items) {
    holder.replaceChildren(el("table", {}, el("thead", {}, el("tr", {}, ["order", "label", "state", "jobs", "roll-up"]
      .map((c) => el("th", { text: c })))), el("tbody", {}, items.map(orderRow))));
    if (!items.length) holder.append(el("p", { class: "muted", text: "No active order." }));
  }

  function renderOne(o) {
    tf.add(tf.clear(holder),
      el("p", { id: "summary" }, tf.statusBadge(o.state), " ", o.summary || "", o.reason ? ` · ${o.reason}` : ""),
      el("h2", { text: "Jobs" }),
      el("table", {}, el("thead", {}, el("tr", {}, ["job", "day", "state", "tasks", "reasons"].map((c) => el("th", { text: c })))),
        el("tbody", {}, (o.jobs || []).map((j) => el("tr", {},
          el("td", { text: j.key }), el("td", { text: j.day || "" }), el("td", {}, tf.statusBadge(j.state)),
          el("td", { text: counts(j.counts) }), el("td", {}, el("ul", {}, (j.reasons || []).map((r) => el("li", { text: r })))))))),
      (o.failures || []).length ? [el("h2", { text: "Failures" }), el("table", {}, el("tbody", {}, o.failures.map((f) =>
        el("tr", {}, el("td", { text: f.job || "" }), el("td", {}, f.task_id ? tf.taskLink(f.task_id) : ""), el("td", { text: f.reason || "" })))))] : [],
    );
  }

  async function load() {
    last = Date.now();
    try {
      if (orderId) renderOne(await api(`api/orders/${encodeURIComponent(orderId)}`));
      else renderList((await api("api/orders")).items);
    } catch (error) {
      notice(error.status === 404 ? `No order with id ${orderId}.` : error.message);
    }
  }

  function onEvents(batch) {
    if (!batch.some((e) => e.order_id && (!orderId || e.order_id === orderId)) || timer) return;
    timer = setTimeout(() => { timer = null; load(); }, Math.max(0, 1000 - (Date.now() - last)));
  }

  await load();
  tf.live({ queues: Object.fromEntries(session.queues.map((q) => [q, "$"])), onEvents });
})();

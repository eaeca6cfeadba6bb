// A flow's page: its graph in SVG, nodes laid out in columns by depth (a node's depth is one
// more than its deepest parent's) and coloured by status, the roll-up line, and live colours:
// each event of the flow's tasks recolours its node in the next animation frame; a task the
// page does not know (a shard a running node fanned out) makes it read the flow again.
"use strict";

(async () => {
  const { el, svg, byId, api, notice } = tf;
  await tf.start("flow.html");
  const flowId = tf.param("id");
  const page = byId("page");
  const NODE_W = 170, NODE_H = 34, GAP_X = 70, GAP_Y = 16, PAD = 16;
  const nodes = new Map(); // task id -> {group, status}
  let flow = null;
  let socket = null;

  const rollup = el("p", { id: "rollup" });
  const holder = el("div", { id: "graph" });
  const table = el("tbody", { id: "nodes" });
  tf.add(page, 
    el("h1", {}, "Flow ", el("span", { id: "flow-name" }), " ", el("span", { class: "mono muted", text: flowId })),
    rollup,
    el("div", { class: "legend" }, ["waiting", "queued", "running", "done", "failed", "cancelled"].map(tf.statusBadge)),
    holder,
    el("h2", { text: "Tasks" }),
    el("table", {}, el("thead", {}, el("tr", {}, ["node", "task", "status", "attempts", "reason"].map((c) => el("th", { text: c })))), table),
  );

  function parentsOf(node) {
    return node.waits_for || node.parents || [];
  }

  /** Column of each node: roots 0, else one more than the deepest parent (cycles are refused
   * when a flow is submitted, so the recursion ends). */
  function depths(list) {
    const byId = new Map(list.map((n) => [n.task_id, n]));
    const depth = new Map();
    const visit = (n) => {
      if (depth.has(n.task_id)) return depth.get(n.task_id);
      depth.set(n.task_id, 0);
      const parents = parentsOf(n).filter((p) => byId.has(p));
      const d = parents.length ? 1 + Math.max(...parents.map((p) => visit(byId.get(p)))) : 0;
      depth.set(n.task_id, d);
      return d;
    };
    list.forEach(visit);
    return depth;
  }

  function edgesOf(f) {
    if (f.edges) return f.edges.map((e) => (Array.isArray(e) ? e : [e.from, e.to]));
    return f.nodes.flatMap((n) => parentsOf(n).map((p) => [p, n.task_id]));
  }

  function layout(f) {
    // The server gives each node's depth; computed here from waits_for if it did not.
    const depth = f.nodes.every((n) => Number.isInteger(n.depth))
      ? new Map(f.nodes.map((n) => [n.task_id, n.depth])) : depths(f.nodes);
    const columns = [];
    for (const n of f.nodes) (columns[depth.get(n.task_id)] ||= []).push(n);
    const at = new Map();
    columns.forEach((column, x) => column.forEach((n, y) => at.set(n.task_id, {
      x: PAD + x * (NODE_W + GAP_X), y: PAD + y * (NODE_H + GAP_Y) })));
    const tallest = Math.max(1, ...columns.map((c) => c.length));
    return { at, width: PAD * 2 + columns.length * (NODE_W + GAP_X) - GAP_X, height: PAD * 2 + tallest * (NODE_H + GAP_Y) - GAP_Y };
  }

  function label(n) {
    const text = n.node || n.task || n.task_id;
    return text.length > 22 ? `${text.slice(0, 21)}…` : text;
  }

  function drawGraph(f) {
    const { at, width, height } = layout(f);
    const edges = edgesOf(f).filter(([a, b]) => at.has(a) && at.has(b)).map(([a, b]) => {
      const p = at.get(a), q = at.get(b);
      const x1 = p.x + NODE_W, y1 = p.y + NODE_H / 2, x2 = q.x, y2 = q.y + NODE_H / 2, mx = (x1 + x2) / 2;
      return svg("path", { class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` });
    });
    nodes.clear();
    const groups = f.nodes.map((n) => {
      const p = at.get(n.task_id);
      const group = svg("g", { class: `node status-${n.status}`, "data-task-id": n.task_id, "data-node": n.node || "",
        "data-status": n.status, transform: `translate(${p.x},${p.y})` },
        svg("title", { text: `${n.node || ""} ${n.task_id}: ${n.status}` }),
        svg("a", { href: `task.html?id=${encodeURIComponent(n.task_id)}` },
          svg("rect", { width: NODE_W, height: NODE_H }),
          svg("text", { x: 10, y: NODE_H / 2, text: label(n) })));
      nodes.set(n.task_id, { group, status: n.status });
      return group;
    });
    holder.replaceChildren(svg("svg", { class: "graph", width, height, viewBox: `0 0 ${width} ${height}` }, edges, groups));
  }

  function drawTable(f) {
    table.replaceChildren(...f.nodes.map((n) => el("tr", { "data-task-id": n.task_id },
      el("td", { text: n.node || "" }), el("td", {}, tf.taskLink(n.task_id)),
      el("td", { class: "status-cell" }, tf.statusBadge(n.status)), el("td", { class: "num", text: n.attempts ?? "" }),
      el("td", { text: n.reason || "" }))));
  }

  function drawRollup(f) {
    byId("flow-name").textContent = f.name || "";
    rollup.textContent = `${f.state || ""}${f.summary ? ` · ${f.summary}` : ""}`;
    rollup.dataset.state = f.state || "";
  }

  async function load() {
    try {
      flow = await api(`api/flows/${encodeURIComponent(flowId)}`);
    } catch (error) {
      notice(error.status === 404 ? `No flow with id ${flowId}.` : error.message);
      return;
    }
    drawRollup(flow);
    const same = flow.nodes.length === nodes.size && flow.nodes.every((n) => nodes.has(n.task_id));
    if (same) {
      // Same graph: recolour in place (a redraw would replace elements under the user's eyes).
      for (const n of flow.nodes) if (nodes.get(n.task_id).status !== n.status) setStatus(n.task_id, n.status);
      drawTable(flow); // attempts and reasons
    } else {
      drawGraph(flow);
      drawTable(flow);
    }
  }

  function setStatus(taskId, status) {
    const node = nodes.get(taskId);
    node.status = status;
    node.group.setAttribute("class", `node status-${status}`);
    node.group.dataset.status = status;
    const row = table.querySelector(`tr[data-task-id="${CSS.escape(taskId)}"] .status-cell`);
    if (row) row.replaceChildren(tf.statusBadge(status));
  }

  let reloading = null;
  function reload() {
    // One read at a time: the roll-up line and nodes a fan-out added.
    if (!reloading) reloading = load().finally(() => { reloading = null; });
  }

  function onEvents(batch) {
    let unknown = false, ended = false;
    for (const event of batch) {
      const status = tf.STATUS_OF_KIND[event.kind];
      if (!nodes.has(event.task_id)) { unknown = true; continue; }
      if (status) setStatus(event.task_id, status);
      if (tf.ENDED.has(status)) ended = true;
    }
    if (unknown || ended) reload();
  }

  await load();
  if (!flow) return;
  const queues = [...new Set(flow.nodes.map((n) => n.queue).filter(Boolean))];
  socket = tf.live({ queues: Object.fromEntries((queues.length ? queues : tf.session.queues).map((q) => [q, "$"])), flowId, onEvents });
  await socket.whenReady();
  await load(); // what ended between the first read and the subscription
})();

// taskflow web: what every page shares. Safe DOM building (text only), the JSON API client
// with the CSRF header, the page header (navigation, sign-in), the one WebSocket of a page
// with its per-queue cursors, reconnects and per-frame batching, and the status and progress
// widgets. No page-specific logic lives here; each page has its own script.
//
// Rule for every page: data from the server (task names, arguments, error messages) reaches
// the DOM only as text (`textContent`, attribute values). Nothing here parses markup.
"use strict";

const tf = (() => {
  // --- DOM -----------------------------------------------------------------------------------

  const SVG_NS = "http://www.w3.org/2000/svg";

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** An element: `el("a", {href: url, text: name})`; strings among children become text. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    return append(node, children);
  }

  /** An SVG element, built the same way. */
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    return append(node, children);
  }

  /** Append children to `node` as `el` does (null and false skipped, arrays flattened). */
  function add(node, ...children) {
    return append(node, children);
  }

  function clear(node) {
    node.replaceChildren();
    return node;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  // --- formatting ----------------------------------------------------------------------------

  function time(epoch) {
    if (epoch === null || epoch === undefined) return "";
    const d = new Date(epoch * 1000);
    return d.toISOString().replace("T", " ").slice(0, 19);
  }

  function ago(epoch) {
    if (epoch === null || epoch === undefined) return "";
    const s = Math.max(0, Date.now() / 1000 - epoch);
    if (s < 60) return `${s.toFixed(0)}s ago`;
    if (s < 3600) return `${(s / 60).toFixed(0)}m ago`;
    return `${(s / 3600).toFixed(1)}h ago`;
  }

  function json(value) {
    return JSON.stringify(value, null, 2);
  }

  function param(name) {
    return new URL(location.href).searchParams.get(name);
  }

  function taskLink(id, label) {
    return el("a", { href: `task.html?id=${encodeURIComponent(id)}`, class: "mono", text: label || id });
  }

  // --- API -----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.code = (body && body.error) || "http";
    }
  }

  const session = { read_only: true, signed_in: false, csrf: "", queues: [], app: "" };

  async function api(path, options = {}) {
    const init = { method: options.method || "GET", headers: {}, credentials: "same-origin" };
    if (init.method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRF-Token"] = session.csrf;
      init.body = JSON.stringify(options.body || {});
    }
    const response = await fetch(path, init);
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
    const s = q.toString();
    return s ? `?${s}` : "";
  }

  /** Show an error (or clear it) in the page's message line. */
  function notice(message, kind = "error") {
    const box = byId("notice");
    if (!box) return;
    clear(box);
    box.className = message ? `notice ${kind}` : "notice";
    if (message) box.textContent = message;
  }

  function canChange() {
    return !session.read_only && session.signed_in;
  }

  // --- header --------------------------------------------------------------------------------

  const PAGES = [
    ["index.html", "Queues"],
    ["tasks.html", "Tasks"],
    ["workers.html", "Workers"],
    ["errors.html", "Errors"],
    ["locks.html", "Locks"],
    ["schedules.html", "Schedules"],
    ["orders.html", "Orders"],
    ["submit.html", "Submit"],
  ];

  function renderHeader(current) {
    const header = byId("header");
    if (!header) return;
    const nav = el("nav", {}, PAGES.map(([href, label]) =>
      el("a", { href, class: href === current ? "current" : null, text: label })));
    header.replaceChildren(
      el("span", { class: "brand", text: `taskflow · ${session.app}` }),
      nav,
      el("span", { id: "live-state", class: "live-state", title: "WebSocket" }),
      renderSignIn(),
    );
  }

  function renderSignIn() {
    if (session.read_only) return el("span", { class: "badge ro", id: "mode", text: "read-only" });
    if (session.signed_in) {
      return el("button", { id: "sign-out", onclick: signOut, text: "Sign out" });
    }
    const input = el("input", { type: "password", id: "token", placeholder: "token", autocomplete: "off" });
    return el("form", { id: "sign-in", class: "sign-in", onsubmit: (e) => { e.preventDefault(); signIn(input.value); } },
      input, el("button", { type: "submit", text: "Sign in" }));
  }

  async function signIn(token) {
    try {
      const answer = await api("api/login", { method: "POST", body: { token } });
      session.signed_in = answer.signed_in;
      session.csrf = answer.csrf;
      location.reload();
    } catch (error) {
      notice(`Sign-in refused: ${error.message}`);
    }
  }

  async function signOut() {
    const answer = await api("api/logout", { method: "POST" });
    session.signed_in = false;
    session.csrf = answer.csrf;
    location.reload();
  }

  /** Read the session, draw the header; every page's script awaits this first. */
  async function start(current) {
    try {
      Object.assign(session, await api("api/session"));
    } catch (error) {
      notice(`Cannot reach the server: ${error.message}`);
    }
    document.title = `${document.title} · ${session.app}`;
    renderHeader(current);
    document.body.classList.toggle("can-change", canChange());
    return session;
  }

  // --- the live socket -----------------------------------------------------------------------

  const SEEN_KEPT = 10000;

  /**
   * The page's one WebSocket. `queues` maps queue -> cursor ("$": from now, null: from the
   * oldest kept); `tasks` / `flowId` narrow what the server sends. Events are queued as they
   * arrive and handed to `onEvents(batch)` once per animation frame, whatever their rate; the
   * cursors are stored as each message arrives, so a reconnect (server restarted, network cut)
   * resumes each queue right after the last event received: nothing missed, nothing repeated.
   */
  class Live {
    constructor({ queues, tasks = null, flowId = null, stats = false, onEvents = null, onStats = null }) {
      this.cursors = { ...queues };
      this.tasks = tasks;
      this.flowId = flowId;
      this.stats = stats;
      this.onEvents = onEvents;
      this.onStats = onStats;
      this.pending = [];
      this.latestStats = null;
      this.frameRequested = false;
      this.received = 0; // events received over every connection of this page
      // The latest SEEN_KEPT events received, as "task_id kind attempt at" (the browser tests
      // compare them with the stream; cursors are not compared: they are opaque, and one event
      // may be reached through different cursors).
      this.seen = [];
      this.connections = 0;
      this.messages = 0; // event messages received
      this.frames = 0; // flushes that applied events: at most one per animation frame
      this.retryMs = 250;
      this.socket = null;
      this.stopped = false;
      this.ready = new Promise((resolve) => { this.markReady = resolve; });
    }

    /** Resolves once the server answered the subscription (or after `ms`, whichever first). */
    whenReady(ms = 2000) {
      return Promise.race([this.ready, new Promise((resolve) => setTimeout(resolve, ms))]);
    }

    url() {
      const url = new URL("ws", location.href);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      return url.href;
    }

    connect() {
      const socket = new WebSocket(this.url());
      this.socket = socket;
      socket.onopen = () => {
        this.connections += 1;
        this.retryMs = 250;
        this.setState("live");
        socket.send(JSON.stringify(this.subscription()));
      };
      socket.onmessage = (message) => this.receive(JSON.parse(message.data));
      socket.onclose = () => this.reconnectLater();
      return this;
    }

    subscription() {
      const message = { type: "subscribe", queues: this.cursors, stats: this.stats };
      if (this.tasks) message.tasks = this.tasks;
      if (this.flowId) message.flow_id = this.flowId;
      return message;
    }

    /** Follow more queues (a new one is followed from now) and tell the server. */
    follow(queues, tasks) {
      for (const [queue, cursor] of Object.entries(queues)) {
        if (!(queue in this.cursors)) this.cursors[queue] = cursor;
      }
      if (tasks) this.tasks = tasks;
      if (this.socket && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(JSON.stringify(this.subscription()));
      }
    }

    receive(message) {
      if (message.type === "events") {
        Object.assign(this.cursors, message.cursors || {});
        this.received += message.events.length;
        this.messages += 1;
        for (const e of message.events) this.seen.push(`${e.task_id} ${e.kind} ${e.attempt} ${e.at}`);
        if (this.seen.length > SEEN_KEPT) this.seen.splice(0, this.seen.length - SEEN_KEPT);
        this.pending.push(...message.events);
        this.markReady();
      } else if (message.type === "stats") {
        this.latestStats = message;
      } else if (message.type === "error") {
        notice(`Live updates: ${message.message}`);
      }
      this.requestFrame();
    }

    requestFrame() {
      if (this.frameRequested) return;
      this.frameRequested = true;
      // A hidden tab gets no animation frames: flush on a timer there instead.
      const schedule = document.hidden ? (f) => setTimeout(f, 250) : requestAnimationFrame;
      schedule(() => this.flush());
    }

    flush() {
      this.frameRequested = false;
      const batch = this.pending;
      this.pending = [];
      const stats = this.latestStats;
      this.latestStats = null;
      if (batch.length) {
        this.frames += 1;
        document.body.dataset.eventsApplied = String(Number(document.body.dataset.eventsApplied || 0) + batch.length);
        if (this.onEvents) this.onEvents(batch);
      }
      if (stats && this.onStats) this.onStats(stats);
    }

    reconnectLater() {
      if (this.stopped) return;
      this.setState("reconnecting");
      setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 4000);
    }

    setState(state) {
      document.body.dataset.live = state;
      const badge = byId("live-state");
      if (badge) {
        badge.textContent = state === "live" ? "● live" : "○ reconnecting";
        badge.className = `live-state ${state}`;
      }
    }
  }

  function live(options) {
    const socket = new Live(options).connect();
    window.taskflowLive = socket; // for the browser tests and for curious users in devtools
    return socket;
  }

  // --- task status and progress --------------------------------------------------------------

  // What an event kind says about the task's status; kinds absent here leave it as it was.
  const STATUS_OF_KIND = {
    queued: "queued",
    scheduled: "scheduled",
    running: "running",
    retrying: "scheduled",
    released: "queued",
    done: "done",
    failed: "failed",
    cancelled: "cancelled",
    expired: "expired",
    waiting: "waiting",
  };

  const ENDED = new Set(["done", "failed", "cancelled", "expired"]);

  function statusBadge(status) {
    return el("span", { class: `status status-${status}`, "data-status": status, text: status });
  }

  /** A progress bar: `done` of `total` (total unknown: a count without a scale). */
  function progressBar(progress, status) {
    const bar = el("div", { class: "bar" }, el("div", { class: "fill" }), el("span", { class: "label" }));
    setProgress(bar, progress, status);
    return bar;
  }

  function setProgress(bar, progress, status) {
    const done = progress ? progress.done : 0;
    const total = progress ? progress.total : null;
    const finished = status === "done";
    let share = total ? Math.min(1, done / total) : 0;
    if (finished) share = 1;
    bar.querySelector(".fill").style.width = `${(share * 100).toFixed(1)}%`;
    bar.dataset.done = String(done);
    bar.dataset.total = total === null || total === undefined ? "" : String(total);
    bar.classList.toggle("complete", finished);
    bar.classList.toggle("unknown", !total && !finished);
    let label = total ? `${done} of ${total}` : progress ? `${done}` : "";
    if (finished && !progress) label = "done";
    if (progress && progress.message) label = `${label} · ${progress.message}`;
    bar.querySelector(".label").textContent = label;
  }

  /** The progress a `progress` event carries: detail "done/total" (total "?" if unknown). */
  function progressOfEvent(event, previous) {
    const [done, total] = String(event.detail || "").split("/");
    const message = previous ? previous.message : null;
    return { done: Number(done) || 0, total: total && total !== "?" ? Number(total) : null, message };
  }

  return {
    el, svg, add, clear, byId, time, ago, json, param, taskLink, api, query, notice, session,
    canChange, start, live, STATUS_OF_KIND, ENDED, statusBadge, progressBar, setProgress,
    progressOfEvent, ApiError,
  };
})();

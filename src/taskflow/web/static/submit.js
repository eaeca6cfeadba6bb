// The submit page: a form per registered task, generated from its signature (api/task-types):
// a number input for int/float, a checkbox for bool, a text input (or a list of choices) for
// str, JSON in a textarea for lists, dicts and anything else. The server checks the values as
// a producer's add_task does; its message is shown as sent. A read-only server refuses every
// submission: the form stays, so the refusal is the server's, not a hidden button.
"use strict";

(async () => {
  const { el, byId, api, notice } = tf;
  const session = await tf.start("submit.html");
  const page = byId("page");
  let types = [];
  try {
    types = (await api("api/task-types")).items;
  } catch (error) {
    notice(error.message);
  }
  const chosen = tf.param("task") || (types[0] && types[0].name);
  const select = el("select", { id: "task-type", onchange: () => { location.search = `?task=${encodeURIComponent(select.value)}`; } },
    types.map((t) => el("option", { value: t.name, selected: t.name === chosen, text: t.name })));
  const holder = el("div", { id: "form-holder" });
  tf.add(page, el("h1", { text: "Submit a task" }),
    session.read_only ? el("p", { class: "muted", id: "read-only-note", text: "This server runs read-only (no --token): it refuses every submission." }) : null,
    !session.read_only && !session.signed_in ? el("p", { class: "muted", text: "Sign in (top right) to submit." }) : null,
    el("div", { class: "toolbar" }, el("label", {}, "task ", select)), holder);

  function input(param) {
    const id = `param-${param.name}`;
    const common = { id, name: param.name, "data-type": param.type, required: param.required && param.type !== "bool" };
    const given = param.default !== null && param.default !== undefined;
    if (param.choices) {
      return el("select", common, param.required ? null : el("option", { value: "", text: "(default)" }),
        param.choices.map((c, i) => el("option", { value: String(i), selected: given && c === param.default, text: String(c) })));
    }
    switch (param.type) {
      case "int": return el("input", { ...common, type: "number", step: "1", value: given ? param.default : null });
      case "float": return el("input", { ...common, type: "number", step: "any", value: given ? param.default : null });
      case "bool": return el("input", { ...common, type: "checkbox", checked: param.default === true });
      case "str": return el("input", { ...common, type: "text", value: given ? param.default : null });
      default: return el("textarea", { ...common, placeholder: "JSON", text: given ? JSON.stringify(param.default) : "" });
    }
  }

  function value(param, node) {
    if (param.choices) return node.value === "" ? undefined : param.choices[Number(node.value)];
    if (param.type === "bool") return node.checked;
    if (node.value === "") return param.required && param.optional ? null : undefined; // else the default
    if (param.type === "int" || param.type === "float") return Number(node.value);
    if (param.type === "str") return node.value;
    try {
      return JSON.parse(node.value);
    } catch (error) {
      throw new Error(`${param.name}: not valid JSON (${error.message})`);
    }
  }

  function collect(type, form) {
    const args = [], kwargs = {};
    for (const param of type.params) {
      const v = value(param, form.elements[param.name]);
      if (v === undefined) continue;
      if (param.kind === "positional") args.push(v);
      else if (param.kind === "var_positional") args.push(...v);
      else if (param.kind === "var_keyword") Object.assign(kwargs, v);
      else kwargs[param.name] = v;
    }
    const options = {};
    if (form.elements.priority.value !== "") options.priority = Number(form.elements.priority.value);
    if (form.elements.delay.value !== "") options.delay = Number(form.elements.delay.value);
    return { name: type.name, args, kwargs, options };
  }

  async function send(type, form) {
    let body;
    try {
      body = collect(type, form);
    } catch (error) {
      notice(error.message);
      return;
    }
    try {
      const answer = await api("api/tasks", { method: "POST", body });
      notice("", "ok");
      location.href = `task.html?id=${encodeURIComponent(answer.task_id)}`;
    } catch (error) {
      notice(`Refused (${error.code}): ${error.message}`);
    }
  }

  const type = types.find((t) => t.name === chosen);
  if (!type) {
    holder.append(el("p", { class: "muted", text: "No task is registered." }));
    return;
  }
  const form = el("form", { class: "task-form", id: "task-form", onsubmit: (e) => { e.preventDefault(); send(type, form); } },
    type.doc ? el("p", { class: "muted", style: "grid-column: 1 / 3", text: type.doc }) : null,
    type.params.map((p) => [el("label", { for: `param-${p.name}`, text: `${p.name}: ${p.annotation}${p.required ? "" : " (optional)"}` }), input(p)]),
    el("label", { for: "priority", text: "priority (option)" }), el("input", { id: "priority", name: "priority", type: "number", step: "1" }),
    el("label", { for: "delay", text: "delay in seconds (option)" }), el("input", { id: "delay", name: "delay", type: "number", step: "any", min: "0" }),
    el("div", { class: "actions" }, el("button", { type: "submit", id: "send", text: `Send to ${type.queue}` })));
  holder.append(form);
})();

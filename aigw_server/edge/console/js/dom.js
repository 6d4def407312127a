// Building the page: elements from data, where every string becomes a text node (never parsed as HTML).

/** An element with attributes, `on…` listeners and children (strings become text nodes). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "value") el.value = value;
    else if (key === "checked") el.checked = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function fill(el, ...children) {
  el.replaceChildren();
  add(el, children);
  return el;
}

/** A labelled form control: the label names the control for screen readers and tests alike. */
let fieldCount = 0;
export function field(label, control, hint) {
  const id = control.id || `f${++fieldCount}`;
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("small", {}, hint) : null);
}

export function select(name, options, selected) {
  return h(
    "select",
    { name },
    options.map(([value, text]) => h("option", { value, selected: value === selected }, text ?? value)),
  );
}

/** A table with a caption; `rows` are arrays of cells (strings or nodes). */
export function table(caption, headers, rows, empty = "Nothing to show.") {
  const body = rows.length
    ? rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell))))
    : [h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, empty))];
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text)))),
      h("tbody", {}, body),
    ),
  );
}

/** A message region: "error" is announced at once, others politely. */
export function notice(kind, text) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

export function errorText(err) {
  if (err?.status === 403) return `Not allowed: ${err.message}`;
  if (err?.status === 409) return `Conflict: ${err.message}`;
  if (err?.status === 429 && err.retryAfter) return `${err.message} (retry in ${err.retryAfter} s)`;
  return err?.message || String(err);
}

/** Asks for confirmation in a modal dialog; resolves true only when the user confirms. */
export function confirmAction(question, confirmLabel = "Confirm") {
  return new Promise((resolve) => {
    const yes = h("button", { type: "button", class: "danger", value: "yes" }, confirmLabel);
    const no = h("button", { type: "button", value: "no" }, "Cancel");
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-question" },
      h("p", { id: "confirm-question" }, question),
      h("div", { class: "actions" }, no, yes),
    );
    const done = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    yes.addEventListener("click", () => done(true));
    no.addEventListener("click", () => done(false));
    dialog.addEventListener("cancel", () => done(false));
    document.body.append(dialog);
    dialog.showModal();
    no.focus();
  });
}

const STATES = {
  QUEUED: "queued",
  RUNNING: "running",
  SUCCEEDED: "succeeded",
  FAILED: "failed",
  CANCELLED: "cancelled",
};

export function stateBadge(state) {
  const text = STATES[state] || String(state || "").toLowerCase().replace(/_/g, " ");
  return h("span", { class: `badge s-${text.replace(/\s+/g, "-")}` }, text);
}

export function when(timestamp) {
  if (!timestamp) return "";
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

export function ms(value) {
  if (value === undefined || value === null || value === "") return "";
  const n = Number(value);
  return n >= 10_000 ? `${(n / 1000).toFixed(1)} s` : `${Math.round(n)} ms`;
}

export function percent(value) {
  return `${Math.round(Number(value || 0) * 100)} %`;
}

export const priorityName = (p) => String(p || "PRIORITY_NORMAL").replace("PRIORITY_", "").toLowerCase().replace("unspecified", "normal");

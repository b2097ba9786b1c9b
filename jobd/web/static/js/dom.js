// Building the DOM. Everything shown from the daemon (args, tags, errors,
// results, names) goes in as text nodes: no HTML string is ever parsed here,
// so a job whose args hold markup shows that markup as text.

/** h("a", {href: "#/jobs", class: "x"}, "text", child, [more]) → element. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "value" || key === "checked" || key === "selected") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

/** Append strings (as text), numbers, nodes and nested arrays; skip null/false. */
export function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
  return el;
}

/** Replace an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A <table> with a caption (for screen readers), headers and rows of cells. */
export function table(caption, headers, rows, attrs = {}) {
  const head = h("thead", null, h("tr", null, headers.map((th) => h("th", {scope: "col"}, th))));
  const body = h("tbody", null, rows);
  const t = h("table", attrs, h("caption", {class: "sr-only"}, caption), head, body);
  return h("div", {class: "table-wrap"}, t);
}

export function row(cells, attrs) {
  return h("tr", attrs, cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : h("td", null, c))));
}

/** One value per element in `list`, keyed: find a child by data-key. */
export function byKey(root, key) {
  return root.querySelector(`[data-key="${CSS.escape(key)}"]`);
}

// Shared pieces of the pages: notices, dialogs, badges, progress bars, pager,
// and the dry-run-then-confirm flow of the bulk actions.

import {h, replace} from "./dom.js";
import {post} from "./api.js";
import {num, duration} from "./format.js";

const MAX_NOTICES = 4;

/** A short message in the notices area (polite live region). */
export function notice(text, kind = "info", ms = 6000) {
  const box = document.getElementById("notices");
  while (box.children.length >= MAX_NOTICES) box.firstElementChild.remove();
  const close = h("button", {type: "button", class: "link", "aria-label": "Dismiss"}, "×");
  const el = h("div", {class: `notice ${kind}`, role: kind === "error" ? "alert" : "status"},
    h("span", null, text), close);
  close.addEventListener("click", () => el.remove());
  box.appendChild(el);
  if (ms) setTimeout(() => el.remove(), ms);
  return el;
}

export function errorNotice(err) {
  return notice(`${err.code ? `${err.code}: ` : ""}${err.message}`, "error", 10000);
}

export function button(text, onclick, attrs = {}) {
  return h("button", {type: "button", ...attrs, onclick}, text);
}

/** Run an action from a button: disabled while it runs, errors shown. */
export async function busy(btn, action) {
  btn.disabled = true;
  try {
    return await action();
  } catch (err) {
    errorNotice(err);
    return undefined;
  } finally {
    btn.disabled = false;
  }
}

export function badge(status) {
  return h("span", {class: `badge s-${status}`}, status);
}

/** A native <progress> with its percentage as text beside it. */
export function progressBar(percentage, label) {
  const bar = h("progress", {max: "100"});
  const text = h("span", {class: "pct"});
  const el = h("span", {class: "progress"}, bar, text);
  setProgress(el, percentage, label);
  return el;
}

export function setProgress(el, percentage, label) {
  const [bar, text] = el.children;
  if (percentage === null || percentage === undefined) {
    bar.removeAttribute("value");   // indeterminate
    text.textContent = label || "";
  } else {
    bar.value = percentage;
    text.textContent = `${Number(percentage).toFixed(percentage % 1 ? 1 : 0)} %${label ? ` · ${label}` : ""}`;
  }
  bar.setAttribute("aria-label", text.textContent || "progress");
}

/** Calls `fn` at most once per `ms`, the last call always honoured. */
export function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  const run = () => { timer = null; last = Date.now(); fn(); };
  const t = () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(run, wait);
  };
  t.cancel = () => { clearTimeout(timer); timer = null; };
  return t;
}

/** Prev/next paging with the total. */
export function pager({page, limit, total, shown, onPage}) {
  const pages = Math.max(1, Math.ceil(total / limit));
  const first = total === 0 ? 0 : (page - 1) * limit + 1;
  const prev = button("← Prev", () => onPage(page - 1), {disabled: page <= 1, "data-test": "prev"});
  const next = button("Next →", () => onPage(page + 1), {disabled: page >= pages, "data-test": "next"});
  return h("div", {class: "pager"}, prev,
    h("span", {class: "page-info", "data-test": "page-info"},
      `${num(first)}–${num(first ? first + shown - 1 : 0)} of ${num(total)} · page ${num(page)} of ${num(pages)}`),
    next);
}

/** A modal dialog; resolves with the values of its form, or null (Esc, Cancel). */
export function dialog({title, body = [], fields = [], confirm = "OK", danger = false}) {
  return new Promise((resolve) => {
    const form = h("form", {method: "dialog", class: "dialog-form"},
      h("h2", null, title), body, fields,
      h("div", {class: "actions"},
        h("button", {type: "submit", value: "cancel", formnovalidate: true}, "Cancel"),
        h("button", {type: "submit", value: "ok", class: danger ? "danger" : "primary", "data-test": "confirm"},
          confirm)));
    const dlg = h("dialog", {"aria-label": title}, form);
    dlg.addEventListener("close", () => {
      const ok = dlg.returnValue === "ok";
      const values = ok ? Object.fromEntries(new FormData(form)) : null;
      dlg.remove();
      resolve(values);
    });
    document.body.appendChild(dlg);
    dlg.showModal();
    const focus = dlg.querySelector("input, select, textarea") || dlg.querySelector("[data-test=confirm]");
    if (focus) focus.focus();
  });
}

export function field(label, input, cls = "") {
  return h("label", {class: `field ${cls}`.trim()}, h("span", null, label), input);
}

/** A bulk action: dry run, show the count and a sample, confirm, then run.
 * `op` is cancel_many, retry_many or purge; `filter` the fields to send. */
export async function bulk(op, filter, what) {
  const verb = {cancel_many: "Cancel", retry_many: "Retry", purge: "Purge"}[op];
  const dry = await post(`/api/jobs/${op}`, {...filter, dry_run: true});
  const matched = dry.matched ?? 0;
  if (!matched) {
    notice(`${verb}: no job matches ${what}.`);
    return null;
  }
  const sample = (dry.sample || []).slice(0, 5);
  const ok = await dialog({
    title: `${verb} ${num(matched)} job${matched === 1 ? "" : "s"}?`,
    body: [
      h("p", {"data-test": "dry-run-count"}, `${num(matched)} job${matched === 1 ? "" : "s"} match ${what}.`),
      sample.length ? h("p", {class: "muted"}, "For example: ", sample.join(", ")) : null,
      op === "purge" ? h("p", null, "Purged jobs and their results are deleted for good.") : null,
    ],
    confirm: `${verb} ${num(matched)}`,
    danger: op !== "retry_many",
  });
  if (!ok) return null;
  const done = await post(`/api/jobs/${op}`, {...filter});
  const count = done.cancelled ?? done.retried ?? done.purged ?? 0;
  notice(`${verb}: ${num(count)} of ${num(done.matched ?? matched)} job${count === 1 ? "" : "s"}.`, "ok");
  return done;
}

/** Progress ETA from the rate of progress: a few recent (time, percentage) points. */
export class Eta {
  constructor() { this.points = []; }
  add(percentage, t = Date.now()) {
    if (percentage === null || percentage === undefined) return;
    const last = this.points[this.points.length - 1];
    if (last && percentage < last.p) this.points = [];   // a new attempt started over
    this.points.push({t, p: percentage});
    if (this.points.length > 20) this.points.shift();
  }
  /** Seconds left, or null when it cannot be told yet. */
  seconds(now = Date.now()) {
    if (this.points.length < 2) return null;
    const a = this.points[0];
    const b = this.points[this.points.length - 1];
    const rate = (b.p - a.p) / ((b.t - a.t) / 1000);
    if (!(rate > 0) || b.p >= 100) return null;
    return Math.max(0, (100 - b.p) / rate - (now - b.t) / 1000);
  }
  text() {
    const s = this.seconds();
    return s === null ? "" : `ETA ${duration(s)}`;
  }
}

export function empty(text) {
  return h("p", {class: "empty muted"}, text);
}

export function section(title, ...children) {
  return h("section", {class: "panel"}, h("h2", null, title), children);
}

export {replace};

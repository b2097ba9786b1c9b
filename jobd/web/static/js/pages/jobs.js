// Jobs: filters, search, server-side paging, bulk actions on the current
// filter. It asks for no job events: what changed since it loaded shows as a
// "refresh" hint from the `stats` samples, so a busy queue never makes this
// page re-query, nor jobd web follow every job for it.

import {get, idPath, query} from "../api.js";
import {h, replace, table, row} from "../dom.js";
import {ago, firstLine, num, short, tagsText} from "../format.js";
import {STATUSES} from "../samples.js";
import {badge, bulk, button, busy, empty, errorNotice, field, pager, progressBar} from "../ui.js";

const FILTERS = ["status", "queue", "handler", "tag", "error_match", "q"];
const LIMITS = [25, 50, 100, 200];
export const EVENTS = [];
const TOTALS = ["submitted", "completed", "failed", "dead_letter"];

export function jobLink(id, text) {
  return h("a", {href: `#/jobs/${idPath(id)}`, class: "mono", title: id}, text ?? short(id, 24));
}

export function mount(view, ctx) {
  const q = ctx.query;
  const state = {
    filter: Object.fromEntries(FILTERS.map((k) => [k, q.get(k) || ""])),
    page: Math.max(1, parseInt(q.get("page") || "1", 10) || 1),
    limit: LIMITS.includes(Number(q.get("limit"))) ? Number(q.get("limit")) : 50,
  };
  const results = h("div", {class: "results", "data-test": "results"}, h("p", {class: "muted"}, "Loading…"));
  const changed = h("button", {type: "button", class: "hint", hidden: true, "data-test": "refresh"}, "");
  let base = ctx.stats?.totals || null;   // the counters when the page loaded
  const form = filterForm(state);
  const actions = bulkActions(state, () => load());
  view.append(h("h1", null, "Jobs"), form, h("div", {class: "toolbar"}, actions, changed), results);
  fillChoices(form);

  let latest = base;
  const load = async () => {
    base = latest;
    changed.hidden = true;
    const started = performance.now();
    try {
      const data = await get(`/api/jobs${query({...state.filter, page: state.page, limit: state.limit})}`);
      drawResults(results, data, state);
      results.dataset.loadMs = String(Math.round(performance.now() - started));
    } catch (err) {
      replace(results, empty(`Could not load jobs: ${err.message}`));
      errorNotice(err);
    }
  };
  changed.addEventListener("click", load);
  load();

  return {
    stats(s) {
      latest = s.totals || latest;
      if (!base) { base = latest; return; }
      const text = changes(base, latest);
      changed.hidden = !text;
      changed.textContent = text ? `Since this page loaded: ${text}. Refresh` : "";
    },
    reload: load,
  };
}

function changes(before, now) {
  if (!before || !now) return "";
  return TOTALS.map((k) => [k, (now[k] ?? 0) - (before[k] ?? 0)]).filter(([, d]) => d > 0)
    .map(([k, d]) => `${num(d)} ${k.replace("_", " ")}`).join(", ");
}

function go(filter, page, limit) {
  location.hash = `#/jobs${query({...filter, page: page > 1 ? page : "", limit: limit !== 50 ? limit : ""})}`;
}

function filterForm(state) {
  const f = state.filter;
  const sel = (name, options, value) => h("select", {name},
    h("option", {value: ""}, "any"), options.map((o) => h("option", {value: o, selected: o === value}, o)));
  const text = (name, value, attrs = {}) => h("input", {type: "text", name, value, autocomplete: "off", ...attrs});
  const form = h("form", {class: "filters", role: "search", "aria-label": "Filter jobs"},
    field("Search", text("q", f.q, {placeholder: "id, name, tag or error", "data-search": true, type: "search"}), "grow"),
    field("Status", sel("status", STATUSES, f.status)),
    field("Queue", sel("queue", f.queue ? [f.queue] : [], f.queue)),
    field("Handler", sel("handler", f.handler ? [f.handler] : [], f.handler)),
    field("Tag", text("tag", f.tag, {placeholder: "key=value"})),
    field("Error text", text("error_match", f.error_match, {placeholder: "substring"})),
    field("Per page", h("select", {name: "limit"}, LIMITS.map((n) => h("option", {value: n, selected: n === state.limit}, n)))),
    h("div", {class: "form-buttons"},
      h("button", {type: "submit", class: "primary"}, "Apply"),
      h("a", {href: "#/jobs", class: "button"}, "Clear")),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    go(Object.fromEntries(FILTERS.map((k) => [k, (data[k] || "").trim()])), 1, Number(data.limit));
  });
  return form;
}

/** The queue and handler choices come from the daemon (bounded lists). */
async function fillChoices(form) {
  try {
    const [qs, hs] = await Promise.all([get("/api/queues"), get("/api/handlers")]);
    addOptions(form.elements.queue, (qs.queues || []).map((x) => x.name));
    addOptions(form.elements.handler, (hs.handlers || []).map((x) => x.name));
  } catch {
    /* the banner says why; the filters still work by URL */
  }
}

function addOptions(select, names) {
  const have = new Set([...select.options].map((o) => o.value));
  for (const n of names.slice(0, 1000)) if (!have.has(n)) select.append(h("option", {value: n}, n));
}

/** The bulk filter: the list filters except the free-text search. */
function bulkFilter(state) {
  const f = {};
  for (const k of ["status", "queue", "handler", "tag", "error_match"]) if (state.filter[k]) f[k] = state.filter[k];
  return Object.keys(f).length ? f : {all: true};
}

function bulkActions(state, reload) {
  const what = describe(state.filter);
  const searching = Boolean(state.filter.q);
  const act = (op, label) => {
    const b = button(label, () => busy(b, async () => {
      if (await bulk(op, bulkFilter(state), what)) reload();
    }), {disabled: searching, "data-test": `bulk-${op}`,
      title: searching ? "Bulk actions use the filters, not the search: clear the search first" : `${label}: ${what}`});
    return b;
  };
  return h("div", {class: "bulk", role: "group", "aria-label": "Bulk actions on the current filter"},
    h("span", {class: "muted"}, "All matching: "),
    act("cancel_many", "Cancel…"), act("retry_many", "Retry…"), act("purge", "Purge…"));
}

function describe(filter) {
  const parts = ["status", "queue", "handler", "tag", "error_match"].filter((k) => filter[k])
    .map((k) => `${k.replace("_", " ")} ${filter[k]}`);
  return parts.length ? parts.join(", ") : "every job";
}

function drawResults(box, data, state) {
  const jobs = data.jobs || [];
  const total = data.total ?? jobs.length;
  const page = data.page ?? state.page;
  const nav = () => pager({page, limit: state.limit, total, shown: jobs.length,
    onPage: (p) => go(state.filter, p, state.limit)});
  if (!jobs.length) {
    replace(box, total ? nav() : null, empty(total ? "No jobs on this page." : "No job matches."));
    return;
  }
  const rows = jobs.slice(0, 500).map(jobRow);
  replace(box, nav(), table("Jobs", ["id", "handler", "status", "queue", "attempts", "created", "detail"], rows,
    {class: "jobs"}), nav());
}

export function jobRow(job) {
  const detail = job.status === "running" && job.progress
    ? progressBar(job.progress.percentage, job.progress.message)
    : job.error ? h("span", {class: "err", title: firstLine(job.error, 500)}, firstLine(job.error, 80))
      : job.held ? h("span", {class: "muted"}, `held: ${job.held.reason}`)
        : h("span", {class: "muted"}, [job.name, tagsText(job.tags)].filter(Boolean).join(" · "));
  return row([
    jobLink(job.id),
    h("span", {class: "mono"}, job.handler),
    h("span", {class: "st"}, badge(job.status)),
    job.queue,
    num(job.attempts),
    h("span", {title: job.created_at || ""}, ago(job.created_at)),
    h("span", {class: "detail"}, detail),
  ], {"data-key": job.id});
}

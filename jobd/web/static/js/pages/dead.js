// Dead letters grouped by failure signature (the daemon normalises the error
// message: numbers, ids, paths and addresses replaced), with "retry group" and
// "purge group" through the bulk ops and their dry-run count.

import {get, query} from "../api.js";
import {h, replace, table, row} from "../dom.js";
import {ago, num, short} from "../format.js";
import {bulk, button, busy, empty, errorNotice, field, throttle} from "../ui.js";
import {jobLink} from "./jobs.js";

const GROUP_LIMIT = 100;
// No job events (jobd web would follow every job for them): a change of the
// dead-letter count in the `stats` samples reloads the groups.
export const EVENTS = [];

export function mount(view, ctx) {
  const status = ctx.query.get("status") === "failed" ? "failed" : "dead_letter";
  const filter = {status, queue: ctx.query.get("queue") || "", handler: ctx.query.get("handler") || ""};
  const groups = h("div", {"data-test": "groups"}, h("p", {class: "muted"}, "Loading…"));
  view.append(
    h("h1", null, status === "failed" ? "Failed jobs by failure" : "Dead letters"),
    filterForm(filter),
    groups,
  );

  const load = async () => {
    try {
      const data = await get(`/api/failures${query({...filter, limit: GROUP_LIMIT})}`);
      drawGroups(groups, data.groups || [], filter, load);
    } catch (err) {
      replace(groups, empty(`Could not load failure groups: ${err.message}`));
      errorNotice(err);
    }
  };
  const later = throttle(load, 3000);
  let count = null;
  load();

  return {
    stats(s) {
      const n = s.counts?.[status];
      if (count !== null && n !== undefined && n !== count) later();
      if (n !== undefined) count = n;
    },
    reload: load,
    unmount: later.cancel,
  };
}

function filterForm(filter) {
  const form = h("form", {class: "filters", "aria-label": "Filter failure groups"},
    field("Status", h("select", {name: "status"},
      h("option", {value: "dead_letter", selected: filter.status === "dead_letter"}, "dead letter"),
      h("option", {value: "failed", selected: filter.status === "failed"}, "failed"))),
    field("Queue", h("input", {type: "text", name: "queue", value: filter.queue})),
    field("Handler", h("input", {type: "text", name: "handler", value: filter.handler})),
    h("div", {class: "form-buttons"}, h("button", {type: "submit", class: "primary"}, "Apply")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const d = Object.fromEntries(new FormData(form));
    location.hash = `#/dead${query({status: d.status === "dead_letter" ? "" : d.status, queue: d.queue.trim(),
      handler: d.handler.trim()})}`;
  });
  return form;
}

function drawGroups(box, groups, filter, reload) {
  if (!groups.length) {
    replace(box, empty(filter.status === "failed" ? "No failed jobs." : "No dead letters."));
    return;
  }
  const rows = groups.slice(0, GROUP_LIMIT).map((g) => {
    const what = `failure group ${short(g.message, 60)} (${g.handler})`;
    const scope = {status: filter.status, signature: g.signature};
    const act = (op, label) => {
      const b = button(label, () => busy(b, async () => {
        if (await bulk(op, scope, what)) reload();
      }), {"data-test": `group-${op}`});
      return b;
    };
    return row([
      h("strong", {class: "count"}, num(g.count)),
      h("span", {class: "mono"}, g.handler),
      h("span", {class: "mono"}, g.error_type || "–"),
      h("span", {class: "msg", title: g.message}, short(g.message, 160)),
      h("span", {title: g.first_seen || ""}, ago(g.first_seen)),
      h("span", {title: g.last_seen || ""}, ago(g.last_seen)),
      h("ul", {class: "plain samples"}, (g.sample_ids || []).slice(0, 3).map((id) => h("li", null, jobLink(id)))),
      h("div", {class: "row-actions"}, act("retry_many", "Retry group…"), act("purge", "Purge group…")),
    ], {"data-key": g.signature, "data-test": "group"});
  });
  replace(box, table("Failure groups", ["count", "handler", "error", "message", "first seen", "last seen",
    "samples", "actions"], rows, {class: "groups"}),
  h("p", {class: "muted"}, h("a", {href: `#/jobs${query({status: filter.status})}`}, "All of them on the jobs page")));
}

// Queues and handlers: pause / resume (with an optional duration and reason),
// breaker and quarantine state, rates, release and breaker reset. Counts follow
// the `stats` events; a flow event (pause, breaker, quarantine) reloads.

import {get, post} from "../api.js";
import {h, replace, table, row, byKey} from "../dom.js";
import {ago, num, pct, time} from "../format.js";
import {FLOW_EVENTS, WORKER_EVENTS} from "../sse.js";
import {badge, button, busy, dialog, empty, errorNotice, field, notice, section, throttle} from "../ui.js";

const MAX_HANDLERS = 300;
export const EVENTS = [...FLOW_EVENTS, ...WORKER_EVENTS];

export function mount(view) {
  const queues = h("div", {"data-test": "queues"}, h("p", {class: "muted"}, "Loading…"));
  const handlers = h("div", {"data-test": "handlers"});
  const search = h("input", {type: "search", placeholder: "filter handlers by name", "aria-label": "Filter handlers",
    "data-search": true});
  view.append(h("h1", null, "Queues & handlers"), section("Queues", queues),
    section("Handlers", h("div", {class: "toolbar"}, search), handlers));
  let data = {queues: [], handlers: []};

  const drawHandlersNow = () => drawHandlers(handlers, data.handlers, search.value.trim(), load);
  const load = async () => {
    try {
      const [q, hs] = await Promise.all([get("/api/queues"), get("/api/handlers")]);
      data = {queues: q.queues || [], handlers: hs.handlers || []};
      drawQueues(queues, data.queues, load);
      drawHandlersNow();
    } catch (err) {
      errorNotice(err);
    }
  };
  search.addEventListener("input", drawHandlersNow);
  const later = throttle(load, 1000);
  load();

  return {
    event(name) {
      if (name.startsWith("queue.") || name.startsWith("handler.") || name.startsWith("worker.")) later();
    },
    stats(s) {
      const m = s.metrics || s;
      patchCounts(queues, m.queues);
      patchCounts(handlers, m.handlers);
    },
    reload: load,
    unmount: later.cancel,
  };
}

/** pending / running / held cells from a stats sample, in place. */
function patchCounts(box, summary) {
  if (!summary) return;
  for (const [name, v] of Object.entries(summary)) {
    const tr = byKey(box, name);
    if (!tr) continue;
    for (const k of ["pending", "running", "held"]) {
      const cell = tr.querySelector(`.c-${k}`);
      if (cell && v[k] !== undefined) cell.textContent = num(v[k]);
    }
  }
}

function pausedText(p) {
  if (!p) return "";
  const parts = [`since ${time(p.since)}`];
  if (p.until) parts.push(`until ${time(p.until)}`);
  if (p.reason) parts.push(`“${p.reason}”`);
  return parts.join(", ");
}

async function pauseDialog(kind, name) {
  const values = await dialog({
    title: `Pause ${kind} ${name}`,
    body: h("p", null, "Running jobs finish; submits are still accepted; nothing new starts until it is resumed."),
    fields: [
      field("For (seconds, optional: it resumes by itself then)", h("input", {type: "number", name: "for", min: "1", step: "any"})),
      field("Reason (optional)", h("input", {type: "text", name: "reason", maxlength: "1024"})),
    ],
    confirm: "Pause",
  });
  if (!values) return null;
  const body = {};
  if (values.for) body.for = Number(values.for);
  if (values.reason) body.reason = values.reason;
  return body;
}

function pauseButtons(kind, name, paused, reload) {
  const path = `/api/${kind === "queue" ? "queues" : "handlers"}/${encodeURIComponent(name)}`;
  if (paused) {
    const b = button("Resume", () => busy(b, async () => {
      await post(`${path}/resume`);
      notice(`${kind} ${name} resumed.`, "ok");
      reload();
    }), {"data-test": "resume", "aria-label": `Resume ${kind} ${name}`});
    return b;
  }
  const b = button("Pause…", () => busy(b, async () => {
    const body = await pauseDialog(kind, name);
    if (!body) return;
    await post(`${path}/pause`, body);
    notice(`${kind} ${name} paused.`, "ok");
    reload();
  }), {"data-test": "pause", "aria-label": `Pause ${kind} ${name}`});
  return b;
}

function rateText(rate, burst) {
  return rate ? `${rate}${burst ? ` (burst ${burst})` : ""}` : "–";
}

function drawQueues(box, queues, reload) {
  if (!queues.length) { replace(box, empty("No queues.")); return; }
  const rows = queues.map((q) => row([
    h("strong", null, q.name),
    h("span", null, q.paused ? badge("paused") : badge("active"), " ", h("span", {class: "muted"}, pausedText(q.paused))),
    num(q.workers),
    h("span", {class: "c-pending"}, num(q.pending)), h("span", {class: "c-running"}, num(q.running)),
    h("span", {class: "c-held"}, num(q.held)),
    num(q.scheduled), num(q.retrying), num(q.dead_letter),
    rateText(q.rate, q.burst), q.max_size ?? "–",
    pauseButtons("queue", q.name, q.paused, reload),
  ], {"data-key": q.name, "data-test": "queue"}));
  replace(box, table("Queues", ["queue", "state", "workers", "pending", "running", "held", "scheduled", "retrying",
    "dead letters", "rate", "max size", "actions"], rows));
}

function breakerText(b) {
  if (!b) return "–";
  const parts = [`${b.state}`, `${num(b.failures)} in a row`];
  if (b.failure_rate) parts.push(`${pct(b.failure_rate * 100)} failing`);
  if (b.state !== "closed" && b.next_trial_at) parts.push(`trial ${ago(b.next_trial_at)}`);
  if (b.trips_last_hour) parts.push(`${b.trips_last_hour} trips in the last hour`);
  return parts.join(", ");
}

function drawHandlers(box, handlers, needle, reload) {
  const shown = handlers.filter((x) => !needle || x.name.toLowerCase().includes(needle.toLowerCase()));
  if (!shown.length) { replace(box, empty("No handler matches.")); return; }
  const rows = shown.slice(0, MAX_HANDLERS).map((x) => {
    const acts = [pauseButtons("handler", x.name, x.paused, reload)];
    const path = `/api/handlers/${encodeURIComponent(x.name)}`;
    if (x.quarantine) {
      const b = button("Release", () => busy(b, async () => {
        await post(`${path}/release`); notice(`${x.name} released.`, "ok"); reload();
      }), {"data-test": "release"});
      acts.push(b);
    }
    if (x.breaker && x.breaker.state !== "closed") {
      const b = button("Reset breaker", () => busy(b, async () => {
        await post(`${path}/reset`); notice(`${x.name}: breaker closed.`, "ok"); reload();
      }), {"data-test": "reset"});
      acts.push(b);
    }
    return row([
      h("span", {class: "mono"}, x.name), x.queue,
      h("span", null, badge(x.state), " ", h("span", {class: "muted"},
        x.paused ? pausedText(x.paused) : x.quarantine ? `${x.quarantine.reason || ""} since ${time(x.quarantine.since)}` : "")),
      breakerText(x.breaker),
      rateText(x.rate, x.burst),
      h("span", {class: "c-pending"}, num(x.pending)), h("span", {class: "c-running"}, num(x.running)),
      h("span", {class: "c-held"}, num(x.held)),
      h("div", {class: "row-actions"}, acts),
    ], {"data-key": x.name, "data-test": "handler"});
  });
  replace(box, table("Handlers", ["handler", "queue", "state", "breaker", "rate", "pending", "running", "held", "actions"],
    rows), shown.length > MAX_HANDLERS ? h("p", {class: "muted"},
    `Showing ${MAX_HANDLERS} of ${num(shown.length)}: filter by name to find the others.`) : null);
}


// Workers: each one's current job and its progress, a lane of its recent jobs
// (coloured by outcome), scaling per queue and restart. Job events update the
// rows and lanes in place; only worker start / exit reloads.

import {get, idPath, post} from "../api.js";
import {h, replace, table, row, byKey} from "../dom.js";
import {ago, bytes, duration, firstLine, num} from "../format.js";
import {badge, button, busy, dialog, empty, errorNotice, notice, progressBar, section, setProgress, throttle} from "../ui.js";
import {jobLink} from "./jobs.js";
import {WORKER_EVENTS} from "../sse.js";

const LANE_BLOCKS = 40;   // recent jobs shown per worker
const FLUSH_MS = 250;
const MAX_PENDING = 20_000;
// What a worker does: no job.submitted (a third of the traffic, and it says nothing
// about workers), no dead_letter or replayed.
export const EVENTS = ["job.started", "job.progress", "job.completed", "job.failed", "job.cancelled",
  ...WORKER_EVENTS];

export function mount(view) {
  const scale = h("div", {"data-test": "scale"});
  const list = h("div", {"data-test": "workers"}, h("p", {class: "muted"}, "Loading…"));
  const lanes = h("div", {class: "lanes", "data-test": "lanes"});
  view.append(h("h1", null, "Workers"), section("Pools", scale), section("Workers", list),
    section("Recent jobs per worker", h("p", {class: "muted"}, "Newest on the right; hover or focus a block for the job."), lanes));
  const workerOf = new Map();   // job id → worker id, for the events that do not say

  const load = async () => {
    try {
      const [w, q, l] = await Promise.all([get("/api/workers"), get("/api/queues"),
        get("/api/workers/lanes").catch(() => ({lanes: []}))]);
      const workers = w.workers || [];
      workerOf.clear();
      for (const x of workers) if (x.current_job) workerOf.set(x.current_job, x.id);
      drawScale(scale, q.queues || [], workers, load);
      drawWorkers(list, workers, load);
      drawLanes(lanes, workers, laneList(l));
    } catch (err) {
      errorNotice(err);
    }
  };
  const later = throttle(load, 1000);
  load();

  // Job events come by the thousand a second on a busy queue: they are gathered
  // and drawn at most every FLUSH_MS, each worker's row and lane once per flush.
  let pending = [];
  let timer = null;
  const flush = () => {
    timer = null;
    const batch = pending;
    pending = [];
    drawBatch(batch, workerOf, list, lanes);
  };
  return {
    event(name, data) {
      if (name.startsWith("worker.")) { later(); return; }
      if (pending.length >= MAX_PENDING) {       // more than is worth drawing: show the state instead
        pending = [];
        later();
        return;
      }
      pending.push([name, data]);
      if (!timer) timer = setTimeout(flush, FLUSH_MS);
    },
    reload: load,
    unmount() { later.cancel(); clearTimeout(timer); },
  };
}

const ENDED = {"job.completed": "completed", "job.cancelled": "cancelled"};

/** Apply a batch of job events: the last state of each worker, the last progress
 * of each job, the last LANE_BLOCKS jobs of each lane. */
function drawBatch(batch, workerOf, list, lanes) {
  const rows = new Map();     // worker id → {status, job}
  const bars = new Map();     // job id → event data
  const blocks = new Map();   // worker id → [block]
  const laneAdd = (wid, b) => {
    const arr = (blocks.get(wid) || []).filter((x) => x.job_id !== b.job_id);
    arr.push(b);
    if (arr.length > LANE_BLOCKS) arr.shift();
    blocks.set(wid, arr);
  };
  for (const [name, data] of batch) {
    if (name === "job.started") {
      workerOf.set(data.job_id, data.worker_id);
      rows.set(data.worker_id, {status: "busy", job: data.job_id});
      laneAdd(data.worker_id, {job_id: data.job_id, status: "running"});
    } else if (name === "job.progress") {
      bars.set(data.job_id, data);
    } else if (name === "job.failed" || ENDED[name]) {
      const wid = workerOf.get(data.job_id);
      if (wid === undefined) continue;
      workerOf.delete(data.job_id);
      rows.set(wid, {status: "idle", job: null});
      const status = ENDED[name] || (data.will_retry ? "retrying" : "failed");
      laneAdd(wid, {job_id: data.job_id, status, duration: data.duration, error: data.error});
    }
  }
  for (const [wid, state] of rows) patchWorker(list, wid, state);
  for (const [jobId, data] of bars) {
    const cell = byKey(list, String(workerOf.get(jobId)))?.querySelector(".job");
    const bar = cell && cell.querySelector(".progress");
    if (bar) setProgress(bar, data.percentage, data.message);
    else if (cell) cell.append(" ", progressBar(data.percentage, data.message));
  }
  for (const [wid, arr] of blocks) for (const b of arr) addBlock(lanes, wid, b);
}

/** The lanes reply as [{worker_id, jobs: [...]}], whichever way the server keys it. */
function laneList(reply) {
  const lanes = reply.lanes ?? reply.workers ?? reply;
  if (Array.isArray(lanes)) return lanes;
  return Object.entries(lanes || {}).map(([wid, jobs]) => ({worker_id: Number(wid), jobs}));
}

/** One form per pool. A reload updates them in place, so what someone is typing
 * (or has typed and not sent) is never overwritten by a worker starting. */
function drawScale(box, queues, workers, reload) {
  const forms = queues.map((q) => {
    const running = workers.filter((w) => w.queue === q.name).length;
    const form = box.querySelector(`form[data-key="${CSS.escape(q.name)}"]`) || scaleForm(q.name, reload);
    form.querySelector(".muted").textContent = `${num(running)} running, target`;
    const input = form.elements.count;
    if (document.activeElement !== input && input.value === input.dataset.shown) input.value = String(q.workers);
    input.dataset.shown = String(q.workers);
    return form;
  });
  replace(box, forms.length ? forms : empty("No queues."));
}

function scaleForm(name, reload) {
  const input = h("input", {type: "number", name: "count", min: "0", max: "1024",
    "aria-label": `Workers for queue ${name}`, "data-test": `scale-${name}`, "data-shown": ""});
  const submit = h("button", {type: "submit"}, "Scale");
  const form = h("form", {class: "scale", "data-key": name},
    h("strong", null, name), h("span", {class: "muted"}), input, submit);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, async () => {
      const r = await post("/api/workers/scale", {count: Number(input.value), queue: name});
      input.dataset.shown = input.value;
      notice(`Queue ${name}: ${r.previous} → ${r.target} workers.`, "ok");
      reload();
    });
  });
  return form;
}

function drawWorkers(box, workers, reload) {
  if (!workers.length) { replace(box, empty("No workers running.")); return; }
  const rows = workers.slice(0, 1024).map((w) => {
    const restart = button("Restart", () => busy(restart, async () => {
      const ok = await dialog({title: `Restart worker ${w.id}?`, confirm: "Restart",
        body: h("p", null, "It finishes its current job, exits and is replaced.")});
      if (!ok) return;
      const r = await post(`/api/workers/${encodeURIComponent(w.id)}/restart`);
      notice(r.restarted ? `Worker ${w.id} restarting.` : `Worker ${w.id} was already stopping.`, "ok");
      reload();
    }), {"aria-label": `Restart worker ${w.id}`, "data-test": "restart"});
    return row([
      h("strong", null, String(w.id)), num(w.pid), w.queue,
      h("span", {class: "st"}, badge(w.status), w.healthy === false ? h("span", {class: "bad"}, " unhealthy") : null),
      h("span", {class: "job"}, currentJob(w.current_job)),
      `${num(w.jobs_completed)} / ${num(w.jobs_failed)}`,
      bytes(w.rss_bytes), h("span", {title: w.last_heartbeat || ""}, ago(w.last_heartbeat)),
      restart,
    ], {"data-key": String(w.id), "data-test": "worker"});
  });
  replace(box, table("Workers", ["id", "pid", "queue", "status", "current job", "done / failed", "memory",
    "heartbeat", ""], rows));
}

/** The job's link; its progress bar comes with its first progress event (no
 * indeterminate bar: its animation would keep the browser drawing). */
function currentJob(id) {
  return id ? jobLink(id) : h("span", {class: "muted"}, "–");
}

function patchWorker(box, wid, {status, job}) {
  const tr = byKey(box, String(wid));
  if (!tr) return;
  replace(tr.querySelector(".st"), badge(status));
  replace(tr.querySelector(".job"), currentJob(job));
}

function drawLanes(box, workers, lanes) {
  const byWorker = new Map(lanes.map((l) => [String(l.worker_id ?? l.id), l.jobs || []]));
  const ids = new Set([...workers.map((w) => String(w.id)), ...byWorker.keys()]);
  if (!ids.size) { replace(box, empty("No workers.")); return; }
  replace(box, [...ids].slice(0, 256).map((wid) => {
    const blocks = h("div", {class: "blocks"}, (byWorker.get(wid) || []).slice(-LANE_BLOCKS).map(block));
    return h("div", {class: "lane", "data-key": wid}, h("span", {class: "lane-label"}, `worker ${wid}`), blocks);
  }));
}

function block(j) {
  const id = j.job_id ?? j.id;
  const tip = [id, j.handler, j.status, j.duration !== undefined && j.duration !== null ? duration(j.duration) : null,
    j.error ? firstLine(j.error, 100) : null].filter(Boolean).join(" · ");
  return h("a", {class: `block s-${j.status}`, href: `#/jobs/${idPath(id)}`, title: tip, "aria-label": tip,
    "data-job": id});
}

function addBlock(box, wid, job) {
  const lane = byKey(box, String(wid));
  const blocks = lane && lane.querySelector(".blocks");
  if (!blocks) return;
  const running = blocks.querySelector(`[data-job="${CSS.escape(job.job_id)}"]`);
  if (running) running.remove();
  blocks.appendChild(block(job));
  while (blocks.children.length > LANE_BLOCKS) blocks.firstElementChild.remove();
}

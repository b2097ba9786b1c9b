// One job: every field of its view, a live progress bar with an ETA from the
// rate of progress, the timeline of its attempts, args / result / error, and
// cancel, retry, replay. Progress events update the page in place.

import {get, jobPath, post} from "../api.js";
import {h, replace} from "../dom.js";
import {duration, json, num, time, timeEl} from "../format.js";
import {Eta, badge, button, busy, dialog, errorNotice, field, notice, progressBar, section, setProgress} from "../ui.js";
import {jobLink} from "./jobs.js";
import {JOB_EVENTS} from "../sse.js";

export const EVENTS = JOB_EVENTS;

const TERMINAL = new Set(["completed", "failed", "cancelled", "dead_letter"]);
const RETRYABLE = new Set(["failed", "cancelled", "dead_letter"]);
const MAX_SEEN = 50;   // live timeline entries kept

export function mount(view, ctx) {
  const id = ctx.params.id;
  const eta = new Eta();
  const seen = [];   // [time, text] observed live while the page is open
  const head = h("div", {class: "job-head"}, h("h1", null, "Job ", h("span", {class: "mono"}, id)));
  const actions = h("div", {class: "actions", role: "group", "aria-label": "Job actions"});
  const progress = h("div", {class: "job-progress", "data-test": "progress"});
  const fields = h("div");
  const timeline = h("ol", {class: "timeline", "data-test": "timeline"});
  const payload = h("div", {class: "payload"});
  view.append(head, actions, progress, h("div", {class: "grid2"}, section("Fields", fields), section("Timeline", timeline)),
    payload);
  let job = null;

  const load = async () => {
    try {
      const view = await get(jobPath(id, "status"));
      job = view.job || view;
      const result = TERMINAL.has(job.status) ? await get(jobPath(id, "result")).catch(() => null) : null;
      if (job.progress) eta.add(job.progress.percentage);
      drawHead(head, job);
      drawActions(actions, job, load);
      drawProgress(progress, job, eta);
      replace(fields, facts(job));
      drawTimeline(timeline, job, seen);
      drawPayload(payload, job, result);
    } catch (err) {
      if (err.status === 404) replace(fields, h("p", null, `No job with id ${id} (it may have expired or been purged).`));
      errorNotice(err);
    }
  };
  load();

  const remember = (text) => {
    seen.push([new Date().toISOString(), text]);
    if (seen.length > MAX_SEEN) seen.shift();
  };

  return {
    event(name, data) {
      if (name === "job.replayed" && data.replay_of === id) {
        notice(["Replayed as a new job: ", jobLink(data.job_id)], "ok");
      }
      if (data.job_id !== id) return;
      if (!job) { load(); return; }     // submitted after the page opened
      if (name === "job.progress") {
        eta.add(data.percentage);
        job.progress = {...job.progress, ...data};
        if (job.status !== "running") job.status = "running";
        drawProgress(progress, job, eta);
        return;
      }
      remember(eventText(name, data));
      load();
    },
    reload: load,
  };
}

function eventText(name, d) {
  switch (name) {
    case "job.started": return `attempt ${d.attempt} started on worker ${d.worker_id}`;
    case "job.completed": return `completed in ${duration(d.duration)}`;
    case "job.failed": return `attempt ${d.attempts} failed${d.will_retry ? " (will retry)" : ""}: ${String(d.error || "").split("\n", 1)[0]}`;
    case "job.dead_letter": return `dead letter after ${d.total_attempts} attempts`;
    case "job.cancelled": return "cancelled";
    default: return name;
  }
}

function drawHead(head, job) {
  const title = head.querySelector("h1");
  replace(title, "Job ", h("span", {class: "mono"}, job.id), " ", badge(job.status));
  title.dataset.status = job.status;
}

function drawActions(box, job, reload) {
  const running = job.status === "running";
  const cancel = button(running ? "Cancel…" : "Cancel", () => busy(cancel, async () => {
    const force = h("input", {type: "checkbox", name: "force", value: "1"});
    const ok = await dialog({title: `Cancel job ${job.id}?`, confirm: "Cancel job", danger: true,
      body: running ? [h("p", null, "It is running: without force the handler is asked to stop."),
        field("Force (kill its worker)", force)] : [h("p", null, "It will not run.")]});
    if (!ok) return;
    const r = await post(`${jobPath(job.id, "cancel")}${ok.force ? "?force=1" : ""}`);
    notice(r.cancelled ? "Cancelled." : "Cancel requested: the handler was asked to stop.", "ok");
    reload();
  }), {disabled: TERMINAL.has(job.status), "data-test": "cancel"});
  const retry = button("Retry", () => busy(retry, async () => {
    await post(jobPath(job.id, "retry"));
    notice("Queued again.", "ok");
    reload();
  }), {disabled: !RETRYABLE.has(job.status), "data-test": "retry"});
  const replay = button("Replay", () => busy(replay, async () => {
    const r = await post(jobPath(job.id, "replay"));
    notice(["Replayed as a new job: ", jobLink(r.job_id)], "ok");
  }), {disabled: !TERMINAL.has(job.status), "data-test": "replay"});
  replace(box, cancel, retry, replay);
}

function drawProgress(box, job, eta) {
  const p = job.progress;
  if (!p) {
    replace(box, job.status === "running" ? h("p", {class: "muted"}, "Running; it reports no progress.") : null);
    return;
  }
  let bar = box.querySelector(".progress");
  if (!bar) {
    bar = progressBar(null);
    replace(box, h("span", {class: "label"}, "Progress"), bar, h("span", {class: "eta", "data-test": "eta"}),
      h("span", {class: "muted counts"}));
  }
  setProgress(bar, p.percentage, p.message);
  bar.dataset.percentage = p.percentage ?? "";
  box.querySelector(".eta").textContent = job.status === "running" ? eta.text() : "";
  box.querySelector(".counts").textContent = p.total ? `${num(p.current)} of ${num(p.total)}` : num(p.current);
}

function facts(job) {
  const list = [
    ["id", h("span", {class: "mono"}, job.id)], ["name", job.name ?? "–"], ["handler", h("span", {class: "mono"}, job.handler)],
    ["status", badge(job.status)], ["queue", job.queue], ["priority", num(job.priority)],
    ["attempts", `${num(job.attempts)} of at most ${num(job.max_retries + 1)}`],
    ["retry delay", `${duration(job.retry_delay)} × ${job.retry_backoff} per retry`],
    ["timeout", job.timeout === null ? "none" : duration(job.timeout)],
    ["tags", Object.keys(job.tags || {}).length ? h("ul", {class: "tags"},
      Object.entries(job.tags).map(([k, v]) => h("li", null, h("span", {class: "mono"}, `${k}=${v}`)))) : "–"],
    ["depends on", job.depends_on?.length ? h("ul", {class: "plain"}, job.depends_on.slice(0, 50).map((d) => h("li", null, jobLink(d)))) : "–"],
    ["created", timeEl(job.created_at)], ["scheduled for", timeEl(job.scheduled_for)],
    ["started", timeEl(job.started_at)], ["finished", timeEl(job.completed_at)],
    ["worker", job.worker_id ?? "–"],
    ["held", job.held ? `${job.held.reason} since ${time(job.held.since)}${job.held.until ? ` until ${time(job.held.until)}` : ""}` : "–"],
    ["unique key", job.unique_key ?? "–"],
    ["replay of", job.replay_of ? jobLink(job.replay_of) : "–"],
  ];
  return h("dl", {class: "facts", "data-test": "fields"}, list.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
}

function drawTimeline(ol, job, seen) {
  const items = [[job.created_at, "submitted"]];
  if (job.scheduled_for) items.push([job.scheduled_for, "due"]);
  if (job.attempts > 1) {
    items.push([null, `${job.attempts - 1} earlier attempt${job.attempts > 2 ? "s" : ""} failed (the daemon keeps the last attempt's details)`]);
  }
  if (job.started_at) items.push([job.started_at, `attempt ${job.attempts} started${job.worker_id !== null ? ` on worker ${job.worker_id}` : ""}`]);
  if (job.completed_at) items.push([job.completed_at, job.status.replace("_", " ")]);
  for (const s of seen) items.push([s[0], `live: ${s[1]}`]);
  replace(ol, items.map(([t, text]) => h("li", null, t ? timeEl(t) : h("span", {class: "muted"}, "·"), " ", text)));
}

function drawPayload(box, job, result) {
  const pre = (title, value, cls) => section(title, h("pre", {class: cls || "", tabindex: "0"}, value));
  replace(box,
    h("div", {class: "grid2"}, pre("Args", json(job.args), "args"), pre("Kwargs", json(job.kwargs), "kwargs")),
    result && result.status === "completed" ? pre("Result", json(result.result), "result") : null,
    job.error ? pre("Error", job.error, "error") : null,
    result && result.duration !== null ? h("p", {class: "muted"}, `Last attempt took ${duration(result.duration)}.`) : null,
  );
}


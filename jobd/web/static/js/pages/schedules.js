// Schedules: a 24-hour timeline of the coming cron runs, the list with the
// last runs by outcome, and a form to add or replace one (and remove buttons).

import {del, get, idPath, post} from "../api.js";
import {h, replace, table, row} from "../dom.js";
import {ago, parseTime, time, timeEl} from "../format.js";
import {badge, button, busy, dialog, empty, errorNotice, field, notice, section, throttle} from "../ui.js";
import {jobLink} from "./jobs.js";

const DAY_MS = 24 * 3600 * 1000;
const MAX_TICKS = 288;        // per schedule on the timeline (every 5 min); denser ones are drawn as a band
const MAX_SCHEDULES = 200;
const TICK_MS = 60_000;      // the timeline moves on by itself; a run that came due reloads
// No events: schedules change when someone edits them (here, or a reload of the
// config), and their runs are due at known times.
export const EVENTS = [];

export function mount(view) {
  const timeline = h("div", {class: "day", "data-test": "day"});
  const list = h("div", {"data-test": "schedules"}, h("p", {class: "muted"}, "Loading…"));
  const handlers = h("datalist", {id: "handler-names"});
  view.append(h("h1", null, "Schedules"), section("Next 24 hours", timeline), section("Schedules", list),
    section("Add or replace a schedule", addForm(() => load()), handlers));

  get("/api/handlers").then((d) => replace(handlers, (d.handlers || []).slice(0, 1000)
    .map((x) => h("option", {value: x.name}))), () => {});
  let schedules = [];
  const load = async () => {
    try {
      const data = await get("/api/schedules");
      schedules = (data.schedules || []).slice(0, MAX_SCHEDULES);
      drawDay(timeline, schedules);
      drawList(list, schedules, load);
    } catch (err) {
      errorNotice(err);
    }
  };
  const later = throttle(load, 30_000);
  const tick = setInterval(() => {
    const due = schedules.some((s) => (parseTime(s.next_run) ?? Infinity) < Date.now());
    if (due) later();              // its run was submitted: show it as the last run
    else drawDay(timeline, schedules);
  }, TICK_MS);
  load();

  return {
    reload: load,
    unmount() { later.cancel(); clearInterval(tick); },
  };
}

function runsOf(s) {
  const runs = s.next_runs || (s.next_run ? [s.next_run] : []);
  return runs.map(parseTime).filter((t) => t !== null);
}

function drawDay(box, schedules) {
  const now = Date.now();
  const hours = h("div", {class: "day-hours", "aria-hidden": "true"});
  for (let i = 0; i <= 24; i += 3) {
    const mark = h("span", {class: "hour"}, time(new Date(now + i * 3600 * 1000).toISOString()).slice(11, 16));
    mark.style.left = `${(i / 24) * 100}%`;
    hours.appendChild(mark);
  }
  const rows = schedules.map((s) => {
    const runs = runsOf(s).filter((t) => t >= now && t <= now + DAY_MS);
    const track = h("div", {class: "track"});
    if (runs.length > MAX_TICKS) {
      const band = h("span", {class: "band", title: `${runs.length} runs in the next 24 h`});
      band.style.left = `${((runs[0] - now) / DAY_MS) * 100}%`;
      band.style.width = `${((runs[runs.length - 1] - runs[0]) / DAY_MS) * 100}%`;
      track.appendChild(band);
    } else {
      for (const t of runs) {
        const iso = new Date(t).toISOString();
        const tick = h("span", {class: "tick", title: `${s.name}: ${time(iso)} (${ago(iso)})`});
        tick.style.left = `${((t - now) / DAY_MS) * 100}%`;
        track.appendChild(tick);
      }
    }
    return h("div", {class: "day-row"}, h("span", {class: "day-name mono", title: s.cron}, s.name),
      h("span", {class: "sr-only"}, `${runs.length} runs in the next 24 hours`), track);
  });
  replace(box, schedules.length ? [h("div", {class: "day-row"}, h("span", {class: "day-name"}), hours), rows]
    : empty("No schedules."));
}

/** The last runs by outcome, in whichever form the server gives them. */
function lastRuns(s) {
  const runs = s.last_runs || s.recent_runs;
  if (Array.isArray(runs) && runs.length) {
    return h("span", {class: "blocks"}, runs.slice(-20).map((r) => h("a", {
      class: `block s-${r.status}`, href: `#/jobs/${idPath(r.job_id ?? r.id)}`,
      title: `${r.job_id ?? r.id} · ${r.status}`, "aria-label": `${r.status} run ${r.job_id ?? r.id}`})));
  }
  const outcomes = s.outcomes || s.last_runs_by_status;
  if (outcomes && typeof outcomes === "object") {
    return Object.entries(outcomes).map(([k, n]) => h("span", {class: `badge s-${k}`}, `${k} ${n}`));
  }
  if (!s.last_job_id) return h("span", {class: "muted"}, "never ran");
  return [s.last_status ? badge(s.last_status) : h("span", {class: "muted"}, "expired"), " ", jobLink(s.last_job_id)];
}

function drawList(box, schedules, reload) {
  if (!schedules.length) { replace(box, empty("No schedules yet: add one below.")); return; }
  const rows = schedules.map((s) => {
    const remove = button("Remove", () => busy(remove, async () => {
      const ok = await dialog({title: `Remove schedule ${s.name}?`, confirm: "Remove", danger: true,
        body: h("p", null, s.source === "config" ? "It comes from the config file: it will be back after a restart or reload."
          : "Jobs it already submitted are not touched.")});
      if (!ok) return;
      await del(`/api/schedules/${encodeURIComponent(s.name)}`);
      notice(`Schedule ${s.name} removed.`, "ok");
      reload();
    }), {"aria-label": `Remove schedule ${s.name}`, "data-test": "remove"});
    return row([
      h("strong", {class: "mono"}, s.name), h("code", null, s.cron), s.timezone, h("span", {class: "mono"}, s.handler),
      timeEl(s.next_run), s.last_run ? timeEl(s.last_run) : "–", lastRuns(s), s.source, remove,
    ], {"data-key": s.name, "data-test": "schedule"});
  });
  replace(box, table("Schedules", ["name", "cron", "time zone", "handler", "next run", "last run", "last runs",
    "source", ""], rows));
}

function parseJson(text, what, fallback) {
  if (!text.trim()) return fallback;
  try {
    return JSON.parse(text);
  } catch {
    throw Object.assign(new Error(`${what} is not valid JSON`), {code: "invalid_argument"});
  }
}

function addForm(reload) {
  const input = (name, attrs = {}) => h("input", {type: "text", name, autocomplete: "off", ...attrs});
  const form = h("form", {class: "filters add-schedule", "aria-label": "Add a schedule"},
    field("Name", input("name", {required: true, maxlength: "256"})),
    field("Cron", input("cron", {required: true, placeholder: "*/5 * * * *"})),
    field("Handler", input("handler", {required: true, list: "handler-names"})),
    field("Time zone", input("timezone", {value: "UTC"})),
    field("Args (JSON array)", input("args", {placeholder: "[]"})),
    field("Kwargs (JSON object)", input("kwargs", {placeholder: "{}"})),
    h("div", {class: "form-buttons"}, h("button", {type: "submit", class: "primary"}, "Save schedule")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const submit = form.querySelector("button[type=submit]");
    busy(submit, async () => {
      const d = Object.fromEntries(new FormData(form));
      const body = {name: d.name.trim(), cron: d.cron.trim(), handler: d.handler.trim(),
        timezone: d.timezone.trim() || "UTC", args: parseJson(d.args, "args", []), kwargs: parseJson(d.kwargs, "kwargs", {})};
      await post("/api/schedules", body);
      notice(`Schedule ${body.name} saved.`, "ok");
      form.reset();
      reload();
    });
  });
  return form;
}

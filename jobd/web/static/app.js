// The dashboard's entry point: hash router, the live connection, the banner
// shown on every page when jobd does not answer, and keyboard shortcuts.

import {get, onReachability, report} from "./js/api.js";
import {h, replace} from "./js/dom.js";
import {Live, ALERT_EVENTS} from "./js/sse.js";
import {dialog, notice, throttle} from "./js/ui.js";
import * as overview from "./js/pages/overview.js";
import * as jobs from "./js/pages/jobs.js";
import * as job from "./js/pages/job.js";
import * as dead from "./js/pages/dead.js";
import * as queues from "./js/pages/queues.js";
import * as workers from "./js/pages/workers.js";
import * as schedules from "./js/pages/schedules.js";
import * as alerts from "./js/pages/alerts.js";

const PAGES = {overview, jobs, job, dead, queues, workers, schedules, alerts};
const SHORTCUTS = {o: "#/", j: "#/jobs", d: "#/dead", q: "#/queues", w: "#/workers", s: "#/schedules", a: "#/alerts"};

const view = document.getElementById("view");
let current = null;        // the mounted page: {event, stats, reload, unmount}
let lastStats = null;      // the latest stats sample, handed to pages as they mount

/** "#/jobs/a/b?x=1" → {page: "job", params: {id: "a/b"}, query: URLSearchParams}. */
export function parseRoute(hash) {
  const raw = hash.replace(/^#/, "") || "/";
  const [path, qs = ""] = raw.split("?", 2);
  const query = new URLSearchParams(qs);
  const m = path.match(/^\/jobs\/(.+)$/);
  if (m) return {page: "job", params: {id: decodeURIComponent(m[1])}, query};
  const name = path.replace(/^\/+|\/+$/g, "") || "overview";
  return {page: PAGES[name] ? name : "notfound", params: {}, query};
}

function route() {
  if (current && current.unmount) current.unmount();
  current = null;
  const r = parseRoute(location.hash);
  for (const a of document.querySelectorAll("#nav a")) {
    const on = a.dataset.page === r.page || (r.page === "job" && a.dataset.page === "jobs");
    if (on) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  replace(view);
  if (r.page === "notfound") {
    view.append(h("h1", null, "Not found"), h("p", null, h("a", {href: "#/"}, "Back to the overview")));
    return;
  }
  live.want(PAGES[r.page]?.EVENTS || []);
  current = PAGES[r.page].mount(view, {params: r.params, query: r.query, stats: lastStats}) || {};
  document.title = `${view.querySelector("h1")?.textContent || "jobd"} · jobd`;
}

// --- the banner: jobd web answers, jobd does not (502), or nothing answers ---------
const banner = document.getElementById("banner");
let reach = "ok";
onReachability((state) => {
  if (state === reach) return;
  reach = state;
  banner.hidden = state === "ok";
  banner.textContent = state === "daemon_down"
    ? "jobd is not running or not reachable from jobd web: the figures below are the last ones seen."
    : state === "web_down" ? "jobd web is not reachable: the figures below are the last ones seen." : "";
});

// --- live updates --------------------------------------------------------------------
const liveEl = document.getElementById("live");
const alertCount = document.getElementById("alert-count");
const refreshAlerts = throttle(() => get("/api/alerts").then(showAlertCount, () => {}), 2000);

function showAlertCount(data) {
  const n = (data.alerts || []).length;
  alertCount.hidden = n === 0;
  alertCount.textContent = String(n);
  alertCount.setAttribute("aria-label", `${n} firing`);
}

const live = new Live({
  event(name, data) {
    if (ALERT_EVENTS.includes(name)) refreshAlerts();
    if (current && current.event) current.event(name, data);
  },
  stats(data) {
    lastStats = data;
    if (data && data.available === false) report("daemon_down");
    else if (data && data.available && reach === "daemon_down") report("ok");
    if (current && current.stats) current.stats(data);
  },
  resync() {
    // Both of jobd web's upstreams may report the same gap: one notice, one reload.
    if (!document.querySelector("[data-test=resynced]")) {
      notice("Resynced: some live updates were missed, so this page was reloaded.", "warn", 10000)
        .dataset.test = "resynced";
    }
    reloadSoon();
  },
  reopened() { reloadPage(); refreshAlerts(); },
  state(text) {
    liveEl.textContent = text;
    liveEl.className = `live st-${text}`;
  },
});

function reloadPage() {
  if (current && current.reload) current.reload();
}
const reloadSoon = throttle(reloadPage, 1000);

// --- keyboard ----------------------------------------------------------------------
let pendingG = 0;

function typing(target) {
  return target instanceof HTMLElement &&
    (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target) || document.querySelector("dialog[open]")) return;
  if (pendingG && Date.now() - pendingG < 1500 && SHORTCUTS[e.key]) {
    pendingG = 0;
    location.hash = SHORTCUTS[e.key];
    e.preventDefault();
  } else if (e.key === "g") {
    pendingG = Date.now();
  } else if (e.key === "/") {
    const search = view.querySelector("[data-search]");
    if (search) { search.focus(); e.preventDefault(); }
  } else if (e.key === "?") {
    showHelp();
  }
}

function showHelp() {
  const rows = [["g o", "Overview"], ["g j", "Jobs"], ["g d", "Dead letters"], ["g q", "Queues & handlers"],
    ["g w", "Workers"], ["g s", "Schedules"], ["g a", "Alerts"], ["/", "Search (jobs page)"],
    ["?", "This help"], ["Esc", "Close a dialog"]];
  dialog({
    title: "Keyboard shortcuts",
    body: h("dl", {class: "keys"}, rows.map(([k, what]) => [h("dt", null, h("kbd", null, k)), h("dd", null, what)])),
    confirm: "Close",
  });
}

document.getElementById("help-button").addEventListener("click", showHelp);
document.addEventListener("keydown", onKey);
window.addEventListener("hashchange", () => { route(); view.focus({preventScroll: true}); });
route();          // asks for the first page's events before the stream opens
live.start();
refreshAlerts();

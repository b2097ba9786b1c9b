// Overview: counts per status, throughput / failures / queue depth / workers
// charts, WAL and fsync health, the queues at a glance. Everything after the
// first load comes from `stats` events: this page sends no request while it shows.

import {get} from "../api.js";
import {h, replace, table, row} from "../dom.js";
import {LineChart} from "../charts.js";
import {Series, STATUSES} from "../samples.js";
import {bytes, duration, num} from "../format.js";
import {badge, errorNotice, section, throttle} from "../ui.js";

// The samples come as `stats` (always sent); the queues table follows pauses.
export const EVENTS = ["queue.paused", "queue.resumed"];

const rateFmt = (v) => (v >= 100 ? num(Math.round(v)) : num(v));

export function mount(view, ctx) {
  const series = new Series();
  const cards = h("div", {class: "cards", "data-test": "counts"});
  const charts = {
    done: new LineChart("Throughput (jobs completed / s)", [{label: "completed/s"}], rateFmt),
    failed: new LineChart("Failures", [{label: "failed/s", color: "#d9480f"}, {label: "% of finished", color: "#9c36b5"}], rateFmt),
    depth: new LineChart("Queue depth", [{label: "pending"}, {label: "scheduled", color: "#1098ad"}, {label: "retrying", color: "#e8590c"}], num),
    busy: new LineChart("Workers busy", [{label: "busy", color: "#2b8a3e"}, {label: "total", color: "#868e96"}], num),
  };
  const wal = h("dl", {class: "facts", "data-test": "wal"});
  const queues = h("div");
  const storage = {firing: null};
  const meta = {fsync_mode: null, queues: null};   // from one metrics call: not in the samples
  view.append(
    h("h1", null, "Overview"),
    cards,
    h("div", {class: "charts"}, Object.values(charts).map((c) => c.el)),
    h("div", {class: "grid2"},
      section("WAL and fsync", wal),
      section("Queues", queues)),
  );
  for (const c of Object.values(charts)) c.attach();

  const draw = () => {
    const s = series.latest();
    if (!s) return;
    drawCards(cards, s);
    const r = series.rates();
    charts.done.set(r.xs, [r.done]);
    charts.failed.set(r.xs, [r.failed, r.failPct]);
    const xs = series.column((p) => p.t);
    charts.depth.set(xs, ["pending", "scheduled", "retrying"].map((k) => series.column((p) => p.counts[k])));
    charts.busy.set(xs, [series.column((p) => p.busy), series.column((p) => p.workers)]);
    drawWal(wal, s, r, storage.firing, meta.fsync_mode ?? s.wal.fsync_mode);
    const qs = s.queues || meta.queues;
    if (qs) drawQueues(queues, qs);
  };
  const redraw = throttle(draw, 500);
  const refreshQueues = throttle(async () => {
    try {
      const m = await get("/api/jobs/metrics");
      meta.queues = (m.metrics || m).queues ?? meta.queues;
      redraw();
    } catch { /* the banner says why */ }
  }, 2000);

  const load = async () => {
    try {
      const [hist, alerts, metrics] = await Promise.all([get("/api/overview/history"), get("/api/alerts"),
        get("/api/jobs/metrics")]);
      const m = metrics.metrics || metrics;
      meta.fsync_mode = m.wal?.fsync_mode ?? null;
      meta.queues = m.queues ?? null;
      series.load(hist.samples || hist.history || []);
      if (hist.latest) series.add(hist.latest);     // the history keeps one every 5 s: this one is fresher
      storage.firing = (alerts.alerts || []).find((a) => a.rule === "StorageError") || null;
      if (ctx.stats) series.add(ctx.stats);
      draw();
    } catch (err) {
      errorNotice(err);
    }
  };
  load();

  return {
    stats(data) { series.add(data); redraw(); },
    event(name, data) {
      if (name.startsWith("queue.")) refreshQueues();
      if (name.startsWith("alert.") && data.rule === "StorageError") {
        storage.firing = name === "alert.firing" ? data : null;
        redraw();
      }
    },
    reload: load,
    unmount() { redraw.cancel(); refreshQueues.cancel(); for (const c of Object.values(charts)) c.destroy(); },
  };
}

function drawCards(cards, s) {
  replace(cards, STATUSES.map((status) =>
    h("a", {class: `card s-${status}`, href: `#/jobs?status=${status}`, "data-status": status},
      h("span", {class: "card-n"}, num(s.counts[status])), h("span", {class: "card-l"}, status.replace("_", " ")))));
}

function drawWal(dl, s, r, firing, mode) {
  const last = (arr) => {
    for (let i = arr.length - 1; i >= 0; i -= 1) if (arr[i] !== null) return arr[i];
    return null;
  };
  const facts = [
    ["fsync mode", mode ?? "–"],
    ["fsyncs / s", num(last(r.fsyncs))],
    ["WAL on disk", bytes(s.wal.bytes)],
    ["written since start", bytes(s.wal.bytes_written)],
    ["storage", firing ? h("span", {class: "bad"}, `failing since ${duration((Date.now() - Date.parse(firing.since)) / 1000)}: `,
      firing.annotations?.summary || firing.labels?.alertname || "StorageError")
      : h("span", {class: "good"}, "no write errors")],
    ["throughput 1m / 5m / 15m", ["1m", "5m", "15m"].map((k) => num(s.throughput[k])).join(" / ") + " jobs/s"],
  ];
  replace(dl, facts.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
}

function drawQueues(box, queues) {
  const rows = Object.entries(queues).slice(0, 50).map(([name, q]) => row([
    h("a", {href: "#/queues"}, name),
    q.paused ? badge("paused") : badge("active"),
    num(q.workers), num(q.pending), num(q.running), num(q.held),
    q.oldest_pending_age_s ? duration(q.oldest_pending_age_s) : "–",
  ]));
  replace(box, table("Queues", ["queue", "state", "workers", "pending", "running", "held", "oldest pending"], rows));
}


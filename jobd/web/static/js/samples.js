// The overview's time series: samples of the daemon's metrics, one every 5 s
// for the last hour from /api/overview/history, then one per `stats` event.
// A sample is read the same whether it is a full `metrics` object or a
// history point; the rates come from the differences of the counters.

import {parseTime} from "./format.js";

export const STATUSES = ["scheduled", "waiting", "pending", "running", "retrying",
  "completed", "failed", "cancelled", "dead_letter"];
const KEEP_S = 3600;
const MAX_POINTS = 2400;

/** The time of a sample in Unix seconds. */
function when(s) {
  const t = s.t ?? s.ts ?? s.time ?? s.timestamp ?? s.at;
  if (typeof t === "number") return t > 1e12 ? t / 1000 : t;
  const parsed = parseTime(t);
  return parsed === null ? Date.now() / 1000 : parsed / 1000;
}

/** A sample in one shape: {t, counts, busy, workers, totals, wal, queues, handlers, throughput}. */
export function normalize(raw) {
  const m = raw.metrics || raw;
  const q = m.queue || m.counts || {};
  const w = m.workers || {};
  return {
    t: when(raw),
    counts: Object.fromEntries(STATUSES.map((s) => [s, q[s] ?? 0])),
    busy: w.busy ?? 0,
    workers: w.total ?? 0,
    totals: m.totals || {},
    wal: m.wal || {},
    queues: m.queues || null,
    handlers: m.handlers || null,
    throughput: m.throughput || {},
  };
}

function rate(a, b, key) {
  const dt = b.t - a.t;
  const d = (b.totals[key] ?? 0) - (a.totals[key] ?? 0);
  return dt > 0 && d >= 0 ? d / dt : null;
}

function walRate(a, b, key) {
  const dt = b.t - a.t;
  const d = (b.wal[key] ?? 0) - (a.wal[key] ?? 0);
  return dt > 0 && d >= 0 ? d / dt : null;
}

export class Series {
  constructor() { this.samples = []; }

  load(list) {
    this.samples = list.map(normalize).sort((a, b) => a.t - b.t);
    this.trim();
  }

  add(raw) {
    const s = normalize(raw);
    const last = this.latest();
    if (last && s.t <= last.t) return last;
    this.samples.push(s);
    this.trim();
    return s;
  }

  trim() {
    const cut = (this.latest()?.t ?? 0) - KEEP_S;
    while (this.samples.length && (this.samples[0].t < cut || this.samples.length > MAX_POINTS)) {
      this.samples.shift();
    }
  }

  latest() { return this.samples[this.samples.length - 1] || null; }

  /** Per-second rates between each sample and the previous one. */
  rates() {
    const xs = [];
    const done = [];
    const failed = [];
    const failPct = [];
    const fsyncs = [];
    for (let i = 1; i < this.samples.length; i += 1) {
      const a = this.samples[i - 1];
      const b = this.samples[i];
      const c = rate(a, b, "completed");
      const f = (rate(a, b, "failed") ?? 0) + (rate(a, b, "dead_letter") ?? 0);
      xs.push(b.t);
      done.push(c);
      failed.push(c === null ? null : f);
      failPct.push(c === null || c + f === 0 ? 0 : (100 * f) / (c + f));
      fsyncs.push(walRate(a, b, "fsyncs"));
    }
    return {xs, done, failed, failPct, fsyncs};
  }

  column(fn) {
    return this.samples.map(fn);
  }
}

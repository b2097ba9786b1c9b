// Time-series charts (uPlot, vendored under /static/vendor/uplot).

import uPlot from "../vendor/uplot/uPlot.esm.js";
import {h} from "./dom.js";

const PALETTE = ["#2f6fde", "#d9480f", "#2b8a3e", "#9c36b5", "#e8590c", "#1098ad"];

function cssVar(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

const MIN_SPAN_S = 300;   // a chart shows at least five minutes, however few samples it has


/** A line chart in a <figure>: `series` [{label, color?}], `fmt(v)` for the y axis. */
export class LineChart {
  constructor(title, series, fmt = (v) => String(v)) {
    this.el = h("figure", {class: "chart"}, h("figcaption", null, title));
    this.box = h("div", {class: "chart-box", role: "img", "aria-label": title});
    this.el.appendChild(this.box);
    this.series = series;
    this.fmt = fmt;
    this.plot = null;
    this.data = [[], ...series.map(() => [])];
    this.resize = new ResizeObserver(() => this.fit());
  }

  /** Build the plot once the figure is in the document (it needs a width). */
  attach() {
    const fg = cssVar("--muted", "#666");
    const grid = cssVar("--grid", "rgba(128,128,128,.2)");
    const axis = {stroke: fg, grid: {stroke: grid, width: 1}, ticks: {stroke: grid, width: 1}};
    const opts = {
      width: this.width(), height: 180,
      cursor: {drag: {x: false, y: false}},
      legend: {live: true},
      scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(1, max * 1.1)]}},
      axes: [axis, {...axis, size: 60, values: (u, vals) => vals.map((v) => this.fmt(v))}],
      series: [{}, ...this.series.map((s, i) => ({
        label: s.label, stroke: s.color || PALETTE[i % PALETTE.length], width: 2,
        value: (u, v) => (v === null || v === undefined ? "–" : this.fmt(v)),
        fill: i === 0 ? `${s.color || PALETTE[0]}22` : undefined,
      }))],
    };
    this.plot = new uPlot(opts, this.data, this.box);
    this.resize.observe(this.box);
  }

  width() {
    return Math.max(240, this.box.clientWidth || 480);
  }

  fit() {
    if (this.plot) this.plot.setSize({width: this.width(), height: 180});
  }

  /** xs in Unix seconds; ys one array per series. */
  set(xs, ys) {
    this.data = [xs, ...ys];
    if (!this.plot) return;
    this.plot.setData(this.data);
    const hi = xs.length ? xs[xs.length - 1] : Date.now() / 1000;
    this.plot.setScale("x", {min: Math.min(xs.length ? xs[0] : hi, hi - MIN_SPAN_S), max: hi});
  }

  destroy() {
    this.resize.disconnect();
    if (this.plot) this.plot.destroy();
  }
}

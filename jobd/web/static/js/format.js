// Formatting helpers: every function returns plain text (callers put it in
// text nodes), so nothing here needs escaping.

const nf = new Intl.NumberFormat(undefined, {maximumFractionDigits: 2});

export function num(n) {
  return n === null || n === undefined || Number.isNaN(n) ? "–" : nf.format(n);
}

export function pct(n) {
  return n === null || n === undefined ? "–" : `${nf.format(n)} %`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/** Seconds → "850 ms", "12.3 s", "4 min 05 s", "2 h 10 min". */
export function duration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function parseTime(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

/** "2026-12-06 10:00:01" in local time. */
export function time(iso) {
  const t = parseTime(iso);
  if (t === null) return "–";
  const d = new Date(t);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** "3 min ago" / "in 2 h". */
export function ago(iso, now = Date.now()) {
  const t = parseTime(iso);
  if (t === null) return "–";
  const s = (now - t) / 1000;
  return s >= 0 ? `${duration(s)} ago` : `in ${duration(-s)}`;
}

/** A time element: local time as text, the ISO value and "ago" as its title. */
export function timeEl(iso) {
  const el = document.createElement("time");
  el.textContent = time(iso);
  if (iso) {
    el.dateTime = iso;
    el.title = `${iso} (${ago(iso)})`;
  }
  return el;
}

/** JSON for a <pre>: pretty, never throwing. */
export function json(value) {
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** One line of an error: its first line, shortened. */
export function firstLine(text, max = 140) {
  if (!text) return "";
  const line = String(text).split("\n", 1)[0];
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

export function short(text, max = 60) {
  const s = String(text ?? "");
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

export function tagsText(tags) {
  return Object.entries(tags || {}).map(([k, v]) => `${k}=${v}`).join(" ");
}

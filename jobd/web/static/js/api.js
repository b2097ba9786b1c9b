// The REST API, same origin. Every call reports whether the daemon answered
// (a 502 means jobd web is up but jobd is not) to the listeners, which drive
// the banner shown on every page.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const reachListeners = [];

/** `fn(state)` with state "ok", "daemon_down" (502) or "web_down" (no answer). */
export function onReachability(fn) {
  reachListeners.push(fn);
}

/** Also called by the live connection: a `stats` sample says whether jobd answers. */
export function report(state) {
  for (const fn of reachListeners) fn(state);
}

/** A job id as a path: each character that needs it is encoded, but its "/"
 * stay as they are (the server's routes take an id whole, slashes included). */
export function idPath(id) {
  return String(id).split("/").map(encodeURIComponent).join("/");
}

export function jobPath(id, action) {
  return `/api/jobs/${idPath(id)}/${action}`;
}

/** "?a=1&b=x" from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function request(method, path, body) {
  const init = {method, headers: {Accept: "application/json"}, credentials: "same-origin"};
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    report("web_down");
    throw new ApiError(0, "unreachable", `jobd web is not reachable (${err.message})`);
  }
  const data = await res.json().catch(() => null);
  if (res.status === 502) report("daemon_down");
  else report("ok");
  if (!res.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(res.status, e.code || `http_${res.status}`, e.message || res.statusText);
  }
  return data;
}

export const get = (path) => request("GET", path);
export const post = (path, body = {}) => request("POST", path, body);
export const del = (path) => request("DELETE", path);

// The one live connection: an EventSource on /api/events shared by every page.
// It is closed while the tab is hidden (a hidden dashboard costs the daemon
// nothing) and reopened when it shows again; the page then reloads what it
// shows, since events were missed meanwhile.

export const JOB_EVENTS = [
  "job.submitted", "job.started", "job.progress", "job.completed", "job.failed",
  "job.dead_letter", "job.cancelled", "job.replayed",
];
export const FLOW_EVENTS = [
  "queue.paused", "queue.resumed", "handler.paused", "handler.resumed",
  "handler.breaker_opened", "handler.breaker_half_open", "handler.breaker_closed",
  "handler.quarantined", "handler.released",
];
export const WORKER_EVENTS = ["worker.started", "worker.exited"];
export const ALERT_EVENTS = ["alert.firing", "alert.resolved"];
const ALL = [...JOB_EVENTS, ...FLOW_EVENTS, ...WORKER_EVENTS, ...ALERT_EVENTS, "stats", "resync"];
// What every page gets besides its own events: the metrics sample (it also says
// whether jobd answers) and the alerts (the count in the navigation).
const ALWAYS = ["stats", ...ALERT_EVENTS];

const RETRY_MS = 3000;   // after the server closed the stream (e.g. jobd web restarting)

export class Live {
  /** handlers: {event(name, data), stats(data), resync(), reopened(), state(text)} */
  constructor(handlers) {
    this.h = handlers;
    this.source = null;
    this.timer = null;
    this.names = "";     // the events asked for, comma-separated: each page asks only for what it shows
    document.addEventListener("visibilitychange", () => this.visibility());
  }

  /** The events the page shows want. Job events are most of the traffic on a busy queue
   * (jobd web follows them only while a stream asks), so pages that need none do not ask. */
  want(names) {
    const key = [...new Set([...ALWAYS, ...names])].sort().join(",");
    if (key === this.names) return;
    this.names = key;
    if (this.source) {
      this.close();     // the new page loads what it shows: no catch-up needed
      this.open();
    }
  }

  start() {
    if (!document.hidden) this.open();
    else this.h.state("paused");
  }

  open() {
    clearTimeout(this.timer);
    if (this.source) return;
    const source = new EventSource(`/api/events?events=${encodeURIComponent(this.names)}`);
    this.source = source;
    this.h.state("connecting");
    source.onopen = () => this.h.state("live");
    source.onerror = () => this.error(source);
    for (const name of ALL) source.addEventListener(name, (e) => this.dispatch(name, e));
  }

  close() {
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
  }

  dispatch(name, e) {
    let data = null;
    try {
      data = e.data ? JSON.parse(e.data) : null;
    } catch {
      return;   // not ours to show
    }
    if (name === "stats") this.h.stats(data);
    else if (name === "resync") this.h.resync();
    else this.h.event(name, data || {});
  }

  error(source) {
    if (source !== this.source) return;
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (a non-200 answer): reopen later, then reload,
      // since the new stream starts without the last event's id.
      this.source = null;
      this.h.state("offline");
      this.timer = setTimeout(() => { this.open(); this.h.reopened(); }, RETRY_MS);
    } else {
      this.h.state("reconnecting");
    }
  }

  visibility() {
    if (document.hidden) {
      this.close();
      this.h.state("paused");
    } else {
      this.open();
      this.h.reopened();
    }
  }
}

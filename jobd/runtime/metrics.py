"""Counters, gauges and histograms; JSON and Prometheus text.

`Recorder` keeps the counters and histograms: it listens to every status
change (one dict increment or two per change) and takes the few
observations no status change shows (result sizes, evictions). Gauges are
read from the live parts when asked, through `Sources`. The Prometheus text
follows the exposition format 0.0.4.
"""
from __future__ import annotations

import bisect
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from jobd import constants as C
from jobd.core.job import Job

_PENDING, _RUNNING, _RETRYING = C.PENDING, C.RUNNING, C.RETRYING
_COMPLETED, _DEAD_LETTER, _TERMINAL = C.COMPLETED, C.DEAD_LETTER, C.TERMINAL

log = logging.getLogger("jobd")

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
QUEUE_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
                 300.0, 1800.0, 3600.0, 21600.0, 86400.0)
HANDLER_STATES = ("ok", "paused", "breaker_open", "half_open", "quarantined")
RETRY_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


class Histogram:
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


class Rate:
    """Completions per second over the last 1, 5 and 15 minutes (a ring of
    per-second buckets, so the figures are exact, not decayed averages)."""

    SPAN = 900

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.ring = [0] * self.SPAN
        self.last = int(clock())
        self.start = clock()

    def _advance(self) -> int:
        now = int(self.clock())
        if now - self.last >= self.SPAN:
            self.ring = [0] * self.SPAN
        else:
            for sec in range(self.last + 1, now + 1):
                self.ring[sec % self.SPAN] = 0
        self.last = max(self.last, now)
        return now

    def add(self, n: int = 1) -> None:
        now = int(self.clock())
        if now != self.last:
            self._advance()
        self.ring[now % self.SPAN] += n

    def per_second(self, window: int) -> float:
        now = self._advance()
        total = sum(self.ring[(now - i) % self.SPAN] for i in range(window))
        elapsed = min(window, max(1.0, self.clock() - self.start))
        return round(total / elapsed, 3)


class WalStats(Protocol):
    mode: str
    fsyncs: int
    bytes_written: int

    def disk_bytes(self) -> int: ...
    @property
    def failure(self) -> str | None: ...         # why it cannot be written, while it cannot


class FlowStats(Protocol):
    """Flow control as metrics see it (jobd/control.py `Control`)."""

    @property
    def holds(self) -> int: ...                  # lanes held back so far
    def held_counts(self) -> Iterable[tuple[str, str, str, int]]: ...   # queue, handler, reason, n
    def queue_summaries(self) -> dict[str, dict[str, Any]]: ...
    def handler_summaries(self) -> dict[str, dict[str, Any]]: ...
    def handler_states(self) -> dict[str, str]: ...     # handler → ok, paused, breaker_open, ...
    def running_by_handler(self) -> dict[str, int]: ...  # jobs running now, per handler
    @property
    def trips(self) -> dict[str, int]: ...               # breaker openings, per handler


@dataclass(frozen=True)
class Sources:
    """Where the gauges are read when metrics are asked for (built by the daemon)."""

    counts: dict[str, int]                        # jobs per status (the job table's)
    pool: Callable[[], dict[str, int]]            # workers: total, idle, busy, healthy, ...
    wal: WalStats
    poller: Any                                   # jobd/runtime/idlepoll.py, or None
    connections: Callable[[], int]
    flow: FlowStats
    alerts_firing: Callable[[], dict[str, int]] = dict   # rule -> firing alerts (jobd/alerts)


class Recorder:
    """Counters and histograms, fed by status changes (`on_change`, a store
    listener) and by `Jobs` (the `JobStats` it reports to)."""

    def __init__(self, slow_job_threshold: float = 0.0) -> None:
        self.slow_job_threshold = slow_job_threshold
        self.started = time.monotonic()
        self.submitted: dict[tuple[str, int], int] = defaultdict(int)
        self.completed: dict[tuple[str, str], int] = defaultdict(int)
        self.retried: dict[str, int] = defaultdict(int)
        self.dead_lettered: dict[str, int] = defaultdict(int)
        self.dead_letter_evicted = 0
        self.deduplicated: dict[str, int] = defaultdict(int)
        self.pending_by_priority: dict[int, int] = defaultdict(int)
        self.duration: dict[str, Histogram] = {}
        self.queue_time: dict[int, Histogram] = {}
        self.retry_delay: dict[str, Histogram] = {}
        self.result_size: dict[str, list[float]] = {}     # [count, sum]
        self.rate = Rate()
        # Pending jobs per queue in the order they became pending (stale
        # entries dropped when they reach the front): the oldest's age.
        self.pending_order: dict[str, deque[Job]] = defaultdict(deque)
        self._appended = 0

    # --- updates (hot path) -------------------------------------------------------
    def on_change(self, job: Job, old: str) -> None:
        """Counters only: the per-handler gauges are read from flow control's
        own counts when metrics are asked for, not kept twice per job."""
        new = job.status
        if old == _PENDING:
            self.pending_by_priority[job.priority] -= 1
            if new == _RUNNING:                          # the hot path: a start
                self._started(job)
                return
        elif old == _RUNNING:
            if new != _PENDING and new != _RUNNING:     # PENDING: a stop put it back, uncounted
                self._attempt_ended(job, new)
        elif not old:
            self.submitted[(job.handler, job.priority)] += 1
        if new == _PENDING:
            self.pending_by_priority[job.priority] += 1
            self.pending_order[job.queue].append(job)
            self._appended += 1
            if not self._appended & 0xFFFF:
                self._compact()
        elif new in _TERMINAL:
            self.completed[(job.handler, new)] += 1
            if new == _COMPLETED:
                self.rate.add()
            elif new == _DEAD_LETTER:
                self.dead_lettered[job.handler] += 1
        elif new == _RETRYING:
            self.retried[job.handler] += 1

    def _attempt_ended(self, job: Job, new: str) -> None:
        """Every ended attempt is observed once, here, whatever ended it: a
        result (inline or as a file), an exception, a timeout, a worker's
        death, a forced cancel."""
        end = job.completed_at if new in C.TERMINAL else job.finished_attempt_at
        if end is None or job.started_at is None:
            return
        took = max(0.0, end - job.started_at)
        self.observe_duration(job.handler, took)
        limit = self.slow_job_threshold
        if limit and took > limit:
            log.warning("slow job %s (%s) took %.3fs (threshold %gs)", job.id, job.handler,
                        took, limit)

    def _started(self, job: Job) -> None:
        """Time in the queue: from submit (or the due time of a delayed first
        attempt) to the start."""
        ready_at = job.scheduled_for if job.attempts == 1 and job.scheduled_for else job.created_at
        self.observe_queue_time(job.priority, (job.started_at or 0.0) - ready_at)

    def _compact(self) -> None:
        """Every 65,536 jobs that became pending: drop the entries of jobs no
        longer pending (stale ones pile up behind a long-pending front)."""
        for queue, order in self.pending_order.items():
            self.pending_order[queue] = deque(j for j in order if j.status == C.PENDING)

    def oldest_pending_age(self, queue: str, now: float) -> float:
        """Seconds the queue's longest-pending job has waited (0: none pending)."""
        order = self.pending_order.get(queue)
        while order:
            job = order[0]
            if job.status == C.PENDING and job.queue == queue:
                return max(0.0, now - ready_since(job))
            order.popleft()
        return 0.0

    def count_deduplicated(self, handler: str) -> None:
        self.deduplicated[handler] += 1

    def count_evicted(self, n: int) -> None:
        self.dead_letter_evicted += n

    def observe_duration(self, handler: str, seconds: float) -> None:
        _hist(self.duration, handler, DURATION_BUCKETS).observe(seconds)

    def observe_queue_time(self, priority: int, seconds: float) -> None:
        _hist(self.queue_time, priority, QUEUE_BUCKETS).observe(max(0.0, seconds))

    def observe_retry_delay(self, handler: str, seconds: float) -> None:
        _hist(self.retry_delay, handler, RETRY_BUCKETS).observe(seconds)

    def observe_result_size(self, handler: str, size: int) -> None:
        entry = self.result_size.setdefault(handler, [0, 0.0])
        entry[0] += 1
        entry[1] += size

    def reset_gauges(self, jobs: Iterable[Any]) -> None:
        """Recount the pending/running gauges from the state (after recovery)."""
        self.pending_by_priority.clear()
        self.pending_order.clear()
        pending = []
        for job in jobs:
            if job.status == C.PENDING:
                self.pending_by_priority[job.priority] += 1
                pending.append(job)
        pending.sort(key=ready_since)
        for job in pending:
            self.pending_order[job.queue].append(job)


def ready_since(job: Job) -> float:
    """When a pending job became due: its submit, or the due time of a delay
    or a retry, or when `retry` queued it again."""
    due = job.scheduled_for
    return due if due is not None and due > job.created_at else job.created_at


def snapshot(rec: Recorder, src: Sources) -> dict[str, Any]:
    """The `metrics` op's JSON."""
    counts = src.counts
    queue: dict[str, Any] = {s: counts[s] for s in C.STATUSES}
    queue["by_priority"] = {str(p): n for p, n in sorted(rec.pending_by_priority.items()) if n}
    pool = src.pool()
    journal = src.wal
    return {
        "queue": queue,
        "workers": pool,
        "throughput": {"1m": rec.rate.per_second(60), "5m": rec.rate.per_second(300),
                       "15m": rec.rate.per_second(900)},
        "wal": {"bytes": journal.disk_bytes(), "fsyncs": journal.fsyncs,
                "bytes_written": journal.bytes_written, "fsync_mode": journal.mode},
        "uptime_s": round(time.monotonic() - rec.started, 3),
        "polling": _polling(src.poller),
        # lanes taken out of the ready index because their handler was held
        "limits": {"holds_total": src.flow.holds},
        "queues": _queues(rec, src),
        "handlers": src.flow.handler_summaries(),
        "totals": {
            "submitted": sum(rec.submitted.values()),
            "completed": sum(n for (_, s), n in rec.completed.items() if s == C.COMPLETED),
            "failed": sum(n for (_, s), n in rec.completed.items() if s == C.FAILED),
            "dead_letter": sum(rec.dead_lettered.values()),
            "dead_letter_evicted": rec.dead_letter_evicted,
            "retried": sum(rec.retried.values()),
            "deduplicated": sum(rec.deduplicated.values()),
        },
        "connections": src.connections(),
    }

def prometheus(rec: Recorder, src: Sources) -> str:
    """The same numbers as Prometheus text (exposition format 0.0.4)."""
    out: list[str] = []
    counts = src.counts
    pool = src.pool()
    _family(out, "jobd_jobs_submitted_total", "counter", "Jobs submitted.",
            [({"handler": h, "priority": str(p)}, n) for (h, p), n in rec.submitted.items()])
    _family(out, "jobd_jobs_completed_total", "counter",
            "Jobs that reached a terminal status, by that status.",
            [({"handler": h, "status": s}, n) for (h, s), n in rec.completed.items()])
    _family(out, "jobd_jobs_retried_total", "counter", "Failed attempts scheduled for retry.",
            [({"handler": h}, n) for h, n in rec.retried.items()])
    _family(out, "jobd_jobs_dead_letter_total", "counter", "Jobs moved to the dead-letter queue.",
            [({"handler": h}, n) for h, n in rec.dead_lettered.items()])
    _family(out, "jobd_jobs_pending", "gauge", "Pending jobs by priority.",
            [({"priority": str(p)}, n) for p, n in sorted(rec.pending_by_priority.items()) if n])
    _family(out, "jobd_jobs_running", "gauge", "Running jobs by handler.",
            [({"handler": h}, n) for h, n in sorted(src.flow.running_by_handler().items()) if n])
    _family(out, "jobd_dead_letter_jobs", "gauge", "Jobs now in the dead-letter queue.",
            [({}, counts[C.DEAD_LETTER])])
    _family(out, "jobd_dead_letter_evicted_total", "counter",
            "Dead letters deleted because the queue was at dead_letter.max_size.",
            [({}, rec.dead_letter_evicted)])
    _family(out, "jobd_workers_total", "gauge", "Worker processes.", [({}, pool["total"])])
    _family(out, "jobd_workers_idle", "gauge", "Idle workers.", [({}, pool["idle"])])
    _family(out, "jobd_workers_busy", "gauge", "Busy workers.", [({}, pool["busy"])])
    _histograms(out, "jobd_job_duration_seconds", "Job run time.", "handler", rec.duration)
    _histograms(out, "jobd_job_queue_time_seconds", "Time from ready to started.",
                "priority", rec.queue_time)
    _histograms(out, "jobd_job_retry_delay_seconds", "Delay before a retry.",
                "handler", rec.retry_delay)
    out.append("# HELP jobd_job_result_size_bytes Size of job results.")
    out.append("# TYPE jobd_job_result_size_bytes summary")
    for h, (n, total) in sorted(rec.result_size.items()):
        lab = _labels({"handler": h})
        out.append(f"jobd_job_result_size_bytes_sum{lab} {_num(total)}")
        out.append(f"jobd_job_result_size_bytes_count{lab} {int(n)}")
    queues = _queues(rec, src)
    _family(out, "jobd_jobs_held", "gauge",
            "Pending jobs held back (paused, rate limited, ...), by the first reason that applies.",
            [({"queue": q, "handler": h, "reason": r}, n) for q, h, r, n in list(src.flow.held_counts())])
    _family(out, "jobd_queue_paused", "gauge", "1 if the queue is paused.",
            [({"queue": name}, int(q["paused"])) for name, q in queues.items()])
    _family(out, "jobd_queue_oldest_pending_age_seconds", "gauge",
            "How long the queue's longest-waiting pending job has waited (0: none).",
            [({"queue": name}, q["oldest_pending_age_s"]) for name, q in queues.items()])
    _family(out, "jobd_jobs_deduplicated_total", "counter",
            "Submits answered with the job already holding their unique_key.",
            [({"handler": h}, n) for h, n in sorted(rec.deduplicated.items())])
    _family(out, "jobd_handler_state", "gauge",
            "1 for the handler's current state (ok, paused, breaker_open, half_open, quarantined).",
            [({"handler": h, "state": s}, int(s == state))
             for h, state in sorted(src.flow.handler_states().items()) for s in HANDLER_STATES])
    _family(out, "jobd_breaker_trips_total", "counter", "Times a handler's circuit breaker opened.",
            [({"handler": h}, n) for h, n in sorted(src.flow.trips.items())])
    _family(out, "jobd_alerts_firing", "gauge", "Alerts firing now, by rule.",
            [({"rule": r}, n) for r, n in sorted(src.alerts_firing().items())])
    _family(out, "jobd_queue_jobs", "gauge", "Jobs by status.",
            [({"status": s}, counts[s]) for s in C.STATUSES])
    _family(out, "jobd_wal_fsyncs_total", "counter", "WAL fsyncs.", [({}, src.wal.fsyncs)])
    _family(out, "jobd_wal_failing", "gauge",
            "1 while the WAL cannot be written (submits are refused).",
            [({}, int(src.wal.failure is not None))])
    _family(out, "jobd_wal_bytes", "gauge", "WAL bytes on disk.", [({}, src.wal.disk_bytes())])
    _family(out, "jobd_uptime_seconds", "gauge", "Seconds since start.",
            [({}, round(time.monotonic() - rec.started, 3))])
    return "\n".join(out) + "\n"




def _queues(rec: Recorder, src: Sources) -> dict[str, dict[str, Any]]:
    now = time.time()
    out = src.flow.queue_summaries()
    for name, q in out.items():
        q["oldest_pending_age_s"] = round(rec.oldest_pending_age(name, now), 3)
    return out


def _hist(table: dict[Any, Histogram], key: Any, bounds: tuple[float, ...]) -> Histogram:
    h = table.get(key)
    if h is None:
        h = table[key] = Histogram(bounds)
    return h


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _num(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if v == float("inf"):
        return "+Inf"
    return repr(float(v))


def _family(out: list[str], name: str, kind: str, help_text: str,
            samples: list[tuple[dict[str, str], float]]) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        out.append(f"{name}{_labels(labels)} {_num(value)}")


def _histograms(out: list[str], name: str, help_text: str, label: str,
                table: dict[Any, Histogram]) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} histogram")
    for key, h in sorted(table.items(), key=lambda kv: str(kv[0])):
        cumulative = 0
        for bound, n in zip(h.bounds, h.counts):
            cumulative += n
            out.append(f"{name}_bucket{_labels({label: str(key), 'le': _num(bound)})} {cumulative}")
        out.append(f"{name}_bucket{_labels({label: str(key), 'le': '+Inf'})} {h.count}")
        out.append(f"{name}_sum{_labels({label: str(key)})} {_num(h.sum)}")
        out.append(f"{name}_count{_labels({label: str(key)})} {h.count}")


def _polling(poller: Any) -> dict[str, Any]:
    """The adaptive busy polling's state (jobd/runtime/idlepoll.py); all 0 when it is off."""
    if poller is None:
        return {"max_us": 0, "window_us": 0, "caught": 0, "missed": 0}
    return {"max_us": round(poller.max_window * 1e6), "window_us": round(poller.window * 1e6, 1),
            "caught": poller.caught, "missed": poller.missed}

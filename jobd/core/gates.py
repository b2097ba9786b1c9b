"""The gates of flow control (pure): what holds a queue's or a handler's
jobs, and the lanes they wait in (docs/flow-control.md).

A `QueueGate` per queue and a `HandlerGate` per handler, each with its pause
and its rate limiter (GCRA, `Limiter`); handlers also with their concurrency
limit, a `RateLimited` hold, their circuit breaker (jobd/core/breaker.py),
their quarantine and whether the running code registers them. A `Lane` is
the pending jobs of one handler in one queue. `Ready` (jobd/core/flow.py)
puts them together.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

from jobd import constants as C
from jobd.core.breaker import CLOSED, OPEN, Breaker, BreakerSpec
from jobd.core.job import Job, iso

DEFAULT_QUEUE = C.DEFAULT_QUEUE
# Hold reasons (most important first: the job view shows the first that applies).
QUARANTINED = C.H_QUARANTINED
HANDLER_PAUSED = C.H_HANDLER_PAUSED
QUEUE_PAUSED = C.H_QUEUE_PAUSED
BREAKER_OPEN = C.H_BREAKER_OPEN
RATE_LIMITED = C.H_RATE_LIMITED
AT_LIMIT = "max_concurrency"      # waits for a slot: not a hold (the view shows none)

_heappop = heapq.heappop
_PENDING = C.PENDING
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


# --- rate limits ------------------------------------------------------------------------------

def parse_rate(text: Any) -> tuple[float, float]:
    """`"N/s"`, `"N/m"` or `"N/h"` → (N, period in seconds); ValueError if not."""
    if not isinstance(text, str):
        raise ValueError(f"must be a string like \"10/s\", \"60/m\" or \"100/h\", got {text!r}")
    count, _, unit = text.strip().partition("/")
    try:
        n = float(count)
    except ValueError:
        n = -1.0
    if unit not in _PERIODS or not (math.isfinite(n) and n > 0):
        raise ValueError(f"must look like \"10/s\", \"60/m\" or \"100/h\" (a positive count "
                         f"per second, minute or hour), got {text!r}")
    return n, _PERIODS[unit]


class Limiter:
    """The generic cell rate algorithm: at most `burst + n * t / period` starts
    in any span `t`. `tat` is the theoretical arrival time: a start at `now`
    conforms if `now >= tat - tau`, and moves `tat` on by one interval. A new
    limiter is full (`burst` starts at once). Starts are taken from the start
    records (`take`), live and in replay, so a restart rebuilds the same
    state and never allows a burst above the limit."""

    __slots__ = ("text", "burst", "interval", "tau", "tat")

    def __init__(self, text: str, burst: int) -> None:
        n, period = parse_rate(text)
        self.text = text
        self.burst = burst
        self.interval = period / n
        self.tau = (burst - 1) * self.interval
        self.tat = -math.inf

    def allows(self, now: float) -> bool:
        return now >= self.tat - self.tau

    def next_at(self) -> float:
        """The earliest time a start conforms."""
        return self.tat - self.tau

    def take(self, ts: float) -> None:
        tat = self.tat
        self.tat = (tat if tat > ts else ts) + self.interval

    def same(self, text: str | None, burst: int) -> bool:
        return text == self.text and burst == self.burst


def limiter(rate: str | None, burst: int | None, old: Limiter | None) -> Limiter | None:
    """The limiter for `rate`/`burst` (None: no limit), keeping `old`'s state
    when the limit did not change (a reload keeps counting)."""
    if not rate:
        return None
    burst = burst or 1
    if old is not None and old.same(rate, burst):
        return old
    new = Limiter(rate, burst)
    if old is not None:
        new.tat = old.tat            # no burst from changing the limit
    return new


# --- holds --------------------------------------------------------------------------------------

@dataclass(slots=True)
class Pause:
    since: float
    until: float | None       # resumes by itself then (None: until resumed)
    reason: str | None
    by_uid: int | None

    def view(self, kind: str, name: str) -> dict[str, Any]:
        return {kind: name, "since": iso(self.since), "until": iso(self.until),
                "reason": self.reason, "by_uid": self.by_uid}


@dataclass(frozen=True, slots=True)
class Hold:
    reason: str
    since: float | None
    until: float | None

    def view(self) -> dict[str, Any]:
        return {"reason": self.reason, "since": iso(self.since), "until": iso(self.until)}


class HandlerGate:
    __slots__ = ("name", "queue", "pause", "limiter", "limit", "running", "known",
                 "hold_until", "hold_since", "rate_since", "lanes", "shut", "waking",
                 "breaker", "quarantine", "checks")

    def __init__(self, name: str) -> None:
        self.name = name
        self.queue = DEFAULT_QUEUE        # where its jobs go unless a submit says otherwise
        self.pause: Pause | None = None
        self.limiter: Limiter | None = None
        self.limit = 0                    # max_concurrency (0: none)
        self.running = 0
        self.known = True                 # the running code registers it
        self.hold_until = 0.0             # RateLimited(after): no starts before this
        self.hold_since = 0.0
        self.rate_since: float | None = None   # when its limiter first said "not yet"
        self.lanes: list[Lane] = []
        self.shut = False                 # held until something changes (not by time)
        self.checks = False               # held at times: look (`blocked`) before a start
        self.waking: float | None = None  # a wake-up is noted for then
        self.breaker = Breaker(BreakerSpec())
        self.quarantine: tuple[str, float] | None = None     # (reason, since)

    def refresh(self) -> None:
        b = self.breaker
        self.shut = (not self.known or self.pause is not None or self.quarantine is not None
                     or (self.limit > 0 and self.running >= self.limit)
                     or b.trial is not None)
        self.checks = bool(self.hold_until) or self.limiter is not None or b.state != CLOSED

    def blocked(self, now: float) -> str | None:
        """Why its jobs may not start at `now` (None: they may)."""
        if not self.known or self.quarantine is not None:
            return QUARANTINED
        if self.pause is not None:
            return HANDLER_PAUSED
        if self.breaker.state != CLOSED and self.breaker.holds(now):
            return BREAKER_OPEN
        if self.hold_until > now:
            return RATE_LIMITED
        lim = self.limiter
        if lim is not None and not lim.allows(now):
            return RATE_LIMITED
        if self.limit and self.running >= self.limit:
            return AT_LIMIT
        return None

    def wakes_at(self) -> float:
        """When a rate hold ends by itself."""
        lim = self.limiter
        b = self.breaker
        return max(self.hold_until, lim.next_at() if lim is not None else 0.0,
                   b.until if b.state == OPEN else 0.0)


class QueueGate:
    __slots__ = ("name", "pause", "config_paused", "explicit", "limiter", "index", "lanes",
                 "counts", "rate_since", "max_size", "waking")

    def __init__(self, name: str) -> None:
        self.name = name
        self.pause: Pause | None = None
        self.config_paused = False        # `paused = true` in its config table
        self.explicit = False             # paused or resumed at runtime: that wins over config
        self.limiter: Limiter | None = None
        self.index: list[tuple[int, int, int, Lane]] = []   # (-priority, seq, mark, lane)
        self.lanes: dict[str, Lane] = {}
        self.counts: dict[str, int] = dict.fromkeys(C.STATUSES, 0)
        self.rate_since: float | None = None
        self.max_size = 0                 # jobs it may hold (0: only the global limit)
        self.waking: float | None = None

    @property
    def paused(self) -> bool:
        return self.pause is not None

    def blocked(self, now: float) -> str | None:
        if self.pause is not None:
            return QUEUE_PAUSED
        lim = self.limiter
        if lim is not None and not lim.allows(now):
            return RATE_LIMITED
        return None

    @property
    def queued(self) -> int:
        c = self.counts
        return c[C.SCHEDULED] + c[C.WAITING] + c[C.PENDING] + c[C.RETRYING]


class Lane:
    """The pending jobs of one handler in one queue."""

    __slots__ = ("queue", "handler", "heap", "mark", "head", "pending")

    def __init__(self, queue: QueueGate, handler: HandlerGate) -> None:
        self.queue = queue
        self.handler = handler
        self.heap: list[tuple[int, int, int, Job]] = []
        self.mark = 0                     # the live index entry's mark
        self.head: tuple[int, int] | None = None   # (-priority, seq) indexed; None: not indexed
        self.pending = 0                  # its jobs with status pending (sent ahead included)

    def __lt__(self, other: object) -> bool:      # index entries never tie on a lane
        return False

    def top(self) -> Job | None:
        """Its best live job, left in place (dead entries are dropped)."""
        heap = self.heap
        while heap:
            entry = heap[0]
            job = entry[3]
            if job.status == _PENDING and job.qtoken == entry[2]:
                return job
            _heappop(heap)
        return None


@dataclass(frozen=True)
class QueueSpec:
    """A queue as configured (`[queues."NAME"]`)."""
    name: str
    workers: int = 1
    max_size: int = 0
    rate: str | None = None
    burst: int | None = None
    paused: bool = False


@dataclass(frozen=True)
class HandlerFlow:
    """A handler's flow options, merged from `@handler` and `[handler."NAME"]`."""
    queue: str = DEFAULT_QUEUE
    rate: str | None = None
    burst: int | None = None
    max_concurrency: int = 0
    breaker: BreakerSpec = BreakerSpec()

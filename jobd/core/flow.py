"""Flow control (pure): which pending jobs may start now, and which goes first.

Pending jobs wait in lanes, one per (queue, handler), each a heap in
priority-then-FIFO order. Each queue keeps an index of its lanes' heads: a
small heap with one live entry per lane that may start jobs. Taking the next
job of a queue looks at the best head; if that lane's handler is held
(paused, rate limited, at its concurrency limit, its code not loaded) the
lane leaves the index, at O(log lanes), and the next best head is taken.
So a held handler never delays another handler's jobs (no head-of-line
blocking), priority and FIFO stay exact among the jobs that may run, and
holding belongs to a queue or a handler, never to each job:

- pausing a queue sets one field: the dispatcher does not take from it;
- pausing a handler sets one field: its lanes leave the index when they
  next come up, and come back (one push each) when it is resumed.

Gates: a `QueueGate` per queue, a `HandlerGate` per handler, each with its
pause, its rate limiter (GCRA, `Limiter`) and, for handlers, the concurrency
limit, a `RateLimited` hold and whether the running code registers it.
Holds that end by themselves (a rate limiter's next start, a hold's end)
are kept as wake-up times (`next_wakeup`); the daemon arms one timer for
the earliest and calls `release_due`.

Heap entries are `(-priority, seq, token, job)`. `token` is the job's push
count (`job.qtoken`), so only a job's latest entry is live: giving a job
back, or queueing it again after a crash, never leaves two live entries.

No clock: the dispatcher passes `now`; records bring their own times.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jobd import constants as C
from jobd.core import records as R
from jobd.core.breaker import CLOSED, OPEN
from jobd.core.gates import (
    BREAKER_OPEN,
    DEFAULT_QUEUE,
    HANDLER_PAUSED,
    QUARANTINED,
    QUEUE_PAUSED,
    RATE_LIMITED,
    HandlerFlow,
    HandlerGate,
    Hold,
    Lane,
    Limiter,
    Pause,
    QueueGate,
    QueueSpec,
    limiter,
    parse_rate,
)
from jobd.core.job import Job

__all__ = ["HandlerFlow", "HandlerGate", "Hold", "Lane", "Limiter", "Pause", "QueueGate",
           "QueueSpec", "Ready", "parse_rate"]

_heappush = heapq.heappush
_heappop = heapq.heappop
_heapreplace = heapq.heapreplace
_PENDING = C.PENDING
_RUNNING = C.RUNNING


# --- the ready structure ---------------------------------------------------------------------

class Ready:
    """Every pending job, by queue and handler, and the gates that hold them."""

    def __init__(self, counts: dict[str, int] | None = None,
                 jobs: Callable[[], Iterable[Job]] | None = None) -> None:
        """`counts`, `jobs`: the job table's counts per status and its jobs.
        While `default` is the only queue its counts are the table's (one
        count per change instead of two: the hot path); the second queue to
        appear splits them, counting each queue's jobs once."""
        self.queues: dict[str, QueueGate] = {DEFAULT_QUEUE: QueueGate(DEFAULT_QUEUE)}
        self.shared = counts is not None     # the default queue's counts are the table's
        if counts is not None:
            self.queues[DEFAULT_QUEUE].counts = counts
        self._jobs = jobs
        self.handlers: dict[str, HandlerGate] = {}
        self.wakeups: list[tuple[float, int, HandlerGate | QueueGate]] = []
        self._wake_n = 0
        self.default = self.queues[DEFAULT_QUEUE]
        self.known: frozenset[str] | None = None     # registered handlers (None: all)
        self.holds = 0              # lanes taken out of an index because their handler was held

    # --- configuration -------------------------------------------------------------------
    def configure(self, queues: Iterable[QueueSpec], handlers: dict[str, HandlerFlow] | None,
                  now: float = 0.0) -> None:
        """Set queues and handlers as configured. Handlers not in `handlers`
        are not registered by the running code: their jobs are held
        (`quarantined`) until code that registers them is loaded. `handlers`
        None: every handler counts as registered (unit tests)."""
        for spec in queues:
            q = self.queue(spec.name)
            q.limiter = limiter(spec.rate, spec.burst, q.limiter)
            q.max_size = spec.max_size
            q.config_paused = spec.paused
            if not q.explicit:
                self._config_pause(q, now)
        if handlers is None:
            return
        self.known = frozenset(handlers)
        for name, gate in self.handlers.items():
            if name not in handlers:
                gate.known = False
                gate.refresh()
        for name, flow in handlers.items():
            gate = self.handler(name)
            gate.queue = flow.queue
            gate.limiter = limiter(flow.rate, flow.burst, gate.limiter)
            gate.limit = flow.max_concurrency
            gate.breaker.spec = flow.breaker
            gate.known = True
            self._changed(gate)

    def _config_pause(self, q: QueueGate, now: float) -> None:
        if q.config_paused and q.pause is None:
            q.pause = Pause(now, None, "paused in config", None)
        elif not q.config_paused and q.pause is not None and q.pause.reason == "paused in config":
            q.pause = None

    def queue(self, name: str) -> QueueGate:
        q = self.queues.get(name)
        if q is None:
            if self.shared:
                self._split()
            q = self.queues[name] = QueueGate(name)
        return q

    def _split(self) -> None:
        """A second queue: from now on each queue counts its own jobs. Jobs
        not yet given a lane are the one being admitted: `admit` counts it."""
        self.shared = False
        counts = self.default.counts = dict.fromkeys(C.STATUSES, 0)
        assert self._jobs is not None and len(self.queues) == 1
        for job in self._jobs():
            if job.lane is not None:
                counts[job.status] += 1

    def handler(self, name: str) -> HandlerGate:
        gate = self.handlers.get(name)
        if gate is None:
            gate = self.handlers[name] = HandlerGate(name)
            if self.known is not None and name not in self.known:
                gate.known = False
                gate.refresh()
        return gate

    def lane(self, queue: str, handler: str) -> Lane:
        q = self.queues.get(queue) or self.queue(queue)
        lane = q.lanes.get(handler)
        if lane is None:
            gate = self.handler(handler)
            lane = q.lanes[handler] = Lane(q, gate)
            gate.lanes.append(lane)
        return lane

    # --- jobs in and out -----------------------------------------------------------------------
    def push(self, job: Job) -> None:
        """Queue a pending job (or give back one that was taken)."""
        lane: Lane = job.lane
        token = job.qtoken = job.qtoken + 1
        key = -job.priority
        seq = job.seq
        _heappush(lane.heap, (key, seq, token, job))
        head = lane.head
        if head is None:
            if not lane.handler.shut:
                lane.mark += 1
                lane.head = (key, seq)
                _heappush(lane.queue.index, (key, seq, lane.mark, lane))
        elif key < head[0] or (key == head[0] and seq < head[1]):
            lane.mark += 1
            lane.head = (key, seq)
            _heappush(lane.queue.index, (key, seq, lane.mark, lane))

    def _best(self, q: QueueGate, now: float) -> Lane | None:
        """The lane whose head is the queue's best job that may start now, its
        live index entry at the top of the index; None if there is none."""
        index = q.index
        while index:
            key, seq, mark, lane = index[0]
            if mark != lane.mark:                 # superseded entry
                _heappop(index)
                continue
            gate = lane.handler
            if gate.shut or gate.checks and gate.blocked(now) is not None:
                self._hold_lane(lane, now)
                _heappop(index)
                continue
            job = lane.top()
            if job is None:
                lane.head = None
                _heappop(index)
                continue
            if job.seq != seq or -job.priority != key:    # its head changed: re-rank it
                lane.mark += 1
                lane.head = (-job.priority, job.seq)
                _heapreplace(index, (-job.priority, job.seq, lane.mark, lane))
                continue
            return lane
        return None

    def pop(self, q: QueueGate | None = None, now: float = 0.0) -> Job | None:
        """The next job of queue `q` (default: `default`) that may start at
        `now`, taken off; None if the queue is held or has none."""
        if q is None:
            q = self.default
        if q.pause is not None or (q.limiter is not None and q.blocked(now) is not None):
            if q.pause is None:
                self._limited(q, now)
            return None
        index = q.index
        # The usual case, inlined (`_best` is the general one): the best
        # head's lane may start and its head entry is the live one.
        if not index:
            return None
        key, seq, mark, lane = index[0]
        heap = lane.heap
        gate = lane.handler
        if mark == lane.mark and not gate.shut and not gate.checks and heap:
            if len(index) == 1:
                return self._pop_only(lane, index)
            entry = heap[0]
            job = entry[3]
            if entry[1] != seq or job.qtoken != entry[2] or job.status != _PENDING:
                best = self._best(q, now)            # stale entries: the general way
                if best is None:
                    return None
                lane, heap = best, best.heap
        else:
            best = self._best(q, now)
            if best is None:
                return None
            lane, heap = best, best.heap
        job = _heappop(heap)[3]
        while heap:                                   # the lane's next live job
            entry = heap[0]
            nxt = entry[3]
            if nxt.status == _PENDING and nxt.qtoken == entry[2]:
                lane.mark += 1
                head = lane.head = (entry[0], entry[1])
                _heapreplace(index, (head[0], head[1], lane.mark, lane))
                return job
            _heappop(heap)
        lane.head = None
        _heappop(index)
        return job

    @staticmethod
    def _pop_only(lane: Lane, index: list[Any]) -> Job | None:
        """`pop` when `lane` is the only one of its queue with pending jobs
        (one busy handler: the usual case). Its heap's top is the queue's
        best whatever its index entry says, so the entry and `lane.head` are
        left as they were: they can only be better than the lane's real head
        (its jobs leave in order), and `_best` re-ranks such an entry when it
        meets one; `push` indexes a new job that beats the recorded head."""
        heap = lane.heap
        while heap:
            entry = _heappop(heap)
            job: Job = entry[3]
            if job.status == _PENDING and job.qtoken == entry[2]:
                if not heap:
                    lane.head = None
                    _heappop(index)
                return job
        lane.head = None
        _heappop(index)
        return None

    def peek(self, q: QueueGate | None = None, now: float = 0.0) -> Job | None:
        """The job `pop` would give, left in place."""
        if q is None:
            q = self.default
        if q.blocked(now) is not None:
            return None
        lane = self._best(q, now)
        return None if lane is None else lane.top()

    def _hold_lane(self, lane: Lane, now: float) -> None:
        """The lane's handler is held: it leaves the index (it comes back when
        the hold ends); a hold that ends by itself is noted as a wake-up."""
        lane.head = None
        self.holds += 1
        gate = lane.handler
        if not gate.shut:
            if gate.rate_since is None:
                gate.rate_since = now
            self._wake_at(gate.wakes_at(), gate)

    def _limited(self, q: QueueGate, now: float) -> None:
        if q.rate_since is None:
            q.rate_since = now
        assert q.limiter is not None
        self._wake_at(q.limiter.next_at(), q)

    def _wake_at(self, at: float, gate: HandlerGate | QueueGate) -> None:
        """Note that `gate`'s hold ends at `at` (once: a gate already due to
        wake by then is not noted again)."""
        if gate.waking is not None and gate.waking <= at:
            return
        gate.waking = at
        self._wake_n += 1
        _heappush(self.wakeups, (at, self._wake_n, gate))

    def next_wakeup(self) -> float | None:
        return self.wakeups[0][0] if self.wakeups else None

    def release_due(self, now: float) -> bool:
        """Holds that ended by `now` let their jobs compete again; True if any did."""
        woke = False
        wakeups = self.wakeups
        while wakeups and wakeups[0][0] <= now:
            at, _, gate = _heappop(wakeups)
            if gate.waking != at:
                continue                  # superseded by an earlier wake-up
            gate.waking = None
            woke = True
            if gate.blocked(now) != RATE_LIMITED:
                gate.rate_since = None
            if isinstance(gate, HandlerGate):
                self._reopen(gate)        # still held: the next pop holds it again
        return woke

    def _reopen(self, gate: HandlerGate) -> None:
        """Put the handler's lanes that left the index back in it."""
        if gate.shut:
            return
        for lane in gate.lanes:
            if lane.head is None:
                job = lane.top()
                if job is not None:
                    lane.mark += 1
                    lane.head = (-job.priority, job.seq)
                    _heappush(lane.queue.index, (-job.priority, job.seq, lane.mark, lane))

    def _changed(self, gate: HandlerGate) -> None:
        gate.refresh()
        self._reopen(gate)

    # --- status changes (Lifecycle tells every one) ---------------------------------------------
    def admit(self, job: Job) -> None:
        """A job enters the table with its status (its lane may be set
        already: the submit path caches a handler's lane in its own queue)."""
        lane = job.lane
        if lane is None:
            lane = job.lane = self.lane(job.queue, job.handler)
        status = job.status
        if not self.shared:
            lane.queue.counts[status] += 1
        if status == _PENDING:
            lane.pending += 1
            # `push`, inlined: a new job (most submits)
            token = job.qtoken = job.qtoken + 1
            key = -job.priority
            seq = job.seq
            _heappush(lane.heap, (key, seq, token, job))
            head = lane.head
            if head is None:
                if not lane.handler.shut:
                    lane.mark += 1
                    lane.head = (key, seq)
                    _heappush(lane.queue.index, (key, seq, lane.mark, lane))
            elif key < head[0] or (key == head[0] and seq < head[1]):
                lane.mark += 1
                lane.head = (key, seq)
                _heappush(lane.queue.index, (key, seq, lane.mark, lane))
        elif status == _RUNNING:
            self._run(lane.handler, 1)

    def moved(self, job: Job, old: str, new: str) -> None:
        """A job's status changed from `old` to `new` ("" for none: it left).
        The hot path (pending → running → completed): kept flat."""
        lane: Lane = job.lane
        if not self.shared:
            counts = lane.queue.counts
            if old:
                counts[old] -= 1
            if new:
                counts[new] += 1
        if old == _PENDING:
            lane.pending -= 1
        elif old == _RUNNING:
            gate = lane.handler
            gate.running -= 1
            if gate.limit or gate.breaker.trial is not None:
                if gate.breaker.trial == job.id:     # the trial ended: its outcome decides
                    gate.breaker.trial = None
                self._changed(gate)
        if new == _PENDING:
            lane.pending += 1
            self.push(job)
        elif new == _RUNNING:
            gate = lane.handler
            gate.running += 1
            if gate.limit:
                self._changed(gate)

    def _run(self, gate: HandlerGate, n: int) -> None:
        gate.running += n
        if gate.limit:
            self._changed(gate)

    def took(self, job: Job, ts: float) -> None:
        """A job started at `ts` (its start record): one start off the limits."""
        lane: Lane = job.lane
        gate = lane.handler
        if gate.breaker.state != CLOSED:
            gate.breaker.started(job.id, ts)
            gate.refresh()
        lim = gate.limiter
        if lim is not None:
            lim.take(ts)
        lim = lane.queue.limiter
        if lim is not None:
            lim.take(ts)

    def attempt_ended(self, job: Job, ts: float, failed: bool, error: str | None,
                      crashed: bool) -> None:
        """An attempt of the job ended (one the breaker counts)."""
        b = job.lane.handler.breaker
        if failed:
            b.ended(ts, True, error)
        else:                                   # the hot path: Breaker.ended, inlined
            slot = int(ts * b.per_slot)
            if slot != b.slot:
                b.advance(slot)
            b.calls[b.at] += 1
            b.streak = 0
        if crashed or b.crash_jobs:
            b.crashed(job.id if crashed else None)

    # --- breakers and quarantine (their records) ---------------------------------------------
    def breaker_open(self, handler: str, ts: float, cooldown: float, error: str | None) -> None:
        gate = self.handler(handler)
        gate.breaker.open(ts, cooldown)
        if error is not None:
            gate.breaker.last_error = error
        gate.refresh()

    def breaker_close(self, handler: str) -> None:
        gate = self.handler(handler)
        gate.breaker.close()
        self._changed(gate)

    def breaker_restore(self, handler: str, state: str, opened_at: float | None, until: float,
                        cooldown: float, trips: list[float], streak: int) -> None:
        """A breaker's state from a snapshot."""
        b = self.handler(handler).breaker
        b.state = OPEN if state != CLOSED else CLOSED     # a trial in flight did not survive
        b.opened_at, b.until, b.cooldown, b.streak = opened_at, until, cooldown, streak
        b.trips.extend(trips)
        self.handler(handler).refresh()

    def quarantine(self, handler: str, reason: str, since: float) -> None:
        gate = self.handler(handler)
        gate.quarantine = (reason, since)
        gate.refresh()

    def release(self, handler: str) -> bool:
        """Lift a quarantine; the breaker closes and forgets its trips. True if it was quarantined."""
        gate = self.handler(handler)
        was = gate.quarantine is not None
        gate.quarantine = None
        gate.breaker.close()
        gate.breaker.reset_trips()
        self._changed(gate)
        return was

    # --- pauses and holds -----------------------------------------------------------------------
    def pause(self, kind: str, name: str, pause: Pause) -> None:
        if kind == "queue":
            q = self.queue(name)
            q.pause = pause
            q.explicit = True
        else:
            gate = self.handler(name)
            gate.pause = pause
            gate.refresh()

    def resume(self, kind: str, name: str) -> bool:
        """Lift a pause; True if there was one."""
        if kind == "queue":
            q = self.queue(name)
            was = q.pause is not None
            q.pause = None
            q.explicit = True
            return was
        gate = self.handler(name)
        was = gate.pause is not None
        gate.pause = None
        self._changed(gate)
        return was

    def rate_hold(self, handler: str, since: float, until: float) -> None:
        """`RateLimited(after)`: the handler starts nothing before `until`."""
        gate = self.handler(handler)
        if until > gate.hold_until:
            gate.hold_until = until
            gate.hold_since = since
            gate.refresh()
            self._wake_at(until, gate)

    def restore_limiter(self, kind: str, name: str, tat: float) -> None:
        """A limiter's state from a snapshot (ignored if it has no limit now)."""
        gate = self.queues.get(name) if kind == "queue" else self.handlers.get(name)
        lim = gate.limiter if gate is not None else None
        if lim is not None and tat > lim.tat:
            lim.tat = tat

    def snapshot(self) -> Iterator[list[Any]]:
        """Records that rebuild the gates' state: pauses (and queues resumed
        at runtime, which wins over their config), limiters, rate holds."""
        for q in self.queues.values():
            if q.explicit:
                p = q.pause
                yield (R.pause("queue", q.name, p.since, p.until, p.reason, p.by_uid)
                       if p is not None else R.resume("queue", q.name, 0.0))
            if q.limiter is not None and q.limiter.tat > -math.inf:
                yield [R.LIMITER, "queue", q.name, q.limiter.tat]
        for gate in self.handlers.values():
            p = gate.pause
            if p is not None:
                yield R.pause("handler", gate.name, p.since, p.until, p.reason, p.by_uid)
            if gate.limiter is not None and gate.limiter.tat > -math.inf:
                yield [R.LIMITER, "handler", gate.name, gate.limiter.tat]
            if gate.hold_until:
                yield [R.RATE_HOLD, gate.name, gate.hold_since, gate.hold_until]
            b = gate.breaker
            if b.state != CLOSED or b.trips or b.streak:
                yield [R.BREAKER_STATE, gate.name, b.state, b.opened_at, b.until, b.cooldown,
                       list(b.trips), b.streak]
            if gate.quarantine is not None:
                yield [R.QUARANTINE, gate.name, gate.quarantine[1], gate.quarantine[0], None]

    def pauses(self) -> Iterator[tuple[str, str, Pause]]:
        for q in self.queues.values():
            if q.pause is not None and q.explicit:
                yield "queue", q.name, q.pause
        for gate in self.handlers.values():
            if gate.pause is not None:
                yield "handler", gate.name, gate.pause

    # --- what the views show ----------------------------------------------------------------------
    def hold_of(self, job: Job, now: float) -> Hold | None:
        """Why a pending job may not start now (None: it may, or it is not pending)."""
        if job.status != _PENDING:
            return None
        lane: Lane = job.lane
        return self.lane_hold(lane, now)

    def lane_hold(self, lane: Lane, now: float) -> Hold | None:
        gate, q = lane.handler, lane.queue
        if not gate.known:
            return Hold(QUARANTINED, None, None)
        if gate.quarantine is not None:
            return Hold(QUARANTINED, gate.quarantine[1], None)
        if gate.pause is not None:
            return Hold(HANDLER_PAUSED, gate.pause.since, gate.pause.until)
        if q.pause is not None:
            return Hold(QUEUE_PAUSED, q.pause.since, q.pause.until)
        b = gate.breaker
        if b.state != CLOSED and b.holds(now):
            return Hold(BREAKER_OPEN, b.opened_at, b.until if b.state == OPEN and now < b.until
                        else None)
        if gate.hold_until > now:
            return Hold(RATE_LIMITED, gate.hold_since, gate.hold_until)
        lim = gate.limiter
        if lim is not None and not lim.allows(now):
            return Hold(RATE_LIMITED, gate.rate_since, lim.next_at())
        lim = q.limiter
        if lim is not None and not lim.allows(now):
            return Hold(RATE_LIMITED, q.rate_since, lim.next_at())
        return None

    def held_counts(self, now: float) -> Iterator[tuple[str, str, str, int]]:
        """(queue, handler, reason, pending jobs held) for every held lane."""
        for q in self.queues.values():
            for lane in q.lanes.values():
                if lane.pending:
                    hold = self.lane_hold(lane, now)
                    if hold is not None:
                        yield q.name, lane.handler.name, hold.reason, lane.pending

    def order(self) -> list[Job]:
        """Every pending job that waits in a lane, by queue name, then in
        priority and FIFO order (holds ignored): a copy, for tests."""
        out: list[Job] = []
        for name in sorted(self.queues):
            entries = [e for lane in self.queues[name].lanes.values() for e in lane.heap
                       if e[3].status == _PENDING and e[3].qtoken == e[2]]
            out += [e[3] for e in sorted(entries, key=lambda e: (e[0], e[1]))]
        return out

    def __len__(self) -> int:
        """Heap entries held, dead ones included (an upper bound of the live ones)."""
        return sum(len(lane.heap) for q in self.queues.values() for lane in q.lanes.values())

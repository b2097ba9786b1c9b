"""What the alert rules read, taken from the daemon's parts (`AlertSources`).

Nothing here is on the hot path: dead letters are counted by sampling the
Recorder's per-handler counter at each evaluation (no listener per status
change), stalled queues come from the Recorder's oldest-pending index, the
storage state from the journal's last write or fsync outcome, and quarantines
and breakers from the handlers' gates (jobd/core/flow.py), read, never changed.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from jobd.core.breaker import CLOSED


class Journal(Protocol):
    @property
    def failure(self) -> str | None: ...          # jobd/storage/wal.py Journal


class PendingAges(Protocol):
    @property
    def dead_lettered(self) -> Mapping[str, int]: ...   # handler -> jobs dead-lettered so far

    def oldest_pending_age(self, queue: str, now: float) -> float: ...


class Gate(Protocol):
    @property
    def paused(self) -> bool: ...


class Lane(Protocol):
    @property
    def pending(self) -> int: ...


class BreakerLike(Protocol):
    @property
    def opened_at(self) -> float | None: ...
    def current(self, now: float) -> str: ...


class HandlerGate(Protocol):
    """A handler's flow state (jobd/core/flow.py HandlerGate)."""

    @property
    def known(self) -> bool: ...                  # the running code registers it
    @property
    def quarantine(self) -> tuple[str, float] | None: ...   # (reason, since)
    @property
    def breaker(self) -> BreakerLike: ...
    @property
    def lanes(self) -> Sequence[Lane]: ...


def quarantined(gates: Mapping[str, HandlerGate]) -> dict[str, str]:
    """Quarantined handlers and why; a handler the running code does not
    register counts while it has jobs waiting (they are held quarantined)."""
    out = {}
    for name, gate in list(gates.items()):
        if gate.quarantine is not None:
            out[name] = gate.quarantine[0]
        elif not gate.known and any(lane.pending for lane in gate.lanes):
            out[name] = "the running code does not register this handler; its jobs are held"
    return out


class BreakerOutages:
    """Since when each handler's breaker has been open or half-open without
    closing. A failed trial re-opens a breaker (a new `opened_at`); the outage
    goes on, so its start is kept here from the first evaluation that saw it.
    After a restart the count starts from the breaker's last opening."""

    def __init__(self) -> None:
        self.since: dict[str, float] = {}

    def open(self, gates: Mapping[str, HandlerGate], now: float) -> dict[str, float]:
        current = {}
        for name, gate in list(gates.items()):
            b = gate.breaker
            if b.current(now) != CLOSED:
                current[name] = self.since.get(name, b.opened_at if b.opened_at else now)
        self.since = current
        return dict(current)


class DeadLetterWindow:
    """Dead letters per handler within a trailing window, from samples of a
    running total taken at each evaluation (accurate to one evaluation
    interval). Samples older than the widest window asked for are dropped."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, dict[str, int]]] = deque()

    def counts(self, totals: Mapping[str, int], now: float, window_s: float) -> dict[str, int]:
        self.samples.append((now, dict(totals)))
        while len(self.samples) > 1 and self.samples[1][0] <= now - window_s:
            self.samples.popleft()
        base = self.samples[0][1]
        return {h: n - base.get(h, 0) for h, n in totals.items() if n > base.get(h, 0)}


class DaemonSources:
    """`AlertSources` over the daemon's parts."""

    def __init__(self, *, journal: Journal, recorder: PendingAges, queues: Mapping[str, Gate],
                 handlers: Mapping[str, HandlerGate], clock: Callable[[], float]) -> None:
        self.journal = journal
        self.recorder = recorder
        self.queues = queues
        self.handlers = handlers
        self.clock = clock
        self.window = DeadLetterWindow()
        self.outages = BreakerOutages()

    def quarantined(self) -> dict[str, str]:
        return quarantined(self.handlers)

    def breakers_open(self) -> dict[str, float]:
        return self.outages.open(self.handlers, self.clock())

    def storage_error(self) -> str | None:
        return self.journal.failure

    def dead_letters(self, window_s: float) -> dict[str, int]:
        return self.window.counts(self.recorder.dead_lettered, self.clock(), window_s)

    def stalled_queues(self, threshold_s: float) -> dict[str, float]:
        """Queues whose longest-waiting due pending job has waited over
        `threshold_s`. A paused queue is skipped (an operator held it); jobs
        held for other reasons still count (the rule's documented limit)."""
        now = self.clock()
        out = {}
        for name, gate in list(self.queues.items()):
            if gate.paused:
                continue
            age = self.recorder.oldest_pending_age(name, now)
            if age > threshold_s:
                out[name] = age
        return out

"""What the alert rules read, taken from the daemon's parts (`AlertSources`).

Nothing here is on the hot path: dead letters are counted by sampling the
Recorder's per-handler counter at each evaluation (no listener per status
change), stalled queues come from the Recorder's oldest-pending index, and
the storage state from the journal's last write or fsync outcome.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Protocol


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
    """`AlertSources` over the daemon's parts. `quarantined` and
    `breakers_open` come from whoever owns the handler states."""

    def __init__(self, *, journal: Journal, recorder: PendingAges, queues: Mapping[str, Gate],
                 quarantined: Callable[[], dict[str, str]],
                 breakers_open: Callable[[], dict[str, float]],
                 clock: Callable[[], float]) -> None:
        self.journal = journal
        self.recorder = recorder
        self.queues = queues
        self.quarantined = quarantined
        self.breakers_open = breakers_open
        self.clock = clock
        self.window = DeadLetterWindow()

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

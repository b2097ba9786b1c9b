"""The delay and retry timer: one loop timer for the earliest due job.

Scheduled jobs (`delay`, `run_at`) and retries wait in the store's timer
queue; this arms one loop timer for the earliest of them and, when it fires,
moves every job that is due into the ready queue (`promote_due`). It is
re-armed at the end of every loop turn (`arm`), which costs one peek when
nothing changed.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from jobd.storage.store import Store


class EarliestTimer:
    """One loop timer armed for the earliest time it has been given: `arm(t)`
    with a later time than the one armed costs a comparison; `fire` runs when
    it goes off (then nothing is armed until the next `arm`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float],
                 fire: Callable[[], None]) -> None:
        self.loop = loop
        self.clock = clock
        self.fire = fire
        self.at: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, due: float | None) -> None:
        if due is None or (self.at is not None and self.at <= due):
            return
        if self._handle is not None:
            self._handle.cancel()
        self.at = due
        self._handle = self.loop.call_later(max(0.0, due - self.clock()), self._fired)

    def _fired(self) -> None:
        self._handle = None
        self.at = None
        self.fire()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self.at = None


class DueTimer:
    def __init__(self, *, store: Store, loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float], wake: Callable[[], None]) -> None:
        self.store = store
        self.clock = clock
        self.wake = wake              # jobs became pending: run the daemon's turn
        self.timer = EarliestTimer(loop, clock, self._fire)

    def arm(self) -> None:
        """Arm the loop timer for the earliest scheduled or retrying job,
        unless it is armed for that time or earlier already."""
        self.timer.arm(self.store.next_due())

    def _fire(self) -> None:
        if self.store.promote_due(self.clock()):
            self.wake()
        self.arm()

    def cancel(self) -> None:
        self.timer.cancel()

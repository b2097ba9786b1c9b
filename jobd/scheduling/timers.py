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


class DueTimer:
    def __init__(self, *, store: Store, loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float], wake: Callable[[], None]) -> None:
        self.store = store
        self.loop = loop
        self.clock = clock
        self.wake = wake              # jobs became pending: run the daemon's turn
        self._timer: asyncio.TimerHandle | None = None
        self._due: float | None = None

    def arm(self) -> None:
        """Arm the loop timer for the earliest scheduled or retrying job,
        unless it is armed for that time or earlier already."""
        due = self.store.next_due()
        if due is None or (self._due is not None and self._due <= due):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._due = due
        self._timer = self.loop.call_later(max(0.0, due - self.clock()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._due = None
        if self.store.promote_due(self.clock()):
            self.wake()
        self.arm()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

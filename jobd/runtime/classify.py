"""Grouping, after a restart, the failed jobs replay left unclassified.

Replay puts each failed and dead-letter job on the failure groups' backlog
instead of classifying its error (jobd/core/failures.py): a million dead
letters would otherwise add seconds before the daemon serves. `Classifier`
works the backlog off once the daemon runs, a few milliseconds per loop
turn, like a bulk op, and answers those waiting for every group to be known
(a `failure_groups` request that came early) when it is done.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from jobd.core.failures import FailureGroups

log = logging.getLogger("jobd.classify")

SLICE_S = 0.004            # work per loop turn, at most (then the loop answers others)
CHUNK = 256                # jobs between two looks at the clock


class Classifier:
    def __init__(self, *, groups: FailureGroups, loop: asyncio.AbstractEventLoop) -> None:
        self.groups = groups
        self.loop = loop
        self.waiting: list[Callable[[], None]] = []
        self.running = False

    def start(self) -> None:
        """Begin working the backlog off (nothing to do: nothing happens)."""
        if self.groups.pending and not self.running:
            self.running = True
            self._started = time.monotonic()
            self._total = self.groups.pending
            self.loop.call_soon(self._slice)

    def when_done(self, fn: Callable[[], None]) -> None:
        """Call `fn` once every failed job is in its group (at once if it is)."""
        if not self.groups.pending:
            fn()
            return
        self.waiting.append(fn)
        self.start()

    def _slice(self) -> None:
        end = time.perf_counter() + SLICE_S
        groups = self.groups
        while groups.catch_up(CHUNK) and time.perf_counter() < end:
            pass
        if groups.pending:
            self.loop.call_soon(self._slice)
            return
        self.running = False
        log.info("grouped %d failed job(s) by failure in %.2fs", self._total,
                 time.monotonic() - self._started)
        waiting, self.waiting = self.waiting, []
        for fn in waiting:
            fn()

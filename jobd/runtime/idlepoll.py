"""Adaptive busy polling: how long the loop keeps polling before it sleeps.

Waking a sleeping process costs tens of microseconds on a VM whose guest does
not halt-poll (an IPI, a VM exit, then Python on cold caches): more than jobd
spends on a submit. When the next request is about to arrive, polling for it
is cheaper than sleeping; when it is not, polling only burns CPU.

`IdlePoller` learns which case it is in, the way the kernel's haltpoll cpuidle
governor does for a vCPU: each idle gap (end of one tick to the start of the
next) is compared with the current window.

- caught (gap within the window): the window stays;
- missed but the gap was short (within `max_window`): the window grows
  (doubles, at least `GROW_START`, at most `max_window`);
- the gap was long (beyond `max_window`): the window halves, down to 0.

So a client sending requests back to back finds the loop awake, while a
daemon whose requests come 1 ms apart polls for nothing (the window shrinks to
0 within a few requests). Waste is bounded by `max_window` per missed poll,
and misses shrink the window geometrically.

The daemon only learns from, and polls during, waits with no job running
(jobd/daemon.py `_keep_polling`): on a 2-CPU machine a polling loop took the
CPU that a job's worker and the client waiting for it needed, and idle
submit→complete got ~20 % slower (bench/RESULTS.md).
"""
from __future__ import annotations

GROW_START = 50e-6   # first window after a short gap (s), as haltpoll's grow_start
FLOOR = 2e-6         # a window below this is 0: polling that briefly never catches anything


class IdlePoller:
    __slots__ = ("max_window", "window", "caught", "missed", "_idle_from")

    def __init__(self, max_window: float) -> None:
        self.max_window = max_window
        self.window = 0.0
        self.caught = 0        # the next event came within the window
        self.missed = 0        # polled the whole window for nothing
        self._idle_from = -1.0

    def idle(self, now: float) -> float:
        """The loop is about to go idle at `now`; returns how long to poll (s)."""
        self._idle_from = now
        return self.window

    def forget(self) -> None:
        """The coming wait is not one to learn from (a job is running)."""
        self._idle_from = -1.0

    def woke(self, now: float) -> None:
        """Work arrived at `now`: adjust the window to the wait that just ended."""
        if self._idle_from < 0.0:
            return
        gap = now - self._idle_from
        self._idle_from = -1.0
        window = self.window
        if gap <= window:
            self.caught += 1
            return
        if window:
            self.missed += 1
        if gap <= self.max_window:
            self.window = min(max(window * 2.0, GROW_START), self.max_window)
        else:
            window *= 0.5
            self.window = window if window >= FLOOR else 0.0

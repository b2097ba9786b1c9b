"""How the daemon uses Python's cyclic garbage collector.

Jobs are long-lived tracked objects; the default thresholds make the GC rescan
all of them again and again while a queue grows (a full collection with
200,000 pending jobs took ~120 ms here, nine of them per 200,000 submits:
~40 % of submit CPU; bench/RESULTS.md). Job data is acyclic (JSON values and
heap tuples), so reference counting frees it; the cyclic GC only has to find
the rare cycles the loop itself makes. So:

- replay runs with the GC off, and what it built is frozen (`gc.freeze()`):
  never scanned again, still freed by reference counting when deleted;
- young generations are collected in larger batches, automatic full
  collections are effectively off;
- a full collection runs every `FULL_INTERVAL` seconds from housekeeping,
  so cyclic garbage that reached the old generation is still reclaimed.
"""
from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("jobd.gc")

THRESHOLDS = (1_000, 10, 1_000_000)   # young batches as small as the default; no automatic full GC
FULL_INTERVAL = 600.0


class GcPolicy:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last_full = clock()

    def start(self) -> None:
        """After recovery: freeze what replay built and set the thresholds."""
        gc.freeze()
        gc.set_threshold(*THRESHOLDS)
        self.last_full = self.clock()

    def maybe_collect(self) -> None:
        """Called from housekeeping: a full collection when one is due."""
        now = self.clock()
        if now - self.last_full < FULL_INTERVAL:
            return
        self.last_full = now
        started = time.perf_counter()
        found = gc.collect()
        log.debug("full GC: %d unreachable objects in %.1f ms", found,
                  (time.perf_counter() - started) * 1e3)

"""One `metrics` call every few seconds per web process, shared by every browser.

The latest sample goes to every event stream as `event: stats`; one sample
every `history_every` seconds is kept in a ring covering the last hour
(`/api/overview/history`). When jobd is down a sample says so
(`available: false`), and the poller keeps trying.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from jobd_client import protocol as P
from jobd_client.errors import JobdError

log = logging.getLogger("jobd.web")

POLL_S = 2.0
HISTORY_EVERY_S = 5.0
HISTORY_S = 3600.0
Fetch = Callable[[], Awaitable[dict[str, Any]]]
Sink = Callable[[dict[str, Any]], None]


def sample_of(metrics: dict[str, Any], now: float) -> dict[str, Any]:
    """The figures the overview charts: counts per status, workers, throughput,
    the totals failure rates are computed from, and the WAL's fsync health."""
    queue = metrics.get("queue", {})
    workers = metrics.get("workers", {})
    wal = metrics.get("wal", {})
    return {
        "t": round(now, 3),
        "available": True,
        "counts": {s: queue.get(s, 0) for s in P.STATUSES},
        "workers": {k: workers.get(k, 0) for k in ("total", "busy", "idle", "healthy")},
        "throughput": metrics.get("throughput", {}),
        "totals": metrics.get("totals", {}),
        "wal": {"fsyncs": wal.get("fsyncs", 0), "bytes": wal.get("bytes", 0),
                "bytes_written": wal.get("bytes_written", 0)},
    }


def with_rates(sample: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """Add what changed since `before`: completions per second, the share of
    finished jobs that failed, fsyncs and WAL bytes per second."""
    if before is None or not before.get("available"):
        sample.update(completed_per_s=None, failure_rate=None, fsyncs_per_s=None, wal_bytes_per_s=None)
        return sample
    dt = max(sample["t"] - before["t"], 1e-6)
    now, then = sample["totals"], before["totals"]
    done = max(0, now.get("completed", 0) - then.get("completed", 0))
    bad = max(0, now.get("failed", 0) - then.get("failed", 0)
              + now.get("dead_letter", 0) - then.get("dead_letter", 0))
    sample["completed_per_s"] = round(done / dt, 3)
    sample["failure_rate"] = round(bad / (done + bad), 4) if done + bad > 0 else 0.0
    sample["fsyncs_per_s"] = round(max(0, sample["wal"]["fsyncs"] - before["wal"]["fsyncs"]) / dt, 3)
    sample["wal_bytes_per_s"] = round(
        max(0, sample["wal"]["bytes_written"] - before["wal"]["bytes_written"]) / dt, 1)
    return sample


def next_due(due: float | None, now: float, every: float) -> float:
    """When the next history sample is due: every `every` s on average whatever
    the polling period, and never a burst after a stall."""
    nxt = (now if due is None else due) + every
    return nxt if nxt > now else now + every


class Sampler:
    """The poller, the latest sample and the hour of history."""

    def __init__(self, fetch: Fetch, sink: Sink, poll_s: float = POLL_S,
                 history_every: float = HISTORY_EVERY_S, history_s: float = HISTORY_S) -> None:
        self.fetch = fetch
        self.sink = sink
        self.poll_s = poll_s
        self.history_every = history_every
        self.history: deque[dict[str, Any]] = deque(maxlen=int(history_s / history_every))
        self.latest: dict[str, Any] | None = None
        self.previous: dict[str, Any] | None = None
        self.history_due: float | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        while True:
            self.record(await self.sample())
            await asyncio.sleep(self.poll_s)

    async def sample(self) -> dict[str, Any]:
        now = time.time()
        try:
            return with_rates(sample_of(await self.fetch(), now), self.previous)
        except JobdError as e:
            return {"t": round(now, 3), "available": False, "error": e.message}

    def record(self, sample: dict[str, Any]) -> None:
        self.latest = sample
        self.sink(sample)
        if not sample.get("available"):
            self.previous = None        # a restarted daemon counts from 0: no rate across it
        if self.history_due is None or sample["t"] >= self.history_due:
            self.history.append(sample)
            if sample.get("available"):
                self.previous = sample
            self.history_due = next_due(self.history_due, sample["t"], self.history_every)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

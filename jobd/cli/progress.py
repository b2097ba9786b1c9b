"""Following one job until it ends, with a live display (`wait`, `submit --wait`).

The loop reads `status` for the display, then sleeps in `result(wait=TICK_S)`:
the daemon answers that at once when the job ends, so completion is seen
without delay while progress is sampled a few times a second.

On a terminal a single line is redrawn with `\\r` (status, bar, percentage,
elapsed, message); otherwise one plain line is printed per change, so logs of
a CI job read well.
"""
from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from jobd import constants as C
from jobd_client import Client, Job

from .tables import clip, clock, parse_iso, unicode_ok

TICK_S = 0.25
BAR_MAX = 30
BAR_MIN = 10
CLEAR_EOL = "\x1b[K"


class Display(Protocol):
    def update(self, job: Job) -> None: ...
    def finish(self) -> None: ...


def job_elapsed(job: Job, now: datetime | None = None) -> float:
    """Run time so far (or in total once ended); time queued before the job started."""
    now = now or datetime.now(UTC)
    started, created = parse_iso(job.started_at), parse_iso(job.created_at)
    if started is not None:
        end = parse_iso(job.completed_at) or now
        return (end - started).total_seconds()
    return (now - created).total_seconds() if created is not None else 0.0


def bar_line(job: Job, elapsed: float, width: int, frame: int = 0, fancy: bool = True) -> str:
    """One status line fitting `width`: `running [████░░░░]  40%  0:12  message`."""
    progress = job.progress or {}
    pct = progress.get("percentage")
    size = max(BAR_MIN, min(BAR_MAX, width - 40))
    bar = _bar(pct, size, frame, fancy, job.status == C.RUNNING and bool(progress))
    percent = f"{pct:3.0f}%" if pct is not None else "  --"
    head = f"{job.status or '?':<9} [{bar}] {percent}  {clock(elapsed)}"
    return clip(f"{head}  {_message(progress)}".rstrip(), width - 1)


def _bar(pct: float | None, size: int, frame: int, fancy: bool, moving: bool) -> str:
    full, empty = ("█", "░") if fancy else ("#", "-")
    if pct is None:  # no total: a block sweeping back and forth says "alive"
        if not moving:
            return empty * size
        pos = frame % (2 * size - 2) if size > 1 else 0
        pos = pos if pos < size else 2 * size - 2 - pos
        return empty * pos + full + empty * (size - pos - 1)
    done = round(size * max(0.0, min(100.0, pct)) / 100)
    return full * done + empty * (size - done)


def _message(progress: dict[str, Any]) -> str:
    if not progress:
        return ""
    count = f"{progress.get('current')}/{progress.get('total')}" if progress.get(
        "total") is not None else f"{progress.get('current')}"
    message = progress.get("message") or ""
    return f"{count} {message}".strip()


class BarDisplay:
    """Redraws one line in place on a terminal."""

    def __init__(self, out: TextIO, width: int) -> None:
        self.out, self.width = out, width
        self.fancy = unicode_ok(out)
        self.frame = 0
        self.drawn = False

    def update(self, job: Job) -> None:
        line = bar_line(job, job_elapsed(job), self.width, self.frame, self.fancy)
        self.out.write("\r" + line + CLEAR_EOL)
        self.out.flush()
        self.frame += 1
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            self.out.write("\n")
            self.out.flush()


class LineDisplay:
    """One plain line whenever the status or the progress changes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last: tuple[Any, ...] | None = None

    def update(self, job: Job) -> None:
        progress = job.progress or {}
        key = (job.status, progress.get("current"), progress.get("total"), progress.get("message"))
        if key == self.last:
            return
        self.last = key
        pct = progress.get("percentage")
        percent = f" {pct:.0f}%" if pct is not None else ""
        line = f"[{clock(job_elapsed(job))}] {job.status}{percent} {_message(progress)}"
        self.out.write(line.rstrip() + "\n")
        self.out.flush()

    def finish(self) -> None:
        pass


class NullDisplay:
    """For --json: nothing but the final object."""

    def update(self, job: Job) -> None:
        pass

    def finish(self) -> None:
        pass


def follow(client: Client, job_id: str, timeout: float | None,
           display: Display) -> dict[str, Any]:
    """Show the job until it ends or `timeout` s pass; return the `result` reply body."""
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            job = client.status(job_id)
            display.update(job)
            left = None if deadline is None else deadline - time.monotonic()
            if job.done or (left is not None and left <= 0):
                break
            client.result(job_id, wait=TICK_S if left is None else min(TICK_S, left))
    finally:
        display.finish()
    return client.result(job_id)

"""`jobd-cli top`: a live full-screen dashboard (docs/cli.md).

Each frame is fetched (`metrics`, `workers`, `queues`, `handlers`, the
newest failed and dead-lettered jobs), rendered to plain lines by pure functions, then drawn
over the previous frame on the terminal's alternate screen (cursor home,
clear to end of line): no curses needed. The tty is put in cbreak mode so
`q` quits without Enter; Ctrl-C quits too. The terminal is restored however
the loop ends.
"""
from __future__ import annotations

import argparse
import os
import select
import shutil
import termios
import time
import tty
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, TextIO

from jobd import constants as C
from jobd_client import Client, JobdError, UnknownOp
from jobd_client import protocol as P

from .commands import worker_table
from .context import Context
from .flow import queue_count
from .tables import Column, clip, duration, ellipsis, first_line, rate, short_time, table

ALT_SCREEN_ON, ALT_SCREEN_OFF = "\x1b[?1049h", "\x1b[?1049l"
CURSOR_HIDE, CURSOR_SHOW = "\x1b[?25l", "\x1b[?25h"
HOME, CLEAR_EOL, CLEAR_EOS = "\x1b[H", "\x1b[K", "\x1b[J"
QUIT_KEYS = frozenset("qQ")
RECENT_FAILURES = 5
ACTIVE = tuple(s for s in C.STATUSES if s not in C.TERMINAL)
FINISHED = tuple(s for s in C.STATUSES if s in C.TERMINAL)


@dataclass
class Snapshot:
    """Everything one frame shows; `error` is set when the last refresh failed."""

    version: str
    metrics: dict[str, Any] = field(default_factory=dict)
    workers: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    queues: list[dict[str, Any]] = field(default_factory=list)
    handlers: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "metrics": self.metrics, "workers": self.workers,
                "queues": self.queues, "handlers": self.handlers,
                "recent_failures": self.failures}


# --- fetching ------------------------------------------------------------------------------

def fetch(client: Client, version: str) -> Snapshot:
    metrics = client.metrics()
    return Snapshot(version, metrics, client.workers(),
                    recent_failures(client, metrics.get("queue") or {}),
                    views(client, P.OP_QUEUES), views(client, P.OP_HANDLERS))


def views(client: Client, op: str) -> list[dict[str, Any]]:
    """The `queues` or `handlers` list; empty from a daemon that lacks the op."""
    try:
        found = client.call(op).get(op)
    except UnknownOp:
        return []
    return [v for v in found if isinstance(v, dict)] if isinstance(found, list) else []


def recent_failures(client: Client, queue: dict[str, Any]) -> list[dict[str, Any]]:
    """The newest failed and dead-lettered jobs; `list` is in submit order, so read its tail."""
    jobs: list[dict[str, Any]] = []
    for status in (C.FAILED, C.DEAD_LETTER):
        total = int(queue.get(status) or 0)
        if total:
            offset = max(0, total - RECENT_FAILURES)
            jobs += client.call(P.OP_LIST, status=status, limit=RECENT_FAILURES, offset=offset)["jobs"]
    jobs.sort(key=lambda j: j.get("completed_at") or "", reverse=True)
    return jobs[:RECENT_FAILURES]


def refresh(client: Client, last: Snapshot) -> Snapshot:
    """A new snapshot, or the last one marked with the error (the daemon may come back)."""
    try:
        return fetch(client, last.version)
    except (JobdError, OSError) as exc:
        return Snapshot(last.version, last.metrics, last.workers, last.failures, last.queues,
                        last.handlers, str(exc))


# --- rendering (pure) ---------------------------------------------------------------------------

def render(snap: Snapshot, socket_path: str, width: int, height: int | None = None,
           mark: str = "~") -> list[str]:
    """The frame's lines, each at most `width` long, at most `height` of them."""
    top = [*_header(snap, socket_path, width, height is not None), "", *_queue(snap.metrics)]
    queues = ["", *queue_table(snap.queues, width, mark)] if snap.queues else []
    held = held_table(snap.handlers, snap.queues, width, mark)
    workers = ["", *worker_table(snap.workers, width, mark)] if snap.workers else ["", "no workers"]
    failed = failure_table(snap.failures, width, mark) if snap.failures else ["none"]
    failures = ["", "RECENT FAILURES", *failed]
    sections = [queues, ["", *held] if held else [], workers, failures]
    lines = top + _fit(sections, None if height is None else height - len(top))
    return [clip(line, width, mark) for line in lines[:height]]


def _header(snap: Snapshot, socket_path: str, width: int, live: bool) -> list[str]:
    left = f"jobd {snap.version}  {socket_path}  up {duration(snap.metrics.get('uptime_s'))}"
    right = datetime.now().strftime("%H:%M:%S") + ("  q: quit" if live else "")
    lines = [left + " " * max(2, width - len(left) - len(right)) + right]
    if snap.error:
        lines.append(f"!! refresh failed: {snap.error} (retrying)")
    return lines


def _queue(m: dict[str, Any]) -> list[str]:
    queue, workers, tput = m.get("queue") or {}, m.get("workers") or {}, m.get("throughput") or {}
    prio = queue.get("by_priority") or {}
    by_prio = "  ".join(f"{p}: {n}" for p, n in sorted(prio.items(), key=lambda kv: -int(kv[0])))
    return [
        *_counts("QUEUE", ACTIVE, queue), *_counts("FINISHED", FINISHED, queue),
        f"{'PRIORITY':<11}pending by priority  {by_prio or '-'}",
        f"{'THROUGHPUT':<11}" + "  ".join(f"{w} {rate(tput.get(w))}" for w in ("1m", "5m", "15m")),
        f"{'WORKERS':<11}" + "  ".join(f"{workers.get(k, 0)} {k}"
                                       for k in ("total", "busy", "idle", "healthy")),
    ]


def _counts(title: str, statuses: tuple[str, ...], queue: dict[str, Any]) -> list[str]:
    """Two lines: status names, and their counts right-aligned beneath."""
    names = "  ".join(statuses)
    counts = "  ".join(str(queue.get(s, 0)).rjust(len(s)) for s in statuses)
    return [f"{title:<11}{names}", f"{'':<11}{counts}"]


def _fit(sections: list[list[str]], room: int | None) -> list[str]:
    """The sections in order while they fit; the first that does not is cut, with
    a line saying so (the last one, recent failures, is cut silently), and those
    after it are left out."""
    out: list[str] = []
    for i, section in enumerate(sections):
        left = len(section) if room is None else room - len(out)
        if len(section) <= left:
            out += section
            continue
        if i == len(sections) - 1:
            out += section[:max(0, left)]
        elif left > 0:
            keep = left - 1
            out += [*section[:keep], f"... {len(section) - keep} more line(s); enlarge the terminal"]
        break
    return out


QUEUE_COLUMNS = (Column("QUEUE", flex=True), Column("PAUSED"), Column("PENDING", right=True),
                 Column("HELD", right=True), Column("RUNNING", right=True),
                 Column("WORKERS", right=True))


def queue_table(queues: list[dict[str, Any]], width: int, mark: str = "~") -> list[str]:
    """Per queue: paused (and until when), pending, held, running, workers."""
    rows = [(q.get("name"), _paused(q.get("paused")), queue_count(q, C.PENDING),
             queue_count(q, "held"), queue_count(q, C.RUNNING),
             "-" if q.get("workers") is None else q.get("workers")) for q in queues]
    return table(QUEUE_COLUMNS, rows, width, mark)


def _paused(paused: Any) -> str:
    if not paused:
        return "no"
    until = paused.get("until") if isinstance(paused, dict) else None
    return f"until {short_time(until)}" if until else "yes"


HELD_COLUMNS = (Column("HELD HANDLER", flex=True, dotted=True), Column("STATE"),
                Column("HELD", right=True), Column("WHY", flex=True))


def held_table(handlers: list[dict[str, Any]], queues: list[dict[str, Any]], width: int,
               mark: str = "~") -> list[str]:
    """Handlers that hold jobs back or are not in their normal state, and why;
    no lines when there are none (or the daemon does not say)."""
    paused_queues = {q.get("name") for q in queues if q.get("paused")}
    shown = [h for h in handlers
             if h.get("state") not in (None, "ok") or (h.get("held") or 0) > 0]
    rows = [(h.get("name"), h.get("state") or "-", h.get("held", "-"), hold_why(h, paused_queues))
            for h in sorted(shown, key=lambda h: str(h.get("name")))]
    return table(HELD_COLUMNS, rows, width, mark) if rows else []


def hold_why(handler: dict[str, Any], paused_queues: set[Any]) -> str:
    """The operator's reason (a pause, a quarantine), else the handler's queue
    being paused, else nothing known."""
    for key in ("quarantine", "paused"):
        hold = handler.get(key)
        if isinstance(hold, dict):
            return f"{key}: {hold.get('reason')}" if hold.get("reason") else key
    breaker = handler.get("breaker")
    if isinstance(breaker, dict) and breaker.get("state") in ("open", "half_open"):
        trial = breaker.get("next_trial_at")
        when = f", next trial {short_time(trial)}" if trial else ", trial running"
        return f"breaker {breaker.get('state')} ({breaker.get('failures')} failures{when})"
    queue = handler.get("queue")
    return f"queue {queue} paused" if queue in paused_queues else "-"


FAILURE_COLUMNS = (Column("ENDED"), Column("STATUS"), Column("ID"),
                   Column("HANDLER", flex=True, dotted=True), Column("ERROR", flex=True))


def failure_table(jobs: list[dict[str, Any]], width: int, mark: str = "~") -> list[str]:
    rows = [(short_time(j.get("completed_at")), j.get("status"), j.get("id"), j.get("handler"),
             first_line(j.get("error"))) for j in jobs]
    return table(FAILURE_COLUMNS, rows, width, mark)


# --- the terminal ------------------------------------------------------------------------------------

class Screen:
    """Alternate screen + cbreak input for the dashboard's lifetime; restores both on exit."""

    def __init__(self, out: TextIO, inp: TextIO) -> None:
        self.out = out
        self.in_fd = inp.fileno() if _isatty(inp) else None
        self._saved: list[Any] | None = None

    def __enter__(self) -> Screen:
        if self.in_fd is not None:
            self._saved = termios.tcgetattr(self.in_fd)
            tty.setcbreak(self.in_fd)
        self.out.write(ALT_SCREEN_ON + CURSOR_HIDE)
        self.out.flush()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.out.write(CURSOR_SHOW + ALT_SCREEN_OFF)
        self.out.flush()
        if self.in_fd is not None and self._saved is not None:
            termios.tcsetattr(self.in_fd, termios.TCSADRAIN, self._saved)

    def size(self) -> tuple[int, int]:
        cols, rows = shutil.get_terminal_size((80, 24))
        try:
            real = os.get_terminal_size(self.out.fileno())
            cols, rows = real.columns or cols, real.lines or rows
        except (OSError, ValueError):
            pass
        return cols, rows

    def draw(self, lines: list[str]) -> None:
        # No newline after the last line: on the bottom row it would scroll the screen.
        self.out.write(HOME + (CLEAR_EOL + "\n").join(lines) + CLEAR_EOL + CLEAR_EOS)
        self.out.flush()

    def wait_key(self, timeout: float) -> bool:
        """Wait up to `timeout` s for input; True when a quit key was pressed.

        Any other key returns early too, so it acts as "refresh now".
        """
        if self.in_fd is None:
            time.sleep(timeout)  # no keyboard: just the refresh interval
            return False
        ready, _, _ = select.select([self.in_fd], [], [], timeout)
        if not ready:
            return False
        keys = os.read(self.in_fd, 64).decode(errors="replace")
        return not keys or any(k in QUIT_KEYS for k in keys)  # EOF on the tty: quit


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --- the command -----------------------------------------------------------------------------------------

def cmd_top(ctx: Context, args: argparse.Namespace) -> int:
    version = str(ctx.client.hello().get("version"))
    snap = fetch(ctx.client, version)  # before the screen switch: errors print normally
    if ctx.json:
        ctx.emit(snap.as_json())
        return C.CLI_OK
    if args.once or not ctx.tty:
        ctx.lines(render(snap, ctx.socket_path, ctx.width, None, ellipsis(ctx.out)))
        return C.CLI_OK
    return _live(ctx, snap, args.interval)


def _live(ctx: Context, snap: Snapshot, interval: float) -> int:
    mark = ellipsis(ctx.out)
    try:
        with Screen(ctx.out, ctx.inp) as screen:
            while True:
                cols, rows = screen.size()
                screen.draw(render(snap, ctx.socket_path, cols, rows, mark))
                if screen.wait_key(interval):
                    return C.CLI_OK
                snap = refresh(ctx.client, snap)
    except KeyboardInterrupt:
        return C.CLI_OK

"""What a job prints and logs, captured per job in the worker process.

While a job runs, `sys.stdout` and `sys.stderr` are replaced by a stream
that sends what is written to the daemon (`LOG` frames, labelled with the
job's id), and logging handlers that write to the process's own stdout or
stderr are pointed at it too; both are put back when the job ends. The
daemon keeps the output with the job (`logs` op).

Text goes out at each complete line (or every `CHUNK` bytes), so the output
of a job that kills its worker is kept up to its last complete line; the rest
goes out before the job's outcome. Output written by C code or subprocesses
straight to file descriptors 1 and 2 is not captured (it reaches the
daemon's stderr as before).
"""
from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

CHUNK = 8192


class JobOutput(io.TextIOBase):
    """A text stream whose lines go to `send(data)` as UTF-8 bytes."""

    def __init__(self, send: Callable[[bytes], None], encoding: str = "utf-8") -> None:
        super().__init__()
        self._send = send
        self._buf = bytearray()
        self._lock = threading.Lock()          # handlers may print from threads
        self._encoding = encoding

    @property
    def encoding(self) -> str:                 # type: ignore[override]
        return self._encoding

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        data = text.encode(self._encoding, "backslashreplace")
        with self._lock:
            self._buf += data
            if b"\n" in data or len(self._buf) >= CHUNK:
                self._send_complete_lines()
        return len(text)

    def _send_complete_lines(self) -> None:
        end = self._buf.rfind(b"\n") + 1
        if len(self._buf) >= CHUNK:
            end = len(self._buf)               # one long line: send what there is
        if end:
            self._send(bytes(self._buf[:end]))
            del self._buf[:end]

    def flush(self) -> None:
        with self._lock:
            if self._buf:
                self._send(bytes(self._buf))
                self._buf.clear()


class Router(io.TextIOBase):
    """The worker's stdout or stderr: writes go to the running job's output,
    or to the real stream between jobs. Installed once per worker, so a job
    costs two attribute changes, not a search of the logging handlers."""

    def __init__(self, real: TextIO) -> None:
        super().__init__()
        self.real = real
        self.job: JobOutput | None = None

    @property
    def encoding(self) -> str:                 # type: ignore[override]
        return getattr(self.real, "encoding", "utf-8") or "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.job is None and self.real.isatty()

    def fileno(self) -> int:
        return self.real.fileno()

    def write(self, text: str) -> int:
        return (self.job or self.real).write(text)

    def flush(self) -> None:
        (self.job or self.real).flush()


_routers: tuple[Router, Router] | None = None


def install() -> None:
    """Route this process's stdout, stderr and the logging handlers writing to
    them through `Router`s (once per worker process, before its first job)."""
    global _routers
    if _routers is not None:
        return
    out, err = Router(sys.stdout), Router(sys.stderr)
    for handler, stream in _console_handlers((sys.stdout, sys.stderr)).items():
        handler.setStream(out if stream is sys.stdout else err)
    sys.stdout, sys.stderr = out, err
    _routers = (out, err)


class Capture:
    """Per-job capture for one worker process: `begin(send)` before the job,
    `end()` after it. One output stream is reused job after job (a job costs
    a few attribute changes: the worker's per-job overhead is part of every
    job's latency)."""

    def __init__(self) -> None:
        install()
        assert _routers is not None
        self.routers = _routers
        self.out = JobOutput(_nowhere)

    def begin(self, send: Callable[[bytes], None]) -> None:
        self.out._send = send
        out, err = self.routers
        out.job = err.job = self.out

    def end(self) -> None:
        out, err = self.routers
        out.job = err.job = None
        self.out.flush()
        self.out._send = _nowhere


def _nowhere(data: bytes) -> None:
    """Output between jobs has no job to go to (the routers send it to the real stream)."""


@contextmanager
def captured(send: Callable[[bytes], None]) -> Iterator[JobOutput]:
    """Route this process's stdout, stderr and console logging to `send` for
    the duration of one job (`Capture`, as a context manager)."""
    cap = Capture()
    cap.begin(send)
    try:
        yield cap.out
    finally:
        cap.end()


def _console_handlers(streams: tuple[TextIO, ...]) -> dict[logging.StreamHandler[Any], Any]:
    """Logging handlers (of any logger) writing to the process's stdout or stderr,
    with the stream each writes to."""
    loggers: list[Any] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values()
                if isinstance(lg, logging.Logger)]
    found: dict[logging.StreamHandler[Any], Any] = {}
    for lg in loggers:
        for h in lg.handlers:
            if type(h) is logging.StreamHandler and h.stream in streams:
                found[h] = h.stream
    return found

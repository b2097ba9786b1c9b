"""The worker process: runs one job at a time, sent over a socketpair.

Frames in both directions are `u32 length` + `u8 kind` + body (see
`jobd/pool/frames.py`). The main thread reads run requests and runs handlers; a
heartbeat thread writes a heartbeat (with RSS) every `heartbeat_interval`,
so a worker stopped (SIGSTOP) or stuck in C code holding the GIL goes quiet
and the daemon kills it. The heartbeat thread also exits the process if the
daemon's end of the channel is gone.

Control frames (DROP, CANCEL, STOP) that arrive while a job runs are read
when the handler next calls into jobd (progress, cancel_requested), and, for
a job that has run longer than `WATCH_INTERVAL`, by a watcher thread: a job
sent ahead to a worker busy with a long job is given back at once when the
daemon takes it back, instead of waiting behind that job. Short jobs never
wake the watcher; `frames` (a lock) keeps the two readers apart.
"""
from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import threading
import time
import traceback
from typing import Any

import orjson

from jobd import handlers as H
from jobd.core.lifecycle import FAIL_ERROR, FAIL_PERMANENT, FAIL_RATE_LIMITED, FAIL_RETRY, FAIL_SNOOZE
from jobd.core.values import non_finite_path
from jobd.pool import frames as F
from jobd.pool.capture import Capture

PROGRESS_MIN_INTERVAL = 0.05     # seconds between progress frames for one job
WATCH_INTERVAL = 0.05            # a job running this long has its control frames read by the watcher
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class Worker:
    def __init__(self, sock: socket.socket, worker_id: int, heartbeat: float) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.worker_id = worker_id
        self.heartbeat = heartbeat
        self.reader = F.FrameReader(sock)
        self.lock = threading.Lock()           # one writer at a time
        self.frames = threading.RLock()        # one reader at a time (main thread, watcher)
        self.pending: list[tuple[int, bytes]] = []     # frames read ahead
        self.ctx: H.JobContext | None = None
        self.stop = False
        self.early_cancel: set[str] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last_progress = 0.0
        self.queued_progress: tuple[float, float | None, str] | None = None
        self.capture = Capture()               # what a job prints and logs goes to the daemon

    # --- channel -----------------------------------------------------------------
    def send(self, kind: int, body: bytes) -> None:
        data = F.frame(kind, body)
        with self.lock:
            self.sock.sendall(data)

    def poll_locked(self) -> None:
        """`poll` from inside a running handler (progress, cancel_requested)."""
        with self.frames:
            self.poll()

    def poll(self) -> None:
        """Take every frame that has arrived, without waiting: control frames
        are handled, jobs queue in `pending`. Called (holding `frames`)
        before each job starts and while a handler runs."""
        poller = self.reader.poller
        while self.reader.buffered() or poller.poll(0):
            frame = self.reader.read()
            if frame is None:
                os._exit(0)                      # the daemon is gone
            self._control(frame)

    def _control(self, frame: tuple[int, bytes]) -> None:
        kind, body = frame
        if kind == F.RUN:
            self.pending.append(frame)
        elif kind == F.CANCEL:
            job_id = body.decode()
            if self.ctx is not None and self.ctx.id == job_id:
                self.ctx._request_cancel()
            else:                       # a job sent ahead: cancelled before it starts
                self.early_cancel.add(job_id)
        elif kind == F.DROP:
            self._drop(body.decode())
        elif kind == F.STOP:
            self.stop = True

    def _drop(self, job_id: str) -> None:
        """A job sent ahead was taken back. Frames come in order, so its RUN
        came first: still in `pending` means it never started. The daemon
        waits for this answer before giving the worker anything new."""
        ran = True
        for i, (kind, body) in enumerate(self.pending):
            if kind == F.RUN and orjson.loads(body)[0] == job_id:
                del self.pending[i]
                ran = False
                break
        self.early_cancel.discard(job_id)
        self.send(F.DROPPED, orjson.dumps([job_id, ran]))

    # --- main loop -----------------------------------------------------------------
    def run(self) -> None:
        threading.Thread(target=self._heartbeats, name="jobd-heartbeat", daemon=True).start()
        threading.Thread(target=self._watch, name="jobd-watch", daemon=True).start()
        self.send(F.READY, orjson.dumps([os.getpid(), rss_bytes()]))
        while True:
            with self.frames:
                self.poll()             # a DROP that has arrived stops its job before it starts
                if not self.pending:
                    if self.stop:
                        return          # STOP comes after every job sent to us: all done
                    frame = self.reader.read()      # wait for the next frame
                    if frame is None:
                        return
                    self._control(frame)
                    continue
                body = self.pending.pop(0)[1]
            self._run(orjson.loads(body))

    def _watch(self) -> None:
        """Read control frames for a job that runs long (see the module doc)."""
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        seen: H.JobContext | None = None
        while True:
            time.sleep(WATCH_INTERVAL)
            ctx = self.ctx
            if ctx is None or ctx is not seen:
                seen = ctx              # a job that started since the last look: not long yet
                continue
            if not (self.reader.buffered() or poller.poll(0)):
                continue
            if self.frames.acquire(blocking=False):
                try:
                    if self.ctx is ctx:
                        self.poll()
                finally:
                    self.frames.release()

    def _heartbeats(self) -> None:
        parent = os.getppid()
        while True:
            time.sleep(self.heartbeat)
            if os.getppid() != parent:
                os._exit(0)
            try:
                self.send(F.HEARTBEAT, orjson.dumps([rss_bytes()]))
            except OSError:
                os._exit(0)

    def _run(self, msg: list[Any]) -> None:
        job_id, name, args, kwargs, attempt, tags = msg
        spec = H.registry().get(name)
        self.ctx = ctx = H.JobContext(job_id, attempt, name, tags, self._progress,
                                      self.poll_locked)
        if job_id in self.early_cancel:
            self.early_cancel.discard(job_id)
            ctx._request_cancel()
        H.set_current(ctx)
        self.last_progress = 0.0
        self.queued_progress = None
        try:
            if spec is None:
                raise H.PermanentError(f"handler {name!r} is not registered in this worker")
            self.capture.begin(lambda data: self.send(F.LOG, F.pack_done(job_id, data)))
            try:
                value = self._call(spec, args, kwargs)
            finally:
                self.capture.end()
            body = _encode_result(value)
        except H.PermanentError as e:
            self._finish_failure(job_id, FAIL_PERMANENT, _format(e), 0.0)
        except H.Retry as e:
            self._finish_failure(job_id, FAIL_RETRY, str(e), e.after)
        except H.RateLimited as e:
            self._finish_failure(job_id, FAIL_RATE_LIMITED, str(e), e.after)
        except H.Snooze as e:
            self._finish_failure(job_id, FAIL_SNOOZE, str(e), e.after)
        except _NotSerialisable as e:
            self._finish_failure(job_id, FAIL_ERROR, str(e), 0.0)
        except BaseException as e:   # noqa: BLE001 - any handler error fails the attempt
            # An exception of a type in the handler's `no_retry_for` ends the job as
            # PermanentError does; any other is an attempt the retry policy decides on.
            permanent = spec is not None and isinstance(e, spec.no_retry_for)
            self._finish_failure(job_id, FAIL_PERMANENT if permanent else FAIL_ERROR, _format(e), 0.0)
        else:
            self._flush_progress(job_id)
            self.send(F.DONE, F.pack_done(job_id, body))
        finally:
            H.set_current(None)
            self.ctx = None

    def _call(self, spec: H.HandlerSpec, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if not spec.is_async:
            return spec.func(*args, **kwargs)
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(spec.func(*args, **kwargs))

    def _finish_failure(self, job_id: str, kind: int, error: str, after: float) -> None:
        self._flush_progress(job_id)
        self.send(F.FAIL, orjson.dumps([job_id, kind, error, after]))

    # --- progress ------------------------------------------------------------------
    def _progress(self, current: float, total: float | None, message: str) -> None:
        """Coalesce: at most one frame per PROGRESS_MIN_INTERVAL; the last value
        is always delivered before the job's outcome."""
        now = time.monotonic()
        if now - self.last_progress >= PROGRESS_MIN_INTERVAL:
            self.last_progress = now
            self.queued_progress = None
            self._send_progress(current, total, message)
        else:
            self.queued_progress = (current, total, message)

    def _send_progress(self, current: float, total: float | None, message: str) -> None:
        ctx = self.ctx
        if ctx is not None:
            self.send(F.PROGRESS, orjson.dumps([ctx.id, current, total, message]))

    def _flush_progress(self, job_id: str) -> None:
        if self.queued_progress is not None:
            self._send_progress(*self.queued_progress)
            self.queued_progress = None


class _NotSerialisable(Exception):
    pass


def _encode_result(value: Any) -> bytes:
    try:
        data = orjson.dumps(value)
    except TypeError as e:
        raise _NotSerialisable(
            f"handler returned a value that is not JSON-serialisable "
            f"({type(value).__name__}): {e}") from None
    if b"null" in data:            # orjson writes NaN and Infinity as null: look closer
        where = non_finite_path(value)
        if where is not None:
            raise _NotSerialisable(f"handler returned a value that is not JSON-serialisable: "
                                   f"NaN or Infinity at result{where}")
    return data


def _format(e: BaseException) -> str:
    text = "".join(traceback.format_exception(e))
    return f"{type(e).__name__}: {e}\n{text}"


def main(sock: socket.socket, worker_id: int, heartbeat: float) -> None:
    """Entry point in the forked child."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    Worker(sock, worker_id, heartbeat).run()

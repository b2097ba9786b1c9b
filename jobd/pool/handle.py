"""The daemon's view of its workers: one `WorkerHandle` per process (its
state, its jobs, its channel) and `Workers`, the registry the arbiter and the
dispatcher share (every handle, the idle ones, frames waiting to be written).

Frames to a worker are collected during a loop turn and written with one
`send()` at the end of the turn (`flush`); a worker that cannot take them all
at once gets the rest when its socket is writable again.
"""
from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from jobd import constants as C
from jobd.core.job import Job, iso

_SCRATCH = bytearray(256 * 1024)    # the loop reads one channel at a time
_SCRATCH_VIEW = memoryview(_SCRATCH)


CallLater = Callable[..., asyncio.TimerHandle]
OnTimeout = Callable[["WorkerHandle", Job], None]


class WorkerHandle:
    """One worker process. `sock` is None only in unit tests (no channel)."""

    def __init__(self, wid: int, sock: socket.socket | None, call_later: CallLater,
                 on_timeout: OnTimeout) -> None:
        self.id = wid
        self.sock = sock
        self.fd = sock.fileno() if sock is not None else -1
        self.call_later = call_later
        self.on_timeout = on_timeout
        self.pid: int | None = None
        self.pool: Pool | None = None            # the queue it runs jobs of
        self.forkserver: Any = None              # the fork server it came from (code reload)
        self.status = C.W_STARTING
        self.job: Job | None = None              # the job it is running
        # Sent ahead, run after `job` (prefetch): each with its queue `seq` then,
        # so a job that was given a new place since (a retry) is told apart.
        self.queued: deque[tuple[Job, int]] = deque()
        self.drops = 0                           # DROPs sent, not yet answered (DROPPED)
        self.dropping: dict[str, tuple[Job, int]] = {}   # of those, jobs (and their queue
        #   seq then) that wait for the answer
        #   to go back to the queue (or, if it had started them, to stay here)
        self.jobs_completed = 0
        self.jobs_failed = 0
        self.started_at = time.time()
        self.last_heartbeat = time.monotonic()
        self.last_heartbeat_wall: float | None = None
        self.rss = 0
        self.kill_reason: str | None = None
        self.stop_sent = False
        self.recycle_after = 0
        self.timer: asyncio.TimerHandle | None = None
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.writing = False                     # a writer callback is registered
        self.closed = False

    @property
    def busy(self) -> bool:
        return self.job is not None

    @property
    def accepting(self) -> bool:
        """May be given work (not on its way out)."""
        return not (self.stop_sent or self.kill_reason is not None or self.closed
                    or self.status == C.W_STARTING)

    def begin(self, job: Job) -> None:
        """`job` is the worker's current job now: arm its timeout."""
        self.job = job
        self.status = C.W_BUSY
        if job.timeout is not None:
            self.timer = self.call_later(job.timeout, self.on_timeout, self, job)

    def end(self) -> Job | None:
        """The current job is over (or taken away): disarm its timeout."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        job, self.job = self.job, None
        return job

    def view(self, healthy_within: float) -> dict[str, Any]:
        fresh = time.monotonic() - self.last_heartbeat < healthy_within
        return {
            "id": self.id, "pid": self.pid,
            "queue": self.pool.name if self.pool is not None else C.DEFAULT_QUEUE,
            "status": self.status if self.status != C.W_STARTING else C.W_IDLE,
            "current_job": self.job.id if self.job else None,
            "jobs_completed": self.jobs_completed, "jobs_failed": self.jobs_failed,
            "started_at": iso(self.started_at),
            "last_heartbeat": iso(self.last_heartbeat_wall),
            "rss_bytes": self.rss,
            "healthy": fresh and self.status != C.W_STARTING,
        }

    # --- the channel -----------------------------------------------------------------
    def flush(self, loop: asyncio.AbstractEventLoop, broken: Callable[[WorkerHandle], None]) -> None:
        """Write what is buffered; leave the rest to a writer callback."""
        if self.closed or not self.wbuf or self.writing or self.sock is None:
            return
        try:
            n = self.sock.send(self.wbuf)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            broken(self)
            return
        del self.wbuf[:n]
        if self.wbuf:
            self.writing = True
            loop.add_writer(self.fd, self._on_writable, loop, broken)

    def _on_writable(self, loop: asyncio.AbstractEventLoop,
                     broken: Callable[[WorkerHandle], None]) -> None:
        assert self.sock is not None
        try:
            n = self.sock.send(self.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            broken(self)
            return
        del self.wbuf[:n]
        if not self.wbuf:
            self.writing = False
            loop.remove_writer(self.fd)

    def recv(self) -> bytes | memoryview | None:
        """Bytes available now (a view valid until the next `recv` of any
        worker), b"" if none yet, None at end of stream. Reads into a reused
        buffer: `recv(1 MiB)` would allocate (mmap) and free a megabyte per
        read, a measurable share of a short job's cost."""
        if self.sock is None:
            return None
        try:
            n = self.sock.recv_into(_SCRATCH)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            return None
        return _SCRATCH_VIEW[:n] if n else None


class Pool:
    """The workers of one queue: they run only that queue's jobs."""

    def __init__(self, name: str, gate: Any, target: int) -> None:
        self.name = name
        self.gate = gate                 # the queue's gate (jobd/core/flow.py QueueGate)
        self.target = target             # workers it should have
        self.members: dict[int, WorkerHandle] = {}
        self.idle: deque[WorkerHandle] = deque()   # in the order they became idle
        self.reserved_floor = 0          # <= the lowest priority sent ahead to its workers

    def __iter__(self) -> Iterator[WorkerHandle]:
        return iter(self.members.values())

    def __len__(self) -> int:
        return len(self.members)


class Workers:
    """Every worker handle, by id and by pool (one per queue), the idle ones
    of each pool, and the frames buffered for them this turn (written once,
    by `flush`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 gate: Callable[[str], Any] = lambda name: None) -> None:
        self.loop = loop
        self.gate = gate                 # a queue's gate, by name
        self.all: dict[int, WorkerHandle] = {}
        self.pools: dict[str, Pool] = {}
        self.dirty: set[WorkerHandle] = set()
        self.pool(C.DEFAULT_QUEUE)

    def pool(self, name: str) -> Pool:
        """The pool of queue `name` (made, with no workers, if new)."""
        pool = self.pools.get(name)
        if pool is None:
            pool = self.pools[name] = Pool(name, self.gate(name), 0)
        return pool

    @property
    def idle(self) -> deque[WorkerHandle]:
        """The default queue's idle workers."""
        return self.pools[C.DEFAULT_QUEUE].idle

    def add(self, w: WorkerHandle, pool: Pool) -> None:
        w.pool = pool
        self.all[w.id] = w
        pool.members[w.id] = w

    def remove(self, w: WorkerHandle) -> None:
        self.all.pop(w.id, None)
        if w.pool is not None:
            w.pool.members.pop(w.id, None)
        self.not_idle(w)

    def send(self, w: WorkerHandle, data: bytes) -> None:
        """Buffer a frame; every buffer is written once at the end of the turn."""
        if not w.closed:
            w.wbuf += data
            self.dirty.add(w)

    def flush(self, broken: Callable[[WorkerHandle], None]) -> None:
        """Write every buffer; `broken(w)` for a worker whose channel failed."""
        dirty, loop = self.dirty, self.loop
        while dirty:
            dirty.pop().flush(loop, broken)

    def not_idle(self, w: WorkerHandle) -> None:
        idle = w.pool.idle if w.pool is not None else ()
        if w in idle:
            idle.remove(w)           # type: ignore[union-attr]

    def set_idle(self, w: WorkerHandle) -> None:
        assert w.pool is not None
        w.pool.idle.append(w)

    def __iter__(self) -> Iterator[WorkerHandle]:
        return iter(self.all.values())

    def __len__(self) -> int:
        return len(self.all)

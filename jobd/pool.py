"""The worker pool: the arbiter side of the prefork model.

The pool deals with processes: it asks the fork server for workers
(`spawn_worker`), hears when they exit (`reap_worker`), kills the ones that
hang (`murder_stale`), recycles and scales them. Job outcomes go to the
`JobQueue`, the one owner of job state. Each worker runs one job at a time.

Worker ids are small integers that are never reused within a daemon run.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from jobd import constants as C
from jobd import frames as F
from jobd.forkserver import ForkServerClient
from jobd.job import Job, iso
from jobd.retry import backoff

if TYPE_CHECKING:
    from jobd.daemon import Daemon

log = logging.getLogger("jobd.pool")

KILL_GRACE = 2.0          # seconds between SIGTERM and SIGKILL for a timed-out job
BOOT_FAILURES_MAX = 5     # workers dying before READY in a row → stop respawning

# Why the pool killed a worker; decides what happens to its job.
K_TIMEOUT = "timeout"
K_HEARTBEAT = "heartbeat"
K_CANCEL = "cancel"
K_SHUTDOWN = "shutdown"


class WorkerProc:
    """One worker process as the daemon sees it."""

    def __init__(self, wid: int, sock: socket.socket) -> None:
        self.id = wid
        self.sock = sock
        self.pid: int | None = None
        self.status = C.W_STARTING
        self.job: Job | None = None
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
        self.closed = False

    @property
    def busy(self) -> bool:
        return self.job is not None

    def view(self, healthy_within: float) -> dict[str, Any]:
        fresh = time.monotonic() - self.last_heartbeat < healthy_within
        return {
            "id": self.id, "pid": self.pid,
            "status": self.status if self.status != C.W_STARTING else C.W_IDLE,
            "current_job": self.job.id if self.job else None,
            "jobs_completed": self.jobs_completed, "jobs_failed": self.jobs_failed,
            "started_at": iso(self.started_at),
            "last_heartbeat": iso(self.last_heartbeat_wall),
            "rss_bytes": self.rss,
            "healthy": fresh and self.status != C.W_STARTING,
        }


class Pool:
    def __init__(self, daemon: Daemon, forkserver: ForkServerClient, target: int) -> None:
        self.d = daemon
        self.cfg = daemon.cfg.workers
        self.fs = forkserver
        self.loop = daemon.loop
        self.target = target
        self.workers: dict[int, WorkerProc] = {}
        self.idle: deque[WorkerProc] = deque()
        self.next_id = 1
        self.boot_failures = 0
        self.dispatching = True
        self.rng = random.Random()
        self.exited = asyncio.Event()
        # Per-handler concurrency limits; jobs over the limit wait, parked, in
        # priority order until a job of that handler ends.
        self.limits = _concurrency_limits(daemon)
        self.parked: dict[str, list[Job]] = {}
        self._check: asyncio.TimerHandle | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self.loop.add_reader(self.fs.sock.fileno(), self._on_forkserver)
        self.manage_workers()
        self._check = self.loop.call_later(self.cfg.heartbeat_interval, self._periodic)

    def counts(self) -> dict[str, int]:
        live = [w for w in self.workers.values()]
        busy = sum(1 for w in live if w.busy)
        healthy = sum(1 for w in live if w.view(self.cfg.heartbeat_timeout)["healthy"])
        return {"total": len(live), "idle": len(live) - busy, "busy": busy,
                "healthy": healthy, "target": self.target}

    def describe(self) -> list[dict[str, Any]]:
        return [w.view(self.cfg.heartbeat_timeout) for w in sorted(self.workers.values(),
                                                                   key=lambda w: w.id)]

    def _active(self) -> int:
        """Workers that count towards the target (not on their way out)."""
        return sum(1 for w in self.workers.values() if not w.stop_sent and w.kill_reason is None)

    def manage_workers(self) -> None:
        """Spawn up to the target; ask extras to stop, idle ones first."""
        if not self.dispatching:
            return
        while self._active() < self.target and self.boot_failures < BOOT_FAILURES_MAX:
            self.spawn_worker()
        extra = self._active() - self.target
        if extra > 0:
            keep = sorted((w for w in self.workers.values() if not w.stop_sent
                           and w.kill_reason is None), key=lambda w: (w.busy, -w.id))
            for w in keep[:extra]:
                self.stop_worker(w)

    def spawn_worker(self) -> WorkerProc:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        w = WorkerProc(self.next_id, ours)
        self.next_id += 1
        max_jobs = self.cfg.max_jobs_per_worker
        if max_jobs:
            w.recycle_after = max_jobs + self.rng.randint(0, max(0, max_jobs // 10))
        self.workers[w.id] = w
        self.fs.spawn(w.id, theirs)
        theirs.close()
        self.loop.add_reader(ours.fileno(), self._on_readable, w)
        return w

    def stop_worker(self, w: WorkerProc) -> None:
        """Finish the current job, then exit."""
        if w.stop_sent:
            return
        w.stop_sent = True
        w.status = C.W_STOPPING
        if w in self.idle:
            self.idle.remove(w)
        self._send(w, F.frame(F.STOP, b""))

    def kill_worker(self, w: WorkerProc, reason: str, sig: int = signal.SIGKILL) -> None:
        w.kill_reason = w.kill_reason or reason
        w.status = C.W_STOPPING
        if w in self.idle:
            self.idle.remove(w)
        if w.pid is not None:
            try:
                os.kill(w.pid, sig)
            except ProcessLookupError:
                pass

    def scale(self, count: int) -> None:
        self.target = count
        self.boot_failures = 0
        self.manage_workers()
        self.d.kick()

    def restart(self, wid: int) -> bool:
        w = self.workers.get(wid)
        if w is None or w.stop_sent or w.kill_reason:
            return False
        self.stop_worker(w)
        self.manage_workers()
        return True

    # --- dispatch ------------------------------------------------------------------------
    def dispatch(self) -> None:
        """Hand pending jobs to idle workers, highest priority first."""
        if not self.dispatching:
            return
        idle = self.idle
        state = self.d.state
        limits = self.limits
        while idle:
            job = state.pop_pending()
            if job is None:
                return
            if limits and job.handler in limits and self._at_limit(job.handler):
                self.parked.setdefault(job.handler, []).append(job)
                continue
            self._assign(idle.popleft(), job)

    def _at_limit(self, handler: str) -> bool:
        return self.d.metrics.running_by_handler[handler] >= self.limits[handler]

    def unpark(self, handler: str) -> None:
        """A job of a limited handler ended: its parked jobs may compete again."""
        parked = self.parked.pop(handler, None)
        if parked:
            for job in parked:
                self.d.state.push_back(job)

    def _assign(self, w: WorkerProc, job: Job) -> None:
        ready_at = job.scheduled_for if job.attempts == 0 and job.scheduled_for else job.created_at
        self.d.queue.start(job, w.id)
        w.job = job
        w.status = C.W_BUSY
        self.d.metrics.observe_queue_time(job.priority, (job.started_at or 0) - ready_at)
        self._send(w, F.frame(F.RUN, orjson.dumps(
            [job.id, job.handler, job.args, job.kwargs, job.attempts, job.tags])))
        if job.timeout is not None:
            w.timer = self.loop.call_later(job.timeout, self._timed_out, w, job)
        if job.cancel_requested:
            self._send(w, F.frame(F.CANCEL, job.id.encode()))

    def request_cancel(self, job: Job) -> None:
        w = self.workers.get(job.worker_id or -1)
        if w is not None and w.job is job:
            self._send(w, F.frame(F.CANCEL, job.id.encode()))

    def force_cancel(self, job: Job) -> int:
        """Kill the worker running `job`; the job ends cancelled now."""
        w = self.workers.get(job.worker_id or -1)
        seq = self.d.queue.cancelled_by_force(job)
        if w is not None and w.job is job:
            self.kill_worker(w, K_CANCEL)
            self._release(w)
        return seq

    # --- the channel -----------------------------------------------------------------------
    def _send(self, w: WorkerProc, data: bytes) -> None:
        if w.closed:
            return
        if w.wbuf:
            w.wbuf += data
            return
        try:
            n = w.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self._channel_closed(w)
            return
        if n < len(data):
            w.wbuf += data[n:]
            self.loop.add_writer(w.sock.fileno(), self._on_writable, w)

    def _on_writable(self, w: WorkerProc) -> None:
        try:
            n = w.sock.send(w.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._channel_closed(w)
            return
        del w.wbuf[:n]
        if not w.wbuf:
            self.loop.remove_writer(w.sock.fileno())

    def _on_readable(self, w: WorkerProc) -> None:
        try:
            data = w.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._channel_closed(w)
            return
        w.rbuf += data
        frames, used = F.parse(w.rbuf)
        if used:
            del w.rbuf[:used]
        for kind, body in frames:
            self._on_frame(w, kind, body)
        self.d.kick()

    def _channel_closed(self, w: WorkerProc) -> None:
        """The worker's end is gone; its exit report from the fork server follows."""
        if w.closed:
            return
        w.closed = True
        self.loop.remove_reader(w.sock.fileno())
        self.loop.remove_writer(w.sock.fileno())
        if w in self.idle:
            self.idle.remove(w)

    # --- frames from workers --------------------------------------------------------------
    def _on_frame(self, w: WorkerProc, kind: int, body: bytes) -> None:
        if kind == F.DONE:
            self._on_done(w, *F.unpack_done(body))
        elif kind == F.FAIL:
            self._on_fail(w, orjson.loads(body))
        elif kind == F.HEARTBEAT:
            self._on_heartbeat(w, orjson.loads(body))
        elif kind == F.PROGRESS:
            self._on_progress(w, orjson.loads(body))
        elif kind == F.READY:
            self._on_ready(w, orjson.loads(body))

    def _on_ready(self, w: WorkerProc, body: list[Any]) -> None:
        w.rss = body[1]
        w.status = C.W_IDLE
        w.last_heartbeat = time.monotonic()
        w.last_heartbeat_wall = time.time()
        self.boot_failures = 0
        if not w.stop_sent and w.kill_reason is None:
            self.idle.append(w)
        self.d.events.publish(C.EV_WORKER_STARTED, None, {"worker_id": w.id, "pid": w.pid})
        log.debug("worker %d ready (pid %s)", w.id, w.pid)

    def _on_heartbeat(self, w: WorkerProc, body: list[Any]) -> None:
        w.last_heartbeat = time.monotonic()
        w.last_heartbeat_wall = time.time()
        w.rss = body[0]

    def _on_progress(self, w: WorkerProc, body: list[Any]) -> None:
        job_id, current, total, message = body
        job = w.job
        if job is None or job.id != job_id:
            return
        self.d.queue.progress(job, current, total, message)
        prog = dict(job.progress or {})
        prog.pop("updated_at", None)
        self.d.events.publish(C.EV_PROGRESS, job.id, prog)

    def _current(self, w: WorkerProc, job_id: str) -> Job | None:
        job = w.job
        if job is None or job.id != job_id or job.status != C.RUNNING:
            return None
        return job

    def _on_done(self, w: WorkerProc, job_id: str, raw: bytes) -> None:
        job = self._current(w, job_id)
        if job is None:
            return
        w.jobs_completed += 1
        self.d.metrics.observe_result_size(job.handler, len(raw))
        if self.d.results.is_inline(raw):
            self.d.queue.complete(job, orjson.Fragment(raw))
            self._finished(w, job)
            return
        self._release(w)      # the worker may take the next job meanwhile

        def stored(ref: list[Any] | None, error: str | None) -> None:
            if job.status != C.RUNNING:
                return
            if ref is None:
                self.attempt_failed(job, error or "result could not be stored", F.FAIL_ERROR, 0.0)
            else:
                self.d.queue.complete(job, None, ref)
            self.d.kick()
        self.d.results.store(job.id, raw, stored)

    def _on_fail(self, w: WorkerProc, body: list[Any]) -> None:
        job_id, kind, error, after = body
        job = self._current(w, job_id)
        if job is None:
            return
        w.jobs_failed += 1
        self.attempt_failed(job, error, kind, after)
        self._finished(w, job)

    def _release(self, w: WorkerProc) -> None:
        """The worker has no job any more; it may take another or be recycled."""
        if w.timer is not None:
            w.timer.cancel()
            w.timer = None
        job = w.job
        w.job = None
        end = job and (job.completed_at or job.finished_attempt_at)
        if job is not None and job.started_at is not None and end:
            self.d.metrics.observe_duration(job.handler, max(0.0, end - job.started_at))
        if w.stop_sent or w.kill_reason is not None or w.closed:
            return
        if self._should_recycle(w):
            self.stop_worker(w)
            self.manage_workers()
            return
        w.status = C.W_IDLE
        self.idle.append(w)

    def _finished(self, w: WorkerProc, job: Job) -> None:
        self._release(w)
        self.d.slow_job_check(job)

    def _should_recycle(self, w: WorkerProc) -> bool:
        if w.recycle_after and w.jobs_completed + w.jobs_failed >= w.recycle_after:
            log.info("recycling worker %d after %d jobs", w.id, w.jobs_completed + w.jobs_failed)
            return True
        limit = self.cfg.max_memory_mb * 1024 * 1024
        if limit and w.rss > limit:
            log.info("recycling worker %d: rss %d MB above max_memory_mb", w.id, w.rss >> 20)
            return True
        return False

    # --- outcomes ------------------------------------------------------------------------
    def attempt_failed(self, job: Job, error: str, kind: int, after: float) -> None:
        """Apply the retry policy to a failed attempt (SPEC §4)."""
        queue = self.d.queue
        log.info("job %s (%s) attempt %d failed: %s", job.id, job.handler, job.attempts,
                 error.splitlines()[0] if error else "")
        if kind == F.FAIL_PERMANENT:
            queue.fail_attempt(job, error, C.FAILED, None)
            return
        if job.attempts > job.max_retries:
            queue.fail_attempt(job, error, C.DEAD_LETTER, None)
            return
        if job.cancel_requested:
            queue.fail_attempt(job, error, C.CANCELLED, None)
            return
        if kind == F.FAIL_RETRY:
            delay = max(0.0, after)
        else:
            r = self.d.cfg.retry
            jitter = r.jitter if job.jitter is None else job.jitter
            max_delay = r.max_delay if job.max_delay is None else job.max_delay
            delay = backoff(job.attempts, job.retry_delay, job.retry_backoff, max_delay,
                            jitter, self.rng)
        self.d.metrics.observe_retry_delay(job.handler, delay)
        queue.fail_attempt(job, error, C.RETRYING, self.d.clock() + delay)
        self.d.schedule_timer()

    # --- watching over workers --------------------------------------------------------------
    def _timed_out(self, w: WorkerProc, job: Job) -> None:
        if w.job is not job:
            return
        log.warning("job %s ran past its timeout (%ss); stopping worker %d", job.id, job.timeout, w.id)
        self.kill_worker(w, K_TIMEOUT, signal.SIGTERM)
        self.loop.call_later(KILL_GRACE, self._kill_if_alive, w)

    def _kill_if_alive(self, w: WorkerProc) -> None:
        if w.id in self.workers and w.pid is not None:
            try:
                os.kill(w.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _periodic(self) -> None:
        self._check = self.loop.call_later(self.cfg.heartbeat_interval, self._periodic)
        self.murder_stale()

    def murder_stale(self) -> None:
        """Kill workers whose heartbeats stopped (stuck in C code, stopped, ...)."""
        limit = self.cfg.heartbeat_timeout
        now = time.monotonic()
        for w in list(self.workers.values()):
            if w.kill_reason is None and now - w.last_heartbeat > limit:
                what = "never became ready" if w.status == C.W_STARTING else "sent no heartbeat"
                log.error("worker %d (pid %s) %s for %.1fs; killing it", w.id, w.pid, what,
                          now - w.last_heartbeat)
                self.kill_worker(w, K_HEARTBEAT)

    # --- the fork server ------------------------------------------------------------------
    def _on_forkserver(self) -> None:
        msgs = self.fs.read_messages()
        if msgs is None:
            self.loop.remove_reader(self.fs.sock.fileno())
            self._orphaned()
            self.d.fatal("the fork server exited; jobd cannot start workers")
            return
        for msg in msgs:
            if "spawned" in msg:
                w = self.workers.get(msg["spawned"])
                if w is not None:
                    w.pid = msg["pid"]
                    if w.kill_reason is not None:
                        self.kill_worker(w, w.kill_reason)
            elif "exited" in msg:
                self.reap_worker(msg["exited"], msg["pid"], msg["code"], msg["signal"])
        self.d.kick()

    def reap_worker(self, wid: int, pid: int, code: int | None, sig: str | None) -> None:
        w = self.workers.pop(wid, None)
        if w is None:
            return
        self._channel_closed(w)
        w.sock.close()
        if w.timer is not None:
            w.timer.cancel()
        if w.status == C.W_STARTING and w.kill_reason is None:
            self.boot_failures += 1
            if self.boot_failures >= BOOT_FAILURES_MAX:
                log.critical("workers keep dying before they are ready (last exit: %s); "
                             "not respawning until `scale`", _exit_text(code, sig))
        job = w.job
        if job is not None and job.status == C.RUNNING and job.worker_id == wid:
            self._job_lost(w, job, code, sig)
        unexpected = w.kill_reason is None and not w.stop_sent
        level = logging.WARNING if unexpected else logging.DEBUG
        running = f" while running job {job.id}" if job is not None else ""
        log.log(level, "worker %d (pid %d) exited%s: %s", wid, pid, running, _exit_text(code, sig))
        self.d.events.publish(C.EV_WORKER_EXITED, None, {"worker_id": wid, "pid": pid,
                                                         "exit_code": code, "signal": sig})
        self.manage_workers()
        if not self.workers:
            self.exited.set()

    def _job_lost(self, w: WorkerProc, job: Job, code: int | None, sig: str | None) -> None:
        """The worker died with a job: decide by why it died."""
        w.job = None
        reason = w.kill_reason
        if reason == K_SHUTDOWN:
            self.d.queue.requeue(job, uncount=True)
            return
        if reason == K_TIMEOUT:
            error = C.ERROR_TIMEOUT
        elif reason == K_HEARTBEAT:
            error = (f"worker {w.id} (pid {w.pid}) stopped sending heartbeats for "
                     f"{self.cfg.heartbeat_timeout:g}s and was killed")
        else:
            error = f"worker {w.id} (pid {w.pid}) died while running the job: {_exit_text(code, sig)}"
        w.jobs_failed += 1
        self.attempt_failed(job, error, F.FAIL_ERROR, 0.0)

    def _orphaned(self) -> None:
        """The fork server is gone, so no exit reports will come: kill the
        workers ourselves and put their jobs back without a counted attempt."""
        self.dispatching = False
        for w in list(self.workers.values()):
            self.kill_worker(w, K_SHUTDOWN)
            job = w.job
            if job is not None and job.status == C.RUNNING:
                w.job = None
                self.d.queue.requeue(job, uncount=True)
            self._channel_closed(w)
            del self.workers[w.id]
        self.exited.set()

    # --- shutdown -------------------------------------------------------------------------
    async def shutdown(self, timeout: float) -> None:
        """Stop dispatching; let running jobs finish up to `timeout`; kill the rest."""
        self.dispatching = False
        for w in list(self.workers.values()):
            self.stop_worker(w)
        if self.workers:
            self.exited.clear()
            try:
                await asyncio.wait_for(self.exited.wait(), timeout)
            except TimeoutError:
                pass
        for w in list(self.workers.values()):
            self.kill_worker(w, K_SHUTDOWN)
        if self.workers:
            self.exited.clear()
            try:
                await asyncio.wait_for(self.exited.wait(), 5.0)
            except TimeoutError:
                log.error("%d worker(s) did not exit after SIGKILL", len(self.workers))
        for w in list(self.workers.values()):       # requeue whatever is still unreported
            if w.job is not None and w.job.status == C.RUNNING:
                self.d.queue.requeue(w.job, uncount=True)
        if self._check is not None:
            self._check.cancel()


def _concurrency_limits(daemon: Daemon) -> dict[str, int]:
    """max_concurrency per handler: config [handler."NAME"] over @handler option."""
    limits = {}
    for name, spec in daemon.handlers.items():
        value = daemon.cfg.handler.get(name, {}).get("max_concurrency",
                                                     spec.options.get("max_concurrency"))
        if value:
            limits[name] = int(value)
    return limits


def _exit_text(code: int | None, sig: str | None) -> str:
    if sig is not None:
        hint = " (perhaps out of memory?)" if sig == "SIGKILL" else ""
        return f"killed by signal {sig}{hint}"
    return f"exit status {code}"

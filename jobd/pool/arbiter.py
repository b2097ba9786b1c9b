"""The arbiter: the processes side of the prefork model.

The arbiter deals with processes: it asks the fork server for workers
(`spawn_worker`), hears when they exit (`reap_worker`), kills the ones that
hang (`murder_stale`), recycles and scales them, and carries the frames
between the daemon and each worker. Which job goes to which worker (priority,
limits, jobs sent ahead) is the `Dispatcher`'s (jobd/pool/dispatch.py); what
happens to a job is reported to the `Outcomes` (`Jobs`, jobd/jobs.py), the
one owner of job state. It is also the `Runner` a cancel reaches a job's
worker through. Each worker runs one job at a time; ids are never reused.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from jobd import constants as C
from jobd.config import WorkersConfig
from jobd.core.job import Job
from jobd.core.lifecycle import FAIL_CRASH, FAIL_ERROR
from jobd.pool import frames as F
from jobd.pool.dispatch import Dispatcher, Outcomes
from jobd.pool.forkserver import ForkServerClient
from jobd.pool.handle import Pool, WorkerHandle, Workers

log = logging.getLogger("jobd.pool")

KILL_GRACE = 2.0          # seconds between SIGTERM and SIGKILL for a timed-out job
BOOT_FAILURES_MAX = 5     # workers dying before READY in a row → stop respawning

# Why the arbiter killed a worker; decides what happens to its job.
K_TIMEOUT = "timeout"
K_HEARTBEAT = "heartbeat"
K_CANCEL = "cancel"
K_SHUTDOWN = "shutdown"

class Events(Protocol):
    """Where worker and progress events go (jobd/server/events.py `EventHub`)."""

    watchers: list[Any]       # event data is built only when someone watches

    def publish(self, name: str, job_id: str | None, data: dict[str, Any]) -> None: ...


class Arbiter:
    def __init__(self, *, forkserver: ForkServerClient, cfg: WorkersConfig,
                 loop: asyncio.AbstractEventLoop, outcomes: Outcomes, dispatcher: Dispatcher,
                 workers: Workers, events: Events, wake: Callable[[], None],
                 fatal: Callable[[str], None]) -> None:
        self.fs = forkserver                       # where new workers come from
        self.retired: list[ForkServerClient] = []  # older ones, until their last worker exits
        self.cfg = cfg
        self.loop = loop
        self.outcomes = outcomes
        self.dispatcher = dispatcher
        self.workers = workers
        self.events = events
        self.wake = wake                # something happened: run the daemon's turn
        self.fatal = fatal              # the fork server is gone: the daemon must stop
        workers.pool(C.DEFAULT_QUEUE).target = cfg.count
        self.next_id = 1
        self.boot_failures = 0
        self.dispatching = True
        self.rng = random.Random()      # recycling jitter
        self.exited = asyncio.Event()
        self._check: asyncio.TimerHandle | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self.loop.add_reader(self.fs.sock.fileno(), self._on_forkserver, self.fs)
        self.manage_workers()
        self._check = self.loop.call_later(self.cfg.heartbeat_interval, self._periodic)

    @property
    def target(self) -> int:
        """Workers wanted, all pools together."""
        return sum(p.target for p in self.workers.pools.values())

    def counts(self) -> dict[str, int]:
        live = list(self.workers.all.values())
        busy = sum(1 for w in live if w.busy)
        healthy = sum(1 for w in live if w.view(self.cfg.heartbeat_timeout)["healthy"])
        return {"total": len(live), "idle": len(live) - busy, "busy": busy,
                "healthy": healthy, "target": self.target, "prefetched": len(self.dispatcher.reserved)}

    def pool_counts(self, pool: Pool) -> dict[str, int]:
        live = list(pool.members.values())
        busy = sum(1 for w in live if w.busy)
        return {"total": len(live), "idle": len(live) - busy, "busy": busy, "target": pool.target}

    def describe(self) -> list[dict[str, Any]]:
        timeout = self.cfg.heartbeat_timeout
        return [w.view(timeout) for w in sorted(self.workers.all.values(), key=lambda w: w.id)]

    @staticmethod
    def _active(pool: Pool) -> int:
        """Workers that count towards the pool's target (not on their way out)."""
        return sum(1 for w in pool.members.values() if not w.stop_sent and w.kill_reason is None)

    def manage_workers(self) -> None:
        """Spawn each pool up to its target; ask extras to stop, idle ones first."""
        if not self.dispatching:
            return
        for pool in list(self.workers.pools.values()):
            while self._active(pool) < pool.target and self.boot_failures < BOOT_FAILURES_MAX:
                self.spawn_worker(pool)
            extra = self._active(pool) - pool.target
            if extra > 0:
                keep = sorted((w for w in pool.members.values() if not w.stop_sent
                               and w.kill_reason is None), key=lambda w: (w.busy, -w.id))
                for w in keep[:extra]:
                    self.stop_worker(w)

    def spawn_worker(self, pool: Pool | None = None) -> WorkerHandle:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        w = WorkerHandle(self.next_id, ours, self.loop.call_later, self.timed_out)
        self.next_id += 1
        max_jobs = self.cfg.max_jobs_per_worker
        if max_jobs:
            w.recycle_after = max_jobs + self.rng.randint(0, max(0, max_jobs // 10))
        self.workers.add(w, pool if pool is not None else self.workers.pool(C.DEFAULT_QUEUE))
        w.forkserver = self.fs
        self.fs.spawn(w.id, theirs)
        theirs.close()
        self.loop.add_reader(w.fd, self._on_readable, w)
        return w

    def stop_worker(self, w: WorkerHandle) -> None:
        """Finish the current job (and any sent ahead), then exit."""
        if w.stop_sent:
            return
        w.stop_sent = True
        w.status = C.W_STOPPING
        self.workers.not_idle(w)
        self.dispatcher.take_back_all(w)     # jobs sent ahead stay in the queue for others
        self.send(w, F.frame(F.STOP, b""))

    def kill_worker(self, w: WorkerHandle, reason: str, sig: int = signal.SIGKILL) -> None:
        w.kill_reason = w.kill_reason or reason
        w.status = C.W_STOPPING
        self.workers.not_idle(w)
        if w.pid is not None:
            try:
                os.kill(w.pid, sig)
            except ProcessLookupError:
                pass

    def scale(self, count: int, queue: str = C.DEFAULT_QUEUE) -> int:
        """Set a pool's worker count; returns the previous one."""
        pool = self.workers.pool(queue)
        previous, pool.target = pool.target, count
        self.boot_failures = 0
        self.manage_workers()
        self.wake()
        return previous

    def restart(self, wid: int) -> bool:
        w = self.workers.all.get(wid)
        if w is None or w.stop_sent or w.kill_reason:
            return False
        self.stop_worker(w)
        self.manage_workers()
        return True

    def dispatch(self) -> None:
        """Give pending jobs to workers (jobd/pool/dispatch.py), unless shutting down."""
        if self.dispatching:
            self.dispatcher.dispatch()

    # --- the Runner port (jobd/jobs.py): how a cancel reaches a worker ---------------------
    def take_back(self, job: Job) -> None:
        """A pending job was cancelled: drop it where it was sent ahead."""
        self.dispatcher.take_back(job)

    def request_cancel(self, job: Job) -> None:
        w = self._running(job)
        if w is not None:
            self.send(w, F.frame(F.CANCEL, job.id.encode()))

    def kill(self, job: Job) -> None:
        """Stop a running `job` now (it is recorded cancelled): kill its worker."""
        w = self._running(job)
        if w is not None:
            self.kill_worker(w, K_CANCEL)
            self._release(w)

    def _running(self, job: Job) -> WorkerHandle | None:
        w = self.workers.all.get(job.worker_id or -1)
        return w if w is not None and w.job is job else None

    # --- the channel -----------------------------------------------------------------------
    def send(self, w: WorkerHandle, data: bytes) -> None:
        self.workers.send(w, data)

    def flush(self) -> None:
        """Write every frame buffered this turn (one send per worker)."""
        self.workers.flush(self._channel_closed)

    def _on_readable(self, w: WorkerHandle) -> None:
        data = w.recv()
        if data is None:
            self._channel_closed(w)
            return
        self._take(w, data)
        self.wake()

    def collect(self) -> bool:
        """Read, without waiting, what busy workers have sent; True if anything
        came. Called after the loop was blocked (an fsync), so a job that
        finished meanwhile is handled in the same turn."""
        got = False
        for w in [w for w in self.workers.all.values() if w.busy and not w.closed]:
            data = w.recv()
            if data is None:
                self._channel_closed(w)
            elif data:
                self._take(w, data)
                got = True
        return got

    def _take(self, w: WorkerHandle, data: bytes | memoryview) -> None:
        w.rbuf += data
        frames, used = F.parse(w.rbuf)
        if used:
            del w.rbuf[:used]
        for kind, body in frames:
            self._on_frame(w, kind, body)

    def _drain(self, w: WorkerHandle) -> None:
        """Read what the worker wrote before it exited: its exit report can
        reach us before its last frames (a DONE must not become a lost job)."""
        while not w.closed:
            data = w.recv()
            if not data:
                return
            self._take(w, data)

    def _channel_closed(self, w: WorkerHandle) -> None:
        """The worker's end is gone; its exit report from the fork server follows."""
        if w.closed:
            return
        w.closed = True
        self.loop.remove_reader(w.fd)
        if w.writing:
            self.loop.remove_writer(w.fd)
        self.workers.not_idle(w)

    # --- frames from workers --------------------------------------------------------------
    def _on_frame(self, w: WorkerHandle, kind: int, body: bytes) -> None:
        if kind == F.DONE:
            self._on_done(w, *F.unpack_done(body))
        elif kind == F.FAIL:
            self._on_fail(w, orjson.loads(body))
        elif kind == F.HEARTBEAT:
            self._on_heartbeat(w, orjson.loads(body))
        elif kind == F.PROGRESS:
            self._on_progress(w, orjson.loads(body))
        elif kind == F.LOG:
            self._on_log(w, *F.unpack_done(body))
        elif kind == F.DROPPED:
            self._on_dropped(w, orjson.loads(body))
        elif kind == F.READY:
            self._on_ready(w, orjson.loads(body))

    def _on_ready(self, w: WorkerHandle, body: list[Any]) -> None:
        w.pid = w.pid or body[0]        # READY may overtake the fork server's report
        w.rss = body[1]
        w.status = C.W_IDLE
        w.last_heartbeat = time.monotonic()
        w.last_heartbeat_wall = time.time()
        self.boot_failures = 0
        if w.accepting:
            self.workers.set_idle(w)
        self.events.publish(C.EV_WORKER_STARTED, None, {"worker_id": w.id, "pid": w.pid})
        log.debug("worker %d ready (pid %s)", w.id, w.pid)

    def _on_dropped(self, w: WorkerHandle, body: list[Any]) -> None:
        """The worker answered a DROP. Until every DROP is answered it may be
        running a job it started just before the DROP came, so it gets
        nothing new (a job's timeout must not start while it waits)."""
        job_id, ran = body
        w.drops -= 1
        self.dispatcher.dropped(w, job_id, bool(ran))
        if not w.drops and w.job is None:
            self._next_or_settle(w)
        self.wake()

    def _on_heartbeat(self, w: WorkerHandle, body: list[Any]) -> None:
        w.last_heartbeat = time.monotonic()
        w.last_heartbeat_wall = time.time()
        w.rss = body[0]

    def _on_progress(self, w: WorkerHandle, body: list[Any]) -> None:
        job_id, current, total, message = body
        job = w.job
        if job is None or job.id != job_id:
            return
        self.outcomes.progress(job, current, total, message)
        if self.events.watchers:
            prog = dict(job.progress or {})
            prog.pop("updated_at", None)
            self.events.publish(C.EV_PROGRESS, job.id, prog)

    def _on_log(self, w: WorkerHandle, job_id: str, data: bytes) -> None:
        job = self._current(w, job_id)
        if job is not None:
            self.outcomes.log(job, data)

    def _current(self, w: WorkerHandle, job_id: str) -> Job | None:
        job = w.job
        if job is None:
            job = self.dispatcher.started_unannounced(w, job_id)
        if job is None or job.id != job_id or job.status != C.RUNNING:
            return None
        return job

    def _on_done(self, w: WorkerHandle, job_id: str, raw: bytes) -> None:
        job = self._current(w, job_id)
        if job is None:
            return
        w.jobs_completed += 1
        self.outcomes.complete(job, raw)     # a large result is stored meanwhile
        self._release(w)

    def _on_fail(self, w: WorkerHandle, body: list[Any]) -> None:
        job_id, kind, error, after = body
        job = self._current(w, job_id)
        if job is None:
            return
        w.jobs_failed += 1
        self.outcomes.attempt_failed(job, error, kind, after)
        self._release(w)

    def _release(self, w: WorkerHandle) -> None:
        """The current job is over: start the next one sent ahead, or go idle."""
        w.end()
        self._next_or_settle(w)

    def _next_or_settle(self, w: WorkerHandle) -> None:
        """The worker has no current job: it runs the next job sent ahead, or
        settles. While a DROP is unanswered, which job it runs next is not
        known (it may have started the one being taken back): wait."""
        if w.kill_reason is None and not w.closed and not w.drops \
                and self.dispatcher.start_sent_ahead(w):
            return
        self._settle(w)

    def _settle(self, w: WorkerHandle) -> None:
        """The worker has no job: recycle it or make it idle, once every job
        taken back from it is confirmed not started."""
        if not w.accepting:
            return
        if w.drops:
            w.status = C.W_BUSY     # it may still be running what it was told to drop
            return
        if self._should_recycle(w):
            self.stop_worker(w)
            self.manage_workers()
            return
        w.status = C.W_IDLE
        self.workers.set_idle(w)

    def _should_recycle(self, w: WorkerHandle) -> bool:
        if w.recycle_after and w.jobs_completed + w.jobs_failed >= w.recycle_after:
            log.info("recycling worker %d after %d jobs", w.id, w.jobs_completed + w.jobs_failed)
            return True
        limit = self.cfg.max_memory_mb * 1024 * 1024
        if limit and w.rss > limit:
            log.info("recycling worker %d: rss %d MB above max_memory_mb", w.id, w.rss >> 20)
            return True
        return False

    # --- watching over workers --------------------------------------------------------------
    def timed_out(self, w: WorkerHandle, job: Job) -> None:
        if w.job is not job:
            return
        log.warning("job %s ran past its timeout (%ss); stopping worker %d", job.id, job.timeout, w.id)
        self.kill_worker(w, K_TIMEOUT, signal.SIGTERM)
        self.loop.call_later(KILL_GRACE, self._kill_if_alive, w)

    def _kill_if_alive(self, w: WorkerHandle) -> None:
        if w.id in self.workers.all and w.pid is not None:
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
        for w in list(self.workers.all.values()):
            if w.kill_reason is None and now - w.last_heartbeat > limit:
                what = "never became ready" if w.status == C.W_STARTING else "sent no heartbeat"
                log.error("worker %d (pid %s) %s for %.1fs; killing it", w.id, w.pid, what,
                          now - w.last_heartbeat)
                self.kill_worker(w, K_HEARTBEAT)

    # --- the fork server ------------------------------------------------------------------
    def _on_forkserver(self, fs: ForkServerClient) -> None:
        msgs = fs.read_messages()
        if msgs is None:
            self._forkserver_gone(fs)
            return
        for msg in msgs:
            if "spawned" in msg:
                w = self.workers.all.get(msg["spawned"])
                if w is not None:
                    w.pid = msg["pid"]
                    if w.kill_reason is not None:
                        self.kill_worker(w, w.kill_reason)
            elif "exited" in msg:
                self.reap_worker(msg["exited"], msg["pid"], msg["code"], msg["signal"])
        self._close_retired()
        self.wake()

    def _forkserver_gone(self, fs: ForkServerClient) -> None:
        self.loop.remove_reader(fs.sock.fileno())
        self._orphaned(fs)
        if fs is self.fs:
            self.fatal("the fork server exited; jobd cannot start workers")
        elif fs in self.retired:
            self.retired.remove(fs)

    # --- code reload: a new fork server ----------------------------------------------------
    def switch(self, fresh: ForkServerClient) -> None:
        """New workers come from `fresh` (new handler code) from now on: every
        current worker finishes its job and exits (`STOP`; jobs sent ahead to it
        go back to the queue), and the target count of new ones is started."""
        self.loop.add_reader(fresh.sock.fileno(), self._on_forkserver, fresh)
        self.retired.append(self.fs)
        self.fs = fresh
        for w in list(self.workers.all.values()):
            self.stop_worker(w)
        self.manage_workers()
        self._close_retired()
        self.wake()

    def _close_retired(self) -> None:
        """A retired fork server with no worker left is closed (it then exits)."""
        for fs in list(self.retired):
            if not any(w.forkserver is fs for w in self.workers.all.values()):
                self.retired.remove(fs)
                self.loop.remove_reader(fs.sock.fileno())
                fs.close()

    def reap_worker(self, wid: int, pid: int, code: int | None, sig: str | None) -> None:
        w = self.workers.all.get(wid)
        if w is None:
            return
        self._drain(w)
        self.workers.remove(w)
        self._channel_closed(w)
        self.workers.dirty.discard(w)
        if w.sock is not None:
            w.sock.close()
        if w.status == C.W_STARTING and w.kill_reason is None:
            self.boot_failures += 1
            if self.boot_failures >= BOOT_FAILURES_MAX:
                log.critical("workers keep dying before they are ready (last exit: %s); "
                             "not respawning until `scale`", _exit_text(code, sig))
        job = w.job
        self._jobs_lost(w, code, sig)
        unexpected = w.kill_reason is None and not w.stop_sent
        level = logging.WARNING if unexpected else logging.DEBUG
        running = f" while running job {job.id}" if job is not None else ""
        log.log(level, "worker %d (pid %d) exited%s: %s", wid, pid, running, _exit_text(code, sig))
        self.events.publish(C.EV_WORKER_EXITED, None, {"worker_id": wid, "pid": pid,
                                                         "exit_code": code, "signal": sig})
        self.manage_workers()
        if not self.workers.all:
            self.exited.set()

    def _jobs_lost(self, w: WorkerHandle, code: int | None, sig: str | None) -> None:
        """The worker died: its current job's attempt is decided by why it
        died; jobs sent ahead never started and go back to pending."""
        job = w.end()
        self.dispatcher.release_dropping(w)
        if job is None or job.status != C.RUNNING or job.worker_id != w.id:
            return
        reason = w.kill_reason
        if reason == K_SHUTDOWN:
            self.outcomes.requeue(job, uncount=True)
            return
        if reason == K_TIMEOUT:
            error = C.ERROR_TIMEOUT
        elif reason == K_HEARTBEAT:
            error = (f"worker {w.id} (pid {w.pid}) stopped sending heartbeats for "
                     f"{self.cfg.heartbeat_timeout:g}s and was killed")
        else:
            error = f"worker {w.id} (pid {w.pid}) died while running the job: {_exit_text(code, sig)}"
        w.jobs_failed += 1
        self.outcomes.attempt_failed(job, error, FAIL_ERROR if reason else FAIL_CRASH, 0.0)

    def _orphaned(self, fs: ForkServerClient) -> None:
        """A fork server is gone, so no exit reports will come for its workers:
        kill them ourselves and put their jobs back without a counted attempt."""
        if fs is self.fs:
            self.dispatching = False
        for w in list(self.workers.all.values()):
            if w.forkserver is not fs:
                continue
            self.kill_worker(w, K_SHUTDOWN)
            self._jobs_lost(w, None, None)
            self._channel_closed(w)
            self.workers.remove(w)
        if not self.workers.all:
            self.exited.set()

    def close_forkservers(self) -> None:
        """At the end of a stop: every fork server exits (and kills what is left)."""
        for fs in [*self.retired, self.fs]:
            fs.close()
        self.retired.clear()

    # --- shutdown -------------------------------------------------------------------------
    async def shutdown(self, timeout: float) -> None:
        """Stop dispatching; let running jobs finish up to `timeout`; kill the rest."""
        self.dispatching = False
        for w in list(self.workers.all.values()):
            self.stop_worker(w)
        self.flush()
        if self.workers.all:
            self.exited.clear()
            try:
                await asyncio.wait_for(self.exited.wait(), timeout)
            except TimeoutError:
                pass
        for w in list(self.workers.all.values()):
            self.kill_worker(w, K_SHUTDOWN)
        if self.workers.all:
            self.exited.clear()
            try:
                await asyncio.wait_for(self.exited.wait(), 5.0)
            except TimeoutError:
                log.error("%d worker(s) did not exit after SIGKILL", len(self.workers))
        for w in list(self.workers.all.values()):       # requeue whatever is still unreported
            self._jobs_lost(w, None, None)
        if self._check is not None:
            self._check.cancel()


def _exit_text(code: int | None, sig: str | None) -> str:
    if sig is not None:
        hint = " (perhaps out of memory?)" if sig == "SIGKILL" else ""
        return f"killed by signal {sig}{hint}"
    return f"exit status {code}"

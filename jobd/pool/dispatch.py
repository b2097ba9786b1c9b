"""Which pending job goes to which worker, and when (the arbiter keeps the processes).

Each queue has its own pool of workers (jobd/pool/handle.py `Pool`) and
each pool runs only its queue's jobs. Order within a queue: highest
priority first, FIFO within a priority, among the jobs that may start now:
which may is the flow structure's (jobd/core/flow.py `Ready`: pauses, rate
limits, `max_concurrency`, handlers whose code is not loaded). Held jobs
stay pending in their lane and cost nothing here.

Prefetch: when every worker of a pool is busy and more jobs wait than it
has workers, each worker is sent up to `[workers] prefetch` jobs ahead
("reserved"), so it starts the next one the moment it finishes instead of
waiting a round trip. A reserved job stays `pending` until the daemon hears
that its predecessor ended; then it is recorded as started and its timeout
begins. A reserved job is taken back (the worker is sent `DROP`) when it is
cancelled, when its worker stops or dies, when a pending job outranks it
(higher priority runs first even against jobs already sent ahead), when
its queue or handler is paused, and when a worker of its pool is idle with
nothing else to run (it runs there instead of behind a long job). Jobs whose handler or queue has a rate
limit or a concurrency limit are never sent ahead: limits count real starts.

A job is known by its token `(job, seq)`: `seq` is its place in the queue,
which a retry changes, and a job that left the table has no status; so a
job taken back or sent ahead is still the same job only while it is pending
with the same `seq`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import orjson

from jobd import constants as C
from jobd.core.job import Job
from jobd.pool import frames as F
from jobd.pool.handle import Pool, WorkerHandle
from jobd.storage.store import Store

log = logging.getLogger("jobd.dispatch")


class Outcomes(Protocol):
    """Where the pool reports what happened to jobs (`Jobs` implements it)."""

    def start(self, job: Job, worker_id: int) -> None: ...
    def progress(self, job: Job, current: float, total: float | None, message: str) -> None: ...
    def complete(self, job: Job, raw: bytes) -> None: ...
    def attempt_failed(self, job: Job, error: str, kind: int, after: float) -> None: ...
    def requeue(self, job: Job, uncount: bool) -> None: ...
    def cancelled_by_force(self, job: Job) -> int: ...
    def log(self, job: Job, data: bytes) -> None: ...      # output the job wrote


class WorkerView(Protocol):
    """The workers as the dispatcher sees them (jobd/pool/handle.py `Workers`)."""

    pools: dict[str, Pool]

    def send(self, w: WorkerHandle, data: bytes) -> None: ...
    def __iter__(self) -> Iterator[WorkerHandle]: ...
    def __len__(self) -> int: ...


class Dispatcher:
    def __init__(self, *, store: Store, outcomes: Outcomes, workers: WorkerView,
                 prefetch: int, memory_limit: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.ready = store.ready
        self.outcomes = outcomes
        self.workers = workers
        self.prefetch = prefetch
        self.memory_limit = memory_limit           # bytes; a worker above it is recycled (0: never)
        self.clock = clock
        self.reserved: dict[str, WorkerHandle] = {}    # job id → worker it was sent ahead to

    def dispatch(self) -> None:
        """Hand each pool's pending jobs to its idle workers, best first; when
        all are busy and jobs still wait, send each worker up to `prefetch` ahead."""
        ready = self.ready
        now = self.clock()
        if ready.wakeups and ready.wakeups[0][0] <= now:
            ready.release_due(now)
        pop = ready.pop
        for pool in self.workers.pools.values():
            idle, gate = pool.idle, pool.gate
            while idle:
                job = pop(gate, now)
                if job is None:
                    break
                self._start(idle.popleft(), job)
            if self.reserved:
                if idle:
                    self._take_back_for_idle(pool)
                self._take_back_outranked(pool, now)
            if self.prefetch and self._backlog(pool):
                self._prefetch(pool, now)

    # --- the worker's current job ------------------------------------------------------
    def _start(self, w: WorkerHandle, job: Job) -> None:
        """Give an idle worker its current job."""
        self._send_run(w, job)
        self._became_current(w, job)

    def _send_run(self, w: WorkerHandle, job: Job) -> None:
        self.workers.send(w, F.frame(F.RUN, orjson.dumps(
            [job.id, job.handler, orjson.Fragment(job.args), orjson.Fragment(job.kwargs),
             job.attempts + 1, job.tags])))

    def _became_current(self, w: WorkerHandle, job: Job) -> None:
        """The worker runs `job` now: record the start, arm its timeout."""
        self.outcomes.start(job, w.id)
        w.begin(job)

    def start_sent_ahead(self, w: WorkerHandle) -> bool:
        """The worker's current job ended: the first job sent ahead that is
        still pending is the one it has started already. False if none."""
        while w.queued:
            nxt, seq = w.queued.popleft()
            self.reserved.pop(nxt.id, None)
            if _still(nxt, seq):
                self._became_current(w, nxt)
                return True
        return False

    # --- sending ahead -------------------------------------------------------------------
    def _backlog(self, pool: Pool) -> bool:
        """Prefetch only when more jobs wait than the pool has workers, and
        none is still starting: then sending ahead never keeps a job from a
        worker that is (or is about to be) idle."""
        waiting = pool.gate.counts[C.PENDING]
        members = pool.members.values()
        if waiting <= len(members):
            return False
        # Jobs sent ahead count as pending: with one pool, all of them are its own.
        ahead = (len(self.reserved) if len(self.workers.pools) == 1
                 else sum(len(w.queued) for w in members))
        if waiting - ahead <= len(members):
            return False
        return all(w.status != C.W_STARTING for w in members)

    def _prefetch(self, pool: Pool, now: float) -> None:
        if pool.gate.limiter is not None:        # limits count jobs that really start
            return
        ready = self.ready
        for depth in range(1, self.prefetch + 1):
            for w in pool.members.values():
                if w.busy and len(w.queued) < depth and w.accepting and not w.drops \
                        and not self._last_jobs(w):
                    job = ready.pop(pool.gate, now)
                    if job is None:
                        return
                    gate = job.lane.handler
                    if gate.limit or gate.limiter is not None or gate.checks:
                        ready.push(job)
                        return
                    self._reserve(pool, w, job)

    def _reserve(self, pool: Pool, w: WorkerHandle, job: Job) -> None:
        # At most the lowest priority sent ahead (lower is only a wasted
        # look, which `_take_back_outranked` then corrects).
        if job.priority < pool.reserved_floor:
            pool.reserved_floor = job.priority
        self._send_run(w, job)
        w.queued.append((job, job.seq))
        self.reserved[job.id] = w

    def _last_jobs(self, w: WorkerHandle) -> bool:
        """The worker will be recycled after what it already has: send nothing ahead."""
        if w.recycle_after and w.jobs_completed + w.jobs_failed + 1 + len(w.queued) >= w.recycle_after:
            return True
        return bool(self.memory_limit) and w.rss > self.memory_limit

    def _take_back_outranked(self, pool: Pool, now: float) -> None:
        """Higher priority runs first: a job sent ahead that a pending job
        (of the same queue, that may start) outranks is taken back (it may be
        sent ahead again, behind it). `reserved_floor` is at most the lowest
        priority sent ahead in the pool, so the usual case (nothing outranks
        it) costs one queue peek."""
        top_job = self.ready.peek(pool.gate, now)
        if top_job is None or top_job.priority <= pool.reserved_floor:
            return
        top = top_job.priority
        floor = C.PRIORITY_MAX
        for w in pool.members.values():
            for job, _seq in list(w.queued):
                if job.priority < top:
                    self.take_back(job)
                elif job.priority < floor:
                    floor = job.priority
        pool.reserved_floor = floor

    def _take_back_for_idle(self, pool: Pool) -> None:
        """Workers of the pool are idle (e.g. just scaled up) while jobs wait
        sent ahead to busy ones: take back the last ones sent, one per idle
        worker not already waiting for one taken back, so they run now."""
        want = len(pool.idle) - sum(len(w.dropping) for w in pool.members.values())
        for w in pool.members.values():
            while want > 0 and w.queued:
                self.take_back(w.queued[-1][0])
                want -= 1

    def take_back_held(self) -> None:
        """A queue or handler was paused: jobs of it sent ahead are taken back."""
        now = self.clock()
        hold = self.ready.hold_of
        for job_id, w in list(self.reserved.items()):
            for job, _seq in w.queued:
                if job.id == job_id and hold(job, now) is not None:
                    self.take_back(job)
                    break

    def take_back(self, job: Job) -> None:
        """Take back a job sent ahead: the worker is told to drop it. A job
        still pending goes back to the queue when the worker answers that it
        had not started it (`dropped`), so it never runs in two places."""
        w = self.reserved.pop(job.id, None)
        if w is None:
            return
        seq = job.seq
        for entry in w.queued:
            if entry[0] is job:
                w.queued.remove(entry)
                seq = entry[1]
                break
        if w.closed:
            self._requeue(job, seq)
            return
        self.workers.send(w, F.frame(F.DROP, job.id.encode()))
        w.drops += 1            # nothing new for this worker until it answers
        w.dropping[job.id] = (job, seq)

    def dropped(self, w: WorkerHandle, job_id: str, ran: bool) -> None:
        """The worker answered a DROP; `ran`: it had started the job before
        the DROP arrived (it may have finished it too)."""
        if ran:
            self.claim(w, job_id)
            return
        token = self._taken_back(w, job_id)
        if token is not None:
            self._requeue(*token)

    def _taken_back(self, w: WorkerHandle, job_id: str) -> tuple[Job, int] | None:
        """The job `w` was told to drop, unless it has been queued again since
        (a cancel then a `retry` give it a new place in the queue already)."""
        entry = w.dropping.pop(job_id, None)
        if entry is None or entry[0].seq != entry[1]:
            return None
        return entry

    def started_unannounced(self, w: WorkerHandle, job_id: str) -> Job | None:
        """The worker, with no current job here, reports on `job_id`: while a
        DROP was unanswered the daemon could not tell which job it ran next
        (the arbiter's `_next_or_settle`). It is the next job sent ahead, or
        one it was told to drop but had started; it becomes the current job."""
        if job_id in w.dropping:
            return self.claim(w, job_id)
        if w.queued and w.queued[0][0].id == job_id and self.start_sent_ahead(w):
            return w.job
        return None

    def claim(self, w: WorkerHandle, job_id: str) -> Job | None:
        """The worker reports on a job it was told to drop (its outcome, or
        `ran` in its answer): it had started it before the DROP arrived. The
        job is the worker's current job after all, so its outcome counts and
        it does not run twice; None when it cannot be (it was cancelled)."""
        if job_id not in w.dropping:
            return None
        token = self._taken_back(w, job_id)
        if token is None:
            log.warning("job %s ran on worker %d before it was taken back; it was queued "
                        "again since, so it runs again", job_id, w.id)
            return None
        if self._adopt(w, *token):
            return token[0]
        log.warning("job %s was taken back from worker %d after it had started it "
                    "(a cancel or stop raced with the start); it ran there", job_id, w.id)
        self._requeue(*token)
        return None

    def _adopt(self, w: WorkerHandle, job: Job, seq: int) -> bool:
        if w.job is not None or w.kill_reason is not None or w.closed or not _still(job, seq):
            return False
        stopping = w.stop_sent
        self._became_current(w, job)
        if stopping:
            w.status = C.W_STOPPING
        log.debug("job %s had started on worker %d before the DROP; it stays there", job.id, w.id)
        return True

    def _requeue(self, job: Job, seq: int) -> None:
        """A job taken back goes back to the queue if it is still the same pending job."""
        if _still(job, seq):
            self.ready.push(job)

    def take_back_all(self, w: WorkerHandle) -> None:
        """The worker stops: everything sent ahead to it is taken back."""
        for job, _seq in list(w.queued):
            self.take_back(job)

    def release_dropping(self, w: WorkerHandle) -> None:
        """The worker is gone: no answer will come for the jobs it was told
        to drop; the pending ones go back to the queue."""
        self.take_back_all(w)
        for job_id in list(w.dropping):
            token = self._taken_back(w, job_id)
            if token is not None:
                self._requeue(*token)


def _still(job: Job, seq: int) -> bool:
    """Is the job of token (job, seq) still pending in the same place?"""
    return job.status == C.PENDING and job.seq == seq

"""Which pending job goes to which worker, and when (the arbiter keeps the processes).

Order: highest priority first, FIFO within a priority (the store's ready
queue). Per-handler concurrency limits (`max_concurrency`): a job popped
while its handler is at its limit is parked in that handler's own queue (same
order); each job of the handler that ends frees one slot and puts back
exactly one parked job, the best, to compete again. Per-job cost stays
O(log n) however long the parked backlog grows. The dispatcher counts the
running jobs of limited handlers itself, from the store's status changes.

Prefetch: when every worker is busy and more jobs wait than there are
workers, each worker is sent up to `[workers] prefetch` jobs ahead
("reserved"), so it starts the next one the moment it finishes instead of
waiting a round trip. A reserved job stays `pending` until the daemon hears
that its predecessor ended; then it is recorded as started and its timeout
begins. A reserved job is taken back (the worker is sent `DROP`) when it is
cancelled, when its worker stops or dies, and when a pending job outranks it:
higher priority runs first even against jobs already sent ahead.

A job is known by its token `(job, seq)`: `seq` is its place in the queue,
which a retry changes, and a job that left the table has no status; so a
job taken back or sent ahead is still the same job only while it is pending
with the same `seq`.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Collection, Iterator
from typing import Any, Protocol

import orjson

from jobd import constants as C
from jobd.core.job import Job
from jobd.core.pqueue import ReadyQueue
from jobd.pool import frames as F
from jobd.pool.handle import WorkerHandle
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

    idle: deque[WorkerHandle]

    def send(self, w: WorkerHandle, data: bytes) -> None: ...
    def __iter__(self) -> Iterator[WorkerHandle]: ...
    def __len__(self) -> int: ...


class Dispatcher:
    def __init__(self, *, store: Store, outcomes: Outcomes, workers: WorkerView,
                 limits: dict[str, int], prefetch: int, memory_limit: int,
                 known: Collection[str] | None = None) -> None:
        self.store = store
        # Handlers the workers' code registers (None: every job's): a job of
        # another is held, never sent (it runs if a reload brings it back).
        self.known = frozenset(known) if known is not None else None
        self.held: dict[str, ReadyQueue] = {}
        self.outcomes = outcomes
        self.workers = workers
        self.limits = limits
        self.prefetch = prefetch
        self.memory_limit = memory_limit           # bytes; a worker above it is recycled (0: never)
        self.reserved: dict[str, WorkerHandle] = {}    # job id → worker it was sent ahead to
        self.reserved_floor = 0                        # <= the lowest priority in `reserved`
        self.running: dict[str, int] = dict.fromkeys(limits, 0)   # of limited handlers
        self.parked: dict[str, ReadyQueue] = {}        # limited handler → jobs held back
        self.parks = 0          # jobs parked so far (each at most once per freed slot)
        if limits:
            store.listen(self._on_change)

    def dispatch(self) -> None:
        """Hand pending jobs to idle workers, highest priority first; when all
        are busy and jobs still wait, send each worker up to `prefetch` ahead."""
        idle = self.workers.idle
        while idle:
            job = self._next_job()
            if job is None:
                return
            self._start(idle.popleft(), job)
        if self.reserved:
            self._take_back_outranked()
        if self.prefetch and self._backlog():
            self._prefetch()

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
    def _backlog(self) -> bool:
        """Prefetch only when more jobs wait than there are workers, and none
        is still starting: then sending ahead never keeps a job from a worker
        that is (or is about to be) idle."""
        waiting = self.store.table.counts[C.PENDING] - len(self.reserved)
        if waiting <= len(self.workers):
            return False
        return all(w.status != C.W_STARTING for w in self.workers)

    def _prefetch(self) -> None:
        for depth in range(1, self.prefetch + 1):
            for w in self.workers:
                if w.busy and len(w.queued) < depth and w.accepting and not w.drops \
                        and not self._last_jobs(w):
                    job = self._next_job()
                    if job is None:
                        return
                    if job.handler in self.limits:    # limits count jobs that really run
                        self.store.unclaim(job)
                        return
                    self._reserve(w, job)

    def _reserve(self, w: WorkerHandle, job: Job) -> None:
        self._send_run(w, job)
        w.queued.append((job, job.seq))
        if not self.reserved or job.priority < self.reserved_floor:
            self.reserved_floor = job.priority
        self.reserved[job.id] = w

    def _last_jobs(self, w: WorkerHandle) -> bool:
        """The worker will be recycled after what it already has: send nothing ahead."""
        if w.recycle_after and w.jobs_completed + w.jobs_failed + 1 + len(w.queued) >= w.recycle_after:
            return True
        return bool(self.memory_limit) and w.rss > self.memory_limit

    def _take_back_outranked(self) -> None:
        """Higher priority runs first: a job sent ahead that a pending job
        outranks is taken back (it may be sent ahead again, behind it).
        `reserved_floor` is at most the lowest priority sent ahead, so the
        usual case (nothing outranks it) costs one queue peek."""
        top_job = self.store.top()
        if top_job is None or top_job.priority <= self.reserved_floor:
            return
        top = top_job.priority
        floor = C.PRIORITY_MAX
        for w in self.workers:
            for job, _seq in list(w.queued):
                if job.priority < top:
                    self.take_back(job)
                elif job.priority < floor:
                    floor = job.priority
        self.reserved_floor = floor

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
            self.store.unclaim(job)

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

    # --- concurrency limits --------------------------------------------------------------
    def _next_job(self) -> Job | None:
        claim, limits, known = self.store.claim, self.limits, self.known
        while True:
            job = claim()
            if job is None:
                return None
            if known is not None and job.handler not in known:
                _hold(self.held, job)                 # its code is not loaded: held
                continue
            if not limits or job.handler not in limits \
                    or self.running[job.handler] < limits[job.handler]:
                return job
            _hold(self.parked, job)
            self.parks += 1

    def set_handlers(self, known: Collection[str], limits: dict[str, int]) -> None:
        """New handler code (a reload): jobs of handlers back again compete again."""
        self.known = frozenset(known)
        self.limits = limits
        for handler in limits:
            self.running.setdefault(handler, 0)
        if limits:
            self.store.unlisten(self._on_change)
            self.store.listen(self._on_change)
        for handler in [h for h in self.held if h in self.known]:
            queue = self.held.pop(handler)
            while (job := queue.pop()) is not None:
                self.store.unclaim(job)

    def held_count(self) -> int:
        """Jobs held because the running code does not register their handler (upper bound)."""
        return sum(len(q) for q in self.held.values())

    def _on_change(self, job: Job, old: str) -> None:
        """Count the running jobs of limited handlers; one that ends frees a slot."""
        handler = job.handler
        if handler not in self.running:
            return
        if job.status == C.RUNNING:
            self.running[handler] += 1
        if old == C.RUNNING:
            self.running[handler] -= 1
            self._unpark(handler)

    def _unpark(self, handler: str) -> None:
        """A slot of `handler` is free: the best of its parked jobs that is
        still pending competes again (jobs cancelled or queued again since
        are stale entries, dropped here)."""
        parked = self.parked.get(handler)
        job = parked.pop() if parked is not None else None
        if job is not None:
            self.store.unclaim(job)


def _hold(queues: dict[str, ReadyQueue], job: Job) -> None:
    queue = queues.get(job.handler)
    if queue is None:
        queue = queues[job.handler] = ReadyQueue()
    queue.push(job)


def _still(job: Job, seq: int) -> bool:
    """Is the job of token (job, seq) still pending in the same place?"""
    return job.status == C.PENDING and job.seq == seq


def concurrency_limits(handlers: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, int]:
    """max_concurrency per handler: config [handler."NAME"] over @handler option."""
    limits = {}
    for name, spec in handlers.items():
        value = overrides.get(name, {}).get("max_concurrency", spec.options.get("max_concurrency"))
        if value:
            limits[name] = int(value)
    return limits

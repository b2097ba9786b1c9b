"""Which pending job goes to which worker, and when (the pool keeps the processes).

Order: highest priority first, FIFO within a priority (the state's heap).
Per-handler concurrency limits (`max_concurrency`): a job popped while its
handler is at its limit is parked in that handler's own heap (same order);
each job of the handler that ends frees one slot and puts back exactly one
parked job, the best, to compete again. Per-job cost stays O(log n) however
long the parked backlog grows.

Prefetch: when every worker is busy and more jobs wait than there are
workers, each worker is sent up to `[workers] prefetch` jobs ahead
("reserved"), so it starts the next one the moment it finishes instead of
waiting a round trip. A reserved job stays `pending` until the daemon hears
that its predecessor ended; then it is recorded as started and its timeout
begins. A reserved job is taken back (the worker is sent `DROP`) when it is
cancelled, when its worker stops or dies, and when a pending job outranks it:
higher priority runs first even against jobs already sent ahead.
"""
from __future__ import annotations

import heapq
import logging
from typing import TYPE_CHECKING

import orjson

from jobd import constants as C
from jobd.core.job import Job
from jobd.pool import frames as F
from jobd.pool.handle import WorkerProc

if TYPE_CHECKING:
    from jobd.daemon import Daemon
    from jobd.pool.arbiter import Pool

log = logging.getLogger("jobd.dispatch")

class Dispatcher:
    def __init__(self, pool: Pool, daemon: Daemon) -> None:
        self.pool = pool
        self.d = daemon
        self.prefetch = daemon.cfg.workers.prefetch
        self.reserved: dict[str, WorkerProc] = {}      # job id → worker it was sent ahead to
        self.reserved_floor = 0                        # <= the lowest priority in `reserved`
        self.limits = concurrency_limits(daemon)
        self.parked: dict[str, list[tuple[int, int, Job]]] = {}   # handler → heap
        self.parks = 0          # jobs parked so far (each at most once per freed slot)

    def dispatch(self) -> None:
        """Hand pending jobs to idle workers, highest priority first; when all
        are busy and jobs still wait, send each worker up to `prefetch` ahead."""
        idle = self.pool.idle
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
    def _start(self, w: WorkerProc, job: Job) -> None:
        """Give an idle worker its current job."""
        self._send_run(w, job)
        self._became_current(w, job)

    def _send_run(self, w: WorkerProc, job: Job) -> None:
        self.pool.send(w, F.frame(F.RUN, orjson.dumps(
            [job.id, job.handler, orjson.Fragment(job.args), orjson.Fragment(job.kwargs),
             job.attempts + 1, job.tags])))

    def _became_current(self, w: WorkerProc, job: Job) -> None:
        """The worker runs `job` now: record the start, arm its timeout."""
        ready_at = job.scheduled_for if job.attempts == 0 and job.scheduled_for else job.created_at
        self.d.queue.start(job, w.id)
        self.d.metrics.observe_queue_time(job.priority, (job.started_at or 0) - ready_at)
        w.job = job
        w.status = C.W_BUSY
        if job.timeout is not None:
            w.timer = self.d.loop.call_later(job.timeout, self.pool.timed_out, w, job)

    def start_sent_ahead(self, w: WorkerProc) -> bool:
        """The worker's current job ended: the first job sent ahead that is
        still pending is the one it has started already. False if none."""
        while w.queued:
            nxt = w.queued.popleft()
            self.reserved.pop(nxt.id, None)
            if nxt.status == C.PENDING and self.d.state.jobs.get(nxt.id) is nxt:
                self._became_current(w, nxt)
                return True
        return False

    # --- sending ahead -------------------------------------------------------------------
    def _backlog(self) -> bool:
        """Prefetch only when more jobs wait than there are workers, and none
        is still starting: then sending ahead never keeps a job from a worker
        that is (or is about to be) idle."""
        workers = self.pool.workers
        waiting = self.d.state.counts[C.PENDING] - len(self.reserved)
        if waiting <= len(workers):
            return False
        return all(w.status != C.W_STARTING for w in workers.values())

    def _prefetch(self) -> None:
        for depth in range(1, self.prefetch + 1):
            for w in self.pool.workers.values():
                if w.busy and len(w.queued) < depth and w.accepting and not w.drops \
                        and not self._last_jobs(w):
                    job = self._next_job()
                    if job is None:
                        return
                    if job.handler in self.limits:    # limits count jobs that really run
                        self.d.state.push_back(job)
                        return
                    self._reserve(w, job)

    def _reserve(self, w: WorkerProc, job: Job) -> None:
        self._send_run(w, job)
        w.queued.append(job)
        if not self.reserved or job.priority < self.reserved_floor:
            self.reserved_floor = job.priority
        self.reserved[job.id] = w

    def _last_jobs(self, w: WorkerProc) -> bool:
        """The worker will be recycled after what it already has: send nothing ahead."""
        if w.recycle_after and w.jobs_completed + w.jobs_failed + 1 + len(w.queued) >= w.recycle_after:
            return True
        limit = self.d.cfg.workers.max_memory_mb * 1024 * 1024
        return bool(limit) and w.rss > limit

    def _take_back_outranked(self) -> None:
        """Higher priority runs first: a job sent ahead that a pending job
        outranks is taken back (it may be sent ahead again, behind it).
        `reserved_floor` is at most the lowest priority sent ahead, so the
        usual case (nothing outranks it) costs one heap peek."""
        top = self.d.state.top_priority()
        if top is None or top <= self.reserved_floor:
            return
        floor = C.PRIORITY_MAX
        for w in self.pool.workers.values():
            for job in list(w.queued):
                if job.priority < top:
                    self.unreserve(job)
                elif job.priority < floor:
                    floor = job.priority
        self.reserved_floor = floor

    def unreserve(self, job: Job) -> None:
        """Take back a job sent ahead: the worker is told to drop it. A job
        still pending goes back to the queue when the worker answers that it
        had not started it (`dropped`), so it never runs in two places."""
        w = self.reserved.pop(job.id, None)
        if w is None:
            return
        if job in w.queued:
            w.queued.remove(job)
        if w.closed:
            self.requeue(job)
            return
        self.pool.send(w, F.frame(F.DROP, job.id.encode()))
        w.drops += 1            # nothing new for this worker until it answers
        w.dropping[job.id] = (job, job.seq)

    def dropped(self, w: WorkerProc, job_id: str, ran: bool) -> None:
        """The worker answered a DROP; `ran`: it had started the job before
        the DROP arrived (it may have finished it too)."""
        if ran:
            self.claim(w, job_id)
            return
        job = self._taken_back(w, job_id)
        if job is not None:
            self.requeue(job)

    def _taken_back(self, w: WorkerProc, job_id: str) -> Job | None:
        """The job `w` was told to drop, unless it has been queued again since
        (a cancel then a `retry` give it a new place in the queue already)."""
        entry = w.dropping.pop(job_id, None)
        if entry is None or entry[0].seq != entry[1]:
            return None
        return entry[0]

    def started_unannounced(self, w: WorkerProc, job_id: str) -> Job | None:
        """The worker, with no current job here, reports on `job_id`: while a
        DROP was unanswered the daemon could not tell which job it ran next
        (pool `_next_or_settle`). It is the next job sent ahead, or one it
        was told to drop but had started; it becomes the current job."""
        if job_id in w.dropping:
            return self.claim(w, job_id)
        if w.queued and w.queued[0].id == job_id and self.start_sent_ahead(w):
            return w.job
        return None

    def claim(self, w: WorkerProc, job_id: str) -> Job | None:
        """The worker reports on a job it was told to drop (its outcome, or
        `ran` in its answer): it had started it before the DROP arrived. The
        job is the worker's current job after all, so its outcome counts and
        it does not run twice; None when it cannot be (it was cancelled)."""
        if job_id not in w.dropping:
            return None
        job = self._taken_back(w, job_id)
        if job is None:
            log.warning("job %s ran on worker %d before it was taken back; it was queued "
                        "again since, so it runs again", job_id, w.id)
            return None
        if self._adopt(w, job):
            return job
        log.warning("job %s was taken back from worker %d after it had started it "
                    "(a cancel or stop raced with the start); it ran there", job_id, w.id)
        self.requeue(job)
        return None

    def _adopt(self, w: WorkerProc, job: Job) -> bool:
        if w.job is not None or w.kill_reason is not None or w.closed \
                or job.status != C.PENDING or self.d.state.jobs.get(job.id) is not job:
            return False
        stopping = w.stop_sent
        self._became_current(w, job)
        if stopping:
            w.status = C.W_STOPPING
        log.debug("job %s had started on worker %d before the DROP; it stays there", job.id, w.id)
        return True

    def requeue(self, job: Job) -> None:
        """A job taken back goes back to the queue if it is still pending."""
        if job.status == C.PENDING and self.d.state.jobs.get(job.id) is job:
            self.d.state.push_back(job)

    def take_back_all(self, w: WorkerProc) -> None:
        """The worker stops: everything sent ahead to it is taken back."""
        for job in list(w.queued):
            self.unreserve(job)

    def release_dropping(self, w: WorkerProc) -> None:
        """The worker is gone: no answer will come for the jobs it was told
        to drop; the pending ones go back to the queue."""
        self.take_back_all(w)
        for job_id in list(w.dropping):
            job = self._taken_back(w, job_id)
            if job is not None:
                self.requeue(job)

    # --- concurrency limits --------------------------------------------------------------
    def _next_job(self) -> Job | None:
        state, limits = self.d.state, self.limits
        while True:
            job = state.pop_pending()
            if job is None or not limits or job.handler not in limits \
                    or not self._at_limit(job.handler):
                return job
            heapq.heappush(self.parked.setdefault(job.handler, []), (-job.priority, job.seq, job))
            self.parks += 1

    def _at_limit(self, handler: str) -> bool:
        return self.d.metrics.running_by_handler[handler] >= self.limits[handler]

    def unpark(self, handler: str) -> None:
        """A job of a limited handler ended, freeing one slot: the best of its
        parked jobs that is still pending competes again (entries of jobs
        cancelled or re-queued since are stale and dropped here)."""
        heap = self.parked.get(handler)
        state = self.d.state
        while heap:
            _, seq, job = heapq.heappop(heap)
            if job.status == C.PENDING and job.seq == seq and state.jobs.get(job.id) is job:
                state.push_back(job)
                return
        self.parked.pop(handler, None)


def concurrency_limits(daemon: Daemon) -> dict[str, int]:
    """max_concurrency per handler: config [handler."NAME"] over @handler option."""
    limits = {}
    for name, spec in daemon.handlers.items():
        value = daemon.cfg.handler.get(name, {}).get("max_concurrency",
                                                     spec.options.get("max_concurrency"))
        if value:
            limits[name] = int(value)
    return limits

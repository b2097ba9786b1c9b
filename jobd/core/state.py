"""The job table: every job, the priority heap, the timer heap, dependencies.

`State.apply(record)` is the single interpreter of WAL records. The live
daemon appends a record to the journal and applies it; recovery applies the
same records in the same order, so both arrive at the same state. Changes
that follow from a record (a dependency releasing or failing its dependents)
happen inside `apply`, deterministically, and are not recorded separately.

Heaps use lazy deletion: an entry is valid only while the job still has the
status and sequence number it was pushed with.
"""
from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from jobd import constants as C
from jobd.core.job import Job, compact_result
from jobd.storage import records as R

ChangeHook = Callable[[Job, str], None]
_from_record = Job.from_record
_heappush = heapq.heappush
_PENDING = C.PENDING

# Jobs whose dependencies still matter: a job that is pending, running or
# retrying had them satisfied (or was explicitly retried, which runs it
# regardless), so a dependency failing later does not touch it.
_DEP_BOUND = frozenset((C.WAITING, C.SCHEDULED))


class State:
    """In-memory job state, owned by the event loop thread."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.counts: dict[str, int] = dict.fromkeys(C.STATUSES, 0)
        self.heap: list[tuple[int, int, Job]] = []
        self.timers: list[tuple[float, int, Job]] = []
        self.dependents: dict[str, list[Job]] = {}
        self.finished: deque[tuple[float, Job]] = deque()     # terminal, by time
        self.dead: deque[tuple[float, Job]] = deque()         # dead letters, by time
        self.running: dict[str, Job] = {}
        self.orphan_records = 0         # replayed records about jobs never admitted (skipped)
        self.args_bytes = 0             # JSON text of every job's args and kwargs ([queue] max_args_bytes)
        self.seq = 0
        self._timer_seq = 0
        self.schedules: dict[str, dict[str, Any]] = {}
        self.on_change: ChangeHook | None = None   # set once live
        self._apply = {
            R.SUBMIT: self._a_submit, R.START: self._a_start,
            R.PROGRESS: self._a_progress, R.COMPLETE: self._a_complete,
            R.FAIL: self._a_fail, R.CANCEL: self._a_cancel,
            R.CANCEL_REQUEST: self._a_cancel_request, R.REQUEUE: self._a_requeue,
            R.RETRY: self._a_retry, R.DELETE: self._a_delete,
            R.SCHEDULE_ADD: self._a_schedule_add,
            R.SCHEDULE_REMOVE: self._a_schedule_remove,
            R.SCHEDULE_FIRED: self._a_schedule_fired, R.SEQ: self._a_seq,
            R.FORMAT: self._a_format,
            R.JOBS: self.replay,
        }

    # --- the interpreter ----------------------------------------------------------
    def apply(self, rec: list[Any]) -> None:
        self._apply[rec[0]](rec)

    def replay(self, rec: list[Any]) -> None:
        """`apply` for recovery, with submits (most records) on a short path."""
        tag = rec[0]
        if tag == R.SUBMIT:
            self.insert(_from_record(rec[1]))
        elif tag == R.JOBS:
            insert = self.insert
            for job_rec in rec[1]:
                insert(_from_record(job_rec))
        else:
            fn = self._apply[tag]
            try:
                fn(rec)
            except KeyError:
                # About a job the log never admitted: its submit was in a
                # batch whose write failed (storage_error) while a later
                # record about it was written. Nothing to apply it to.
                self.orphan_records += 1

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    @property
    def queued(self) -> int:
        """Jobs counted against queue.max_size."""
        c = self.counts
        return c[C.SCHEDULED] + c[C.WAITING] + c[C.PENDING] + c[C.RETRYING]

    def _set_status(self, job: Job, new: str) -> None:
        old = job.status
        counts = self.counts
        counts[old] -= 1
        counts[new] += 1
        job.status = new
        if new == C.RUNNING:
            # RUNNING → RUNNING happens in replay: a start record, a crash,
            # then the next run's start (the requeue at recovery is not logged).
            self.running[job.id] = job
        elif old == C.RUNNING:
            self.running.pop(job.id, None)
        if new == C.PENDING:
            heapq.heappush(self.heap, (-job.priority, job.seq, job))
        if self.on_change is not None:
            self.on_change(job, old)

    def _add_timer(self, job: Job) -> None:
        assert job.scheduled_for is not None
        # The tie-breaker has its own counter: taking FIFO numbers here would
        # make replay of a snapshot (which re-arms every timer) diverge from
        # the live sequence, and reorder jobs retried after a restart.
        self._timer_seq += 1
        heapq.heappush(self.timers, (job.scheduled_for, self._timer_seq, job))

    # --- record handlers -------------------------------------------------------------
    def _a_submit(self, rec: list[Any]) -> None:
        self.insert(Job.from_record(rec[1]))

    def insert(self, job: Job) -> None:
        """Add a new job (a submit record, live or replayed). Replay calls this
        a million times: locals and module-level names on purpose."""
        jobs, job_id = self.jobs, job.id
        old = jobs.get(job_id)
        if old is not None:                     # snapshot + replayed submit overlap
            self._forget(old)
        jobs[job_id] = job
        self.args_bytes += len(job.args) + len(job.kwargs)
        if job.seq > self.seq:
            self.seq = job.seq
        status = job.status
        self.counts[status] += 1
        if status == _PENDING:
            _heappush(self.heap, (-job.priority, job.seq, job))
        else:
            self._index(job, status)
        if job.depends_on and status in _DEP_BOUND:
            for dep in job.depends_on:
                self.dependents.setdefault(dep, []).append(job)
        if self.on_change is not None:
            self.on_change(job, "")

    def _index(self, job: Job, status: str) -> None:
        """Put a job just loaded, not pending, into the structures its status needs."""
        if status in (C.SCHEDULED, C.RETRYING):
            self._add_timer(job)
        elif status == C.RUNNING:
            self.running[job.id] = job
        elif status == C.DEAD_LETTER:
            self.dead.append((job.completed_at or 0.0, job))
        elif status in C.TERMINAL:
            self.finished.append((job.completed_at or 0.0, job))

    def _a_start(self, rec: list[Any]) -> None:
        job = self.jobs[rec[1]]
        job.attempts += 1
        job.started_at = rec[2]
        job.completed_at = None
        job.worker_id = rec[3]
        self._set_status(job, C.RUNNING)

    def _a_progress(self, rec: list[Any]) -> None:
        job = self.jobs.get(rec[1])
        if job is not None:
            job.progress = rec[2]

    def _a_complete(self, rec: list[Any]) -> None:
        job = self.jobs[rec[1]]
        job.completed_at = rec[2]
        job.result = compact_result(rec[3])      # live: a Fragment already; replay: decoded
        job.result_ref = rec[4]
        job.error = None
        self._finish(job, C.COMPLETED)
        self._release_dependents(job)

    def _a_fail(self, rec: list[Any]) -> None:
        job = self.jobs[rec[1]]
        ts, job.error, status, due = rec[2], rec[3], rec[4], rec[5]
        job.finished_attempt_at = ts
        if status == C.RETRYING:
            job.completed_at = None       # only terminal jobs have completed_at
            job.scheduled_for = due
            self._set_status(job, C.RETRYING)
            self._add_timer(job)
            return
        job.completed_at = ts
        self._finish(job, status)
        self._fail_dependents(job)

    def _a_cancel(self, rec: list[Any]) -> None:
        job = self.jobs[rec[1]]
        job.completed_at = rec[2]
        self._finish(job, C.CANCELLED)
        self._fail_dependents(job)

    def _a_cancel_request(self, rec: list[Any]) -> None:
        self.jobs[rec[1]].cancel_requested = True

    def _a_requeue(self, rec: list[Any]) -> None:
        job = self.jobs[rec[1]]
        if rec[2] and job.attempts > 0:
            job.attempts -= 1
        job.worker_id = None
        self._set_status(job, C.PENDING)

    def _a_retry(self, rec: list[Any]) -> None:
        job = self.jobs[rec[1]]
        job.attempts = 0
        job.error = None
        job.result = None
        job.result_ref = None
        job.completed_at = None
        job.started_at = None
        job.worker_id = None
        job.cancel_requested = False
        job.progress = None
        job.seq = self.next_seq()
        self._set_status(job, C.PENDING)

    def _a_delete(self, rec: list[Any]) -> None:
        for job_id in rec[1]:
            job = self.jobs.pop(job_id, None)
            if job is not None:
                self._forget(job)

    def _a_schedule_add(self, rec: list[Any]) -> None:
        sched = rec[1]
        self.schedules[sched["name"]] = sched

    def _a_schedule_remove(self, rec: list[Any]) -> None:
        self.schedules.pop(rec[1], None)

    def _a_schedule_fired(self, rec: list[Any]) -> None:
        sched = self.schedules.get(rec[1])
        if sched is not None:
            # rec[2]: the due time the job id names; rec[4]: when it ran. Older
            # records lack rec[4]: their due time is the best guess there is.
            sched["last_due"] = rec[2]
            sched["last_job_id"] = rec[3]
            sched["last_run"] = rec[4] if len(rec) > 4 else rec[2]

    def _a_format(self, rec: list[Any]) -> None:
        R.check_format(rec[1], "a WAL segment")

    def _a_seq(self, rec: list[Any]) -> None:
        self.seq = max(self.seq, rec[1])

    # --- helpers ---------------------------------------------------------------------
    def _forget(self, job: Job) -> None:
        """Drop a job's counters; heap and deque entries go stale on their own."""
        self.counts[job.status] -= 1
        self.args_bytes -= len(job.args) + len(job.kwargs)
        self.running.pop(job.id, None)
        job.status = ""          # invalidates every lazy heap entry

    def _finish(self, job: Job, status: str) -> None:
        self._set_status(job, status)
        entry = (job.completed_at or 0.0, job)
        (self.dead if status == C.DEAD_LETTER else self.finished).append(entry)

    def _release_dependents(self, done: Job) -> None:
        for job in self.dependents.pop(done.id, ()):
            if job.status == C.WAITING and self.deps_state(job) == C.COMPLETED:
                job.seq = self.next_seq()
                self._set_status(job, C.PENDING)

    def _fail_dependents(self, dead: Job) -> None:
        """Fail every open job that depends on `dead`, directly or through
        others. Iterative: a chain of any depth (100,000 jobs each waiting on
        the one before) must not hit the interpreter's recursion limit, live
        or in replay."""
        stack = [dead]
        pop_deps = self.dependents.pop
        while stack:
            failed = stack.pop()
            for job in pop_deps(failed.id, ()):
                if job.status in _DEP_BOUND:
                    job.error = f"dependency {failed.id} ended {failed.status}"
                    job.completed_at = failed.completed_at
                    self._finish(job, C.FAILED)
                    stack.append(job)

    def deps_state(self, job: Job) -> str:
        """COMPLETED if every dependency completed, FAILED if one ended
        unsuccessfully, else WAITING.

        A dependency that is gone counts as completed: submits naming an
        unknown id are refused (`not_found`), and a dependency that ends
        unsuccessfully fails its open dependents at once, so one that was
        purged or expired while a dependent still waits had completed.
        """
        result = C.COMPLETED
        for dep_id in job.depends_on:
            dep = self.jobs.get(dep_id)
            if dep is None:
                continue
            if dep.status in C.UNSUCCESSFUL:
                return C.FAILED
            if dep.status != C.COMPLETED:
                result = C.WAITING
        return result

    def failed_dep(self, job: Job) -> str | None:
        for dep_id in job.depends_on:
            dep = self.jobs.get(dep_id)
            if dep is not None and dep.status in C.UNSUCCESSFUL:
                return dep_id
        return None

    # --- the queue ---------------------------------------------------------------------
    def pop_pending(self) -> Job | None:
        """Highest priority, oldest pending job, or None."""
        heap = self.heap
        while heap:
            _, seq, job = heapq.heappop(heap)
            if job.status == C.PENDING and job.seq == seq:
                return job
        return None

    def top_priority(self) -> int | None:
        """The priority of the job `pop_pending` would return, or None."""
        heap = self.heap
        while heap:
            _, seq, job = heap[0]
            if job.status == C.PENDING and job.seq == seq:
                return job.priority
            heapq.heappop(heap)
        return None

    def push_back(self, job: Job) -> None:
        """Return a popped job to the heap unchanged (e.g. no worker took it)."""
        heapq.heappush(self.heap, (-job.priority, job.seq, job))

    def next_due(self) -> float | None:
        timers = self.timers
        while timers:
            due, _, job = timers[0]
            if job.status in (C.SCHEDULED, C.RETRYING) and job.scheduled_for == due:
                return due
            heapq.heappop(timers)
        return None

    def promote_due(self, now: float) -> int:
        """Move scheduled and retrying jobs whose time has come into the queue."""
        moved = 0
        timers = self.timers
        while timers and timers[0][0] <= now:
            due, _, job = heapq.heappop(timers)
            if job.status not in (C.SCHEDULED, C.RETRYING) or job.scheduled_for != due:
                continue
            self._promote(job)
            moved += 1
        return moved

    def _promote(self, job: Job) -> None:
        deps = self.deps_state(job) if job.depends_on else C.COMPLETED
        if deps == C.FAILED:
            job.error = f"dependency {self.failed_dep(job)} ended unsuccessfully"
            job.completed_at = job.scheduled_for      # when it was due: deterministic
            self._finish(job, C.FAILED)
            self._fail_dependents(job)
            return
        job.seq = self.next_seq()
        self._set_status(job, C.PENDING if deps == C.COMPLETED else C.WAITING)

    def recover_running(self) -> list[Job]:
        """After replay: jobs that were running had no live worker; requeue them.

        The attempt stays counted (SPEC §6). A job whose cancel was requested
        before the crash is cancelled instead of run again.
        """
        jobs = list(self.running.values())
        for job in jobs:
            job.worker_id = None
            self._set_status(job, C.PENDING)
        return jobs

    # --- snapshots ---------------------------------------------------------------------
    def snapshot(self) -> Iterator[list[Any]]:
        yield [R.SEQ, self.seq]
        for sched in self.schedules.values():
            yield [R.SCHEDULE_ADD, sched]
        chunk: list[Any] = []
        for job in self.jobs.values():        # chunks: one frame and one decode per
            chunk.append(job.to_record())     # thousand jobs makes replay faster
            if len(chunk) == R.SNAPSHOT_CHUNK:
                yield [R.JOBS, chunk]
                chunk = []
        if chunk:
            yield [R.JOBS, chunk]

    # --- expiry ------------------------------------------------------------------------
    def expired(self, now: float, ttl: float, dl_age: float) -> list[str]:
        """Ids of finished jobs past their ttl and dead letters past their age."""
        out: list[str] = []
        self._oldest(self.finished, lambda stamp: stamp < now - ttl, out)
        self._oldest(self.dead, lambda stamp: stamp < now - dl_age, out)
        return out

    def dead_overflow(self, keep: int) -> list[Job]:
        """The oldest dead letters beyond the newest `keep` (to evict)."""
        extra = self.counts[C.DEAD_LETTER] - keep
        if extra <= 0:
            return []
        ids: list[str] = []
        self._oldest(self.dead, lambda stamp: len(ids) < extra, ids)
        return [self.jobs[i] for i in ids]

    def _oldest(self, queue: deque[tuple[float, Job]], take: Callable[[float], bool],
                out: list[str]) -> None:
        """Pop from the front of a by-time deque while `take(stamp)` says so,
        collecting those jobs' ids; stale entries (the job left that status
        or the table) are dropped on the way."""
        while queue:
            stamp, job = queue[0]
            stale = job.status not in C.TERMINAL or job.completed_at != stamp \
                or self.jobs.get(job.id) is not job
            if not stale and not take(stamp):
                break
            queue.popleft()
            if not stale:
                out.append(job.id)

"""The job state machine: the one place a job's status changes (pure).

`Lifecycle.apply(record)` interprets every state record (jobd/core/records.py).
The live daemon writes a record to the log and then applies it; recovery
applies the same records in the same order, so both arrive at the same
state. What follows from a record (a dependency releasing or failing its
dependents) happens inside `apply`, deterministically, and is not recorded
separately. A due job entering the queue (`promote_due`) is not recorded
either: after a restart it is promoted again and takes its place behind the
jobs queued by then.

The rules a change follows are here too: where a new job starts (`place`),
what a failed attempt leads to (`next_step`, with `backoff`), which jobs a
cancel or a retry applies to. Every status change is told to the
`listeners` (metrics, events, result waiters, the dispatcher's limits):
they learn of changes, they never make them.

No I/O, no asyncio, no clock: times come in with the records.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jobd import constants as C
from jobd.core import records as R
from jobd.core.flow import Pause, Ready
from jobd.core.job import Job, compact_result
from jobd.core.pqueue import TimerQueue
from jobd.core.table import DEP_BOUND, JobTable

Listener = Callable[[Job, str], None]       # (job, its old status; "" when new)
_from_record = Job.from_record
_PENDING = C.PENDING
_RUNNING = C.RUNNING
_TIMED = frozenset((C.SCHEDULED, C.RETRYING))

# Outcome kinds of a failed attempt (the worker's FAIL frame says which).
FAIL_ERROR = 0          # an ordinary exception: the retry policy decides
FAIL_PERMANENT = 1      # PermanentError: no retry
FAIL_RETRY = 2          # Retry(after=...): retry after exactly that delay
FAIL_RATE_LIMITED = 3   # RateLimited(after=...): not an attempt; the handler is held that long
FAIL_SNOOZE = 4         # Snooze(after=...): not an attempt; the job waits that long
FAIL_CRASH = 5          # its worker died running it (a signal, an exit): the retry policy
                        # decides, and it counts towards poison_after and quarantine_crashes

# The statuses `retry` applies to; `cancel` applies to every other non-terminal one.
RETRYABLE = frozenset((C.DEAD_LETTER, C.FAILED, C.CANCELLED))


class UnknownRecord(ValueError):
    """Replay met a record type this jobd does not know."""


# --- rules -----------------------------------------------------------------------------------

def backoff(failed: int, delay: float, factor: float, max_delay: float,
            jitter: bool, rng: random.Random | None = None) -> float:
    """Delay before attempt `failed + 1`, after `failed` failed attempts.

    `min(delay * factor**(failed-1), max_delay)`; with jitter, a uniform
    fraction in [0.5, 1.0] of that, so retries of many jobs that failed
    together spread out instead of arriving as a herd.
    """
    n = max(1, failed)
    try:
        value = min(delay * factor ** (n - 1), max_delay)
    except OverflowError:
        value = max_delay
    if jitter:
        value *= (rng or random).uniform(0.5, 1.0)
    return value


def should_retry(attempts: int, max_retries: int) -> bool:
    """`max_retries` counts retries after the first attempt."""
    return attempts <= max_retries


def next_step(attempts: int, max_retries: int, kind: int, after: float,
              cancel_requested: bool, delay: float, factor: float, max_delay: float,
              jitter: bool, rng: random.Random | None = None) -> tuple[str, float | None]:
    """What a failed attempt leads to: (next status, retry delay or None)."""
    if kind == FAIL_PERMANENT:
        return C.FAILED, None
    if not should_retry(attempts, max_retries):
        return C.DEAD_LETTER, None
    if cancel_requested:
        return C.CANCELLED, None
    if kind == FAIL_RETRY:
        return C.RETRYING, max(0.0, after)
    return C.RETRYING, backoff(attempts, delay, factor, max_delay, jitter, rng)


class Lifecycle:
    """Every job's status, the ready and timer queues, and the records that change them."""

    def __init__(self, framing: Mapping[str, Callable[[list[Any]], None]] | None = None) -> None:
        self.table = JobTable()
        self.ready = Ready(self.table.counts, self.table.jobs.values)
        self.timers = TimerQueue()
        self.listeners: list[Listener] = []      # told of every change once live
        self._apply: dict[str, Callable[[list[Any]], None]] = {
            R.SUBMIT: self._a_submit, R.START: self._a_start,
            R.PROGRESS: self._a_progress, R.COMPLETE: self._a_complete,
            R.FAIL: self._a_fail, R.CANCEL: self._a_cancel,
            R.CANCEL_REQUEST: self._a_cancel_request, R.REQUEUE: self._a_requeue,
            R.RETRY: self._a_retry, R.DELETE: self._a_delete,
            R.SCHEDULE_ADD: self._a_schedule_add,
            R.SCHEDULE_REMOVE: self._a_schedule_remove,
            R.SCHEDULE_FIRED: self._a_schedule_fired, R.SEQ: self._a_seq,
            R.PAUSE: self._a_pause, R.RESUME: self._a_resume, R.RATE_HOLD: self._a_rate_hold,
            R.LIMITER: self._a_limiter, R.SNOOZE: self._a_snooze,
            R.BREAKER_OPEN: self._a_breaker_open, R.BREAKER_CLOSE: self._a_breaker_close,
            R.BREAKER_STATE: self._a_breaker_state, R.QUARANTINE: self._a_quarantine,
            R.RELEASE: self._a_release, R.CRASHES: self._a_crashes,
            R.JOBS: self.replay,
            # the log's own records replay meets (its format marks), theirs to check
            **(framing or {}),
        }

    def listen(self, fn: Listener) -> None:
        """Tell `fn` of every status change from now on. The list is replaced,
        never changed in place: a listener may (un)register during a change."""
        self.listeners = [*self.listeners, fn]

    def unlisten(self, fn: Listener) -> None:
        self.listeners = [f for f in self.listeners if f != fn]

    # --- the interpreter ----------------------------------------------------------------
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
            fn = self._apply.get(tag)
            if fn is None:          # not a bug to skip: a record this jobd cannot read
                raise UnknownRecord(f"unknown WAL record type {tag!r} (written by a newer "
                                    "jobd, or damaged); refusing to start rather than drop it")
            try:
                fn(rec)
            except KeyError:
                # About a job the log never admitted: its submit was in a
                # batch whose write failed (storage_error) while a later
                # record about it was written. Nothing to apply it to.
                self.table.orphan_records += 1

    def insert(self, job: Job) -> None:
        """Add a new job (a submit record, live or replayed), its status set by
        `place`. Replay calls this a million times: locals on purpose."""
        table, job_id = self.table, job.id
        jobs = table.jobs
        old = jobs.get(job_id)
        if old is not None:                     # snapshot + replayed submit overlap
            self.ready.moved(old, old.status, "")
            table.forget(old)
        jobs[job_id] = job
        table.args_bytes += len(job.args) + len(job.kwargs)
        if job.seq > table.seq:
            table.seq = job.seq
        status = job.status
        table.counts[status] += 1
        self.ready.admit(job)                   # its lane; queued if pending
        if status in _TIMED:
            self.timers.push(job)
        elif status == _RUNNING:
            table.running[job_id] = job
        elif status in C.TERMINAL:
            table.ended(job)
        if job.unique_key is not None and status not in C.TERMINAL:
            table.hold_key(job)
        if job.depends_on and status in DEP_BOUND:
            table.link(job)
        for fn in self.listeners:
            fn(job, "")

    def _set_status(self, job: Job, new: str) -> None:
        old = job.status
        table = self.table
        counts = table.counts
        counts[old] -= 1
        counts[new] += 1
        job.status = new
        if new == _RUNNING:
            # RUNNING → RUNNING happens in replay: a start record, a crash,
            # then the next run's start (the requeue at recovery is not logged).
            table.running[job.id] = job
        elif old == _RUNNING:
            table.running.pop(job.id, None)
        self.ready.moved(job, old, new)
        for fn in self.listeners:
            fn(job, old)

    def _finish(self, job: Job, status: str) -> None:
        self._set_status(job, status)
        self.table.ended(job)
        if self.table.crashes:
            self.table.crashes.pop(job.id, None)

    # --- record handlers ---------------------------------------------------------------------
    def _a_submit(self, rec: list[Any]) -> None:
        self.insert(_from_record(rec[1]))

    def _a_start(self, rec: list[Any]) -> None:
        job = self.table.jobs[rec[1]]
        job.attempts += 1
        job.started_at = rec[2]
        job.completed_at = None
        job.worker_id = rec[3]
        lane = job.lane
        if lane.handler.checks or lane.queue.limiter is not None:    # limits or a breaker
            self.ready.took(job, rec[2])
        self._set_status(job, C.RUNNING)

    def _a_progress(self, rec: list[Any]) -> None:
        job = self.table.jobs.get(rec[1])
        if job is not None:
            job.progress = rec[2]

    def _a_complete(self, rec: list[Any]) -> None:
        job = self.table.jobs[rec[1]]
        # A success for the handler's breaker (`Ready.attempt_ended`, inlined: the hot path).
        b = job.lane.handler.breaker
        slot = int(rec[2] * b.per_slot)
        if slot != b.slot:
            b.advance(slot)
        b.calls[b.at] += 1
        b.streak = 0
        if b.crash_jobs:
            b.crash_jobs.clear()
        job.completed_at = rec[2]
        job.result = compact_result(rec[3])      # live: a Fragment already; replay: decoded
        job.result_ref = rec[4]
        job.error = None
        self._finish(job, C.COMPLETED)
        self._release_dependents(job)

    def _a_fail(self, rec: list[Any]) -> None:
        job = self.table.jobs[rec[1]]
        ts, job.error, status, due = rec[2], rec[3], rec[4], rec[5]
        job.finished_attempt_at = ts
        crashed = len(rec) > 6 and bool(rec[6])
        if crashed:
            self.table.crashes[job.id] = self.table.crashes.get(job.id, 0) + 1
        if status != C.CANCELLED:          # a cancel asked for: not the service's doing
            # PermanentError (status failed) reached the service: a call, not a failure
            self.ready.attempt_ended(job, ts, status != C.FAILED, job.error, crashed)
        if status == C.RETRYING:
            job.completed_at = None       # only terminal jobs have completed_at
            job.scheduled_for = due
            self._set_status(job, C.RETRYING)
            self.timers.push(job)
            return
        job.completed_at = ts
        self._finish(job, status)
        self._fail_dependents(job)

    def _a_cancel(self, rec: list[Any]) -> None:
        job = self.table.jobs[rec[1]]
        job.completed_at = rec[2]
        self._finish(job, C.CANCELLED)
        self._fail_dependents(job)

    def _a_cancel_request(self, rec: list[Any]) -> None:
        self.table.jobs[rec[1]].cancel_requested = True

    def _a_requeue(self, rec: list[Any]) -> None:
        job = self.table.jobs[rec[1]]
        if rec[2] and job.attempts > 0:
            job.attempts -= 1
        job.worker_id = None
        self._set_status(job, C.PENDING)

    def _a_retry(self, rec: list[Any]) -> None:
        job = self.table.jobs[rec[1]]
        self.table.reopened(job)
        job.attempts = 0
        job.error = None
        job.result = None
        job.result_ref = None
        job.completed_at = None
        job.started_at = None
        job.worker_id = None
        job.cancel_requested = False
        job.progress = None
        job.seq = self.table.next_seq()
        self._set_status(job, C.PENDING)

    def _a_delete(self, rec: list[Any]) -> None:
        """Jobs leave the table (purge, expiry, a submit whose write failed);
        listeners are told, the job's status now "" (none)."""
        table, listeners = self.table, self.listeners
        for job_id in rec[1]:
            job = table.jobs.pop(job_id, None)
            if job is not None:
                old = job.status
                self.ready.moved(job, old, "")
                table.forget(job)
                for fn in listeners:
                    fn(job, old)

    def _a_schedule_add(self, rec: list[Any]) -> None:
        sched = rec[1]
        self.table.schedules[sched["name"]] = sched

    def _a_schedule_remove(self, rec: list[Any]) -> None:
        self.table.schedules.pop(rec[1], None)

    def _a_schedule_fired(self, rec: list[Any]) -> None:
        sched = self.table.schedules.get(rec[1])
        if sched is not None:
            # rec[2]: the due time the job id names; rec[4]: when it ran. Older
            # records lack rec[4]: their due time is the best guess there is.
            sched["last_due"] = rec[2]
            sched["last_job_id"] = rec[3]
            sched["last_run"] = rec[4] if len(rec) > 4 else rec[2]

    def _a_pause(self, rec: list[Any]) -> None:
        self.ready.pause(rec[1], rec[2], Pause(rec[3], rec[4], rec[5], rec[6]))

    def _a_resume(self, rec: list[Any]) -> None:
        self.ready.resume(rec[1], rec[2])

    def _a_rate_hold(self, rec: list[Any]) -> None:
        self.ready.rate_hold(rec[1], rec[2], rec[3])

    def _a_limiter(self, rec: list[Any]) -> None:
        self.ready.restore_limiter(rec[1], rec[2], rec[3])

    def _a_snooze(self, rec: list[Any]) -> None:
        """Snooze(after): the job waits until `due` and runs again; the attempt
        it just made is not counted."""
        job = self.table.jobs[rec[1]]
        if job.attempts > 0:
            job.attempts -= 1
        job.worker_id = None
        job.scheduled_for = rec[3]
        self._set_status(job, C.SCHEDULED)
        self.timers.push(job)

    def _a_breaker_open(self, rec: list[Any]) -> None:
        self.ready.breaker_open(rec[1], rec[2], rec[3], rec[6] if len(rec) > 6 else None)

    def _a_breaker_close(self, rec: list[Any]) -> None:
        self.ready.breaker_close(rec[1])

    def _a_breaker_state(self, rec: list[Any]) -> None:
        self.ready.breaker_restore(rec[1], rec[2], rec[3], rec[4], rec[5], rec[6], rec[7])

    def _a_quarantine(self, rec: list[Any]) -> None:
        self.ready.quarantine(rec[1], rec[3], rec[2])

    def _a_release(self, rec: list[Any]) -> None:
        self.ready.release(rec[1])

    def _a_crashes(self, rec: list[Any]) -> None:
        if rec[1] in self.table.jobs:
            self.table.crashes[rec[1]] = rec[2]

    def _a_seq(self, rec: list[Any]) -> None:
        self.table.seq = max(self.table.seq, rec[1])

    # --- dependencies --------------------------------------------------------------------------
    def _release_dependents(self, done: Job) -> None:
        table = self.table
        for job in table.dependents.pop(done.id, ()):
            if job.status == C.WAITING and table.deps_state(job) == C.COMPLETED:
                job.seq = table.next_seq()
                self._set_status(job, C.PENDING)

    def _fail_dependents(self, dead: Job) -> None:
        """Fail every open job that depends on `dead`, directly or through
        others. Iterative: a chain of any depth (100,000 jobs each waiting on
        the one before) must not hit the interpreter's recursion limit, live
        or in replay."""
        stack = [dead]
        pop_deps = self.table.dependents.pop
        while stack:
            failed = stack.pop()
            for job in pop_deps(failed.id, ()):
                if job.status in DEP_BOUND:
                    job.error = f"dependency {failed.id} ended {failed.status}"
                    job.completed_at = failed.completed_at
                    self._finish(job, C.FAILED)
                    stack.append(job)

    def place(self, job: Job, run_at: float | None, now: float,
              batch: dict[str, Job] | None = None) -> None:
        """A new job's first status: failed (a dependency already ended
        unsuccessfully, with or without a delay), scheduled, waiting or
        pending. `batch`: jobs of the same `submit_many` not inserted yet."""
        deps = self._deps_state(job, batch or {}) if job.depends_on else C.COMPLETED
        if deps == C.FAILED:
            job.status = C.FAILED
            job.error = f"dependency {self.table.failed_dep(job)} ended unsuccessfully"
            job.completed_at = now
            return
        if run_at is not None:
            job.scheduled_for = run_at
            if run_at > now:
                job.status = C.SCHEDULED
                return
        job.status = C.PENDING if deps == C.COMPLETED else C.WAITING

    def _deps_state(self, job: Job, batch: dict[str, Job]) -> str:
        if any(d in batch and batch[d].status not in C.TERMINAL for d in job.depends_on):
            return C.WAITING          # a sibling in the same batch cannot be done yet
        return self.table.deps_state(job)

    # --- time ----------------------------------------------------------------------------------
    def next_due(self) -> float | None:
        return self.timers.next_due()

    def promote_due(self, now: float) -> int:
        """Move scheduled and retrying jobs whose time has come into the queue."""
        moved = 0
        for job in self.timers.pop_due(now):
            self._promote(job)
            moved += 1
        return moved

    def _promote(self, job: Job) -> None:
        """A due job enters the queue. Only a scheduled job still answers to
        its dependencies (DEP_BOUND): a retrying one had them satisfied, or was
        retried by hand, which runs it regardless."""
        table = self.table
        bound = job.depends_on and job.status == C.SCHEDULED
        deps = table.deps_state(job) if bound else C.COMPLETED
        if deps == C.FAILED:
            job.error = f"dependency {table.failed_dep(job)} ended unsuccessfully"
            job.completed_at = job.scheduled_for      # when it was due: deterministic
            self._finish(job, C.FAILED)
            self._fail_dependents(job)
            return
        job.seq = table.next_seq()
        self._set_status(job, C.PENDING if deps == C.COMPLETED else C.WAITING)

    # --- recovery ------------------------------------------------------------------------------
    def recover_running(self) -> list[Job]:
        """After replay: jobs that were running had no live worker; requeue them.
        The attempt stays counted (at-least-once). The caller cancels the ones
        whose cancel was requested before the crash."""
        jobs = list(self.table.running.values())
        for job in jobs:
            job.worker_id = None
            self._set_status(job, C.PENDING)
        return jobs

    def snapshot(self) -> Iterator[list[Any]]:
        """Records that rebuild this state (a WAL snapshot's body)."""
        table = self.table
        yield [R.SEQ, table.seq]
        for sched in table.schedules.values():
            yield [R.SCHEDULE_ADD, sched]
        yield from self.ready.snapshot()
        chunk: list[Any] = []
        for job in table.jobs.values():       # chunks: one frame and one decode per
            chunk.append(job.to_record())     # thousand jobs makes replay faster
            if len(chunk) == R.SNAPSHOT_CHUNK:
                yield [R.JOBS, chunk]
                chunk = []
        if chunk:
            yield [R.JOBS, chunk]
        for job_id, n in self.table.crashes.items():
            yield [R.CRASHES, job_id, n]

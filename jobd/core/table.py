"""The job table: every job by id, and the indexes kept beside it (pure).

Counts per status, the jobs running, who waits on whom (`dependents`),
finished jobs and dead letters in the order they ended (for expiry), the
failed and dead-letter jobs by failure group (jobd/core/failures.py), the
bytes of args and kwargs held, the schedules and the sequence counter. The
table is changed only by `Lifecycle` (jobd/core/lifecycle.py), which keeps
these indexes in step with each job's status; everyone else reads it.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from jobd import constants as C
from jobd.core.failures import FAILURE_STATUSES, FailureGroups
from jobd.core.job import Job

# Jobs whose dependencies still matter: a job that is pending, running or
# retrying had them satisfied (or was explicitly retried, which runs it
# regardless), so a dependency failing later does not touch it.
DEP_BOUND = frozenset((C.WAITING, C.SCHEDULED))
_COMPLETED = C.COMPLETED
_DEAD_LETTER = C.DEAD_LETTER


class JobTable:
    __slots__ = ("jobs", "counts", "dependents", "finished", "dead", "running", "unique",
                 "crashes", "args_bytes", "seq", "schedules", "orphan_records", "_unsorted",
                 "failures")

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.counts: dict[str, int] = dict.fromkeys(C.STATUSES, 0)
        self.dependents: dict[str, list[Job]] = {}
        self.finished: deque[tuple[float, Job]] = deque()     # terminal, by time
        self.dead: deque[tuple[float, Job]] = deque()         # dead letters, by time
        self.running: dict[str, Job] = {}
        self.failures = FailureGroups()   # failed and dead-letter jobs, by what went wrong
        self.unique: dict[str, Job] = {}  # unique_key → the not-yet-terminal job holding it
        self.crashes: dict[str, int] = {}  # live jobs that killed their worker: how often
        self.args_bytes = 0         # JSON text of every job's args and kwargs ([queue] max_args_bytes)
        self.seq = 0                # the last place in the queue handed out
        self.schedules: dict[str, dict[str, Any]] = {}
        self.orphan_records = 0     # replayed records about jobs never admitted (skipped)
        # `finished`/`dead` got an entry older than their last: sort before expiry
        # (replay of a snapshot adds jobs in submit order, not in the order they ended).
        self._unsorted: set[str] = set()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    @property
    def queued(self) -> int:
        """Jobs counted against queue.max_size."""
        c = self.counts
        return c[C.SCHEDULED] + c[C.WAITING] + c[C.PENDING] + c[C.RETRYING]

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def __iter__(self) -> Iterator[Job]:
        """Every job, in submit order."""
        return iter(self.jobs.values())

    def __len__(self) -> int:
        return len(self.jobs)

    # --- membership (Lifecycle keeps statuses) --------------------------------------------
    def forget(self, job: Job) -> None:
        """Drop a job's counters; queue and deque entries go stale on their own."""
        self.counts[job.status] -= 1
        if job.status in FAILURE_STATUSES:
            self.failures.remove(job)
        self.args_bytes -= len(job.args) + len(job.kwargs)
        self.running.pop(job.id, None)
        if job.unique_key is not None:
            self.release_key(job)
        job.status = ""          # invalidates every lazy heap entry

    def link(self, job: Job) -> None:
        """Note that `job` waits on each of its dependencies."""
        for dep in job.depends_on:
            self.dependents.setdefault(dep, []).append(job)

    def hold_key(self, job: Job) -> None:
        """A new job with a unique_key holds it (the latest submit wins: the
        daemon admits one only when no live holder is left, so replay
        rebuilds the same index)."""
        assert job.unique_key is not None
        self.unique[job.unique_key] = job

    def release_key(self, job: Job) -> None:
        key = job.unique_key
        if key is not None and self.unique.get(key) is job:
            del self.unique[key]

    def ended(self, job: Job) -> None:
        """Index a job that is now terminal, by the time it ended (any
        terminal status releases its unique key), and a failed or dead-letter
        one by its failure (a completed job pays one comparison for that)."""
        if job.unique_key is not None:
            self.release_key(job)
        stamp = job.completed_at or 0.0
        status = job.status
        if status == _COMPLETED:
            queue, which = self.finished, "finished"
        else:
            if status in FAILURE_STATUSES:
                self.failures.add(job)
            queue, which = (self.dead, "dead") if status == _DEAD_LETTER else \
                (self.finished, "finished")
        if queue and stamp < queue[-1][0]:
            self._unsorted.add(which)
        queue.append((stamp, job))

    def reopened(self, job: Job) -> None:
        """A finished job runs again (`retry`): it leaves its failure group.
        Called before its error is cleared (the group is found by it)."""
        if job.status in FAILURE_STATUSES:
            self.failures.remove(job)

    # --- dependencies ------------------------------------------------------------------------
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

    # --- expiry ---------------------------------------------------------------------------
    def expired(self, now: float, ttl: float, dl_age: float) -> list[str]:
        """Ids of finished jobs past their ttl and dead letters past their age."""
        out: list[str] = []
        self._oldest("finished", lambda stamp: stamp < now - ttl, out)
        self._oldest("dead", lambda stamp: stamp < now - dl_age, out)
        return out

    def dead_overflow(self, keep: int) -> list[Job]:
        """The oldest dead letters beyond the newest `keep` (to evict)."""
        extra = self.counts[C.DEAD_LETTER] - keep
        if extra <= 0:
            return []
        ids: list[str] = []
        self._oldest("dead", lambda stamp: len(ids) < extra, ids)
        return [self.jobs[i] for i in ids]

    def _oldest(self, which: str, take: Callable[[float], bool], out: list[str]) -> None:
        """Pop from the front of a by-time deque (`finished` or `dead`) while
        `take(stamp)` says so, collecting those jobs' ids; stale entries (the
        job left that status or the table) are dropped on the way."""
        queue: deque[tuple[float, Job]] = getattr(self, which)
        if which in self._unsorted:
            queue = deque(sorted(queue, key=_stamp))     # stable: submit order among equals
            setattr(self, which, queue)
            self._unsorted.discard(which)
        while queue:
            stamp, job = queue[0]
            stale = job.status not in C.TERMINAL or job.completed_at != stamp \
                or self.jobs.get(job.id) is not job
            if not stale and not take(stamp):
                break
            queue.popleft()
            if not stale:
                out.append(job.id)


def _stamp(entry: tuple[float, Job]) -> float:
    return entry[0]

"""Where job state lives: the `Store` seam, and `WalStore`, the write-ahead log's.

`Jobs` (jobd/jobs.py), the dispatcher and the scheduler change and read job
state only through a `Store`. `WalStore` appends each record to the WAL and
then applies it to the in-memory `Lifecycle` (append-then-apply); a reply
that acknowledges a change waits for its sequence number to be durable.
`MemoryStore` applies at once and is durable at once: the proof that the seam
is real, and what unit tests drive the parts with. A store shared by several
hosts would be a third implementation of the same protocol.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from jobd import constants as C
from jobd.core import records as R
from jobd.core.flow import Ready
from jobd.core.job import Job
from jobd.core.lifecycle import Lifecycle, Listener
from jobd.core.table import JobTable
from jobd.storage.wal import Journal

Undo = Callable[[Any], None]
_SUBMIT = R.SUBMIT


class Store(Protocol):
    """Job state behind one interface: read it, change it (durably), queue it."""

    @property
    def table(self) -> JobTable: ...           # read-only for callers: the jobs and their indexes

    @property
    def durable(self) -> int: ...              # the last sequence number known durable

    @property
    def ready(self) -> Ready: ...              # pending jobs by queue and handler, and their gates

    def commit(self, rec: list[Any], undo: Undo | None = None, undo_arg: Any = None) -> int:
        """Record a change and apply it; the sequence number to wait for.
        `undo(undo_arg)` reverts it if the record cannot be written."""
        ...

    def insert(self, job: Job, record: list[Any] | None = None) -> int:
        """Record a new job (placed already) and add it; the sequence number.
        If its record cannot be written, the job is taken out again.
        `record`: the job's persisted form when the caller has it already."""
        ...

    def revert(self, rec: list[Any]) -> None:
        """For undo callbacks only: apply in memory a record that reverts one
        whose write failed (it was never written, so its reversal is not either)."""
        ...

    def get(self, job_id: str) -> Job | None: ...
    def scan(self) -> Iterable[Job]: ...         # every job, in submit order
    def listen(self, fn: Listener) -> None: ...  # told of every status change
    def unlisten(self, fn: Listener) -> None: ...
    def claim(self) -> Job | None: ...           # the next pending job, taken off the queue
    def unclaim(self, job: Job) -> None: ...     # give a claimed job back its place
    def top(self) -> Job | None: ...             # the job `claim` would give, left in place
    def next_due(self) -> float | None: ...
    def promote_due(self, now: float) -> int: ...
    def place(self, job: Job, run_at: float | None, now: float,
              batch: dict[str, Job] | None = None) -> None: ...
    def next_seq(self) -> int: ...


class _LifecycleStore:
    """What every store does with its in-memory `Lifecycle`."""

    def __init__(self, life: Lifecycle) -> None:
        self.life = life
        self.table = life.table
        self.ready = ready = life.ready
        self.claim = ready.pop          # bound once: the dispatcher's hot path
        self.unclaim = ready.push
        self.top = ready.peek
        self.next_due = life.next_due
        self.promote_due = life.promote_due
        self.place = life.place
        self.next_seq = life.table.next_seq
        self.get = life.table.jobs.get

    def scan(self) -> Iterable[Job]:
        return self.life.table.jobs.values()

    def revert(self, rec: list[Any]) -> None:
        self.life.apply(rec)

    def listen(self, fn: Listener) -> None:
        self.life.listen(fn)

    def unlisten(self, fn: Listener) -> None:
        self.life.unlisten(fn)


class WalStore(_LifecycleStore):
    """Append to the write-ahead log, then apply (jobd/storage/wal.py)."""

    def __init__(self, life: Lifecycle, wal: Journal) -> None:
        super().__init__(life)
        self.wal = wal
        self._append = wal.append
        self._apply = life.apply
        self._insert = life.insert

    @property
    def durable(self) -> int:
        return self.wal.durable

    def commit(self, rec: list[Any], undo: Undo | None = None, undo_arg: Any = None) -> int:
        seq: int = self._append(rec, undo, undo_arg)
        self._apply(rec)
        return seq

    def insert(self, job: Job, record: list[Any] | None = None) -> int:
        seq: int = self._append([_SUBMIT, job.to_record() if record is None else record],
                                self._undo_insert, job.id)
        job.wal_seq = seq
        self._insert(job)
        return seq

    def _undo_insert(self, job_id: str) -> None:
        """The submit's record was not written: the job was never admitted."""
        job = self.table.jobs.get(job_id)
        if job is not None and job.status != C.RUNNING:
            self._apply([R.DELETE, [job_id]])


class MemoryStore(_LifecycleStore):
    """No log: every change is applied and durable at once (unit tests)."""

    def __init__(self, life: Lifecycle | None = None) -> None:
        super().__init__(life or Lifecycle())
        self.records: list[list[Any]] = []     # what a log would hold, in order

    @property
    def durable(self) -> int:
        return len(self.records)

    def commit(self, rec: list[Any], undo: Undo | None = None, undo_arg: Any = None) -> int:
        self.records.append(rec)
        self.life.apply(rec)
        return len(self.records)

    def insert(self, job: Job, record: list[Any] | None = None) -> int:
        self.records.append([R.SUBMIT, job.to_record() if record is None else record])
        job.wal_seq = len(self.records)
        self.life.insert(job)
        return job.wal_seq

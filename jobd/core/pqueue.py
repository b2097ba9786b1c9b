"""The timer queue: scheduled and retrying jobs by due time (pure).

A lazy heap: an entry is `(key, token, job)` and stays valid only while the
job still has the status and due time it was pushed with, so removing a job
(cancel, purge) is O(1) and its stale entry is dropped when it reaches the
top. Pending jobs wait in the flow structure's lanes (jobd/core/flow.py).
"""
from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from jobd import constants as C
from jobd.core.job import Job

K = TypeVar("K", int, float)      # priorities (int) or due times (float)
Entry = tuple[K, int, Job]

_heappush = heapq.heappush
_heappop = heapq.heappop
_TIMED = frozenset((C.SCHEDULED, C.RETRYING))


class LazyHeap(Generic[K]):
    """A min-heap of `(key, token, job)` whose entries are checked by `valid`
    when they reach the top; invalid ones are dropped there."""

    __slots__ = ("heap", "valid")

    def __init__(self, valid: Callable[[Entry[K]], bool]) -> None:
        self.heap: list[Entry[K]] = []
        self.valid: Callable[[Entry[K]], bool] = valid

    def push(self, key: K, token: int, job: Job) -> None:
        _heappush(self.heap, (key, token, job))

    def peek(self) -> Entry[K] | None:
        """The smallest valid entry, left in place."""
        heap, valid = self.heap, self.valid
        while heap:
            entry = heap[0]
            if valid(entry):
                return entry
            _heappop(heap)
        return None

    def pop(self) -> Entry[K] | None:
        """The smallest valid entry, removed."""
        heap, valid = self.heap, self.valid
        while heap:
            entry = _heappop(heap)
            if valid(entry):
                return entry
        return None

    def pop_while(self, below: K) -> Iterator[Entry[K]]:
        """Remove and yield valid entries whose key is at most `below`."""
        heap, valid = self.heap, self.valid
        while heap and heap[0][0] <= below:
            entry = _heappop(heap)
            if valid(entry):
                yield entry

    def __len__(self) -> int:
        """Entries held, stale ones included (an upper bound of the live ones)."""
        return len(self.heap)


def _due_at(entry: Entry[float]) -> bool:
    job = entry[2]
    return job.status in _TIMED and job.scheduled_for == entry[0]


class TimerQueue:
    """Scheduled and retrying jobs by the time they are due."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: LazyHeap[float] = LazyHeap(_due_at)
        # The tie-breaker has its own counter: taking FIFO numbers here would
        # make replay of a snapshot (which re-arms every timer) diverge from
        # the live sequence, and reorder jobs retried after a restart.
        self._seq = 0

    def push(self, job: Job) -> None:
        assert job.scheduled_for is not None
        self._seq += 1
        self._heap.push(job.scheduled_for, self._seq, job)

    def next_due(self) -> float | None:
        entry = self._heap.peek()
        return None if entry is None else entry[0]

    def pop_due(self, now: float) -> Iterator[Job]:
        """Remove and yield the jobs due at or before `now`, earliest first."""
        for entry in self._heap.pop_while(now):
            yield entry[2]

    def entries(self) -> list[Entry[float]]:
        """Every entry held (tests check that each timed job has a live one)."""
        return list(self._heap.heap)

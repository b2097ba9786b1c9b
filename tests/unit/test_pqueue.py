"""jobd/core/pqueue.py: the lazy heap's peek/pop/pop_while and the timer
queue's due times (stale entries, equal times in the order they were armed).
The ready order is tests/unit/test_flow.py.
"""
from __future__ import annotations

from typing import Any

from jobd import constants as C
from jobd.core.job import EMPTY_ARGS, EMPTY_DICT, EMPTY_KWARGS, EMPTY_LIST, Job
from jobd.core.pqueue import LazyHeap, TimerQueue

DEFAULTS = (3, 1.0, 2.0, None, None, None)


def job(job_id: str, priority: int = 10, seq: int = 0, status: str = C.PENDING,
        due: float | None = None) -> Job:
    j = Job.new(job_id, "h", priority, seq, 0.0, DEFAULTS, None, EMPTY_ARGS, EMPTY_KWARGS,
                EMPTY_DICT, EMPTY_LIST)
    j.status = status
    j.scheduled_for = due
    return j


# --- LazyHeap ------------------------------------------------------------------------------

def heap_of(valid_tokens: set[int], *entries: tuple[int, int]) -> LazyHeap[int]:
    heap: LazyHeap[int] = LazyHeap(lambda e: e[1] in valid_tokens)
    for key, token in entries:
        heap.push(key, token, job(f"k{key}t{token}"))
    return heap


def test_lazy_heap_peek_drops_invalid_tops_and_leaves_the_valid_one():
    heap = heap_of({3, 4}, (1, 1), (2, 2), (3, 3), (4, 4))
    entry = heap.peek()
    assert entry is not None and entry[:2] == (3, 3)
    assert len(heap) == 2                  # the two stale ones went, the valid stayed
    assert heap.peek() is entry


def test_lazy_heap_pop_gives_valid_entries_smallest_first():
    heap = heap_of({1, 3, 5}, (5, 5), (1, 1), (4, 4), (3, 3), (2, 2))
    popped = []
    while (entry := heap.pop()) is not None:
        popped.append(entry[0])
    assert popped == [1, 3, 5]
    assert len(heap) == 0 and heap.peek() is None


def test_lazy_heap_pop_while_is_inclusive_and_leaves_later_entries():
    heap = heap_of({1, 2, 4, 5}, (1, 1), (2, 2), (3, 3), (4, 4), (5, 5))
    assert [e[0] for e in heap.pop_while(4)] == [1, 2, 4]     # 3 was stale: dropped
    assert len(heap) == 1
    assert [e[0] for e in heap.pop_while(4)] == []
    assert [e[0] for e in heap.pop_while(5)] == [5]


def test_lazy_heap_len_counts_stale_entries_until_they_surface():
    heap = heap_of(set(), (2, 2), (1, 1))
    assert len(heap) == 2                  # an upper bound of the live ones
    assert heap.pop() is None and len(heap) == 0


# --- TimerQueue -----------------------------------------------------------------------------

def test_timer_next_due_is_the_earliest_live_time():
    t = TimerQueue()
    assert t.next_due() is None
    a, b = job("a", status=C.SCHEDULED, due=20.0), job("b", status=C.RETRYING, due=10.0)
    t.push(a)
    t.push(b)
    assert t.next_due() == 10.0
    b.status = C.CANCELLED                 # left the timed statuses
    assert t.next_due() == 20.0
    a.scheduled_for = 30.0                 # re-armed later: the old entry is stale
    assert t.next_due() is None
    t.push(a)
    assert t.next_due() == 30.0


def test_pop_due_takes_jobs_due_at_or_before_now_earliest_first():
    t = TimerQueue()
    jobs = {name: job(name, status=C.SCHEDULED, due=due)
            for name, due in (("late", 50.0), ("early", 5.0), ("edge", 20.0), ("mid", 10.0))}
    for j in jobs.values():
        t.push(j)
    assert [j.id for j in t.pop_due(20.0)] == ["early", "mid", "edge"]
    assert t.next_due() == 50.0
    assert list(t.pop_due(49.999)) == []


def test_pop_due_skips_stale_entries_and_yields_each_live_job_once():
    t = TimerQueue()
    a = job("a", status=C.RETRYING, due=1.0)
    b = job("b", status=C.SCHEDULED, due=2.0)
    c = job("c", status=C.RETRYING, due=3.0)
    for j in (a, b, c):
        t.push(j)
    a.status = C.PENDING                   # promoted or cancelled already
    b.scheduled_for = 2.5                  # moved: the old entry is stale, the new one live
    t.push(b)
    assert [j.id for j in t.pop_due(10.0)] == ["b", "c"]
    assert t.entries() == []


def test_equal_due_times_come_out_in_the_order_they_were_armed():
    t = TimerQueue()
    names = ["z", "a", "m", "b", "y"]
    for name in names:
        t.push(job(name, status=C.SCHEDULED, due=7.0))
    assert [j.id for j in t.pop_due(7.0)] == names


def test_entries_is_a_copy_holding_stale_entries_too():
    t = TimerQueue()
    a = job("a", status=C.SCHEDULED, due=1.0)
    t.push(a)
    a.status = C.PENDING
    entries: list[Any] = t.entries()
    entries.clear()
    assert len(t.entries()) == 1

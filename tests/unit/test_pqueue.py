"""jobd/core/pqueue.py: the lazy heap's peek/pop/pop_while, the ready queue's
priority-then-FIFO order and its dropping of stale entries (a job no longer
pending, or given a new place), `order()` as a copy, and the timer queue's
due times (stale entries, equal times in the order they were armed).
"""
from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jobd import constants as C
from jobd.core.job import EMPTY_ARGS, EMPTY_DICT, EMPTY_KWARGS, EMPTY_LIST, Job
from jobd.core.pqueue import LazyHeap, ReadyQueue, TimerQueue

DEFAULTS = (3, 1.0, 2.0, None, None, None)


def job(job_id: str, priority: int = 10, seq: int = 0, status: str = C.PENDING,
        due: float | None = None) -> Job:
    j = Job.new(job_id, "h", priority, seq, 0.0, DEFAULTS, None, EMPTY_ARGS, EMPTY_KWARGS,
                EMPTY_DICT, EMPTY_LIST)
    j.status = status
    j.scheduled_for = due
    return j


def drain(q: ReadyQueue) -> list[str]:
    out = []
    while (j := q.pop()) is not None:
        out.append(j.id)
    return out


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


# --- ReadyQueue -----------------------------------------------------------------------------

def test_higher_priority_first_and_submit_order_within_a_priority():
    q = ReadyQueue()
    for j in (job("low1", 0, 1), job("norm1", 10, 2), job("crit", 30, 3), job("norm2", 10, 4),
              job("low2", 0, 5), job("norm0", 10, 0)):
        q.push(j)
    assert drain(q) == ["crit", "norm0", "norm1", "norm2", "low1", "low2"]


def test_a_job_that_left_pending_is_skipped():
    q = ReadyQueue()
    a, b, c = job("a", seq=1), job("b", seq=2), job("c", seq=3)
    for j in (a, b, c):
        q.push(j)
    a.status = C.RUNNING
    c.status = C.CANCELLED
    assert q.peek() is b
    assert drain(q) == ["b"]


def test_a_job_given_a_new_place_is_found_only_at_the_new_one():
    q = ReadyQueue()
    a, b = job("a", seq=1), job("b", seq=2)
    q.push(a)
    q.push(b)
    a.seq = 3                              # a retry: a new seq, pushed again
    q.push(a)
    assert drain(q) == ["b", "a"]


def test_a_job_back_in_pending_with_its_old_seq_keeps_its_place():
    q = ReadyQueue()
    a, b = job("a", seq=1), job("b", seq=2)
    q.push(a)
    q.push(b)
    assert q.pop() is a
    a.status = C.RUNNING
    a.status = C.PENDING                   # put back (unclaim/requeue): same seq
    q.push(a)
    assert q.pop() is a and q.pop() is b


def test_order_is_a_copy_each_job_once_in_pop_order():
    q = ReadyQueue()
    jobs = [job(f"j{i}", priority=(i * 7) % 3 * 10, seq=i) for i in range(12)]
    for j in jobs:
        q.push(j)
    q.push(jobs[4])                        # two valid entries for one job (replay + requeue)
    jobs[5].status = C.RUNNING             # one stale entry
    order = [j.id for j in q.order()]
    assert len(q) == 13                    # untouched: every entry still held, stale included
    assert len(order) == len(set(order)) == 11
    popped = drain(q)
    assert popped[0] == order[0]
    assert list(dict.fromkeys(popped)) == order


def test_empty_queue():
    q = ReadyQueue()
    assert q.pop() is None and q.peek() is None and q.order() == [] and len(q) == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 10, 20, 30, 1000]),
                          st.sampled_from(["keep", "leave", "renew"])), max_size=40))
def test_pop_order_is_priority_then_seq_over_any_mix_of_stale_entries(plan):
    q = ReadyQueue()
    seq = 0
    live: list[Job] = []
    for i, (priority, fate) in enumerate(plan):
        seq += 1
        j = job(f"j{i}", priority, seq)
        q.push(j)
        if fate == "leave":
            j.status = C.RUNNING
        elif fate == "renew":
            seq += 1
            j.seq = seq
            q.push(j)
        if fate != "leave":
            live.append(j)
    expected = [j.id for j in sorted(live, key=lambda j: (-j.priority, j.seq))]
    assert [j.id for j in q.order()] == expected
    assert drain(q) == expected


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

"""jobd/core/flow.py: the ready structure (lanes per queue and handler, an
index of their heads), holds by queue and handler, the GCRA rate limiter,
concurrency limits and the holds the views show. Pure: jobs and times are
made by the tests; nothing runs.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from jobd import constants as C
from jobd.core import records as R
from jobd.core.flow import (
    HandlerFlow,
    Limiter,
    Pause,
    QueueSpec,
    Ready,
    parse_rate,
)
from jobd.core.job import EMPTY_ARGS, EMPTY_DICT, EMPTY_KWARGS, EMPTY_LIST, Job
from jobd.core.lifecycle import Lifecycle

DEFAULTS = (3, 1.0, 2.0, None, None, None)


def job(job_id: str, priority: int = 10, seq: int = 0, handler: str = "h",
        queue: str = C.DEFAULT_QUEUE) -> Job:
    return Job.new(job_id, handler, priority, seq, 0.0, DEFAULTS, None, EMPTY_ARGS, EMPTY_KWARGS,
                   EMPTY_DICT, EMPTY_LIST, queue)


def add(ready: Ready, *jobs: Job) -> None:
    for j in jobs:
        ready.admit(j)


def drain(ready: Ready, queue: str = C.DEFAULT_QUEUE, now: float = 0.0) -> list[str]:
    out = []
    gate = ready.queue(queue)
    while (j := ready.pop(gate, now)) is not None:
        out.append(j.id)
        ready.moved(j, C.PENDING, C.RUNNING)
        j.status = C.RUNNING
    return out


def pause(since: float = 0.0, until: float | None = None) -> Pause:
    return Pause(since, until, "test", 1000)


# --- order -------------------------------------------------------------------------------------

def test_higher_priority_first_and_submit_order_within_a_priority_across_handlers():
    r = Ready()
    add(r, job("low1", 0, 1, "a"), job("norm1", 10, 2, "b"), job("crit", 30, 3, "a"),
        job("norm2", 10, 4, "a"), job("low2", 0, 5, "b"), job("norm0", 10, 0, "c"))
    assert drain(r) == ["crit", "norm0", "norm1", "norm2", "low1", "low2"]


def test_a_job_that_left_pending_is_skipped():
    r = Ready()
    a, b, c = job("a", seq=1), job("b", seq=2), job("c", seq=3)
    add(r, a, b, c)
    r.moved(a, C.PENDING, C.CANCELLED)
    a.status = C.CANCELLED
    c.status = C.CANCELLED
    assert r.peek() is b
    assert drain(r) == ["b"]


def test_a_job_pushed_again_has_only_its_latest_entry_live():
    """A job given back (a take-back, a requeue after a crash) is pushed
    again with the same seq: it must never come out twice."""
    r = Ready()
    a, b = job("a", seq=1), job("b", seq=2)
    add(r, a, b)
    r.push(a)                              # a second entry with the same place
    assert r.pop() is a
    assert r.pop() is b                    # not a again
    assert r.pop() is None


def test_a_job_given_back_keeps_its_place():
    r = Ready()
    a, b = job("a", seq=1), job("b", seq=2)
    add(r, a, b)
    assert r.pop() is a
    r.push(a)                              # not started after all (taken back)
    assert r.pop() is a and r.pop() is b


def test_a_job_given_a_new_place_is_found_only_at_the_new_one():
    r = Ready()
    a, b = job("a", seq=1), job("b", seq=2)
    add(r, a, b)
    a.seq = 3                              # a retry: a new seq, pushed again
    r.push(a)
    assert drain(r) == ["b", "a"]


def test_queues_are_separate():
    r = Ready()
    add(r, job("d1", 0, 1), job("s1", 30, 2, queue="slow"), job("d2", 0, 3))
    assert drain(r) == ["d1", "d2"]
    assert drain(r, "slow") == ["s1"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 10, 20, 30, 1000]), st.sampled_from("abc"),
                          st.sampled_from(["keep", "leave", "renew", "again"])), max_size=40))
def test_pop_order_is_priority_then_seq_over_any_mix_of_handlers_and_stale_entries(plan):
    r = Ready()
    seq = 0
    live: list[Job] = []
    for i, (priority, handler, fate) in enumerate(plan):
        seq += 1
        j = job(f"j{i}", priority, seq, handler)
        r.admit(j)
        if fate == "leave":
            r.moved(j, C.PENDING, C.RUNNING)
            j.status = C.RUNNING
        elif fate == "renew":
            seq += 1
            j.seq = seq
            r.push(j)
        elif fate == "again":
            r.push(j)
        if fate != "leave":
            live.append(j)
    expected = [j.id for j in sorted(live, key=lambda j: (-j.priority, j.seq))]
    assert [j.id for j in r.order()] == expected
    assert drain(r) == expected


# --- holds --------------------------------------------------------------------------------------

def test_a_paused_handler_at_the_front_never_delays_another_handler():
    r = Ready()
    held = [job(f"p{i}", 30, i, "paused") for i in range(1000)]
    add(r, *held)
    add(r, job("o1", 0, 2000, "other"), job("o2", 0, 2001, "other"))
    r.pause("handler", "paused", pause())
    assert drain(r) == ["o1", "o2"]
    assert all(j.status == C.PENDING for j in held)
    hold = r.hold_of(held[0], 0.0)
    assert hold is not None and hold.reason == C.H_HANDLER_PAUSED
    r.resume("handler", "paused")
    assert drain(r) == [j.id for j in held]           # in their order, after the resume


def test_pausing_a_queue_touches_no_job_and_holds_every_one():
    r = Ready()
    jobs = [job(f"j{i}", i % 3 * 10, i, "abc"[i % 3]) for i in range(3000)]
    add(r, *jobs)
    gate = r.queue(C.DEFAULT_QUEUE)
    before = (list(gate.index), [list(lane.heap) for lane in gate.lanes.values()])
    r.pause("queue", C.DEFAULT_QUEUE, pause())
    after = (list(gate.index), [list(lane.heap) for lane in gate.lanes.values()])
    assert before == after                  # O(1): no heap was touched
    assert r.pop() is None and r.peek() is None
    assert {r.hold_of(j, 0.0).reason for j in jobs} == {C.H_QUEUE_PAUSED}    # type: ignore[union-attr]
    assert sorted(c for _q, _h, _r, c in r.held_counts(0.0)) == [1000, 1000, 1000]
    r.resume("queue", C.DEFAULT_QUEUE)
    assert drain(r) == [j.id for j in sorted(jobs, key=lambda j: (-j.priority, j.seq))]


def test_holds_show_the_most_important_reason():
    r = Ready()
    r.configure([QueueSpec(C.DEFAULT_QUEUE, rate="1/s")], {"h": HandlerFlow(rate="1/s")})
    j = job("j", seq=1)
    add(r, j)
    assert r.hold_of(j, 0.0) is None
    r.took(j, 0.0)                           # a start: both limiters are empty now
    hold = r.hold_of(j, 0.5)
    assert hold is not None and hold.reason == C.H_RATE_LIMITED and hold.until == 1.0
    r.pause("queue", C.DEFAULT_QUEUE, pause(5.0))
    assert r.hold_of(j, 0.5).reason == C.H_QUEUE_PAUSED                 # type: ignore[union-attr]
    r.pause("handler", "h", pause(6.0, 60.0))
    hold = r.hold_of(j, 0.5)
    assert hold is not None and (hold.reason, hold.since, hold.until) == (C.H_HANDLER_PAUSED, 6.0, 60.0)
    r.configure([QueueSpec(C.DEFAULT_QUEUE)], {})            # its code is gone
    assert r.hold_of(j, 0.5).reason == C.H_QUARANTINED                  # type: ignore[union-attr]


def test_a_handler_whose_code_is_not_loaded_is_held_until_it_is():
    r = Ready()
    r.configure([], {"a": HandlerFlow()})
    add(r, job("gone", 30, 1, "b"), job("a1", 0, 2, "a"))
    assert drain(r) == ["a1"]
    r.configure([], {"a": HandlerFlow(), "b": HandlerFlow()})
    assert drain(r) == ["gone"]


def test_a_concurrency_limit_holds_the_handler_and_a_freed_slot_lets_one_more_start():
    r = Ready()
    r.configure([], {"lim": HandlerFlow(max_concurrency=2), "o": HandlerFlow()})
    lim = [job(f"l{i}", 30, i, "lim") for i in range(5)]
    add(r, *lim, job("o1", 0, 10, "o"))
    assert drain(r) == ["l0", "l1", "o1"]
    assert r.hold_of(lim[2], 0.0) is None          # waiting for a slot is not a hold
    r.moved(lim[0], C.RUNNING, C.COMPLETED)
    assert drain(r) == ["l2"]
    assert r.handlers["lim"].running == 2


# --- rate limits --------------------------------------------------------------------------------

def test_parse_rate():
    assert parse_rate("5/s") == (5.0, 1.0)
    assert parse_rate("60/m") == (60.0, 60.0)
    assert parse_rate("0.5/h") == (0.5, 3600.0)
    for bad in ("5", "5/d", "0/s", "-1/s", "x/s", "nan/s", "inf/s", 5, None):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_a_new_limiter_allows_a_burst_then_spaces_starts():
    lim = Limiter("2/s", 3)
    for _ in range(3):
        assert lim.allows(10.0)
        lim.take(10.0)
    assert not lim.allows(10.0) and lim.next_at() == 10.5
    assert lim.allows(10.5)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20), st.sampled_from(["s", "m"]), st.integers(1, 5),
       st.lists(st.floats(0, 30), min_size=1, max_size=120))
def test_gcra_never_allows_more_than_burst_plus_rate_times_span(n, unit, burst, tries):
    """Greedy: start whenever allowed, at the times drawn. In every span t
    between two starts, count <= burst + n*t/period (+1 for the closed span)."""
    lim = Limiter(f"{n}/{unit}", burst)
    period = 1.0 if unit == "s" else 60.0
    starts = []
    for t in sorted(tries):
        if lim.allows(t):
            lim.take(t)
            starts.append(t)
    for i in range(len(starts)):
        for k in range(i, len(starts)):
            span = starts[k] - starts[i]
            assert k - i + 1 <= burst + n * span / period + 1e-9, (starts[i:k + 1], n, burst)


def test_the_limiter_is_rebuilt_from_start_records_and_a_snapshot():
    """A restart replays the start records (and a snapshot's limiter state):
    the rebuilt limiter is where the live one was, so no burst follows."""
    cfg = ([QueueSpec(C.DEFAULT_QUEUE)], {"h": HandlerFlow(rate="1/s", burst=2)})
    live = Lifecycle()
    live.ready.configure(*cfg)
    records = []
    for i in range(4):
        j = job(f"j{i}", seq=i + 1)
        records.append([R.SUBMIT, j.to_record()])
    records += [R.start("j0", 100.0, 1), R.start("j1", 100.0, 1), R.start("j2", 101.0, 1)]
    for rec in records:
        live.replay(rec)
    again = Lifecycle()
    again.ready.configure(*cfg)
    for rec in records:
        again.replay(rec)
    lim_live, lim_again = live.ready.handlers["h"].limiter, again.ready.handlers["h"].limiter
    assert lim_live is not None and lim_again is not None
    assert lim_again.tat == lim_live.tat == 103.0 and not lim_again.allows(101.5)
    snap = Lifecycle()
    snap.ready.configure(*cfg)
    for rec in live.snapshot():
        snap.replay(rec)
    assert snap.ready.handlers["h"].limiter.tat == 103.0                  # type: ignore[union-attr]


def test_a_rate_limited_handler_is_held_until_its_next_start_and_wakes_then():
    r = Ready()
    r.configure([], {"h": HandlerFlow(rate="2/s"), "o": HandlerFlow()})
    hs = [job(f"h{i}", 30, i, "h") for i in range(3)]
    other = job("o1", 0, 10, "o")
    add(r, *hs, other)
    first = r.pop(None, 100.0)
    assert first is hs[0]
    r.took(first, 100.0)
    assert r.pop(None, 100.1) is other                # h is held: the other handler goes
    assert r.pop(None, 100.1) is None
    assert r.next_wakeup() == 100.5
    assert not r.release_due(100.4) and r.release_due(100.5)
    assert r.pop(None, 100.5) is hs[1]


def test_a_rate_hold_from_the_handler_holds_until_then():
    r = Ready()
    r.configure([], {"h": HandlerFlow()})
    add(r, job("a", seq=1))
    r.rate_hold("h", 5.0, 7.0)
    assert r.pop(None, 6.0) is None
    hold = r.hold_of(r.handlers["h"].lanes[0].heap[0][3], 6.0)
    assert hold is not None and (hold.reason, hold.until) == (C.H_RATE_LIMITED, 7.0)
    r.release_due(7.0)
    assert r.pop(None, 7.0) is not None


def test_a_queue_rate_limit_spaces_the_whole_queue():
    r = Ready()
    r.configure([QueueSpec(C.DEFAULT_QUEUE, rate="1/s")], {"a": HandlerFlow(), "b": HandlerFlow()})
    add(r, job("a1", seq=1, handler="a"), job("b1", seq=2, handler="b"))
    j = r.pop(None, 50.0)
    assert j is not None
    r.took(j, 50.0)
    assert r.pop(None, 50.5) is None and r.next_wakeup() == 51.0
    assert r.pop(None, 51.0) is not None


def test_a_config_pause_is_the_initial_state_and_a_runtime_resume_wins():
    r = Ready()
    r.configure([QueueSpec("q", paused=True)], {})
    assert r.queues["q"].paused
    r.resume("queue", "q")
    snap = list(r.snapshot())
    assert [R.RESUME, "queue", "q", 0.0] in snap
    again = Lifecycle()
    again.ready.configure([QueueSpec("q", paused=True)], {})
    for rec in snap:
        again.replay(rec)
    again.ready.configure([QueueSpec("q", paused=True)], {})      # a SIGHUP: still resumed
    assert not again.ready.queues["q"].paused


# --- a model of which jobs may start -------------------------------------------------------------

class ReadyModel(RuleBasedStateMachine):
    """Random submits, pauses, resumes, limits and starts against a model:
    `pop` gives exactly the best job (priority, then FIFO) of the queue among
    those whose handler and queue are not held at `now`, and None only when
    there is none."""

    HANDLERS = ("a", "b", "c")
    QUEUES = (C.DEFAULT_QUEUE, "q2")

    @initialize()
    def setup(self) -> None:
        self.r = Ready()
        self.r.configure([QueueSpec(q) for q in self.QUEUES],
                         {h: HandlerFlow() for h in self.HANDLERS})
        self.now = 1000.0
        self.seq = 0
        self.pending: list[Job] = []
        self.running: list[Job] = []
        self.paused: set[tuple[str, str]] = set()
        self.limits: dict[str, int] = {}
        self.rates: dict[str, tuple[float, float]] = {}    # handler -> (interval, tat)

    def _configure(self) -> None:
        flows = {h: HandlerFlow(max_concurrency=self.limits.get(h, 0),
                                rate=f"{1 / self.rates[h][0]:g}/s" if h in self.rates else None)
                 for h in self.HANDLERS}
        self.r.configure([QueueSpec(q) for q in self.QUEUES], flows)

    @rule(priority=st.sampled_from([0, 10, 30]), handler=st.sampled_from(HANDLERS),
          queue=st.sampled_from(QUEUES))
    def submit(self, priority: int, handler: str, queue: str) -> None:
        self.seq += 1
        j = job(f"j{self.seq}", priority, self.seq, handler, queue)
        self.r.admit(j)
        self.pending.append(j)

    @rule(kind=st.sampled_from(["queue", "handler"]), data=st.data())
    def pause(self, kind: str, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.QUEUES if kind == "queue" else self.HANDLERS))
        self.r.pause(kind, name, pause(self.now))
        self.paused.add((kind, name))

    @rule(kind=st.sampled_from(["queue", "handler"]), data=st.data())
    def resume(self, kind: str, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.QUEUES if kind == "queue" else self.HANDLERS))
        assert self.r.resume(kind, name) == ((kind, name) in self.paused)
        self.paused.discard((kind, name))

    @rule(handler=st.sampled_from(HANDLERS), limit=st.integers(0, 2))
    def set_limit(self, handler: str, limit: int) -> None:
        self.limits[handler] = limit
        self._configure()

    @rule(handler=st.sampled_from(HANDLERS), per_s=st.sampled_from([0, 1, 4]))
    def set_rate(self, handler: str, per_s: int) -> None:
        lim = self.r.handlers[handler].limiter
        if per_s:
            self.rates[handler] = (1.0 / per_s, lim.tat if lim is not None else -math.inf)
        else:
            self.rates.pop(handler, None)
        self._configure()

    @rule(dt=st.sampled_from([0.0, 0.1, 0.3, 1.0]))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.r.release_due(self.now)

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        j = data.draw(st.sampled_from(self.running))
        self.running.remove(j)
        self.r.moved(j, C.RUNNING, C.COMPLETED)
        j.status = C.COMPLETED

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        j = data.draw(st.sampled_from(self.pending))
        self.pending.remove(j)
        self.r.moved(j, C.PENDING, C.CANCELLED)
        j.status = C.CANCELLED

    def _may_start(self, j: Job) -> bool:
        if ("queue", j.queue) in self.paused or ("handler", j.handler) in self.paused:
            return False
        limit = self.limits.get(j.handler, 0)
        if limit and sum(1 for x in self.running if x.handler == j.handler) >= limit:
            return False
        lim = self.r.handlers[j.handler].limiter
        return lim is None or lim.allows(self.now)

    @rule(queue=st.sampled_from(QUEUES))
    def start(self, queue: str) -> None:
        eligible = [j for j in self.pending if j.queue == queue and self._may_start(j)]
        expected = min(eligible, key=lambda j: (-j.priority, j.seq)) if eligible else None
        got = self.r.pop(self.r.queues[queue], self.now)
        assert got is expected, (got and got.id, expected and expected.id)
        if got is not None:
            self.pending.remove(got)
            self.r.took(got, self.now)
            self.r.moved(got, C.PENDING, C.RUNNING)
            got.status = C.RUNNING
            self.running.append(got)

    @invariant()
    def held_jobs_have_a_reason(self) -> None:
        if not hasattr(self, "r"):
            return
        for j in self.pending:
            hold = self.r.hold_of(j, self.now)
            paused_by = [k for k in ("handler", "queue")
                         if (k, j.handler if k == "handler" else j.queue) in self.paused]
            if paused_by:
                assert hold is not None and hold.reason == f"{paused_by[0]}_paused"


TestReadyModel = ReadyModel.TestCase
TestReadyModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


# --- counts per queue ----------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["submit", "start", "complete", "fail", "cancel"]),
                          st.sampled_from([C.DEFAULT_QUEUE, C.DEFAULT_QUEUE, "a", "b"]),
                          st.integers(0, 30)), max_size=60))
def test_each_queue_counts_exactly_its_jobs_before_and_after_a_second_queue_appears(steps):
    """While `default` is the only queue its counts are the job table's; the
    first job of another queue (a replayed submit) splits them. Either way
    each queue's counts equal a recount of its jobs, and the table's their sum."""
    life = Lifecycle()
    n = 0
    for op, queue, pick in steps:
        if op == "submit":
            n += 1
            life.apply([R.SUBMIT, job(f"j{n}", seq=n, queue=queue).to_record()])
        else:
            ids = [j.id for j in life.table.jobs.values()
                   if j.status == (C.PENDING if op == "start" else C.RUNNING)]
            if not ids:
                continue
            jid = ids[pick % len(ids)]
            if op == "start":
                life.apply(R.start(jid, 1.0, 1))
            elif op == "complete":
                life.apply(R.complete(jid, 2.0, None, None))
            elif op == "fail":
                life.apply(R.fail(jid, 2.0, "boom", C.DEAD_LETTER, None))
            else:
                life.apply([R.CANCEL, jid, 2.0])
        for name, q in life.ready.queues.items():
            mine = [j.status for j in life.table.jobs.values() if j.queue == name]
            assert {s: q.counts[s] for s in C.STATUSES} == {s: mine.count(s) for s in C.STATUSES}
        assert life.ready.shared == (len(life.ready.queues) == 1)
        for s in C.STATUSES:
            assert sum(q.counts[s] for q in life.ready.queues.values()) == life.table.counts[s]

"""jobd/core/lifecycle.py: every record handler through `Lifecycle.apply`,
where a new job starts (`place`), what a failed attempt leads to
(`next_step`, `backoff`), timers coming due (`promote_due`), dependency
cascades 50,000 deep and 50,000 wide, what listeners are told, requeueing
after a crash, snapshots, and the log's framing records.

Random histories replayed from any prefix are in tests/test_wal_codec.py;
these pin each rule down by name.
"""
from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import orjson
import pytest

from jobd import constants as C
from jobd.core import records as R
from jobd.core.job import EMPTY_ARGS, EMPTY_DICT, EMPTY_KWARGS, EMPTY_LIST, Job, progress_view
from jobd.core.lifecycle import (
    FAIL_ERROR,
    FAIL_PERMANENT,
    FAIL_RETRY,
    Lifecycle,
    backoff,
    next_step,
)

DEFAULTS = (3, 1.0, 2.0, None, None, None)
T0 = 1_800_000_000.0


def make(life: Lifecycle, job_id: str, deps: Iterable[str] = (), priority: int = 10,
         run_at: float | None = None, now: float = T0, args: bytes = EMPTY_ARGS) -> Job:
    """A new job as `Jobs` builds it, placed but not yet inserted."""
    job = Job.new(job_id, "h", priority, life.table.next_seq(), now, DEFAULTS, None, args,
                  EMPTY_KWARGS, EMPTY_DICT, list(deps) or EMPTY_LIST)
    life.place(job, run_at, now)
    return job


def submit(life: Lifecycle, job_id: str, deps: Iterable[str] = (), priority: int = 10,
           run_at: float | None = None, now: float = T0) -> Job:
    """Place a job and apply its submit record, as the log would hold it."""
    job = make(life, job_id, deps, priority, run_at, now)
    life.apply([R.SUBMIT, wal(job.to_record())])
    return life.table.jobs[job_id]


def wal(value: Any) -> Any:
    """As replay sees it: written as JSON and decoded."""
    return orjson.loads(orjson.dumps(value))


def status(life: Lifecycle, *ids: str) -> list[str]:
    return [life.table.jobs[i].status for i in ids]


def run(life: Lifecycle, job_id: str, ts: float = T0 + 1, worker: int = 1) -> Job:
    life.apply(R.start(job_id, ts, worker))
    return life.table.jobs[job_id]


def counts(life: Lifecycle) -> dict[str, int]:
    return {k: v for k, v in life.table.counts.items() if v}


class Recorder:
    """A listener: what it was told, as (id, old status, new status)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, job: Job, old: str) -> None:
        self.calls.append((job.id, old, job.status))


# --- submit ------------------------------------------------------------------------------

def test_submit_indexes_the_job_by_its_status():
    life = Lifecycle()
    submit(life, "p")
    submit(life, "s", run_at=T0 + 60)
    submit(life, "w", deps=["p"])
    assert counts(life) == {C.PENDING: 1, C.SCHEDULED: 1, C.WAITING: 1}
    assert life.ready.peek() is life.table.jobs["p"]
    assert life.next_due() == T0 + 60
    assert [j.id for j in life.table.dependents["p"]] == ["w"]
    assert life.table.queued == 3


def test_a_replayed_running_or_terminal_submit_lands_in_its_index():
    life = Lifecycle()
    running = make(life, "r")
    running.status, running.started_at = C.RUNNING, T0
    done = make(life, "d")
    done.status, done.completed_at = C.DEAD_LETTER, T0 + 5
    for job in (running, done):
        life.apply([R.SUBMIT, wal(job.to_record())])
    assert list(life.table.running) == ["r"]
    assert [j.id for _, j in life.table.dead] == ["d"]


def _submit_twice(job: Job) -> Lifecycle:
    life = Lifecycle()
    rec = [R.SUBMIT, wal(job.to_record())]
    life.apply(rec)
    life.apply(rec)
    return life


def test_a_submit_seen_twice_is_counted_once():
    """`insert` allows for a snapshot and the segment after it both holding a submit."""
    job = make(Lifecycle(), "a", args=b"[1]", run_at=T0 + 10)
    life = _submit_twice(job)
    assert counts(life) == {C.SCHEDULED: 1}
    assert life.table.args_bytes == len(b"[1]") + len(EMPTY_KWARGS)
    assert [j.id for j in life.timers.pop_due(T0 + 10)] == ["a"]


def test_a_pending_submit_seen_twice_is_counted_once():
    life = _submit_twice(make(Lifecycle(), "a", args=b"[1]"))
    assert counts(life) == {C.PENDING: 1}
    assert [j.id for j in life.ready.order()] == ["a"]


def test_submit_raises_the_sequence_counter_to_the_jobs_place():
    life = Lifecycle()
    job = make(life, "a")
    job.seq = 500
    life.apply([R.SUBMIT, wal(job.to_record())])
    assert life.table.seq == 500 and life.table.next_seq() == 501


# --- start, progress, complete -----------------------------------------------------------------

def test_start_counts_the_attempt_and_marks_the_job_running():
    life = Lifecycle()
    job = submit(life, "a")
    job.completed_at = T0 - 1                      # left from an earlier run
    run(life, "a", T0 + 3, worker=7)
    assert (job.status, job.attempts, job.started_at, job.worker_id) == (C.RUNNING, 1, T0 + 3, 7)
    assert job.completed_at is None and life.table.running == {"a": job}
    assert life.ready.pop() is None


def test_progress_is_kept_and_progress_for_an_unknown_job_is_ignored():
    life = Lifecycle()
    job = submit(life, "a")
    run(life, "a")
    prog = progress_view(2, 4, "half", T0 + 2)
    life.apply([R.PROGRESS, "a", prog])
    life.apply([R.PROGRESS, "gone", prog])
    assert job.progress == prog


def test_complete_keeps_the_result_as_json_text_and_releases_dependents():
    life = Lifecycle()
    submit(life, "a")
    other = submit(life, "b")
    w1 = submit(life, "w1", deps=["a"])
    w2 = submit(life, "w2", deps=["a", "b"])
    job = run(life, "a")
    job.error = "from the last attempt"
    seq_before = life.table.seq
    life.apply(wal(R.complete("a", T0 + 2, {"x": [1, 2]}, None)))
    assert (job.status, job.completed_at, job.error) == (C.COMPLETED, T0 + 2, None)
    assert type(job.result) is orjson.Fragment and orjson.dumps(job.result) == b'{"x":[1,2]}'
    assert [j.id for _, j in life.table.finished] == ["a"]
    assert w1.status == C.PENDING and w1.seq > seq_before       # the back of the queue
    assert w2.status == C.WAITING                                # b is still open
    assert [j.id for j in life.ready.order()] == ["b", "w1"]
    run(life, "b")
    life.apply(R.complete("b", T0 + 3, None, ["file.json", 10]))
    assert other.result_ref == ["file.json", 10] and w2.status == C.PENDING


# --- fail -----------------------------------------------------------------------------------------

def test_a_failed_attempt_to_be_retried_waits_on_a_timer():
    life = Lifecycle()
    job = run(life, submit(life, "a").id)
    life.apply(R.fail("a", T0 + 2, "boom", C.RETRYING, T0 + 10))
    assert (job.status, job.error, job.scheduled_for) == (C.RETRYING, "boom", T0 + 10)
    assert job.completed_at is None and job.finished_attempt_at == T0 + 2
    assert life.next_due() == T0 + 10 and not life.table.running
    assert not life.table.finished


@pytest.mark.parametrize("final", [C.FAILED, C.DEAD_LETTER])
def test_a_final_failure_ends_the_job_and_fails_its_open_dependents(final):
    life = Lifecycle()
    submit(life, "a")
    w = submit(life, "w", deps=["a"])
    s = submit(life, "s", deps=["a"], run_at=T0 + 99)
    job = run(life, "a")
    life.apply(R.fail("a", T0 + 2, "boom", final, None))
    assert (job.status, job.completed_at) == (final, T0 + 2)
    deque_ = life.table.dead if final == C.DEAD_LETTER else life.table.finished
    assert job in [j for _, j in deque_]
    for dep in (w, s):
        assert dep.status == C.FAILED
        assert dep.error == f"dependency a ended {final}"
        assert dep.completed_at == T0 + 2


# --- cancel, cancel request, requeue, retry, delete --------------------------------------------------

@pytest.mark.parametrize("before", [C.PENDING, C.SCHEDULED, C.WAITING, C.RUNNING, C.RETRYING])
def test_cancel_ends_any_open_job_and_fails_its_dependents(before):
    life = Lifecycle()
    submit(life, "dep")
    job = submit(life, "a", deps=["dep"] if before == C.WAITING else (),
                 run_at=T0 + 50 if before == C.SCHEDULED else None)
    if before in (C.RUNNING, C.RETRYING):
        run(life, "a")
    if before == C.RETRYING:
        life.apply(R.fail("a", T0 + 2, "boom", C.RETRYING, T0 + 5))
    assert job.status == before
    w = submit(life, "w", deps=["a"])
    life.apply([R.CANCEL, "a", T0 + 9])
    assert (job.status, job.completed_at) == (C.CANCELLED, T0 + 9)
    assert w.status == C.FAILED and w.error == "dependency a ended cancelled"
    assert not life.table.running
    life.promote_due(T0 + 100)                     # its timer, if any, is stale now
    assert job.status == C.CANCELLED


def test_a_cancel_request_only_sets_the_flag():
    life = Lifecycle()
    job = run(life, submit(life, "a").id)
    life.apply([R.CANCEL_REQUEST, "a"])
    assert job.cancel_requested and job.status == C.RUNNING


@pytest.mark.parametrize("uncount,attempts", [(True, 1), (False, 2)])
def test_requeue_puts_a_running_job_back_uncounting_its_attempt_if_asked(uncount, attempts):
    life = Lifecycle()
    job = submit(life, "a")
    run(life, "a")
    life.apply([R.REQUEUE, "a", False])
    run(life, "a", worker=4)
    life.apply([R.REQUEUE, "a", uncount])
    assert (job.status, job.attempts, job.worker_id) == (C.PENDING, attempts, None)
    assert life.ready.pop() is job and not life.table.running


def test_requeue_never_makes_attempts_negative():
    life = Lifecycle()
    job = make(life, "a")
    job.status = C.RUNNING                 # a replayed submit of a running job, attempts 0
    life.apply([R.SUBMIT, wal(job.to_record())])
    life.apply([R.REQUEUE, "a", True])
    back = life.table.jobs["a"]
    assert back.attempts == 0 and back.status == C.PENDING


@pytest.mark.parametrize("final", [C.FAILED, C.CANCELLED, C.DEAD_LETTER])
def test_retry_starts_a_job_over_at_the_back_of_the_queue(final):
    life = Lifecycle()
    job = submit(life, "a")
    submit(life, "b")
    run(life, "a")
    life.apply([R.PROGRESS, "a", progress_view(1, 2, "", T0)])
    life.apply([R.CANCEL_REQUEST, "a"])
    if final == C.CANCELLED:
        life.apply([R.CANCEL, "a", T0 + 2])
    else:
        life.apply(R.fail("a", T0 + 2, "boom", final, None))
    seq_before = life.table.seq
    life.apply([R.RETRY, "a", T0 + 3])
    assert job.status == C.PENDING and job.seq == seq_before + 1
    assert (job.attempts, job.error, job.result, job.result_ref, job.completed_at,
            job.started_at, job.worker_id, job.cancel_requested, job.progress) == (
        0, None, None, None, None, None, None, False, None)
    assert [j.id for j in life.ready.order()] == ["b", "a"]


def test_delete_forgets_jobs_and_ignores_unknown_ids():
    life = Lifecycle()
    submit(life, "a")
    submit(life, "b")
    job = make(life, "c", args=b"[1]")
    life.apply([R.SUBMIT, wal(job.to_record())])
    life.apply([R.DELETE, ["a", "c", "never"]])
    assert list(life.table.jobs) == ["b"] and counts(life) == {C.PENDING: 1}
    assert life.table.args_bytes == len(EMPTY_ARGS) + len(EMPTY_KWARGS)
    assert [j.id for j in life.ready.order()] == ["b"]


def test_a_record_about_an_unknown_job_raises_live_and_is_counted_in_replay():
    life = Lifecycle()
    with pytest.raises(KeyError):
        life.apply(R.start("ghost", T0, 1))
    life.replay(R.start("ghost", T0, 1))
    life.replay([R.CANCEL, "ghost", T0])
    assert life.table.orphan_records == 2 and len(life.table) == 0


# --- schedules and the sequence counter ------------------------------------------------------------

def test_schedule_records():
    life = Lifecycle()
    life.apply([R.SCHEDULE_ADD, {"name": "n", "cron": "* * * * *"}])
    life.apply([R.SCHEDULE_FIRED, "n", T0, "sched:n:1", T0 + 0.5])
    assert life.table.schedules["n"] == {"name": "n", "cron": "* * * * *", "last_due": T0,
                                         "last_job_id": "sched:n:1", "last_run": T0 + 0.5}
    life.apply([R.SCHEDULE_FIRED, "n", T0 + 60, "sched:n:2"])       # older: no ran_at
    assert life.table.schedules["n"]["last_run"] == T0 + 60
    life.apply([R.SCHEDULE_FIRED, "other", T0, "x", T0])            # unknown: ignored
    life.apply([R.SCHEDULE_REMOVE, "n"])
    life.apply([R.SCHEDULE_REMOVE, "n"])                            # twice: harmless
    assert life.table.schedules == {}


def test_seq_record_only_raises_the_counter():
    life = Lifecycle()
    life.apply([R.SEQ, 40])
    life.apply([R.SEQ, 12])
    assert life.table.seq == 40


def test_an_unknown_tag_is_refused_by_apply():
    with pytest.raises(KeyError):
        Lifecycle().apply(["??", 1])


# --- place ------------------------------------------------------------------------------------------------

def placed(life: Lifecycle, deps: Iterable[str] = (), run_at: float | None = None,
           batch: dict[str, Job] | None = None) -> Job:
    job = Job.new("new", "h", 10, 99, T0, DEFAULTS, None, EMPTY_ARGS, EMPTY_KWARGS, EMPTY_DICT,
                  list(deps))
    life.place(job, run_at, T0, batch)
    return job


def deps_in(*statuses: str) -> Lifecycle:
    """A Lifecycle holding jobs d0, d1... with these statuses."""
    life = Lifecycle()
    for i, st in enumerate(statuses):
        job = make(life, f"d{i}")
        job.status = st
        job.completed_at = T0 - 1 if st in C.TERMINAL else None
        life.insert(job)
    return life


@pytest.mark.parametrize("dep_statuses,run_at,expected", [
    ((), None, C.PENDING),
    ((), T0 + 1, C.SCHEDULED),
    ((), T0, C.PENDING),                   # due now: not scheduled
    ((), T0 - 100, C.PENDING),
    ((C.COMPLETED,), None, C.PENDING),
    ((C.PENDING,), None, C.WAITING),
    ((C.COMPLETED, C.RUNNING), None, C.WAITING),
    ((C.PENDING,), T0 + 1, C.SCHEDULED),   # the delay first; dependencies when due
    ((C.PENDING,), T0 - 1, C.WAITING),
])
def test_place(dep_statuses, run_at, expected):
    life = deps_in(*dep_statuses)
    job = placed(life, [f"d{i}" for i in range(len(dep_statuses))], run_at)
    assert job.status == expected
    assert job.scheduled_for == run_at
    assert job.error is None and job.completed_at is None


@pytest.mark.parametrize("run_at", [None, T0 + 3600])
@pytest.mark.parametrize("dead", [C.FAILED, C.CANCELLED, C.DEAD_LETTER])
def test_place_fails_a_job_whose_dependency_already_failed_delay_or_not(dead, run_at):
    life = deps_in(C.COMPLETED, C.PENDING, dead)
    job = placed(life, ["d0", "d1", "d2"], run_at)
    assert job.status == C.FAILED
    assert job.error == "dependency d2 ended unsuccessfully"
    assert job.completed_at == T0
    assert job.scheduled_for is None               # it never waits for its time


def test_place_treats_a_purged_dependency_as_completed():
    assert placed(Lifecycle(), ["gone"]).status == C.PENDING


def test_place_waits_for_an_open_sibling_of_the_same_batch():
    life = Lifecycle()
    sibling = Job.new("sib", "h", 10, 1, T0, DEFAULTS, None, EMPTY_ARGS, EMPTY_KWARGS,
                      EMPTY_DICT, EMPTY_LIST)
    life.place(sibling, None, T0)
    assert placed(life, ["sib"], batch={"sib": sibling}).status == C.WAITING
    sibling.status = C.FAILED              # a sibling that ended is looked up in the table
    life.insert(sibling)
    assert placed(life, ["sib"], batch={"sib": sibling}).status == C.FAILED


# --- next_step and backoff ---------------------------------------------------------------------------------

def step(attempts: int = 1, max_retries: int = 3, kind: int = FAIL_ERROR, after: float = 0.0,
         cancel: bool = False, delay: float = 1.0, factor: float = 2.0,
         max_delay: float = 300.0, jitter: bool = False,
         rng: random.Random | None = None) -> tuple[str, float | None]:
    return next_step(attempts, max_retries, kind, after, cancel, delay, factor, max_delay,
                     jitter, rng)


@pytest.mark.parametrize("kwargs,expected", [
    ({}, (C.RETRYING, 1.0)),
    ({"attempts": 3}, (C.RETRYING, 4.0)),
    ({"attempts": 4}, (C.DEAD_LETTER, None)),                     # retries used up
    ({"attempts": 1, "max_retries": 0}, (C.DEAD_LETTER, None)),
    ({"kind": FAIL_PERMANENT}, (C.FAILED, None)),                 # retries left, no retry
    ({"kind": FAIL_PERMANENT, "attempts": 9}, (C.FAILED, None)),  # not dead_letter either
    ({"kind": FAIL_PERMANENT, "cancel": True}, (C.FAILED, None)),
    ({"cancel": True}, (C.CANCELLED, None)),                      # asked to stop: no retry
    ({"cancel": True, "attempts": 4}, (C.DEAD_LETTER, None)),     # used up beats cancelled
    ({"kind": FAIL_RETRY, "after": 42.5}, (C.RETRYING, 42.5)),    # exactly, no backoff
    ({"kind": FAIL_RETRY, "after": 1e6, "max_delay": 5}, (C.RETRYING, 1e6)),   # nor a cap
    ({"kind": FAIL_RETRY, "after": -3}, (C.RETRYING, 0.0)),
    ({"kind": FAIL_RETRY, "attempts": 4}, (C.DEAD_LETTER, None)),
    ({"kind": FAIL_RETRY, "cancel": True}, (C.CANCELLED, None)),
    ({"attempts": 3, "max_delay": 3.0}, (C.RETRYING, 3.0)),
])
def test_next_step(kwargs, expected):
    assert step(**kwargs) == expected


def test_retry_after_is_not_jittered():
    assert step(kind=FAIL_RETRY, after=10.0, jitter=True, rng=random.Random(1)) == (C.RETRYING,
                                                                                     10.0)


def test_backoff_jitter_follows_the_rng_it_is_given():
    a = [step(attempts=2, jitter=True, rng=random.Random(5))[1] for _ in range(3)]
    b = [backoff(2, 1.0, 2.0, 300.0, True, random.Random(5)) for _ in range(3)]
    assert a == b and len(set(a)) == 1
    assert a[0] is not None and 1.0 <= a[0] <= 2.0


def test_backoff_before_any_failure_is_the_base_delay_and_zero_stays_zero():
    assert backoff(0, 3.0, 2.0, 300.0, False) == backoff(1, 3.0, 2.0, 300.0, False) == 3.0
    assert backoff(7, 0.0, 2.0, 300.0, False) == 0.0
    assert backoff(5, 2.0, 1.0, 300.0, False) == 2.0      # factor 1: constant


# --- promote_due -----------------------------------------------------------------------------------

def test_promote_due_moves_due_jobs_to_the_back_of_the_queue_in_due_order():
    life = Lifecycle()
    submit(life, "p")
    submit(life, "later", run_at=T0 + 20)
    submit(life, "sooner", run_at=T0 + 10)
    submit(life, "far", run_at=T0 + 1000)
    retried = run(life, submit(life, "r").id)
    life.apply(R.fail("r", T0 + 2, "boom", C.RETRYING, T0 + 15))
    assert life.promote_due(T0 + 9) == 0
    assert life.promote_due(T0 + 20) == 3
    assert [j.id for j in life.ready.order()] == ["p", "sooner", "r", "later"]
    assert retried.status == C.PENDING and life.next_due() == T0 + 1000


def test_promote_due_counts_only_live_timers():
    life = Lifecycle()
    submit(life, "a", run_at=T0 + 5)
    submit(life, "b", run_at=T0 + 5)
    life.apply([R.CANCEL, "a", T0 + 1])
    assert life.promote_due(T0 + 5) == 1
    assert status(life, "a", "b") == [C.CANCELLED, C.PENDING]


def test_a_due_job_with_an_open_dependency_waits_and_is_released_later():
    life = Lifecycle()
    submit(life, "dep")
    job = submit(life, "s", deps=["dep"], run_at=T0 + 5)
    life.promote_due(T0 + 5)
    assert job.status == C.WAITING
    run(life, "dep")
    life.apply(R.complete("dep", T0 + 6, None, None))
    assert job.status == C.PENDING


def test_a_due_job_whose_dependency_completed_while_it_waited_for_its_time_runs():
    life = Lifecycle()
    submit(life, "dep")
    job = submit(life, "s", deps=["dep"], run_at=T0 + 5)
    run(life, "dep")
    life.apply(R.complete("dep", T0 + 2, None, None))
    assert job.status == C.SCHEDULED
    life.promote_due(T0 + 5)
    assert job.status == C.PENDING


def test_a_due_job_whose_dependency_failed_fails_at_its_due_time_with_its_dependents():
    life = Lifecycle()
    submit(life, "dep")
    job = submit(life, "s", deps=["dep"], run_at=T0 + 5)
    after = submit(life, "after", deps=["s"])
    run(life, "dep")
    life.apply(R.complete("dep", T0 + 1, None, None))
    # "dep" is purged and its id used again by a job that fails: "s" no longer
    # hears about it, but its due time checks its dependencies
    life.apply([R.DELETE, ["dep"]])
    submit(life, "dep")
    run(life, "dep")
    life.apply(R.fail("dep", T0 + 2, "boom", C.FAILED, None))
    assert job.status == C.SCHEDULED
    assert life.promote_due(T0 + 5) == 1
    assert (job.status, job.completed_at) == (C.FAILED, T0 + 5)
    assert job.error == "dependency dep ended unsuccessfully"
    assert after.status == C.FAILED and after.error == "dependency s ended failed"


def _explicitly_retried_dependent(dep_retried: bool) -> Lifecycle:
    """A fails, so B (waiting on A) fails; B is retried by hand (which runs it
    whatever its dependencies), fails an attempt and is due for its retry."""
    life = Lifecycle()
    submit(life, "A")
    submit(life, "B", deps=["A"])
    run(life, "A")
    life.apply(R.fail("A", T0 + 2, "boom", C.FAILED, None))
    assert status(life, "B") == [C.FAILED]
    if dep_retried:
        life.apply([R.RETRY, "A", T0 + 3])
    life.apply([R.RETRY, "B", T0 + 3])
    run(life, "B", T0 + 4)
    life.apply(R.fail("B", T0 + 5, "flaky", C.RETRYING, T0 + 6))
    life.promote_due(T0 + 6)
    return life


def test_a_retried_job_due_again_is_not_stranded_waiting_on_its_dependency():
    life = _explicitly_retried_dependent(dep_retried=True)
    run(life, "A", T0 + 7)
    life.apply(R.complete("A", T0 + 8, None, None))
    assert status(life, "B") == [C.PENDING]


def test_a_retried_job_due_again_is_retried_though_its_dependency_stays_failed():
    life = _explicitly_retried_dependent(dep_retried=False)
    assert status(life, "B") == [C.PENDING]


# --- cascades -------------------------------------------------------------------------------------

N = 50_000


def insert_raw(life: Lifecycle, job_id: str, deps: list[str], st: str,
               due: float | None = None) -> None:
    job = Job.new(job_id, "h", 10, life.table.next_seq(), T0, DEFAULTS, None, EMPTY_ARGS,
                  EMPTY_KWARGS, EMPTY_DICT, deps)
    job.status, job.scheduled_for = st, due
    life.insert(job)


def test_a_chain_of_50000_fails_from_its_root_without_recursion():
    life = Lifecycle()
    insert_raw(life, "c0", [], C.PENDING)
    for i in range(1, N + 1):
        insert_raw(life, f"c{i}", [f"c{i - 1}"], C.WAITING)
    told = Recorder()
    life.listeners.append(told)
    life.apply([R.CANCEL, "c0", T0 + 1])
    assert counts(life) == {C.CANCELLED: 1, C.FAILED: N}
    last = life.table.jobs[f"c{N}"]
    assert last.error == f"dependency c{N - 1} ended failed" and last.completed_at == T0 + 1
    assert life.table.jobs["c1"].error == "dependency c0 ended cancelled"
    assert [c[0] for c in told.calls] == [f"c{i}" for i in range(N + 1)]    # root first, in order
    assert life.table.dependents == {}


def test_a_fan_out_of_50000_fails_every_dependent_once():
    life = Lifecycle()
    insert_raw(life, "root", [], C.PENDING)
    for i in range(N):
        insert_raw(life, f"f{i}", ["root"], C.WAITING if i % 2 else C.SCHEDULED, T0 + i)
    told = Recorder()
    life.listeners.append(told)
    run(life, "root")
    life.apply(R.fail("root", T0 + 2, "boom", C.DEAD_LETTER, None))
    assert counts(life) == {C.DEAD_LETTER: 1, C.FAILED: N}
    assert len(told.calls) == N + 2 and len({c[0] for c in told.calls}) == N + 1
    assert life.table.queued == 0 and len(life.table.finished) == N


def test_a_chain_completes_link_by_link():
    life = Lifecycle()
    insert_raw(life, "c0", [], C.PENDING)
    for i in range(1, 200):
        insert_raw(life, f"c{i}", [f"c{i - 1}"], C.WAITING)
    for i in range(200):
        job = life.ready.pop()
        assert job is not None and job.id == f"c{i}"
        run(life, job.id)
        life.apply(R.complete(job.id, T0 + i, None, None))
    assert counts(life) == {C.COMPLETED: 200}


# --- listeners -------------------------------------------------------------------------------------

def test_listeners_are_told_each_change_once_in_order_with_the_old_status():
    life = Lifecycle()
    first, second = Recorder(), Recorder()
    order: list[str] = []
    life.listeners += [first, second, lambda job, old: order.append(job.id)]
    submit(life, "a")
    submit(life, "w", deps=["a"])
    run(life, "a")
    life.apply([R.PROGRESS, "a", progress_view(1, 2, "", T0)])      # not a status change
    life.apply([R.CANCEL_REQUEST, "a"])                              # nor this
    life.apply(R.fail("a", T0 + 2, "boom", C.RETRYING, T0 + 3))
    life.promote_due(T0 + 3)
    run(life, "a")
    life.apply([R.REQUEUE, "a", True])
    run(life, "a")
    life.apply(R.complete("a", T0 + 5, None, None))
    life.apply([R.DELETE, ["a"]])                                    # told: status "" (gone)
    assert first.calls == [
        ("a", "", C.PENDING), ("w", "", C.WAITING), ("a", C.PENDING, C.RUNNING),
        ("a", C.RUNNING, C.RETRYING), ("a", C.RETRYING, C.PENDING), ("a", C.PENDING, C.RUNNING),
        ("a", C.RUNNING, C.PENDING), ("a", C.PENDING, C.RUNNING), ("a", C.RUNNING, C.COMPLETED),
        ("w", C.WAITING, C.PENDING), ("a", C.COMPLETED, "")]
    assert second.calls == first.calls and len(order) == len(first.calls)


def test_a_listener_sees_the_indexes_already_updated():
    life = Lifecycle()
    seen: list[tuple[int, bool]] = []
    life.listeners.append(lambda job, old: seen.append((life.table.counts[job.status],
                                                        job.id in life.table.running)))
    submit(life, "a")
    run(life, "a")
    life.apply(R.complete("a", T0 + 1, None, None))
    assert seen == [(1, False), (1, True), (1, False)]


# --- recovery ---------------------------------------------------------------------------------------

def test_recover_running_requeues_every_running_job_keeping_its_attempt():
    life = Lifecycle()
    for name in ("a", "b", "c"):
        submit(life, name)
    a, b = run(life, "a", worker=1), run(life, "b", worker=2)
    life.apply([R.CANCEL_REQUEST, "b"])
    told = Recorder()
    life.listeners.append(told)
    back = life.recover_running()
    assert sorted(j.id for j in back) == ["a", "b"]
    assert all(j.status == C.PENDING and j.worker_id is None and j.attempts == 1 for j in (a, b))
    assert b.cancel_requested                 # the caller cancels it
    assert life.table.running == {} and counts(life) == {C.PENDING: 3}
    assert [j.id for j in life.ready.order()] == ["a", "b", "c"]     # their old places
    assert sorted(told.calls) == [("a", C.RUNNING, C.PENDING), ("b", C.RUNNING, C.PENDING)]
    assert life.recover_running() == []


# --- snapshots ---------------------------------------------------------------------------------------

def busy_lifecycle(n_extra: int = 0) -> Lifecycle:
    """A state with every status, dependencies, schedules, a seq ahead of every job."""
    life = Lifecycle()
    life.apply([R.SCHEDULE_ADD, {"name": "n", "cron": "0 * * * *"}])
    life.apply([R.SCHEDULE_FIRED, "n", T0, "sched:n:x", T0 + 1])
    for name in ("done", "dead", "failed", "running", "retrying", "gone", "cancel"):
        submit(life, name, priority=20)
    submit(life, "pending_low", priority=0)
    submit(life, "waiting", deps=["running"])
    submit(life, "scheduled", run_at=T0 + 500)
    submit(life, "sched_dep", deps=["retrying"], run_at=T0 + 600)
    for name in ("done", "dead", "failed", "running", "retrying", "gone"):
        run(life, name, worker=3)
    life.apply(wal(R.complete("done", T0 + 2, {"r": 1}, None)))
    life.apply(R.fail("dead", T0 + 3, "x", C.DEAD_LETTER, None))
    life.apply(R.fail("failed", T0 + 4, "y", C.FAILED, None))
    life.apply(R.fail("retrying", T0 + 5, "z", C.RETRYING, T0 + 50))
    life.apply([R.CANCEL_REQUEST, "running"])
    life.apply([R.PROGRESS, "running", progress_view(1, 3, "m", T0 + 6)])
    life.apply(R.complete("gone", T0 + 7, None, ["f.json", 3]))
    life.apply([R.DELETE, ["gone"]])
    life.apply([R.CANCEL, "cancel", T0 + 8])
    life.apply([R.RETRY, "cancel", T0 + 9])              # pending again, a new seq
    for i in range(n_extra):
        submit(life, f"x{i}")
    return life


def fingerprint(life: Lifecycle) -> dict[str, Any]:
    t = life.table
    return {
        "jobs": [orjson.dumps(j.to_record()) for j in t.jobs.values()],
        "counts": dict(t.counts), "seq": t.seq, "running": sorted(t.running),
        "args_bytes": t.args_bytes, "schedules": t.schedules,
        "dependents": {k: sorted(j.id for j in v if j.status in (C.WAITING, C.SCHEDULED))
                       for k, v in t.dependents.items()},
        "ready": [j.id for j in life.ready.order()],
        "timers": sorted((due, j.id) for due, _, j in life.timers.entries()
                         if j.scheduled_for == due and j.status in (C.SCHEDULED, C.RETRYING)),
        "finished": live_ended(life, t.finished), "dead": live_ended(life, t.dead),
    }


def live_ended(life: Lifecycle, entries: Iterable[tuple[float, Job]]) -> list[str]:
    """Ids of the live entries of a by-time deque (stale ones are dropped lazily)."""
    return sorted(j.id for stamp, j in entries
                  if life.table.jobs.get(j.id) is j and j.completed_at == stamp
                  and j.status in C.TERMINAL)


def restore(snapshot: Iterable[list[Any]]) -> Lifecycle:
    fresh = Lifecycle()
    for rec in snapshot:
        fresh.apply(wal(rec))
    return fresh


def test_a_snapshot_replayed_into_a_fresh_lifecycle_gives_the_same_table():
    life = busy_lifecycle()
    restored = restore(life.snapshot())
    assert fingerprint(restored) == fingerprint(life)
    # and both go on the same way
    for state in (life, restored):
        state.promote_due(T0 + 1000)
        run(state, "running")
        state.apply(R.complete("running", T0 + 1001, None, None))
    assert fingerprint(restored) == fingerprint(life)


def test_a_snapshot_writes_jobs_in_chunks_after_the_counter_and_schedules():
    life = busy_lifecycle(n_extra=2 * R.SNAPSHOT_CHUNK)
    recs = list(life.snapshot())
    assert recs[0] == [R.SEQ, life.table.seq]
    assert [r[0] for r in recs[1:]] == [R.SCHEDULE_ADD, R.JOBS, R.JOBS, R.JOBS]
    assert [len(r[1]) for r in recs[2:]] == [R.SNAPSHOT_CHUNK, R.SNAPSHOT_CHUNK,
                                            len(life.table) - 2 * R.SNAPSHOT_CHUNK]
    assert fingerprint(restore(recs)) == fingerprint(life)


def test_a_snapshot_of_an_empty_state_is_just_the_counter():
    assert list(Lifecycle().snapshot()) == [[R.SEQ, 0]]


def test_expiry_after_a_snapshot_is_the_same_as_live():
    life = Lifecycle()
    submit(life, "slow")
    submit(life, "quick")
    run(life, "slow")
    run(life, "quick")
    life.apply(R.complete("quick", T0 + 10, None, None))
    life.apply(R.complete("slow", T0 + 1000, None, None))
    restored = restore(life.snapshot())
    assert restored.table.expired(T0 + 500, 100.0, 100.0) == \
        life.table.expired(T0 + 500, 100.0, 100.0) == ["quick"]


# --- framing -------------------------------------------------------------------------------------

def test_framing_handlers_are_called_for_their_tags_live_and_in_replay():
    seen: list[list[Any]] = []
    life = Lifecycle(framing={"V": seen.append, "E": seen.append})
    life.apply(["V", 2])
    life.replay(["E", 5])
    life.replay(["V", 1])
    assert seen == [["V", 2], ["E", 5], ["V", 1]]
    assert life.table.orphan_records == 0


def test_framing_cannot_be_mistaken_for_state():
    life = Lifecycle(framing={"V": lambda rec: None})
    life.apply(["V", 2])
    assert len(life.table) == 0 and life.table.seq == 0


def test_replay_refuses_a_record_type_it_does_not_know():
    from jobd.core.lifecycle import UnknownRecord
    life = Lifecycle()
    with pytest.raises(UnknownRecord, match="'ZZ'"):
        life.replay(["ZZ", 1])
    assert life.table.orphan_records == 0

"""jobd/jobs.py: `Jobs` over a `MemoryStore`, with a real `ResultStore` on a
temp dir and fakes for what it reports to (`JobStats`), cancels through
(`Runner`), wakes, and reads the time from: submits (single, plain, batch:
all or nothing, cycles, resubmits, unknown handlers, a full queue by count
and by bytes), cancel, retry, purge, the retry policy of a failed attempt,
dead-letter eviction, results, waiters, expiry, and refusing submits once
closed.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobd import constants as C
from jobd.config import load
from jobd.core import records as R
from jobd.core.job import EMPTY_ARGS, EMPTY_DICT, EMPTY_KWARGS, Job, SubmitSpec, iso
from jobd.core.lifecycle import FAIL_ERROR, FAIL_PERMANENT, FAIL_RETRY
from jobd.core.values import MAX_TIMESTAMP, compact_json
from jobd.errors import OpError
from jobd.handlers import HandlerSpec
from jobd.jobs import Jobs
from jobd.storage.logs import JobLogs
from jobd.storage.results import ResultStore, file_stem
from jobd.storage.store import MemoryStore

T0 = 1_800_000_000.0
H = "unit_jobs.plain"           # no options: the [retry] defaults
TUNED = "unit_jobs.tuned"       # @handler options, and a [handler."..."] table over them


def noop() -> None: ...


class Stats:
    """The JobStats port, recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def observe_result_size(self, handler: str, size: int) -> None:
        self.calls.append(("result_size", handler, size))

    def observe_retry_delay(self, handler: str, seconds: float) -> None:
        self.calls.append(("retry_delay", handler, seconds))

    def count_evicted(self, n: int) -> None:
        self.calls.append(("evicted", n))

    def count_deduplicated(self, handler: str) -> None:
        self.calls.append(("deduplicated", handler))


class Runner:
    """The Runner port, recording each call and the job's status at the time."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.statuses: list[str] = []

    def _note(self, what: str, job: Job) -> None:
        self.calls.append((what, job.id))
        self.statuses.append(job.status)

    def take_back(self, job: Job) -> None:
        self._note("take_back", job)

    def request_cancel(self, job: Job) -> None:
        self._note("request_cancel", job)

    def kill(self, job: Job) -> None:
        self._note("kill", job)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self, tmp_path: Path, overrides: dict[str, Any] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        env = {"JOBD_SOCKET": str(tmp_path / "jobd.sock"), "JOBD_DATA_DIR": str(tmp_path)}
        self.cfg = load(None, env=env, overrides={"retry.jitter": False, **(overrides or {})})
        self.cfg.handler = {TUNED: {"max_retries": 7}}
        self.handlers = {
            H: HandlerSpec(H, noop, False, {}),
            TUNED: HandlerSpec(TUNED, noop, False, {"max_retries": 5, "priority": "high",
                                                    "timeout": 30, "retry_delay": 2}),
        }
        self.store = MemoryStore()
        r = self.cfg.results
        self.results = ResultStore(str(tmp_path / "results"), r.inline_max_bytes,
                                   r.compress_min_bytes, loop)
        self.stats, self.runner, self.clock = Stats(), Runner(), Clock()
        self.wakes = 0
        self.logs = JobLogs(str(tmp_path / "logs"), 1 << 20, file_stem)
        self.jobs = Jobs(self.cfg, self.store, self.handlers, self.results, self.logs, self.stats,
                         self.wake, self.clock)

    def wake(self) -> None:
        self.wakes += 1

    @property
    def records(self) -> list[list[Any]]:
        return self.store.records

    def submit(self, job_id: str | None = None, **kw: Any) -> Job:
        return self.jobs.submit(spec(job_id, **kw))[0]

    def run(self, job: Job, worker: int = 1) -> Job:
        """Start `job` as the pool reports it (its queue entry goes stale)."""
        assert job.status == C.PENDING
        self.jobs.start(job, worker)
        return job

    def fail(self, job: Job, kind: int = FAIL_ERROR, after: float = 0.0) -> Job:
        if job.status != C.RUNNING:
            self.run(job)
        self.jobs.attempt_failed(job, "boom", kind, after)
        return job


def spec(job_id: str | None = None, handler: str = H, args: list[Any] | None = None,
         kwargs: dict[str, Any] | None = None, priority: int | None = None,
         max_retries: int | None = None, retry_delay: float | None = None,
         retry_backoff: float | None = None, timeout: float | None = None,
         has_timeout: bool = False, depends_on: list[str] | None = None,
         run_at: float | None = None, name: str | None = None) -> SubmitSpec:
    args, kwargs = args or [], kwargs or {}
    return SubmitSpec(job_id, handler, args, kwargs,
                      compact_json("args", args) if args else EMPTY_ARGS,
                      compact_json("kwargs", kwargs) if kwargs else EMPTY_KWARGS,
                      priority, max_retries, retry_delay, retry_backoff, timeout, EMPTY_DICT,
                      name, depends_on or [], run_at, has_timeout)


def error_of(fn: Any, *args: Any) -> OpError:
    with pytest.raises(OpError) as e:
        fn(*args)
    return e.value


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


# --- submit ------------------------------------------------------------------------------------

def test_submit_admits_a_pending_job_with_the_retry_defaults_and_wakes(rig):
    job, seq = rig.jobs.submit(spec("a", args=[1, {"b": 2}], name="first"))
    assert job.status == C.PENDING and rig.wakes == 1
    assert seq == job.wal_seq == rig.store.durable == 1
    assert [orjson.dumps(r) for r in rig.records] == [orjson.dumps([R.SUBMIT, job.to_record()])]
    r = rig.cfg.retry
    assert (job.max_retries, job.retry_delay, job.retry_backoff, job.timeout, job.jitter,
            job.max_delay) == (r.max_retries, r.retry_delay, r.retry_backoff, None, None, None)
    assert (job.priority, job.created_at, job.name, job.args) == (C.DEFAULT_PRIORITY, T0,
                                                                  "first", b'[1,{"b":2}]')
    assert rig.store.top() is job


def test_config_beats_handler_options_beat_retry_defaults_and_the_submit_beats_all(rig):
    job = rig.submit("a", handler=TUNED)
    assert (job.max_retries, job.priority, job.timeout, job.retry_delay) == (7, 20, 30.0, 2.0)
    assert isinstance(job.retry_delay, float) and job.retry_backoff == rig.cfg.retry.retry_backoff
    job = rig.submit("b", handler=TUNED, max_retries=1, priority=0, retry_delay=9.0,
                     retry_backoff=3.0, timeout=5.0, has_timeout=True)
    assert (job.max_retries, job.priority, job.retry_delay, job.retry_backoff,
            job.timeout) == (1, 0, 9.0, 3.0, 5.0)
    assert rig.submit("c", handler=TUNED, has_timeout=True).timeout is None   # "timeout": null


def test_a_submit_for_later_is_scheduled_and_wakes_nobody(rig):
    job = rig.submit("a", run_at=T0 + 60)
    assert job.status == C.SCHEDULED and job.scheduled_for == T0 + 60 and rig.wakes == 0
    assert rig.submit("b", run_at=T0 - 60).status == C.PENDING and rig.wakes == 1


def test_a_submit_waits_on_its_dependencies_or_fails_with_them(rig):
    a = rig.submit("a")
    assert rig.submit("w", depends_on=["a"]).status == C.WAITING and rig.wakes == 1
    rig.jobs.cancel(a, False, rig.runner)
    job = rig.submit("late", depends_on=["a"])
    assert job.status == C.FAILED and job.error == "dependency a ended unsuccessfully"


def test_a_submit_naming_an_unknown_handler_or_dependency_is_refused(rig):
    assert error_of(rig.jobs.submit, spec("a", handler="nope")).code == C.E_UNKNOWN_HANDLER
    err = error_of(rig.jobs.submit, spec("a", depends_on=["ghost"]))
    assert err.code == C.E_NOT_FOUND and "ghost" in err.message
    assert rig.records == [] and len(rig.store.table) == 0 and rig.wakes == 0


def test_submit_plain_admits_a_pending_job_from_the_defaults(rig):
    job, seq = rig.jobs.submit_plain(TUNED, [1], b"[1]", {"k": 2}, b'{"k":2}', None)
    assert job.status == C.PENDING and seq == job.wal_seq == 1 and rig.wakes == 1
    assert len(job.id) == 32 and int(job.id, 16) >= 0
    assert (job.priority, job.max_retries, job.timeout) == (20, 7, 30.0)
    assert (job.args, job.kwargs, job.created_at) == (b"[1]", b'{"k":2}', T0)
    named, _ = rig.jobs.submit_plain(H, [], EMPTY_ARGS, {}, EMPTY_KWARGS, "given")
    assert named.id == "given" and named.seq > job.seq


def test_submit_plain_refuses_an_unknown_handler(rig):
    err = error_of(rig.jobs.submit_plain, "nope", [], EMPTY_ARGS, {}, EMPTY_KWARGS, None)
    assert err.code == C.E_UNKNOWN_HANDLER and "nope" in err.message
    assert rig.records == [] and rig.wakes == 0


def test_a_resubmit_returns_the_existing_job_and_records_nothing(rig):
    job, seq = rig.jobs.submit(spec("a", args=[1]))
    rig.submit("other")
    again, again_seq = rig.jobs.submit(spec("a", handler=TUNED, args=[2]))
    plain, plain_seq = rig.jobs.submit_plain(H, [3], b"[3]", {}, EMPTY_KWARGS, "a")
    assert again is plain is job and again_seq == plain_seq == seq == 1
    assert job.args == b"[1]" and len(rig.records) == 2


# --- a full queue ---------------------------------------------------------------------------------

def test_the_queue_is_full_at_max_size_counting_only_queued_jobs(tmp_path):
    rig = Rig(tmp_path, {"queue.max_size": 2})
    a = rig.submit("a")
    rig.submit("b", run_at=T0 + 10)
    for submit in (lambda: rig.submit("c"),
                   lambda: rig.jobs.submit_plain(H, [], EMPTY_ARGS, {}, EMPTY_KWARGS, "c"),
                   lambda: rig.jobs.submit_many([spec("c")])):
        err = error_of(submit)
        assert err.code == C.E_QUEUE_FULL and err.message == "queue is full (2 jobs)"
    assert len(rig.records) == 2
    rig.run(a)                                     # running: no longer queued
    assert rig.submit("c").status == C.PENDING
    assert error_of(rig.submit, "d").code == C.E_QUEUE_FULL


def test_the_queue_is_full_at_max_args_bytes(tmp_path):
    rig = Rig(tmp_path, {"queue.max_args_bytes": 23})
    rig.submit("a", args=[12345678])                    # 10 bytes, and 2 of kwargs "{}"
    rig.jobs.submit_plain(H, [123], b"[123]", {}, b"{}", "b")       # 7 more: 19 held
    rig.jobs.submit_plain(H, [], EMPTY_ARGS, {}, EMPTY_KWARGS, "c")   # 4 more: exactly 23, admitted
    assert rig.store.table.args_bytes == 23
    err = error_of(rig.jobs.submit_plain, H, [], EMPTY_ARGS, {}, EMPTY_KWARGS, "d")
    assert err.code == C.E_QUEUE_FULL
    assert err.message == ("queue is full: jobs hold 23 bytes of args and kwargs "
                           "(max_args_bytes 23)")
    assert error_of(rig.submit, "d").code == C.E_QUEUE_FULL
    assert error_of(rig.jobs.submit_many, [spec("d")]).code == C.E_QUEUE_FULL
    rig.jobs.purge(None, None)                           # nothing finished: nothing freed
    rig.jobs.cancel(rig.store.get("a"), False, rig.runner)
    rig.jobs.purge(None, None)                           # a's 12 bytes freed
    assert rig.store.table.args_bytes == 11 and rig.submit("d").status == C.PENDING


def test_a_batch_that_does_not_fit_is_refused_whole(tmp_path):
    rig = Rig(tmp_path, {"queue.max_size": 3})
    rig.submit("a")
    err = error_of(rig.jobs.submit_many, [spec("b"), spec("c"), spec("d")])
    assert err.code == C.E_QUEUE_FULL
    assert len(rig.store.table) == 1 and len(rig.records) == 1
    ids, _ = rig.jobs.submit_many([spec("b"), spec("c")])
    assert ids == ["b", "c"]


# --- submit_many ---------------------------------------------------------------------------------

def test_submit_many_admits_in_dependency_order_and_answers_in_batch_order(rig):
    ids, seq = rig.jobs.submit_many([spec("c", depends_on=["b"]), spec("b", depends_on=["a"]),
                                     spec("a"), spec(None)])
    assert ids[:3] == ["c", "b", "a"] and len(ids[3]) == 32
    # the earliest job of the batch whose dependencies are in first, each time
    assert [rec[1][0] for rec in rig.records] == ["a", "b", "c", ids[3]]
    assert seq == rig.store.durable == 4
    table = rig.store.table
    assert [table.jobs[i].status for i in ids] == [C.WAITING, C.WAITING, C.PENDING, C.PENDING]
    assert rig.wakes == 2                          # once per pending job


@pytest.mark.parametrize("bad,code", [
    ([spec("a"), spec("b", handler="nope")], C.E_UNKNOWN_HANDLER),
    ([spec("a"), spec("b", depends_on=["ghost"])], C.E_NOT_FOUND),
    ([spec("a"), spec("a")], C.E_INVALID_ARGUMENT),                     # duplicate id
    ([spec("a", depends_on=["b"]), spec("b", depends_on=["a"])], C.E_INVALID_ARGUMENT),
    ([spec("a", depends_on=["a"])], C.E_INVALID_ARGUMENT),              # itself
    ([spec("x"), spec("a", depends_on=["c"]), spec("b", depends_on=["a"]),
      spec("c", depends_on=["b"])], C.E_INVALID_ARGUMENT),              # a longer cycle
])
def test_submit_many_is_all_or_nothing(rig, bad, code):
    rig.submit("held")
    err = error_of(rig.jobs.submit_many, bad)
    assert err.code == code
    if code == C.E_INVALID_ARGUMENT and "cycle" in err.message:
        assert err.message.startswith("depends_on: dependency cycle through job ")
    assert list(rig.store.table.jobs) == ["held"] and len(rig.records) == 1 and rig.wakes == 1


def test_submit_many_keeps_resubmitted_jobs_and_waits_for_their_submits(rig):
    rig.submit("a")
    rig.submit("b")
    rig.submit("filler")
    ids, seq = rig.jobs.submit_many([spec("b"), spec("a")])
    assert ids == ["b", "a"] and seq == 2 and len(rig.records) == 3       # b's submit: seq 2
    ids, seq = rig.jobs.submit_many([spec("a"), spec("new", depends_on=["a"])])
    assert ids == ["a", "new"] and seq == 4 and len(rig.records) == 4
    assert rig.store.get("new").status == C.WAITING


def test_a_batch_job_after_a_failed_dependency_fails_and_so_does_its_own_dependent(rig):
    dead = rig.submit("dead")
    rig.jobs.cancel(dead, False, rig.runner)
    ids, _ = rig.jobs.submit_many([spec("b", depends_on=["a"]), spec("a", depends_on=["dead"])])
    a, b = rig.store.get("a"), rig.store.get("b")
    assert a.status == b.status == C.FAILED
    assert a.error == "dependency dead ended unsuccessfully"
    assert b.error == "dependency a ended unsuccessfully"


# --- cancel ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["pending", "scheduled", "waiting", "retrying"])
def test_cancel_of_a_job_not_running_ends_it_and_takes_it_back(rig, how):
    rig.submit("dep")
    job = rig.submit("a", run_at=T0 + 9 if how == "scheduled" else None,
                     depends_on=["dep"] if how == "waiting" else None)
    if how == "retrying":
        rig.fail(job)
    assert job.status == how
    rig.clock.now = T0 + 5
    assert rig.jobs.cancel(job, False, rig.runner) == (True, rig.store.durable)
    assert (job.status, job.completed_at) == (C.CANCELLED, T0 + 5)
    assert rig.runner.calls == [("take_back", "a")]


def test_cancel_of_a_running_job_asks_once(rig):
    job = rig.run(rig.submit("a"))
    cancelled, seq = rig.jobs.cancel(job, False, rig.runner)
    assert (cancelled, seq) == (False, rig.store.durable) and seq > 0
    assert job.cancel_requested and job.status == C.RUNNING
    assert rig.jobs.cancel(job, False, rig.runner) == (False, 0)
    assert rig.runner.calls == [("request_cancel", "a")]
    assert rig.jobs.cancel(job, True, rig.runner)[0] is True       # force still works after
    assert rig.runner.calls[-1] == ("kill", "a") and job.status == C.CANCELLED


def test_cancel_with_force_records_the_cancel_then_kills(rig):
    job = rig.run(rig.submit("a"))
    cancelled, seq = rig.jobs.cancel(job, True, rig.runner)
    assert cancelled and seq == rig.store.durable
    assert rig.runner.calls == [("kill", "a")] and rig.runner.statuses == [C.CANCELLED]
    assert rig.records[-1][:2] == [R.CANCEL, "a"]


@pytest.mark.parametrize("final", [C.COMPLETED, C.FAILED, C.CANCELLED, C.DEAD_LETTER])
def test_cancel_of_a_finished_job_changes_nothing(rig, final):
    job = rig.submit("a", max_retries=0)
    if final == C.COMPLETED:
        rig.run(job)
        rig.jobs.complete(job, b"1")
    elif final == C.CANCELLED:
        rig.jobs.cancel(job, False, Runner())
    else:
        rig.fail(job, FAIL_PERMANENT if final == C.FAILED else FAIL_ERROR)
    assert job.status == final
    n = len(rig.records)
    assert rig.jobs.cancel(job, True, rig.runner) == (False, 0)
    assert rig.runner.calls == [] and len(rig.records) == n


def test_cancel_interrupted_cancels_the_requeued_jobs_whose_cancel_was_asked(rig):
    a, b = rig.submit("a"), rig.submit("b")
    rig.run(a)
    rig.run(b)
    rig.jobs.cancel(a, False, rig.runner)
    back = rig.store.life.recover_running()
    rig.jobs.cancel_interrupted(back)
    assert (a.status, b.status) == (C.CANCELLED, C.PENDING)


# --- retry and purge ---------------------------------------------------------------------------------

@pytest.mark.parametrize("final", [C.FAILED, C.CANCELLED, C.DEAD_LETTER])
def test_retry_runs_a_failed_cancelled_or_dead_job_again(rig, final):
    job = rig.submit("a", max_retries=0)
    if final == C.CANCELLED:
        rig.jobs.cancel(job, False, rig.runner)
    else:
        rig.fail(job, FAIL_PERMANENT if final == C.FAILED else FAIL_ERROR)
    wakes = rig.wakes
    seq = rig.jobs.retry(job)
    assert seq == rig.store.durable and rig.wakes == wakes + 1
    assert job.status == C.PENDING and job.attempts == 0 and rig.store.top() is job


@pytest.mark.parametrize("how", [C.PENDING, C.RUNNING, C.COMPLETED])
def test_retry_of_any_other_job_is_a_conflict(rig, how):
    job = rig.submit("a")
    if how != C.PENDING:
        rig.run(job)
    if how == C.COMPLETED:
        rig.jobs.complete(job, b"null")
    err = error_of(rig.jobs.retry, job)
    assert err.code == C.E_CONFLICT and f"is {how}" in err.message


def test_purge_deletes_finished_jobs_by_status_and_age(rig):
    jobs = {}
    for i, final in enumerate((C.COMPLETED, C.FAILED, C.CANCELLED, C.COMPLETED)):
        job = rig.submit(f"j{i}", max_retries=0)
        rig.clock.now = T0 + 100 * i
        if final == C.CANCELLED:
            rig.jobs.cancel(job, False, rig.runner)
        else:
            rig.run(job)
            if final == C.COMPLETED:
                rig.jobs.complete(job, b"1")
            else:
                rig.fail(job, FAIL_PERMANENT)
        jobs[job.id] = job
    rig.submit("open")
    rig.clock.now = T0 + 1000
    assert rig.jobs.purge(C.COMPLETED, older_than=800.0) == (1, rig.store.durable)   # j0 only
    assert "j0" not in rig.store.table.jobs and "j3" in rig.store.table.jobs
    n = len(rig.records)
    assert rig.jobs.purge(C.DEAD_LETTER, None) == (0, 0) and len(rig.records) == n
    assert rig.jobs.purge(None, None)[0] == 3
    assert list(rig.store.table.jobs) == ["open"]


# --- a failed attempt ------------------------------------------------------------------------------

def test_a_failed_attempt_with_retries_left_is_retried_after_the_backoff(rig):
    job = rig.submit("a", retry_delay=2.0, retry_backoff=3.0)
    rig.clock.now = T0 + 10
    rig.fail(job)
    assert job.status == C.RETRYING and job.scheduled_for == T0 + 10 + 2.0
    assert job.error == "boom" and rig.stats.calls == [("retry_delay", H, 2.0)]
    rig.store.promote_due(T0 + 12)
    rig.fail(job)
    assert job.scheduled_for == T0 + 10 + 6.0 and rig.stats.calls[-1] == ("retry_delay", H, 6.0)


def test_the_delay_is_capped_by_max_delay_and_jittered_if_the_job_says_so(rig):
    job = rig.submit("a", retry_delay=1000.0)
    rig.fail(job)
    assert job.scheduled_for == T0 + rig.cfg.retry.max_delay        # [retry] max_delay 300
    jittered = rig.submit("b", retry_delay=100.0)
    jittered.jitter, jittered.max_delay = True, 1e6                  # as a handler option sets
    rig.fail(jittered)
    assert jittered.scheduled_for is not None
    assert T0 + 50 <= jittered.scheduled_for <= T0 + 100


def test_used_up_retries_dead_letter_the_job(rig):
    job = rig.submit("a", max_retries=1)
    rig.fail(job)
    rig.store.promote_due(job.scheduled_for)
    rig.clock.now = T0 + 50
    rig.fail(job)
    assert (job.status, job.attempts, job.completed_at) == (C.DEAD_LETTER, 2, T0 + 50)
    assert [c[0] for c in rig.stats.calls] == ["retry_delay"]        # only the first


def test_a_permanent_error_fails_the_job_at_once(rig):
    job = rig.fail(rig.submit("a"), FAIL_PERMANENT)
    assert job.status == C.FAILED and job.attempts == 1 and rig.stats.calls == []


def test_retry_after_is_exact_and_capped_at_the_last_time_a_view_can_show(rig):
    job = rig.fail(rig.submit("a"), FAIL_RETRY, after=7.5)
    assert job.scheduled_for == T0 + 7.5
    rig.store.promote_due(T0 + 7.5)
    rig.fail(job, FAIL_RETRY, after=1e15)
    assert job.scheduled_for == MAX_TIMESTAMP
    assert orjson.loads(orjson.dumps(job.view()))["scheduled_for"] == "9999-12-31T23:59:59.000000Z"


def test_a_backoff_past_year_9999_is_capped_too(rig):
    rig.clock.now = MAX_TIMESTAMP - 50
    job = rig.fail(rig.submit("a", retry_delay=100.0))
    assert job.scheduled_for == MAX_TIMESTAMP and iso(job.scheduled_for) is not None


def test_a_failed_attempt_after_a_cancel_request_cancels_the_job(rig):
    job = rig.run(rig.submit("a"))
    w = rig.submit("w", depends_on=["a"])
    rig.jobs.cancel(job, False, rig.runner)
    rig.fail(job)
    assert job.status == C.CANCELLED and w.status == C.FAILED


def test_a_new_dead_letter_evicts_the_oldest_beyond_max_size(tmp_path):
    rig = Rig(tmp_path, {"dead_letter.max_size": 2})
    for i in range(3):
        rig.clock.now = T0 + i
        rig.fail(rig.submit(f"d{i}", max_retries=0))
    assert "d0" not in rig.store.table.jobs
    assert rig.store.table.counts[C.DEAD_LETTER] == 2
    assert rig.records[-1] == [R.DELETE, ["d0"]]
    assert rig.stats.calls == [("evicted", 1)]


# --- outcomes: start, progress, complete, requeue ------------------------------------------------

def test_start_and_progress(rig):
    job = rig.submit("a")
    rig.clock.now = T0 + 1
    rig.run(job, worker=3)
    assert (job.status, job.started_at, job.worker_id, job.attempts) == (C.RUNNING, T0 + 1, 3, 1)
    rig.clock.now = T0 + 2
    rig.jobs.progress(job, 1, 4, "a quarter")
    assert job.progress == {"current": 1, "total": 4, "percentage": 25.0,
                            "message": "a quarter", "updated_at": iso(T0 + 2)}


def test_complete_inline_keeps_the_raw_json_and_reports_its_size(rig):
    job = rig.run(rig.submit("a"))
    w = rig.submit("w", depends_on=["a"])
    raw = b'{"answer": 42}'
    rig.clock.now = T0 + 3
    rig.jobs.complete(job, raw)
    assert (job.status, job.completed_at, job.result_ref) == (C.COMPLETED, T0 + 3, None)
    assert orjson.dumps(job.result) == raw
    assert rig.stats.calls == [("result_size", H, len(raw))]
    assert w.status == C.PENDING
    assert orjson.dumps(rig.results.load(job)) == raw


def test_requeue_puts_the_job_back_and_wakes(rig):
    job = rig.run(rig.submit("a"))
    wakes = rig.wakes
    rig.jobs.requeue(job, uncount=True)
    assert (job.status, job.attempts) == (C.PENDING, 0) and rig.wakes == wakes + 1
    assert rig.store.top() is job


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(2)
    loop.set_default_executor(executor)
    yield loop
    executor.shutdown(wait=True)
    loop.close()


def test_a_large_result_is_recorded_once_its_file_is_written(tmp_path, loop):
    rig = Rig(tmp_path, {"results.inline_max_bytes": 10}, loop=loop)
    job = rig.run(rig.submit("a"))
    raw = b'"' + b"y" * 100 + b'"'
    rig.jobs.complete(job, raw)
    assert job.status == C.RUNNING                  # not until the file is there
    wakes = rig.wakes
    loop.run_until_complete(rig.results.drain())
    assert job.status == C.COMPLETED and job.result is None and rig.wakes == wakes + 1
    assert job.result_ref == [file_stem("a") + ".json", len(raw)]
    assert orjson.dumps(rig.results.load(job)) == raw


def test_a_large_result_of_a_job_cancelled_meanwhile_is_not_recorded(tmp_path, loop):
    rig = Rig(tmp_path, {"results.inline_max_bytes": 10}, loop=loop)
    job = rig.run(rig.submit("a"))
    rig.jobs.complete(job, b'"' + b"y" * 100 + b'"')
    rig.jobs.cancel(job, True, rig.runner)
    loop.run_until_complete(rig.results.drain())
    assert job.status == C.CANCELLED and job.result_ref is None
    assert [r[0] for r in rig.records].count(R.COMPLETE) == 0


# --- waiters ------------------------------------------------------------------------------------------

def test_waiters_are_called_once_when_the_job_ends(rig):
    job = rig.submit("a")
    calls: list[tuple[str, str]] = []

    def waiter(name: str) -> Callable[[Job], None]:
        return lambda j: calls.append((name, j.status))

    first, removed, second = waiter("first"), waiter("removed"), waiter("second")
    for fn in (first, removed, second):
        rig.jobs.add_waiter("a", fn)
    rig.jobs.remove_waiter("a", removed)
    rig.run(job)
    rig.fail(job)                                           # retrying: not the end
    assert calls == []
    rig.store.promote_due(job.scheduled_for)
    rig.run(job)
    rig.jobs.complete(job, b"1")
    assert calls == [("first", C.COMPLETED), ("second", C.COMPLETED)]
    assert "a" not in rig.jobs.waiters
    other = rig.submit("b")
    rig.jobs.add_waiter("b", waiter("b"))
    rig.jobs.cancel(other, False, rig.runner)
    rig.jobs.retry(other)                                   # ends again: nobody left to tell
    rig.run(other)
    rig.jobs.complete(other, b"2")
    assert calls[2:] == [("b", C.CANCELLED)]


def test_a_waiter_hears_of_a_cascade_and_a_removed_last_waiter_leaves_no_entry(rig):
    rig.submit("a")
    rig.submit("w", depends_on=["a"])
    told: list[str] = []
    rig.jobs.add_waiter("w", lambda j: told.append(j.status))
    def fn(job: Job) -> None: ...
    rig.jobs.add_waiter("a", fn)
    rig.jobs.remove_waiter("a", fn)
    assert "a" not in rig.jobs.waiters
    rig.jobs.cancel(rig.store.get("a"), False, rig.runner)
    assert told == [C.FAILED]


# --- expiry and closing -------------------------------------------------------------------------------

def test_expire_deletes_jobs_past_their_ttl_and_dead_letters_past_their_age(tmp_path):
    rig = Rig(tmp_path, {"results.ttl": 100.0, "dead_letter.retention_days": 1.0})
    done = rig.run(rig.submit("done"))
    rig.jobs.complete(done, b"1")
    rig.fail(rig.submit("dead", max_retries=0))
    rig.clock.now = T0 + 100.5
    assert rig.jobs.expire() == 1 and set(rig.store.table.jobs) == {"dead"}
    rig.clock.now = T0 + 86400.5
    wakes = rig.wakes
    assert rig.jobs.expire() == 1 and len(rig.store.table) == 0 and rig.wakes == wakes + 1
    assert rig.jobs.expire() == 0


def test_get_finds_a_job_or_says_not_found(rig):
    job = rig.submit("a")
    assert rig.jobs.get("a") is job
    for bad in ("zz", 5, None):
        assert error_of(rig.jobs.get, bad).code == C.E_NOT_FOUND


def test_after_close_every_submit_is_refused_as_unavailable(rig):
    rig.submit("a")
    rig.jobs.close()
    for submit in (lambda: rig.jobs.submit(spec("b")),
                   lambda: rig.jobs.submit(spec("a")),                       # even a resubmit
                   lambda: rig.jobs.submit_plain(H, [], EMPTY_ARGS, {}, EMPTY_KWARGS, None),
                   lambda: rig.jobs.submit_many([spec("c")])):
        err = error_of(submit)
        assert err.code == C.E_UNAVAILABLE
    assert len(rig.records) == 1
    job = rig.run(rig.store.get("a"))                      # outcomes still go on
    rig.jobs.complete(job, b"1")
    assert job.status == C.COMPLETED

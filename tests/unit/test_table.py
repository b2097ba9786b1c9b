"""jobd/core/table.py: counts and `queued`, `forget`, who waits on whom,
`deps_state`/`failed_dep` (a dependency that is gone counts as completed),
and the by-time deques behind `expired` and `dead_overflow`, whose stale
entries (a job retried, purged, or ended again) are dropped, never returned.

Jobs reach the table the way the daemon puts them there, through
`Lifecycle` records, wherever the indexes must be in step with statuses.
"""
from __future__ import annotations

import pytest

from jobd import constants as C
from jobd.core import records as R
from jobd.core.job import EMPTY_ARGS, EMPTY_DICT, EMPTY_KWARGS, EMPTY_LIST, Job
from jobd.core.lifecycle import Lifecycle
from jobd.core.table import JobTable

DEFAULTS = (3, 1.0, 2.0, None, None, None)


def job(job_id: str, status: str = C.PENDING, deps: list[str] = EMPTY_LIST,
        args: bytes = EMPTY_ARGS) -> Job:
    j = Job.new(job_id, "h", 10, 0, 0.0, DEFAULTS, None, args, EMPTY_KWARGS, EMPTY_DICT, deps)
    j.status = status
    return j


def table_with(*jobs: Job) -> JobTable:
    """A table holding `jobs` (for the read-only dependency queries)."""
    table = JobTable()
    for j in jobs:
        table.jobs[j.id] = j
    return table


def submit(life: Lifecycle, job_id: str, args: bytes = EMPTY_ARGS) -> Job:
    j = job(job_id, args=args)
    j.seq = life.table.next_seq()
    life.insert(j)
    return j


def end(life: Lifecycle, job_id: str, ts: float, status: str = C.COMPLETED) -> None:
    """Run a pending job and end it at `ts` with `status`."""
    life.apply(R.start(job_id, ts - 1, 1))
    if status == C.COMPLETED:
        life.apply(R.complete(job_id, ts, None, None))
    else:
        life.apply(R.fail(job_id, ts, "boom", status, None))


# --- counts -----------------------------------------------------------------------------------

def test_next_seq_counts_up_from_the_last_place():
    table = JobTable()
    table.seq = 41
    assert [table.next_seq() for _ in range(3)] == [42, 43, 44]


def test_queued_counts_the_statuses_held_against_max_size():
    table = JobTable()
    for status, n in ((C.SCHEDULED, 1), (C.WAITING, 2), (C.PENDING, 4), (C.RETRYING, 8),
                      (C.RUNNING, 16), (C.COMPLETED, 32), (C.FAILED, 64), (C.DEAD_LETTER, 128),
                      (C.CANCELLED, 256)):
        table.counts[status] = n
    assert table.queued == 15


def test_forget_drops_counts_bytes_and_running_and_makes_entries_stale():
    life = Lifecycle()
    a = submit(life, "a", args=b"[1,2,3]")
    b = submit(life, "b", args=b'["x"]')
    life.apply(R.start("a", 1.0, 1))
    table = life.table
    assert table.args_bytes == len(b"[1,2,3]") + len(b'["x"]') + 2 * len(EMPTY_KWARGS)
    table.forget(a)
    assert table.counts[C.RUNNING] == 0 and "a" not in table.running
    assert table.args_bytes == len(b'["x"]') + len(EMPTY_KWARGS)
    assert a.status == ""
    table.forget(b)
    assert table.counts[C.PENDING] == 0 and table.args_bytes == 0
    assert life.ready.pop() is None        # b's queue entry went stale


def test_iteration_is_submit_order():
    life = Lifecycle()
    for name in ("c", "a", "b"):
        submit(life, name)
    assert [j.id for j in life.table] == ["c", "a", "b"] and len(life.table) == 3
    assert life.table.get("a") is life.table.jobs["a"] and life.table.get("zz") is None


def test_link_notes_each_dependency_and_ended_sorts_dead_letters_apart():
    table = JobTable()
    w = job("w", C.WAITING, deps=["a", "b"])
    table.link(w)
    assert table.dependents == {"a": [w], "b": [w]}
    done, dead = job("d", C.COMPLETED), job("x", C.DEAD_LETTER)
    done.completed_at = 5.0
    table.ended(done)
    table.ended(dead)                      # no completed_at: stamped 0.0
    assert list(table.finished) == [(5.0, done)] and list(table.dead) == [(0.0, dead)]


# --- dependencies -------------------------------------------------------------------------------

@pytest.mark.parametrize("dep_statuses,expected", [
    ([], C.COMPLETED),
    ([C.COMPLETED, C.COMPLETED], C.COMPLETED),
    ([C.COMPLETED, C.PENDING], C.WAITING),
    ([C.RUNNING], C.WAITING),
    ([C.SCHEDULED, C.RETRYING, C.WAITING], C.WAITING),
    ([C.PENDING, C.FAILED], C.FAILED),          # a failure decides, wherever it is
    ([C.COMPLETED, C.CANCELLED], C.FAILED),
    ([C.DEAD_LETTER, C.PENDING], C.FAILED),
])
def test_deps_state(dep_statuses, expected):
    deps = [job(f"d{i}", s) for i, s in enumerate(dep_statuses)]
    w = job("w", C.WAITING, deps=[d.id for d in deps])
    assert table_with(*deps, w).deps_state(w) == expected


def test_a_dependency_that_is_gone_counts_as_completed():
    pending = job("p", C.PENDING)
    assert table_with().deps_state(job("w", deps=["purged"])) == C.COMPLETED
    assert table_with(pending).deps_state(job("w", deps=["purged", "p"])) == C.WAITING
    assert table_with(pending).failed_dep(job("w", deps=["purged", "p"])) is None


def test_failed_dep_names_the_first_unsuccessful_dependency():
    deps = [job("ok", C.COMPLETED), job("c", C.CANCELLED), job("f", C.FAILED)]
    assert table_with(*deps).failed_dep(job("w", deps=["gone", "ok", "c", "f"])) == "c"
    assert table_with(*deps).failed_dep(job("w", deps=["ok"])) is None


# --- expiry ----------------------------------------------------------------------------------------

def test_expired_takes_finished_jobs_past_ttl_and_dead_letters_past_their_age():
    life = Lifecycle()
    ends = (("old", 100.0, C.COMPLETED), ("dl_old", 101.0, C.DEAD_LETTER),
            ("mid", 110.0, C.CANCELLED), ("dl_mid", 120.0, C.DEAD_LETTER),
            ("new", 200.0, C.FAILED), ("dl_new", 900.0, C.DEAD_LETTER))
    for name, ts, status in ends:
        submit(life, name)
        end(life, name, ts, status)
    # finished: before 300 - 150 = 150; dead letters: before 300 - 195 = 105
    assert life.table.expired(now=300.0, ttl=150.0, dl_age=195.0) == ["old", "mid", "dl_old"]
    assert life.table.expired(now=300.0, ttl=150.0, dl_age=195.0) == []   # handed out once


def test_expired_keeps_a_job_exactly_at_its_ttl():
    life = Lifecycle()
    submit(life, "a")
    end(life, "a", 100.0)
    assert life.table.expired(now=150.0, ttl=50.0, dl_age=1e9) == []
    assert life.table.expired(now=150.001, ttl=50.0, dl_age=1e9) == ["a"]


def test_expired_drops_stale_entries_of_purged_retried_and_re_ended_jobs():
    life = Lifecycle()
    for name in ("purged", "retried", "again", "replaced", "kept"):
        submit(life, name)
    for i, name in enumerate(("purged", "retried", "again", "replaced", "kept")):
        end(life, name, 10.0 + i, C.FAILED)
    life.apply([R.DELETE, ["purged"]])
    life.apply([R.RETRY, "retried", 20.0])          # pending again: not finished
    life.apply([R.RETRY, "again", 20.0])
    end(life, "again", 30.0)                         # finished again, later
    life.apply([R.DELETE, ["replaced"]])
    submit(life, "replaced")                         # the same id, another job, open
    assert life.table.expired(now=25.0, ttl=1.0, dl_age=1.0) == ["kept"]
    assert len(life.table.finished) == 1             # only again's new entry is left
    assert life.table.expired(now=40.0, ttl=1.0, dl_age=1.0) == ["again"]


def test_dead_overflow_gives_the_oldest_beyond_the_newest_kept():
    life = Lifecycle()
    for i in range(5):
        submit(life, f"d{i}")
        end(life, f"d{i}", 10.0 + i, C.DEAD_LETTER)
    assert life.table.dead_overflow(5) == [] and life.table.dead_overflow(9) == []
    assert [j.id for j in life.table.dead_overflow(3)] == ["d0", "d1"]


def test_dead_overflow_skips_stale_entries_and_counts_only_live_dead_letters():
    life = Lifecycle()
    for i in range(5):
        submit(life, f"d{i}")
        end(life, f"d{i}", 10.0 + i, C.DEAD_LETTER)
    life.apply([R.RETRY, "d0", 20.0])               # no longer a dead letter
    life.apply([R.DELETE, ["d1"]])                  # purged
    end(life, "d0", 30.0, C.DEAD_LETTER)            # dead again: the newest now
    assert life.table.counts[C.DEAD_LETTER] == 4
    evicted = life.table.dead_overflow(2)
    assert [j.id for j in evicted] == ["d2", "d3"]
    assert all(j.status == C.DEAD_LETTER for j in evicted)

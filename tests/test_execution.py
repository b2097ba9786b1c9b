"""Execution through the real daemon: results, handler options, priority order,
retries and their delays, dead letters, PermanentError, Retry(after), bad results,
`result` with a wait, and large results (docs/handlers.md, docs/protocol.md)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import T, wait_until

from jobd_client import JobdError

NO_JITTER = """
[retry]
retry_delay = 0.2
retry_backoff = 2.0
jitter = false
"""

JITTER = """
[retry]
retry_delay = 0.2
retry_backoff = 2.0
jitter = true
"""


def attempt_times(path: Path) -> list[tuple[int, float]]:
    """(attempt, time) lines written by `fail_times` / `retry_after`."""
    out = []
    for line in path.read_text().splitlines():
        attempt, ts = line.split()
        out.append((int(attempt), float(ts)))
    return out


def gaps(times: list[tuple[int, float]]) -> list[float]:
    return [b[1] - a[1] for a, b in zip(times, times[1:])]


# --- results --------------------------------------------------------------------------

def test_sync_and_async_results(daemon):
    c = daemon.client(timeout=20)
    sync_id = c.submit(T + "add", args=[2, 3])
    async_id = c.submit(T + "async_add", args=[4, 5], kwargs={"delay": 0.05})
    echo_id = c.submit(T + "echo", args=[1, "two", None], kwargs={"k": [1, {"x": True}]})
    none_id = c.submit(T + "noop")
    sync = c.wait(sync_id, timeout=10)
    asyn = c.wait(async_id, timeout=10)
    echo = c.wait(echo_id, timeout=10)
    none = c.wait(none_id, timeout=10)
    assert (sync.status, sync.result, sync.attempts, sync.error) == ("completed", 5, 1, None)
    assert (asyn.status, asyn.result, asyn.attempts) == ("completed", 9, 1)
    assert echo.result == {"args": [1, "two", None], "kwargs": {"k": [1, {"x": True}]}}
    assert none.status == "completed" and none.result is None
    # the job view of a completed job carries its timing and the worker that ran it
    assert sync.started_at and sync.completed_at and sync.started_at <= sync.completed_at
    assert isinstance(sync.worker_id, int)
    r = c.result(sync_id)
    assert r["status"] == "completed" and r["result"] == 5 and r["attempts"] == 1
    assert r["duration"] is not None and r["duration"] >= 0 and r["completed_at"]


def test_current_job_fields(daemon):
    c = daemon.client(timeout=20)
    jid = c.submit(T + "context", tags={"team": "a", "n": 3})
    job = c.wait(jid, timeout=10)
    assert job.status == "completed"
    assert job.result == {"id": jid, "attempt": 1, "handler": T + "context",
                          "tags": {"team": "a", "n": 3}}


def test_handler_options_are_defaults_and_submit_overrides(daemon):
    c = daemon.client(timeout=20)
    assert "custom_name" in c.hello()["handlers"]
    dflt = c.submit("custom_name", args=[7])
    view = c.status(dflt)
    assert (view.handler, view.max_retries, view.priority, view.timeout) == \
        ("custom_name", 0, 20, 30.0)
    over = c.submit("custom_name", args=[8], priority="low", max_retries=2, timeout=5)
    view = c.status(over)
    assert (view.max_retries, view.priority, view.timeout) == (2, 0, 5.0)
    assert c.wait(dflt, timeout=10).result == 7
    assert c.wait(over, timeout=10).result == 8
    # the default name of a plain @handler is module.qualname; an unregistered one is refused
    with pytest.raises(JobdError) as e:
        c.submit("custom")
    assert e.value.code == "unknown_handler"


# --- order --------------------------------------------------------------------------------

def test_priority_order_with_one_worker(make_daemon, tmp_path):
    d = make_daemon(workers=0)
    c = d.client(timeout=20)
    out = tmp_path / "order.txt"
    plan = [("low", "l1"), (10, "n1"), ("critical", "c1"), (500, "p500"), ("high", "h1"),
            ("normal", "n2"), (0, "l2"), ("high", "h2"), (1000, "max"), ("normal", "n3"),
            ("critical", "c2"), ("low", "l3")]
    value = {"low": 0, "normal": 10, "high": 20, "critical": 30}
    ids = [c.submit(T + "append", args=[str(out), name], priority=p) for p, name in plan]
    for jid, (p, _) in zip(ids, plan):
        view = c.status(jid)
        assert view.status == "pending"
        assert view.priority == value.get(p, p)        # the view shows the integer
    c.scale(1)
    for jid in ids:
        assert c.wait(jid, timeout=15).status == "completed"
    ran = [line.split()[0] for line in out.read_text().splitlines()]
    # higher priority first; equal priorities in submit order
    expected = [name for _, _, name in sorted(
        ((-value.get(p, p), i, name) for i, (p, name) in enumerate(plan)))]
    assert ran == expected


# --- retries ------------------------------------------------------------------------------

def test_retries_with_growing_delays(make_daemon, tmp_path):
    d = make_daemon(config=NO_JITTER)
    c = d.client(timeout=20)
    log = tmp_path / "attempts.txt"
    jid = c.submit(T + "fail_times", args=[str(log), 3], max_retries=3)
    # between attempts the job is `retrying`, with the last error
    view = wait_until(lambda: (v := c.status(jid)).status == "retrying" and v, 10,
                      what="status retrying")
    assert "planned failure 1" in view.error and "ValueError" in view.error
    job = c.wait(jid, timeout=15)
    assert job.status == "completed" and job.result == "ok after 4" and job.attempts == 4
    times = attempt_times(log)
    assert [a for a, _ in times] == [1, 2, 3, 4]
    for gap, nominal in zip(gaps(times), (0.2, 0.4, 0.8)):
        assert nominal - 0.02 <= gap <= nominal + 0.3, (gaps(times), nominal)


def test_retry_delays_with_jitter(make_daemon, tmp_path):
    d = make_daemon(config=JITTER)
    c = d.client(timeout=20)
    logs = [tmp_path / f"attempts{i}.txt" for i in range(3)]
    ids = [c.submit(T + "fail_times", args=[str(p), 3], max_retries=3) for p in logs]
    for jid in ids:
        assert c.wait(jid, timeout=15).status == "completed"
    seen = []
    for p in logs:
        times = attempt_times(p)
        assert [a for a, _ in times] == [1, 2, 3, 4]
        for gap, nominal in zip(gaps(times), (0.2, 0.4, 0.8)):
            assert 0.5 * nominal - 0.02 <= gap <= nominal + 0.3, (gaps(times), nominal)
            seen.append(gap / nominal)
    # uniform in [0.5, 1.0]: nine delays all within 15% of nominal would mean no jitter
    # (probability 0.3**9 ~ 2e-5 with jitter)
    assert min(seen) < 0.85, seen


def test_dead_letter_then_retry(daemon, tmp_path):
    c = daemon.client(timeout=20)
    flag = tmp_path / "broken"
    flag.write_text("x")
    jid = c.submit(T + "fail_while_exists", args=[str(flag)], max_retries=2,
                   retry_delay=0.05, retry_backoff=1.0)
    job = c.wait(jid, timeout=15)
    assert job.status == "dead_letter"
    assert job.attempts == 3                      # max_retries + 1
    assert "still exists" in job.error and "RuntimeError" in job.error
    page = c.dead_letters()
    assert jid in [j.id for j in page.jobs] and page.total >= 1
    # only dead_letter/failed/cancelled jobs can be retried
    done = c.submit(T + "noop")
    c.wait(done, timeout=10)
    with pytest.raises(JobdError) as e:
        c.retry(done)
    assert e.value.code == "conflict"

    flag.unlink()
    assert c.retry(jid) == "pending"
    job = c.wait(jid, timeout=10)
    assert job.status == "completed" and job.result == "recovered"
    assert job.attempts == 1                      # attempts were reset by retry
    assert jid not in [j.id for j in c.dead_letters().jobs]


def test_permanent_error_fails_without_retry(daemon):
    c = daemon.client(timeout=20)
    jid = c.submit(T + "permanent", kwargs={"message": "bad input"}, max_retries=3)
    job = c.wait(jid, timeout=10)
    assert job.status == "failed"
    assert job.attempts == 1
    assert "bad input" in job.error and "PermanentError" in job.error
    assert jid not in [j.id for j in c.dead_letters().jobs]


def test_retry_after_waits_exactly(make_daemon, tmp_path):
    # jitter on and a long default retry_delay: Retry(after) must ignore both
    d = make_daemon(config=JITTER)
    c = d.client(timeout=20)
    log = tmp_path / "attempts.txt"
    jid = c.submit(T + "retry_after", args=[str(log), 0.5], kwargs={"times": 1},
                   retry_delay=30, max_retries=3)
    view = wait_until(lambda: (v := c.status(jid)).status == "retrying" and v, 10,
                      what="status retrying")
    assert view.attempts == 1
    job = c.wait(jid, timeout=10)
    assert job.status == "completed" and job.result == "done" and job.attempts == 2
    (gap,) = gaps(attempt_times(log))
    assert 0.48 <= gap <= 0.8, gap


def test_non_serialisable_result_is_a_failed_attempt(daemon):
    c = daemon.client(timeout=20)
    jid = c.submit(T + "bad_result", max_retries=1, retry_delay=0.05)
    job = c.wait(jid, timeout=10)
    assert job.status == "dead_letter"
    assert job.attempts == 2
    assert "not JSON-serialisable" in job.error and "object" in job.error
    # the worker survived and still runs jobs
    assert c.wait(c.submit(T + "add", args=[1, 1]), timeout=10).result == 2


# --- result / wait ---------------------------------------------------------------------

def test_result_wait_answers_when_the_job_ends(daemon, tmp_path):
    c = daemon.client(timeout=30)
    release = tmp_path / "release"
    started = tmp_path / "started"
    jid = c.submit(T + "wait_file", args=[str(release)], kwargs={"started": str(started)})
    wait_until(started.exists, 10, what="job start")
    # without a wait: answered at once, no result yet
    r = c.result(jid)
    assert r["status"] == "running" and r["result"] is None
    # a short wait on an unfinished job answers after the wait, still without a result
    t0 = time.monotonic()
    r = c.result(jid, wait=0.3)
    assert r["status"] == "running" and r["result"] is None
    assert 0.25 <= time.monotonic() - t0 < 5

    release.write_text("go")
    assert c.wait(jid, timeout=10).result == "released"

    # a long wait on a job that ends by itself: the reply comes when it ends
    t0 = time.monotonic()
    jid2 = c.submit(T + "sleep", args=[0.5])
    r = c.result(jid2, wait=25)
    took = time.monotonic() - t0
    assert r["status"] == "completed" and r["result"] == 0.5
    assert 0.45 <= took < 5, took              # waited for the job, not for the 25 s

    # Client.wait on a job that is already done returns at once
    t0 = time.monotonic()
    assert c.wait(jid, timeout=25).status == "completed"
    assert time.monotonic() - t0 < 5


def test_large_results_round_trip_and_survive_restart(make_daemon):
    # 3 MB: a compressed file; 1.5 MB: a plain file (below compress_min here);
    # 100 KB: inline in the WAL although above the default compress_min
    d = make_daemon(config="[results]\ncompress_min_bytes = 2097152\n")
    c = d.client(timeout=30)
    sizes = {"big": 3 * 1024 * 1024, "file": 1536 * 1024, "inline": 100 * 1024}
    ids = {k: c.submit(T + "big_result", args=[n]) for k, n in sizes.items()}
    for k, jid in ids.items():
        job = c.wait(jid, timeout=20)
        assert job.status == "completed", job.error
        assert job.result == "x" * sizes[k]
    files = sorted(os.listdir(Path(d.data_dir) / "results"))
    assert len([f for f in files if f.endswith(".json.z")]) == 1, files
    assert len([f for f in files if f.endswith(".json")]) == 1, files
    assert d.stop() == 0
    d.start()
    c = d.client(timeout=30)
    for k, jid in ids.items():
        r = c.result(jid)
        assert r["status"] == "completed"
        assert r["result"] == "x" * sizes[k], k

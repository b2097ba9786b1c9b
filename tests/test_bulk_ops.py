"""Bulk operations and replay through the real daemon: `cancel_many`,
`retry_many` and `purge` over a filter (only jobs present when the op
arrived, in slices so other clients keep being answered, dry runs that
change nothing), and `replay` of a finished job (docs/flow-control.md)."""
from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest
from conftest import T, wait_until

from jobd_client import JobdError


def status(c, job_id: str) -> dict:
    return c.call("status", job_id=job_id)["job"]


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_cancel_many_of_500k_jobs_never_stalls_other_clients(make_daemon):
    n = 500_000
    d = make_daemon(workers=1, fsync="never")
    c = d.client(timeout=300)
    c.call("pause", handler=T + "noop")
    first = None
    for _ in range(0, n, 50_000):
        ids = c.submit_many([{"handler": T + "noop"} for _ in range(50_000)])
        first = first or ids[0]
    # Another client submits jobs and waits on each, all through the bulk op.
    stop = threading.Event()
    rtts: list[float] = []
    answered: list[str] = []
    errors: list[BaseException] = []

    def other_client() -> None:
        try:
            mine = d.client(timeout=60)
            while not stop.is_set():
                t0 = time.perf_counter()
                job_id = mine.submit(T + "add", [1, 2])
                job = mine.wait(job_id, timeout=60)
                rtts.append(time.perf_counter() - t0)
                assert job.status == "completed"
                answered.append(job_id)
        except BaseException as e:   # noqa: BLE001 - reported by the test below
            errors.append(e)

    thread = threading.Thread(target=other_client)
    thread.start()
    wait_until(lambda: len(answered) >= 3, what="the other client going")
    result: dict = {}

    def bulk() -> None:
        result.update(d.client(timeout=300).call("cancel_many", handler=T + "noop"))

    t0 = time.perf_counter()
    runner = threading.Thread(target=bulk)
    runner.start()
    # Once it is under way, a new job of the same handler is not touched.
    wait_until(lambda: status(c, first)["status"] == "cancelled", 60, what="the op to begin")
    during = len(answered)
    late = c.submit(T + "noop")
    runner.join(300)
    took = time.perf_counter() - t0
    stop.set()
    thread.join(60)
    assert not errors, errors
    print(f"cancel_many of {n} jobs took {took:.2f} s; the other client made "
          f"{len(rtts)} submit+wait round trips, {len(answered) - during} after the op was "
          f"under way, max {max(rtts) * 1000:.1f} ms (a WAL compaction of the 500,000 jobs may fall in it)")
    assert result["matched"] == n and result["cancelled"] == n
    assert len(result["sample"]) == 5 and first in result["sample"]
    assert status(c, late)["status"] == "pending"
    assert len(answered) > during                    # answered while the op ran
    assert c.metrics()["queue"]["cancelled"] == n


def test_dry_run_changes_nothing_and_filters_combine(make_daemon):
    d = make_daemon(workers=1)
    c = d.client()
    c.call("pause", handler=T + "noop")
    c.call("pause", handler=T + "add")
    tagged = [c.call("submit", handler=T + "noop", tags={"batch": "7"})["job_id"]
              for _ in range(6)]
    other = [c.call("submit", handler=T + "noop", tags={"batch": "8"})["job_id"]
             for _ in range(3)]
    adds = [c.submit(T + "add", [i, i]) for i in range(4)]
    dry = c.call("cancel_many", tag="batch=7", dry_run=True)
    assert dry["matched"] == 6 and dry["cancelled"] == 0 and len(dry["sample"]) == 5
    assert set(dry["sample"]) <= set(tagged)
    assert {status(c, j)["status"] for j in tagged + other + adds} == {"pending"}
    cut = status(c, adds[0])["created_at"]
    assert c.call("cancel_many", handler=T + "add", created_after=cut, dry_run=True)[
        "matched"] == 3
    assert c.call("cancel_many", status=["pending", "running"], handler=T + "noop",
                  tag="batch=8")["cancelled"] == 3
    assert {status(c, j)["status"] for j in other} == {"cancelled"}
    assert c.call("cancel_many", ids=[tagged[0], adds[0], "nope"])["cancelled"] == 2
    everything = c.call("cancel_many", all=True)
    assert everything["matched"] == 8 and everything["cancelled"] == 8
    for bad, field in [({}, "all"), ({"status": "nope"}, "status"),
                       ({"created_before": "yesterday"}, "created_before"),
                       ({"tag": "novalue"}, "tag"), ({"ids": "abc"}, "ids"),
                       ({"status": []}, "status")]:
        with pytest.raises(JobdError) as e:
            c.call("cancel_many", **bad)
        assert e.value.code == "invalid_argument" and e.value.message.startswith(field), bad
    # The connection is still in order after errors and deferred replies.
    assert c.call("retry_many", status="cancelled", dry_run=True)["matched"] == 13


def test_retry_many_of_dead_letters_respects_the_rate_limit(make_daemon, tmp_path):
    flag = tmp_path / "broken"
    flag.write_text("x")
    # (breaker off: this is about the rate limit, and 20 failures in a row would open it)
    config = f'[handler."{T}fail_while_exists"]\nrate = "10/s"\nbreaker_failures = 0\n'
    d = make_daemon(workers=2, config=config)
    c = d.client()
    ids = [c.submit(T + "fail_while_exists", [str(flag)], max_retries=0) for _ in range(20)]
    for job_id in ids:
        assert c.wait(job_id, timeout=30).status == "dead_letter"
    flag.unlink()
    dry = c.call("retry_many", status="dead_letter", error_match="still exists", dry_run=True)
    assert dry["matched"] == 20 and dry["retried"] == 0
    assert c.call("dead_letters")["total"] == 20
    reply = c.call("retry_many", status="dead_letter", handler=T + "fail_while_exists")
    assert reply["matched"] == 20 and reply["retried"] == 20
    jobs = [c.wait(j, timeout=30) for j in ids]
    assert {j.status for j in jobs} == {"completed"} and {j.attempts for j in jobs} == {1}
    starts = sorted(ts(j.started_at) for j in jobs)
    # 10/s, burst 1: never more than 1 + 10 t starts in any span t.
    for i in range(len(starts)):
        for k in range(i, len(starts)):
            assert k - i + 1 <= 1 + 10 * (starts[k] - starts[i]) + 0.01, (i, k)
    assert starts[-1] - starts[0] >= 1.9 - 0.01


def test_purge_takes_the_filter_and_without_one_purges_every_finished_job(make_daemon):
    d = make_daemon(workers=1)
    c = d.client()
    adds = [c.submit(T + "add", [i, i]) for i in range(3)]
    noops = [c.submit(T + "noop") for _ in range(2)]
    for job_id in adds + noops:
        c.wait(job_id, timeout=20)
    assert c.call("purge", handler=T + "add", dry_run=True) == {
        "matched": 3, "purged": 0, "sample": adds, "dry_run": True}
    assert c.call("purge", handler=T + "add")["purged"] == 3
    assert c.call("list")["total"] == 2
    with pytest.raises(JobdError) as e:
        c.call("purge", status="pending")
    assert e.value.code == "invalid_argument"
    assert c.call("purge")["purged"] == 2
    assert c.call("list")["total"] == 0


def test_replay_copies_a_finished_job_as_a_new_one(make_daemon):
    d = make_daemon(workers=1)
    c = d.client()
    orig = c.call("submit", handler=T + "echo", args=["a"], kwargs={"k": 1}, priority=20,
                  tags={"team": "x"}, timeout=30, max_retries=2, unique_key="u1")["job_id"]
    assert c.wait(orig, timeout=20).status == "completed"
    with c.watch(events=["job.replayed"]) as events:
        reply = c.call("replay", job_id=orig)
        event = next(events)
    assert event.data["job_id"] == reply["job_id"] and event.data["replay_of"] == orig
    new = c.wait(reply["job_id"], timeout=20)
    assert new.result == {"args": ["a"], "kwargs": {"k": 1}}
    view = status(c, reply["job_id"])
    assert view["replay_of"] == orig and view["unique_key"] is None
    assert (view["priority"], view["tags"], view["timeout"], view["max_retries"]) == (
        20, {"team": "x"}, 30.0, 2)
    assert status(c, orig)["replay_of"] is None and status(c, orig)["status"] == "completed"
    changed = c.call("replay", job_id=orig, args=["b"], priority="low")
    assert c.wait(changed["job_id"], timeout=20).result == {"args": ["b"], "kwargs": {"k": 1}}
    assert status(c, changed["job_id"])["priority"] == 0
    c.call("pause", handler=T + "noop")
    pending = c.submit(T + "noop")
    with pytest.raises(JobdError) as e:
        c.call("replay", job_id=pending)
    assert e.value.code == "conflict"
    with pytest.raises(JobdError) as e:
        c.call("replay", job_id="nope")
    assert e.value.code == "not_found"
    # A replay survives a restart with its replay_of.
    d.kill9()
    d.start()
    c = d.client()
    assert status(c, reply["job_id"])["replay_of"] == orig

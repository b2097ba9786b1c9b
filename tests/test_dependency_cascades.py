"""Failure cascades through dependencies of any depth and width (docs/protocol.md).

A chain of 100,000 jobs, each waiting on the one before, and a fan-out of
100,000 jobs waiting on one: when the root of either ends unsuccessfully
(cancelled, failed), every dependent ends `failed` at once, live and again
when the log is replayed after a kill -9, and the daemon keeps serving.
"""
from __future__ import annotations

from typing import Any

from conftest import T, wait_until

N = 100_000
BATCH = 20_000
NOOP, PERMANENT = T + "noop", T + "permanent"


def submit_chain(c: Any, prefix: str, n: int) -> None:
    """`prefix`0 scheduled an hour ahead, then each job waits on the one before."""
    jobs: list[dict[str, Any]] = [{"handler": NOOP, "job_id": f"{prefix}0", "delay": 3600}]
    for i in range(1, n):
        jobs.append({"handler": NOOP, "job_id": f"{prefix}{i}", "depends_on": [f"{prefix}{i - 1}"]})
        if len(jobs) == BATCH:
            c.submit_many(jobs)
            jobs = []
    if jobs:
        c.submit_many(jobs)


def submit_fan_out(c: Any, prefix: str, n: int) -> None:
    """`prefix`0 fails permanently when it runs; every other job waits on it."""
    c.submit(PERMANENT, job_id=f"{prefix}0")
    for start in range(1, n + 1, BATCH):
        c.submit_many([{"handler": NOOP, "job_id": f"{prefix}{i}", "depends_on": [f"{prefix}0"]}
                       for i in range(start, min(start + BATCH, n + 1))])


def queue(c: Any) -> dict[str, int]:
    return c.metrics()["queue"]


def restart_after_kill9(d: Any) -> Any:
    d.close_clients()
    d.kill9()
    d.start()
    return d.client(timeout=120)


def test_deep_chain_and_wide_fan_out_fail_through_kill9_and_replay(make_daemon):
    d = make_daemon(workers=0)
    c = d.client(timeout=120)
    submit_chain(c, "c", N)
    assert queue(c)["waiting"] == N - 1

    c = restart_after_kill9(d)                       # replay rebuilds 100,000 links
    submit_fan_out(c, "f", N)
    q = queue(c)
    assert q["waiting"] == 2 * N - 1 and q["scheduled"] == 1 and q["pending"] == 1

    assert c.cancel("c0") is True                    # the chain's root: a cascade 100,000 deep
    q = queue(c)
    assert q["failed"] == N - 1 and q["waiting"] == N, q
    last = c.status(f"c{N - 1}")
    assert last.status == "failed" and last.error == f"dependency c{N - 2} ended failed"

    c = restart_after_kill9(d)                       # replay applies the same cascade
    q = queue(c)
    assert (q["failed"], q["cancelled"], q["waiting"]) == (N - 1, 1, N), q

    c.scale(1)                                       # the fan-out's root runs and fails
    wait_until(lambda: queue(c)["failed"] == 2 * N, 60, what="the fan-out to fail")
    assert c.status(f"f{N}").error == "dependency f0 ended failed"

    c = restart_after_kill9(d)
    q = queue(c)
    assert (q["failed"], q["cancelled"], q["waiting"], q["pending"]) == (2 * N, 1, 0, 0), q
    # still serving: an unrelated job runs on the (not stuck) worker, cancel answers
    c.scale(1)
    done = c.wait(c.submit(T + "add", args=[1, 2]), timeout=30)
    assert done.status == "completed" and done.result == 3
    assert c.cancel(f"c{N // 2}") is False
    assert all(w["status"] == "idle" for w in c.workers())

"""The worker pool at runtime: scale, restart_worker, recycling, --workers 0, and
the `workers` view (docs/configuration.md, docs/protocol.md)."""
from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from conftest import T, pid_alive, wait_until

from jobd_client import Client

WORKER_FIELDS = {"id", "pid", "status", "current_job", "jobs_completed", "jobs_failed",
                 "started_at", "last_heartbeat", "rss_bytes", "healthy"}


def ready_workers(c: Client, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Exactly n workers, all live, healthy and not on their way out."""
    def ok() -> list[dict[str, Any]] | None:
        ws = c.workers()
        if len(ws) == n and all(w["healthy"] and w["status"] != "stopping" and w["pid"]
                                and pid_alive(w["pid"]) for w in ws):
            return ws
        return None
    return wait_until(ok, timeout, what=f"{n} ready workers")


def parse_ts(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00")


def test_worker_view_fields(daemon):
    c = daemon.client(timeout=20)
    ws = ready_workers(c, 2)
    assert c.wait(c.submit(T + "add", args=[1, 1]), timeout=10).status == "completed"
    failed = c.submit(T + "always_fail", max_retries=0)
    assert c.wait(failed, timeout=10).status == "dead_letter"
    ws = c.workers()
    assert len(ws) == 2
    for w in ws:
        assert set(w) >= WORKER_FIELDS, set(w)
        assert isinstance(w["id"], int)
        assert isinstance(w["pid"], int) and pid_alive(w["pid"])
        assert w["status"] == "idle" and w["current_job"] is None
        assert w["healthy"] is True
        assert w["rss_bytes"] > 0
        parse_ts(w["started_at"])
        parse_ts(w["last_heartbeat"])
        assert parse_ts(w["started_at"]) <= parse_ts(w["last_heartbeat"])
    assert len({w["id"] for w in ws}) == 2 and len({w["pid"] for w in ws}) == 2
    assert sum(w["jobs_completed"] for w in ws) == 1
    assert sum(w["jobs_failed"] for w in ws) == 1


def test_busy_worker_view(make_daemon, tmp_path):
    d = make_daemon(workers=1)
    c = d.client(timeout=20)
    release = tmp_path / "release"
    jid = c.submit(T + "wait_file", args=[str(release)])
    w = wait_until(lambda: (ws := c.workers()) and ws[0]["current_job"] == jid and ws[0], 10,
                   what="the worker to take the job")
    assert w["status"] == "busy"
    assert c.status(jid).worker_id == w["id"]
    release.write_text("go")
    assert c.wait(jid, timeout=10).status == "completed"
    w = wait_until(lambda: (ws := c.workers()) and ws[0]["status"] == "idle" and ws[0], 5)
    assert w["current_job"] is None and w["jobs_completed"] == 1


def test_scale_up_and_down(make_daemon, tmp_path):
    d = make_daemon(workers=1)
    c = d.client(timeout=20)
    first = ready_workers(c, 1)[0]
    assert c.scale(3) == {"previous": 1, "target": 3}
    ws = ready_workers(c, 3)
    assert first["pid"] in {w["pid"] for w in ws}          # scaling up keeps the old one
    assert c.metrics()["workers"]["total"] == 3

    # scale to 0 with one busy worker: the idle ones go at once, the busy one
    # finishes its job first
    release = tmp_path / "release"
    started = tmp_path / "started"
    jid = c.submit(T + "wait_file", args=[str(release)], kwargs={"started": str(started)})
    wait_until(lambda: started.exists() and started.read_text().strip(), 10,
               what="the job to start and write its pid")
    busy_pid = int(started.read_text())
    assert c.scale(0) == {"previous": 3, "target": 0}

    def only_busy_left() -> list[dict[str, Any]] | None:
        ws = c.workers()
        return ws if len(ws) == 1 else None
    (left,) = wait_until(only_busy_left, 10, what="the idle workers to exit")
    assert left["pid"] == busy_pid and left["current_job"] == jid
    assert left["status"] == "stopping"
    assert c.status(jid).status == "running"
    release.write_text("go")
    job = c.wait(jid, timeout=10)
    assert job.status == "completed" and job.result == "released"
    wait_until(lambda: c.workers() == [], 10, what="the last worker to exit")
    wait_until(lambda: not pid_alive(busy_pid), 5)

    # with no workers jobs wait; scaling up runs them
    queued = c.submit(T + "add", args=[2, 2])
    assert c.result(queued, wait=0.3)["status"] == "pending"
    assert c.scale(2) == {"previous": 0, "target": 2}
    assert c.wait(queued, timeout=10).result == 4
    ready_workers(c, 2)


def test_workers_zero_runs_nothing_until_scaled(make_daemon):
    d = make_daemon(workers=0)
    c = d.client(timeout=20)
    assert c.workers() == []
    ids = [c.submit(T + "add", args=[i, i]) for i in range(3)]
    r = c.result(ids[0], wait=0.3)          # an observation window, not a sync sleep
    assert r["status"] == "pending" and r["result"] is None
    assert c.list(status="pending", limit=0).total == 3
    assert c.workers() == []
    assert c.scale(1)["target"] == 1
    assert [c.wait(j, timeout=10).result for j in ids] == [0, 2, 4]
    assert len(ready_workers(c, 1)) == 1


def test_restart_worker(daemon):
    c = daemon.client(timeout=20)
    ws = ready_workers(c, 2)
    victim = ws[0]
    assert c.restart_worker(victim["id"]) is True
    after = wait_until(lambda: (xs := ready_workers(c, 2))
                       and victim["id"] not in {w["id"] for w in xs} and xs, 10,
                       what="the worker to be replaced")
    assert victim["pid"] not in {w["pid"] for w in after}
    assert ws[1]["pid"] in {w["pid"] for w in after}       # the other one was left alone
    wait_until(lambda: not pid_alive(victim["pid"]), 5, what="the old process to exit")
    assert c.restart_worker(999_999) is False
    assert c.restart_worker(victim["id"]) is False         # already gone
    assert c.wait(c.submit(T + "add", args=[1, 2]), timeout=10).result == 3


def test_restart_busy_worker_lets_the_job_finish(make_daemon, tmp_path):
    d = make_daemon(workers=1)
    c = d.client(timeout=20)
    release = tmp_path / "release"
    started = tmp_path / "started"
    jid = c.submit(T + "wait_file", args=[str(release)], kwargs={"started": str(started)})
    wait_until(lambda: started.exists() and started.read_text().strip(), 10,
               what="the job to start and write its pid")
    (w,) = c.workers()
    assert c.restart_worker(w["id"]) is True
    release.write_text("go")
    job = c.wait(jid, timeout=10)
    assert job.status == "completed" and job.attempts == 1
    (new,) = wait_until(lambda: (xs := ready_workers(c, 1)) and xs[0]["pid"] != w["pid"] and xs,
                        10, what="the replacement worker")
    assert new["id"] != w["id"]


def test_recycling_after_max_jobs_per_worker(make_daemon):
    d = make_daemon(workers=2, config="[workers]\nmax_jobs_per_worker = 3\n")
    c = d.client(timeout=20)
    ids = [c.submit(T + "pid") for _ in range(10)]
    pids = [c.wait(j, timeout=15).result for j in ids]
    per_pid = Counter(pids)
    assert len(per_pid) >= 4, per_pid          # 10 jobs, at most 3 per process
    assert max(per_pid.values()) <= 3, per_pid
    ws = ready_workers(c, 2)                   # recycled workers were replaced
    assert all(w["jobs_completed"] <= 3 for w in ws)
    for pid, n in per_pid.items():
        if n == 3:
            wait_until(lambda p=pid: not pid_alive(p), 5, what=f"recycled worker {pid} to exit")


def test_recycling_above_max_memory(make_daemon):
    """A worker whose RSS is above max_memory_mb is replaced after its job."""
    d = make_daemon(workers=1, config="[workers]\nmax_memory_mb = 1\n")   # any Python is above 1 MB
    c = d.client(timeout=20)
    ids = [c.submit(T + "pid") for _ in range(4)]
    pids = [c.wait(j, timeout=15).result for j in ids]
    assert len(set(pids)) == 4, pids
    wait_until(lambda: "above max_memory_mb" in d.log(), what="the recycling log line")

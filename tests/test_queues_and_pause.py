"""Named queues with their own pools, and pause/resume of a queue or a
handler, through the real daemon and real workers (docs/flow-control.md).

Held back is never failed: a held job stays pending, uses no attempt and
keeps its place; pausing writes one WAL record whatever the queue holds.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import T, wait_until

from jobd_client import JobdError

SLOW_CONFIG = f"""
[workers]
prefetch = 0        # a job sent ahead waits behind its worker's long job

[queues.slow]
workers = 1

[handler."{T}wait_file"]
queue = "slow"
"""


def wal_bytes(d) -> int:
    wal = Path(d.data_dir) / "wal"
    return sum(p.stat().st_size for p in wal.iterdir() if p.is_file())


def status(c, job_id: str) -> dict:
    return c.call("status", job_id=job_id)["job"]


def test_a_saturated_slow_queue_never_delays_the_default_queue(make_daemon, tmp_path):
    d = make_daemon(workers=1, config=SLOW_CONFIG)
    c = d.client()
    gate = tmp_path / "release"
    slow = [c.submit(T + "wait_file", [str(gate)]) for _ in range(4)]
    wait_until(lambda: status(c, slow[0])["status"] == "running", what="the slow queue to start")
    quick = [c.submit(T + "add", [i, 1]) for i in range(30)]
    for job_id in quick:
        assert c.wait(job_id, timeout=20).status == "completed"
    views = [status(c, j) for j in slow]
    assert [v["status"] for v in views] == ["running", "pending", "pending", "pending"]
    assert {v["queue"] for v in views} == {"slow"} and status(c, quick[0])["queue"] == "default"
    assert all(v["held"] is None for v in views[1:])       # waiting for a worker is not held
    # Each pool runs only its own queue's jobs.
    workers = c.workers()
    assert sorted(w["queue"] for w in workers) == ["default", "slow"]
    # Scaling one queue leaves the other alone.
    assert c.call("scale", count=3, queue="slow") == {"previous": 1, "target": 3}
    wait_until(lambda: sum(v["status"] == "running" for v in map(lambda j: status(c, j), slow)) == 3,
               what="three slow jobs to run")
    assert sorted(w["queue"] for w in c.workers()) == ["default", "slow", "slow", "slow"]
    queues = {q["name"]: q for q in c.call("queues")["queues"]}
    assert queues["slow"]["workers"] == 3 and queues["default"]["workers"] == 1
    assert queues["slow"]["running"] == 3 and queues["slow"]["pending"] == 1
    assert queues["default"]["completed"] == 30
    gate.write_text("go")
    for job_id in slow:
        assert c.wait(job_id, timeout=30).status == "completed"
    page = c.call("list", queue="slow")
    assert page["total"] == 4 and {j["id"] for j in page["jobs"]} == set(slow)


def test_submit_queue_overrides_the_handlers_and_an_unknown_queue_is_refused(make_daemon):
    d = make_daemon(workers=1, config=SLOW_CONFIG)
    c = d.client()
    job_id = c.call("submit", handler=T + "add", args=[1, 2], queue="slow")["job_id"]
    assert c.wait(job_id, timeout=20).status == "completed"
    assert status(c, job_id)["queue"] == "slow"
    with pytest.raises(JobdError) as e:
        c.call("submit", handler=T + "add", args=[1, 2], queue="nope")
    assert e.value.code == "invalid_argument" and e.value.message.startswith("queue:")
    with pytest.raises(JobdError) as e:
        c.call("scale", count=2, queue="nope")
    assert e.value.code == "not_found"
    assert c.call("list")["total"] == 1                     # nothing was queued


def test_a_handler_in_an_unconfigured_queue_exits_78(make_daemon):
    d = make_daemon(start=False, config=f'[handler."{T}add"]\nqueue = "nowhere"\n')
    d.start(wait=False)
    assert d.proc.wait(20) == 78
    assert "no queue named 'nowhere'" in d.log()


def test_a_queues_max_size_is_its_own(make_daemon):
    d = make_daemon(workers=0, config="[queues.small]\nworkers = 0\nmax_size = 2\n")
    c = d.client()
    for _ in range(2):
        c.call("submit", handler=T + "noop", queue="small")
    with pytest.raises(JobdError) as e:
        c.call("submit", handler=T + "noop", queue="small")
    assert e.value.code == "queue_full" and "small" in e.value.message
    c.submit(T + "noop")                                    # the default queue has room


def test_pausing_a_big_queue_is_one_record_and_survives_kill_9(make_daemon):
    n = 200_000
    d = make_daemon(workers=0, fsync="never")          # no worker: the WAL holds still
    c = d.client(timeout=120)
    for start in range(0, n, 50_000):
        c.submit_many([{"handler": T + "noop", "priority": (i % 3) * 10}
                       for i in range(start, start + 50_000)])
    before = wal_bytes(d)
    t0 = time.perf_counter()
    reply = c.call("pause", queue="default", reason="deploy")
    took_ms = (time.perf_counter() - t0) * 1000
    print(f"pause of a queue with {n} jobs answered in {took_ms:.2f} ms")
    grew = wal_bytes(d) - before
    assert 0 < grew < 200, grew                             # one record, whatever the queue holds
    c.scale(1)
    paused = reply["paused"]
    assert paused["queue"] == "default" and paused["reason"] == "deploy"
    assert paused["by_uid"] == os.getuid() and paused["until"] is None
    # No job started since the pause; submits are still accepted, and held.
    done = c.metrics()["queue"]["completed"] + c.metrics()["queue"]["running"]
    extra = c.submit(T + "noop", priority="critical")
    view = status(c, extra)
    assert view["status"] == "pending" and view["held"]["reason"] == "queue_paused"
    assert view["held"]["since"] == paused["since"] and view["attempts"] == 0
    queue = c.call("queues")["queues"][0]
    assert queue["paused"]["reason"] == "deploy" and queue["held"] >= n - done
    d.kill9()
    d.workers = 1
    d.start()
    c = d.client(timeout=120)
    assert c.call("queues")["queues"][0]["paused"]["reason"] == "deploy"
    m = c.metrics()["queue"]
    assert m["completed"] + m["running"] + m["pending"] == n + 1
    started_before = m["completed"] + m["running"]
    assert status(c, extra)["status"] == "pending"
    # Nothing runs while paused (a second look after the workers have had time to start).
    wait_until(lambda: c.workers() and all(w["status"] == "idle" for w in c.workers()),
               what="the pool to be up")
    assert c.metrics()["queue"]["completed"] + c.metrics()["queue"]["running"] == started_before
    assert c.call("resume", queue="default") == {"resumed": True}
    assert c.call("resume", queue="default") == {"resumed": False}
    assert c.wait(extra, timeout=30).status == "completed"
    wait_until(lambda: c.metrics()["queue"]["completed"] == n + 1, 120, what="every job to run")
    page = c.call("list", status="completed", limit=10)
    assert all(j["attempts"] == 1 for j in page["jobs"])
    assert c.metrics()["queue"]["pending"] == 0


def test_resume_keeps_priority_then_submit_order(make_daemon, tmp_path):
    out = tmp_path / "order"
    d = make_daemon(workers=1, config="[workers]\nprefetch = 0\n")
    c = d.client()
    c.call("pause", queue="default")
    prios = [(i * 7) % 4 * 10 for i in range(40)]
    ids = [c.submit(T + "append", [str(out), i], priority=p) for i, p in enumerate(prios)]
    assert all(status(c, j)["held"]["reason"] == "queue_paused" for j in ids[:3])
    c.call("resume", queue="default")
    for job_id in ids:
        c.wait(job_id, timeout=20)
    ran = [int(line.split()[0]) for line in out.read_text().splitlines()]
    assert ran == sorted(range(40), key=lambda i: (-prios[i], i))


def test_a_paused_handler_at_the_front_never_delays_the_others(make_daemon, tmp_path):
    d = make_daemon(workers=1)
    c = d.client()
    c.call("pause", handler=T + "sleep", reason="flaky API")
    held = [c.submit(T + "sleep", [0], priority="critical") for _ in range(50)]
    others = [c.submit(T + "add", [i, i], priority="low") for i in range(20)]
    for job_id in others:
        assert c.wait(job_id, timeout=20).status == "completed"
    views = [status(c, j) for j in held]
    assert {v["status"] for v in views} == {"pending"} and {v["attempts"] for v in views} == {0}
    assert {v["held"]["reason"] for v in views} == {"handler_paused"}
    row = next(h for h in c.call("handlers")["handlers"] if h["name"] == T + "sleep")
    assert row["state"] == "paused" and row["held"] == 50 and row["pending"] == 50
    assert row["paused"]["reason"] == "flaky API" and row["queue"] == "default"
    assert c.call("resume", handler=T + "sleep") == {"resumed": True}
    for job_id in held:
        assert c.wait(job_id, timeout=20).status == "completed"


def test_pause_for_resumes_by_itself_with_an_event(make_daemon):
    d = make_daemon(workers=1)
    c = d.client()
    with d.client().watch(events=["handler.paused", "handler.resumed"]) as events:
        reply = c.call("pause", handler=T + "add", **{"for": 1.0})
        assert reply["paused"]["until"] is not None
        job_id = c.submit(T + "add", [1, 1])
        assert status(c, job_id)["held"]["until"] == reply["paused"]["until"]
        assert c.wait(job_id, timeout=20).status == "completed"
        paused, resumed = next(events), next(events)
    assert (paused.event, resumed.event) == ("handler.paused", "handler.resumed")
    assert paused.data["handler"] == T + "add" and paused.data["until"] == reply["paused"]["until"]
    assert resumed.data["handler"] == T + "add" and resumed.data["job_id"] is None
    row = next(h for h in c.call("handlers")["handlers"] if h["name"] == T + "add")
    assert row["state"] == "ok" and row["paused"] is None


def test_pausing_again_updates_until_and_reason_and_bad_requests_change_nothing(make_daemon):
    d = make_daemon(workers=1)
    c = d.client()
    first = c.call("pause", handler=T + "add", reason="a", **{"for": 100})["paused"]
    second = c.call("pause", handler=T + "add", reason="b")["paused"]
    assert second["since"] == first["since"] and second["until"] is None
    assert second["reason"] == "b"
    for args, code in [({}, "invalid_argument"),
                       ({"queue": "default", "handler": T + "add"}, "invalid_argument"),
                       ({"queue": "nope"}, "not_found"), ({"handler": "nope"}, "not_found"),
                       ({"queue": "default", "for": -1}, "invalid_argument"),
                       ({"queue": "default", "for": "x"}, "invalid_argument")]:
        with pytest.raises(JobdError) as e:
            c.call("pause", **args)
        assert e.value.code == code, args
    assert c.call("queues")["queues"][0]["paused"] is None
    assert c.call("resume", handler=T + "noop") == {"resumed": False}


def test_a_handler_pause_survives_a_restart_and_takes_back_jobs_sent_ahead(make_daemon, tmp_path):
    d = make_daemon(workers=1)
    c = d.client()
    gate = tmp_path / "go"
    first = c.submit(T + "wait_file", [str(gate)])
    wait_until(lambda: status(c, first)["status"] == "running", what="the first job")
    ahead = [c.submit(T + "add", [i, 0]) for i in range(5)]     # sent ahead to the busy worker
    c.call("pause", handler=T + "add")
    gate.write_text("go")
    assert c.wait(first, timeout=20).status == "completed"
    wait_until(lambda: all(w["status"] == "idle" for w in c.workers()), what="the worker idle")
    assert {status(c, j)["status"] for j in ahead} == {"pending"}
    d.stop()
    d.start()
    c = d.client()
    assert {status(c, j)["held"]["reason"] for j in ahead} == {"handler_paused"}
    c.call("resume", handler=T + "add")
    assert [c.wait(j, timeout=20).status for j in ahead] == ["completed"] * 5


def test_a_queue_paused_in_config_starts_paused_and_a_runtime_resume_wins(make_daemon):
    config = "[queues.later]\nworkers = 1\npaused = true\n"
    d = make_daemon(workers=1, config=config)
    c = d.client()
    job_id = c.call("submit", handler=T + "noop", queue="later")["job_id"]
    assert status(c, job_id)["held"]["reason"] == "queue_paused"
    assert c.call("resume", queue="later") == {"resumed": True}
    assert c.wait(job_id, timeout=20).status == "completed"
    d.stop()
    d.start()
    c = d.client()
    later = next(q for q in c.call("queues")["queues"] if q["name"] == "later")
    assert later["paused"] is None                          # the runtime resume survived
    job_id = c.call("submit", handler=T + "noop", queue="later")["job_id"]
    assert c.wait(job_id, timeout=20).status == "completed"


def test_sighup_adds_and_resizes_queues_and_keeps_one_that_still_has_jobs(make_daemon, tmp_path):
    d = make_daemon(workers=1, config="[queues.a]\nworkers = 1\n")
    c = d.client()
    held = c.call("submit", handler=T + "noop", queue="a")["job_id"]
    c.call("pause", queue="a")
    held2 = c.call("submit", handler=T + "noop", queue="a")["job_id"]
    Path(d.config_path).write_text("[queues.b]\nworkers = 2\n")
    os.kill(d.pid, 1)
    wait_until(lambda: sorted(w["queue"] for w in c.workers()) == ["a", "b", "b", "default"],
               what="queue b's pool")
    assert "queue 'a' was removed from the config but still has" in d.log()
    assert {q["name"] for q in c.call("queues")["queues"]} >= {"a", "b", "default"}
    c.call("resume", queue="a")
    assert c.wait(held2, timeout=20).status == "completed" and c.wait(held).status == "completed"

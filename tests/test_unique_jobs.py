"""Unique jobs through the real daemon: at most one live job per
`unique_key` (exactly, under concurrent submits), released by every
terminal status, `unique_for` expiry, `on_conflict` return/error/replace,
and the key index rebuilt after a kill -9 (docs/flow-control.md)."""
from __future__ import annotations

import threading
import time

import pytest
from conftest import T, wait_until
from prometheus_client.parser import text_string_to_metric_families

from jobd_client import JobdError


def submit(c, handler: str, key: str, **kw):
    return c.call("submit", handler=T + handler, unique_key=key, **kw)


def status(c, job_id: str) -> dict:
    return c.call("status", job_id=job_id)["job"]


def samples(c, family: str) -> dict:
    text = c.metrics(format="prometheus")
    for fam in text_string_to_metric_families(text):
        if fam.name == family or fam.name + "_total" == family:
            return {tuple(sorted(s.labels.items())): s.value for s in fam.samples}
    return {}


def test_concurrent_duplicate_submits_create_exactly_one_job(make_daemon):
    d = make_daemon(workers=1)
    c = d.client()
    c.call("pause", handler=T + "add")              # the holder stays pending throughout
    replies: list[dict] = []
    lock = threading.Lock()
    go = threading.Barrier(16)

    def client_thread() -> None:
        mine = d.client()
        go.wait()
        got = [submit(mine, "add", "report:42", args=[1, 2]) for _ in range(25)]
        with lock:
            replies.extend(got)
        mine.close()

    threads = [threading.Thread(target=client_thread) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(replies) == 16 * 25
    ids = {r["job_id"] for r in replies}
    assert len(ids) == 1
    assert sum(1 for r in replies if not r.get("duplicate")) == 1
    assert c.call("list", handler=T + "add")["total"] == 1
    (job_id,) = ids
    assert status(c, job_id)["unique_key"] == "report:42"
    assert samples(c, "jobd_jobs_deduplicated_total") == {(("handler", T + "add"),): 16 * 25 - 1}
    assert c.metrics()["totals"]["deduplicated"] == 16 * 25 - 1
    c.call("resume", handler=T + "add")
    assert c.wait(job_id, timeout=20).status == "completed"


@pytest.mark.parametrize("handler,args,end", [
    ("add", [1, 2], "completed"),
    ("permanent", ["no"], "failed"),
    ("always_fail", ["boom"], "dead_letter"),
    ("noop", [], "cancelled"),
])
def test_every_terminal_status_releases_the_key(make_daemon, handler, args, end):
    d = make_daemon(workers=1)
    c = d.client()
    c.call("pause", handler=T + handler)            # the holder stays live until resumed
    first = submit(c, handler, "k", args=args, max_retries=0)
    assert "duplicate" not in first
    again = submit(c, handler, "k", args=args, max_retries=0)
    assert again["duplicate"] is True and again["job_id"] == first["job_id"]
    if end == "cancelled":
        assert c.cancel(first["job_id"]) is True
    else:
        c.call("resume", handler=T + handler)
    assert c.wait(first["job_id"], timeout=20).status == end
    fresh = submit(c, handler, "k", args=args, max_retries=0)
    assert fresh["job_id"] != first["job_id"] and "duplicate" not in fresh


def test_unique_for_lets_a_new_job_in_after_it_expires(make_daemon):
    d = make_daemon(workers=1)
    c = d.client()
    c.call("pause", handler=T + "add")
    first = submit(c, "add", "window", args=[1, 1], unique_for=1.0)
    created = time.time()
    assert submit(c, "add", "window", args=[1, 1])["duplicate"] is True
    seen: list[dict] = []

    def new_job() -> bool:
        reply = submit(c, "add", "window", args=[1, 1])
        seen.append(reply)
        return not reply.get("duplicate")

    wait_until(new_job, 10, interval=0.05, what="the key to expire")
    assert time.time() - created >= 1.0 - 0.05
    assert seen[-1]["job_id"] != first["job_id"]
    # The old holder stays (only the key moved on); both run.
    c.call("resume", handler=T + "add")
    assert c.wait(first["job_id"], timeout=20).status == "completed"
    assert c.wait(seen[-1]["job_id"], timeout=20).status == "completed"


def test_on_conflict_error_and_replace(make_daemon, tmp_path):
    d = make_daemon(workers=1)
    c = d.client()
    c.call("pause", handler=T + "echo")
    first = submit(c, "echo", "cfg", args=["v1"])
    with pytest.raises(JobdError) as e:
        submit(c, "echo", "cfg", args=["v2"], on_conflict="error")
    assert e.value.code == "conflict" and first["job_id"] in e.value.message
    replaced = submit(c, "echo", "cfg", args=["v3"], on_conflict="replace")
    assert replaced["job_id"] != first["job_id"] and "duplicate" not in replaced
    assert status(c, first["job_id"])["status"] == "cancelled"
    c.call("resume", handler=T + "echo")
    assert c.wait(replaced["job_id"], timeout=20).result == {"args": ["v3"], "kwargs": {}}
    # A running holder is not replaced: the submit answers it.
    gate = tmp_path / "go"
    running = submit(c, "wait_file", "long", args=[str(gate)])
    wait_until(lambda: status(c, running["job_id"])["status"] == "running", what="the holder")
    again = submit(c, "wait_file", "long", args=[str(gate)], on_conflict="replace")
    assert again == {"job_id": running["job_id"], "status": "running", "duplicate": True}
    gate.write_text("go")
    assert c.wait(running["job_id"], timeout=20).status == "completed"
    # Bad values change nothing.
    for bad, field in [({"unique_key": "x" * 300}, "unique_key"),
                       ({"unique_key": "a", "on_conflict": "merge"}, "on_conflict"),
                       ({"on_conflict": "error"}, "on_conflict"),
                       ({"unique_key": "a", "unique_for": -1}, "unique_for")]:
        with pytest.raises(JobdError) as e:
            c.call("submit", handler=T + "noop", **bad)
        assert e.value.code == "invalid_argument" and e.value.message.startswith(field), bad


def test_the_key_index_is_rebuilt_after_kill_9(make_daemon):
    d = make_daemon(workers=1)
    c = d.client()
    c.call("pause", handler=T + "add")
    held = submit(c, "add", "nightly", args=[2, 2])
    done = submit(c, "noop", "gone")
    assert c.wait(done["job_id"], timeout=20).status == "completed"
    d.kill9()
    d.start()
    c = d.client()
    with pytest.raises(JobdError) as e:
        submit(c, "add", "nightly", args=[2, 2], on_conflict="error")
    assert e.value.code == "conflict"
    assert submit(c, "add", "nightly", args=[2, 2]) == {
        "job_id": held["job_id"], "status": "pending", "duplicate": True}
    assert "duplicate" not in submit(c, "noop", "gone")     # released before the crash
    # And after a compaction (the snapshot carries the key).
    d.stop()
    d.start()
    c = d.client()
    assert submit(c, "add", "nightly", args=[2, 2])["duplicate"] is True


def test_submit_many_with_unique_keys(make_daemon):
    d = make_daemon(workers=1)
    c = d.client()
    c.call("pause", handler=T + "add")
    first = submit(c, "add", "a", args=[1, 1])
    ids = c.submit_many([{"handler": T + "add", "args": [1, 1], "unique_key": "a"},
                         {"handler": T + "add", "args": [2, 2], "unique_key": "b"}])
    assert ids[0] == first["job_id"] and ids[1] != first["job_id"]
    with pytest.raises(JobdError) as e:
        c.submit_many([{"handler": T + "add", "args": [1, 1], "unique_key": "c"},
                       {"handler": T + "add", "args": [1, 1], "unique_key": "c"}])
    assert e.value.code == "invalid_argument"
    with pytest.raises(JobdError) as e:
        c.submit_many([{"handler": T + "add", "args": [3, 3], "unique_key": "d"},
                       {"handler": T + "add", "args": [1, 1], "unique_key": "a",
                        "on_conflict": "error"}])
    assert e.value.code == "conflict"
    assert c.call("list", handler=T + "add")["total"] == 2    # all or nothing


def test_flow_metrics(make_daemon):
    d = make_daemon(workers=1, config='[queues.side]\nworkers = 1\n')
    c = d.client()
    c.call("pause", queue="side")
    c.call("pause", handler=T + "add")
    for _ in range(3):
        c.call("submit", handler=T + "noop", queue="side")
    for i in range(2):
        c.submit(T + "add", [i, i])
    held = samples(c, "jobd_jobs_held")
    assert held[(("handler", T + "noop"), ("queue", "side"), ("reason", "queue_paused"))] == 3
    assert held[(("handler", T + "add"), ("queue", "default"), ("reason", "handler_paused"))] == 2
    paused = samples(c, "jobd_queue_paused")
    assert paused == {(("queue", "default"),): 0, (("queue", "side"),): 1}
    wait_until(lambda: samples(c, "jobd_queue_oldest_pending_age_seconds")[(("queue", "side"),)]
               > 0.05, what="the age to grow")
    queues = c.metrics()["queues"]
    assert queues["side"]["paused"] is True and queues["side"]["held"] == 3
    assert queues["side"]["oldest_pending_age_s"] > 0 and queues["default"]["held"] == 2
    assert c.metrics()["handlers"][T + "add"]["state"] == "paused"
    c.call("resume", queue="side")
    wait_until(lambda: c.metrics()["queues"]["side"]["pending"] == 0, what="side to drain")
    assert samples(c, "jobd_queue_oldest_pending_age_seconds")[(("queue", "side"),)] == 0

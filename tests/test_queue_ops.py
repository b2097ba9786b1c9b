"""Queue operations through the real daemon (docs/protocol.md).

Most tests run the daemon with `workers=0`: the queue accepts and keeps jobs
but runs none, so every state seen here is the queue's own doing.
"""
from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import pytest
from conftest import T, wait_until

from jobd_client import JobdError

NOOP = T + "echo"         # takes any args: the tests pass payloads
ADD = T + "add"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
VIEW_FIELDS = {"id", "name", "handler", "args", "kwargs", "status", "priority", "attempts",
               "max_retries", "retry_delay", "retry_backoff", "timeout", "tags",
               "depends_on", "created_at", "scheduled_for", "started_at", "completed_at",
               "worker_id", "progress", "error", "queue", "held", "unique_key", "replay_of",
               "signature"}
STATUSES = ("scheduled", "waiting", "pending", "running", "retrying", "completed",
            "failed", "cancelled", "dead_letter")


def ts(text: str) -> float:
    assert ISO_Z.match(text), text
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC).timestamp()


def code_of(fn, *a, **kw) -> str:
    with pytest.raises(JobdError) as info:
        fn(*a, **kw)
    return info.value.code


@pytest.fixture
def q(make_daemon):
    """A client of a daemon that queues jobs but runs none."""
    return make_daemon(workers=0).client(timeout=20)


def test_submit_and_full_status_view(q):
    before = time.time()
    job_id = q.submit(NOOP, args=[1, 2], kwargs={"z": [1, {"y": None}]}, priority="high",
                      max_retries=5, retry_delay=0.5, retry_backoff=3, timeout=12.5,
                      tags={"team": "a", "n": 3, "flag": True}, name="adder")
    raw = q.call("status", job_id=job_id)["job"]
    assert set(raw) == VIEW_FIELDS, set(raw) ^ VIEW_FIELDS
    assert raw["id"] == job_id
    assert raw["name"] == "adder" and raw["handler"] == NOOP
    assert raw["args"] == [1, 2] and raw["kwargs"] == {"z": [1, {"y": None}]}
    assert raw["status"] == "pending"
    assert raw["priority"] == 20
    assert raw["attempts"] == 0 and raw["max_retries"] == 5
    assert raw["retry_delay"] == 0.5 and raw["retry_backoff"] == 3
    assert raw["timeout"] == 12.5
    assert raw["tags"] == {"team": "a", "n": 3, "flag": True}
    assert raw["depends_on"] == []
    assert before - 1 <= ts(raw["created_at"]) <= time.time() + 1
    for key in ("scheduled_for", "started_at", "completed_at", "worker_id", "progress", "error"):
        assert raw[key] is None, key
    # the client's Job mirrors the view
    job = q.status(job_id)
    assert job.id == job_id and job.status == "pending" and job.priority == 20
    # defaults come from the daemon's [retry] section
    plain = q.call("status", job_id=q.submit(NOOP))["job"]
    assert plain["priority"] == 10 and plain["max_retries"] == 3
    assert plain["retry_delay"] == 1.0 and plain["retry_backoff"] == 2.0
    assert plain["timeout"] is None and plain["args"] == [] and plain["kwargs"] == {}
    assert plain["tags"] == {} and plain["name"] is None


def test_submit_reply_carries_job_id_and_status(q):
    reply = q.call("submit", handler=NOOP, job_id="mine-1")
    assert reply["job_id"] == "mine-1" and reply["status"] == "pending"
    reply = q.call("submit", handler=NOOP)      # no job_id: the daemon picks one
    assert isinstance(reply["job_id"], str) and reply["job_id"]
    assert q.status(reply["job_id"]).status == "pending"


def test_list_filters_paging_total_and_submit_order(q):
    ids = []
    for i in range(30):
        handler = ADD if i % 3 == 0 else NOOP
        ids.append(q.submit(handler, args=[i, i] if handler == ADD else None,
                            tags={"parity": "even" if i % 2 == 0 else "odd", "i": i},
                            priority=i % 4 * 10))
    for jid in ids[:5]:
        assert q.cancel(jid) is True
    page = q.list(limit=1000)
    assert page.total == 30
    assert [j.id for j in page.jobs] == ids, "list must follow submit order, not priority"
    # paging
    seen = []
    for offset in range(0, 30, 7):
        part = q.list(limit=7, offset=offset)
        assert part.total == 30
        seen += [j.id for j in part.jobs]
    assert seen == ids
    assert q.list(limit=5, offset=100).jobs == [] and q.list(limit=5, offset=100).total == 30
    assert q.list(limit=0).total == 30 and q.list(limit=0).jobs == []
    assert len(q.list().jobs) == 30      # default limit 100
    # filters
    cancelled = q.list(status="cancelled")
    assert cancelled.total == 5 and [j.id for j in cancelled.jobs] == ids[:5]
    assert q.list(status="pending").total == 25
    assert q.list(status="completed").total == 0
    adds = q.list(handler=ADD, limit=1000)
    assert [j.id for j in adds.jobs] == [ids[i] for i in range(30) if i % 3 == 0]
    evens = q.list(tag="parity=even", limit=1000)
    assert [j.id for j in evens.jobs] == ids[0::2]
    assert [j.id for j in q.list(tag="i=7").jobs] == [ids[7]]
    assert q.list(tag="missing=x").total == 0
    combo = q.list(status="pending", handler=ADD, tag="parity=even", limit=1000)
    assert [j.id for j in combo.jobs] == [ids[i] for i in range(5, 30) if i % 6 == 0]
    assert combo.total == len(combo.jobs)


def test_priorities_names_and_integers(q):
    named = {name: q.submit(NOOP, priority=name) for name in ("low", "normal", "high", "critical")}
    views = {name: q.status(jid).priority for name, jid in named.items()}
    assert views == {"low": 0, "normal": 10, "high": 20, "critical": 30}
    assert views["critical"] > views["high"] > views["normal"] > views["low"]
    for value in (0, 1, 999, 1000):
        assert q.status(q.submit(NOOP, priority=value)).priority == value
    for bad in (-1, 1001, "urgent", 2.5, "10"):
        assert code_of(q.submit, NOOP, priority=bad) == "invalid_argument"
    listed = {j.id: j.priority for j in q.list(limit=100).jobs}
    assert all(isinstance(p, int) for p in listed.values())
    by_prio = q.metrics()["queue"]["by_priority"]
    assert by_prio == {"0": 2, "1": 1, "10": 1, "20": 1, "30": 1, "999": 1, "1000": 1}


def test_cancel_pending_and_terminal(q):
    a, b = q.submit(NOOP), q.submit(NOOP)
    reply = q.call("cancel", job_id=a)
    assert reply == {"cancelled": True, "status": "cancelled"}
    job = q.status(a)
    assert job.status == "cancelled"
    assert job.completed_at is not None and ISO_Z.match(job.completed_at)
    # cancelling again: a terminal job is not cancelled (again)
    reply = q.call("cancel", job_id=a)
    assert reply == {"cancelled": False, "status": "cancelled"}
    assert q.cancel(a, force=True) is False
    assert q.status(b).status == "pending"
    assert code_of(q.cancel, "no-such-job") == "not_found"


def test_cancel_scheduled_and_waiting(q):
    later = q.submit(NOOP, delay=3600)
    parent = q.submit(NOOP, delay=3600)
    child = q.submit(NOOP, depends_on=[parent])
    assert q.status(later).status == "scheduled"
    assert q.status(child).status == "waiting"
    assert q.cancel(later) is True and q.status(later).status == "cancelled"
    # cancelling a dependency fails its dependents, naming it
    assert q.cancel(parent) is True
    job = q.status(child)
    assert job.status == "failed" and parent in (job.error or "")
    # a new job depending on a cancelled job fails at once
    late = q.status(q.submit(NOOP, depends_on=[parent]))
    assert late.status == "failed" and parent in (late.error or "")


def test_purge(q):
    keep = [q.submit(NOOP) for _ in range(3)]
    gone = [q.submit(NOOP) for _ in range(4)]
    for jid in gone:
        assert q.cancel(jid)
    for bad in ("pending", "running", "waiting", "scheduled", "retrying", "bogus"):
        assert code_of(q.purge, status=bad) == "invalid_argument", bad
    assert code_of(q.purge, older_than=-5) == "invalid_argument"
    # older_than: nothing finished an hour ago
    assert q.purge(status="cancelled", older_than=3600) == 0
    assert q.purge(status="completed") == 0
    assert q.list().total == 7
    assert q.purge(status="cancelled", older_than=0) == 4
    assert q.list().total == 3
    assert [j.id for j in q.list().jobs] == keep
    for jid in gone:
        assert code_of(q.status, jid) == "not_found"
    # without a status every terminal status is purged, never live jobs
    q.cancel(keep[0])
    assert q.purge() == 1
    assert [j.id for j in q.list().jobs] == keep[1:]
    assert q.purge() == 0
    assert q.metrics()["queue"]["cancelled"] == 0


def test_retry_of_cancelled_job(q):
    jid = q.submit(NOOP)
    other = q.submit(NOOP)
    assert code_of(q.retry, jid) == "conflict"           # pending
    q.cancel(jid)
    reply = q.call("retry", job_id=jid)
    assert reply == {"job_id": jid, "status": "pending"}
    job = q.status(jid)
    assert job.status == "pending" and job.attempts == 0 and job.completed_at is None
    assert job.error is None
    # a retried job re-enters behind jobs already pending; list keeps submit order
    assert [j.id for j in q.list().jobs] == [jid, other]
    assert code_of(q.retry, "unknown") == "not_found"


def test_retry_resets_attempts_of_failed_and_dead_jobs(make_daemon):
    d = make_daemon(workers=1)
    c = d.client(timeout=20)
    failed = c.submit(T + "permanent")
    dead = c.submit(T + "always_fail", max_retries=0)
    for jid, status in ((failed, "failed"), (dead, "dead_letter")):
        job = c.wait(jid, timeout=15)
        assert job.status == status and job.attempts == 1 and job.error
    assert [j.id for j in c.dead_letters().jobs] == [dead]
    c.scale(0)
    wait_until(lambda: not c.workers(), what="workers to stop")
    for jid in (failed, dead):
        assert c.retry(jid) == "pending"
        job = c.status(jid)
        assert job.attempts == 0 and job.error is None and job.started_at is None
        assert job.completed_at is None and job.worker_id is None
    assert c.dead_letters().total == 0


def test_idempotent_resubmit(q):
    first = q.call("submit", handler=NOOP, job_id="order-42", args=[1])
    assert first["status"] == "pending"
    again = q.call("submit", handler=NOOP, job_id="order-42", args=[2], priority="critical")
    assert again["job_id"] == "order-42"
    assert q.list().total == 1
    job = q.status("order-42")
    assert job.args == [1] and job.priority == 10, "a resubmit must not change the job"
    # even after it ended, the same id returns the existing job
    q.cancel("order-42")
    again = q.call("submit", handler=NOOP, job_id="order-42")
    assert again == {"job_id": "order-42", "status": "cancelled"}
    # inside submit_many too
    ids = q.submit_many([{"handler": NOOP, "job_id": "order-42"},
                         {"handler": NOOP, "job_id": "order-43"}])
    assert ids == ["order-42", "order-43"]
    assert q.list().total == 2
    assert q.status("order-42").status == "cancelled"


def test_submit_many_all_or_nothing(q):
    q.submit(NOOP, job_id="existing")
    bad_batches = [
        ([{"handler": NOOP}, {"handler": NOOP, "priority": 5000}], "invalid_argument"),
        ([{"handler": NOOP}, {"handler": T + "nope"}], "unknown_handler"),
        ([{"handler": NOOP}, {"handler": NOOP, "depends_on": ["ghost"]}], "not_found"),
        ([{"handler": NOOP, "job_id": "dup"}, {"handler": NOOP, "job_id": "dup"}],
         "invalid_argument"),
        ([{"handler": NOOP, "job_id": "c1", "depends_on": ["c3"]},
          {"handler": NOOP, "job_id": "c2", "depends_on": ["c1"]},
          {"handler": NOOP, "job_id": "c3", "depends_on": ["c2"]}], "invalid_argument"),
        ([{"handler": NOOP, "job_id": "self", "depends_on": ["self"]}], "invalid_argument"),
    ]
    for jobs, code in bad_batches:
        with pytest.raises(JobdError) as info:
            q.call("submit_many", jobs=jobs)
        assert info.value.code == code, (jobs, info.value)
        assert q.list().total == 1, f"a rejected batch queued jobs: {jobs}"
    with pytest.raises(JobdError) as info:
        q.call("submit_many", jobs=bad_batches[4][0])
    assert "depends_on" in str(info.value) and "cycle" in str(info.value)


def test_submit_many_with_dependencies_inside_the_batch(q):
    jobs = [
        {"handler": NOOP, "job_id": "leaf", "depends_on": ["mid"]},   # forward reference
        {"handler": NOOP, "job_id": "root"},
        {"handler": NOOP, "job_id": "mid", "depends_on": ["root", "existing"]},
        {"handler": NOOP, "job_id": "solo", "priority": "high"},
    ]
    q.submit(NOOP, job_id="existing")
    reply = q.call("submit_many", jobs=jobs)
    assert reply["job_ids"] == ["leaf", "root", "mid", "solo"]
    status = {j.id: j.status for j in q.list().jobs}
    assert status == {"existing": "pending", "leaf": "waiting", "root": "pending",
                      "mid": "waiting", "solo": "pending"}
    assert q.status("leaf").depends_on == ["mid"]
    # cancelling the root fails the chain through the batch
    q.cancel("root")
    assert q.status("mid").status == "failed"
    leaf = q.status("leaf")
    assert leaf.status == "failed" and "mid" in (leaf.error or "")
    # ids come back for jobs without a client-chosen id too
    ids = q.submit_many([{"handler": NOOP}, {"handler": NOOP}])
    assert len(set(ids)) == 2 and q.list().total == 7


def test_depends_on_unknown_id(q):
    assert code_of(q.submit, NOOP, depends_on=["does-not-exist"]) == "not_found"
    assert q.list().total == 0
    parent = q.submit(NOOP)
    child = q.submit(NOOP, depends_on=[parent, parent])
    job = q.status(child)
    assert job.status == "waiting" and job.depends_on == [parent]


def test_delay_and_run_at(q):
    before = time.time()
    jid = q.submit(NOOP, delay=3600)
    job = q.status(jid)
    assert job.status == "scheduled"
    assert 3599 <= ts(job.scheduled_for) - before <= 3601 + (time.time() - before)
    run_at = "2100-01-02T03:04:05.5Z"
    job = q.status(q.submit(NOOP, run_at=run_at))
    assert job.status == "scheduled" and job.scheduled_for == "2100-01-02T03:04:05.500000Z"
    # a run_at in the past is due at once
    job = q.status(q.submit(NOOP, run_at="2001-01-01T00:00:00Z"))
    assert job.status == "pending"
    # an offset is honoured and shown in UTC
    job = q.status(q.submit(NOOP, run_at="2100-01-01T02:00:00+02:00"))
    assert job.scheduled_for == "2100-01-01T00:00:00.000000Z"
    assert code_of(q.submit, NOOP, delay=1, run_at=run_at) == "invalid_argument"
    m = q.metrics()["queue"]
    assert m["scheduled"] == 3 and m["pending"] == 1


def test_delayed_job_becomes_pending(q):
    jid = q.submit(NOOP, delay=0.3)
    assert q.status(jid).status == "scheduled"
    wait_until(lambda: q.status(jid).status == "pending", timeout=10, what="delay to pass")
    job = q.status(jid)
    assert job.attempts == 0 and job.scheduled_for is not None
    assert q.metrics()["queue"]["scheduled"] == 0


def test_metrics_counts_per_status(q):
    pend = [q.submit(NOOP) for _ in range(4)]
    q.submit(NOOP, delay=3600)
    q.submit(NOOP, depends_on=[pend[0]])
    q.cancel(pend[1])
    m = q.metrics()
    assert set(STATUSES) <= set(m["queue"])
    counts = {s: m["queue"][s] for s in STATUSES}
    assert counts == {"scheduled": 1, "waiting": 1, "pending": 3, "running": 0,
                      "retrying": 0, "completed": 0, "failed": 0, "cancelled": 1,
                      "dead_letter": 0}
    assert m["queue"]["by_priority"] == {"10": 3}
    assert m["workers"]["total"] == 0
    assert isinstance(m["uptime_s"], (int, float))
    assert {"1m", "5m", "15m"} <= set(m["throughput"])
    assert m["wal"]["bytes"] > 0
    # the counts agree with list totals
    for s in STATUSES:
        assert q.list(status=s, limit=0).total == counts[s], s


def test_purging_a_completed_dependency_does_not_strand_its_dependents(make_daemon, tmp_path):
    """A waits on B and C; B completes and is purged while C runs; A still runs."""
    d = make_daemon(workers=2)
    c = d.client(timeout=20)
    gate = tmp_path / "gate"
    c_id = c.submit(T + "wait_file", args=[str(gate)])
    b_id = c.submit(NOOP)
    a_id = c.submit(NOOP, depends_on=[b_id, c_id])
    assert c.wait(b_id, timeout=15).status == "completed"
    assert c.status(a_id).status == "waiting"
    assert c.purge(status="completed") == 1
    gate.touch()
    assert c.wait(c_id, timeout=15).status == "completed"
    job = c.wait(a_id, timeout=15)
    assert job.status == "completed", job


def test_a_batch_of_plain_jobs_has_every_check_of_submit_many(make_daemon):
    """A batch whose every job has only handler/args/kwargs/job_id takes a
    shorter path: the same checks, all before anything is queued."""
    d = make_daemon(workers=0, config='[queue]\nmax_size = 5\n[queues.small]\nworkers = 0\n'
                                      'max_size = 2\n[handler."jobd_testhandlers.noop"]\n'
                                      'queue = "small"\n')
    q = d.client()
    q.submit(ADD, args=[1, 2], job_id="existing")
    bad_batches = [
        ([{"handler": ADD, "args": [1, 1]}, {"handler": T + "nope"}], "unknown_handler", "nope"),
        ([{"handler": ADD, "args": [1, 1]}, {"handler": ADD, "args": [1]}], "invalid_argument", "b"),
        ([{"handler": ADD, "args": [1, 1]}, {"handler": ADD, "args": "x"}], "invalid_argument",
         "jobs[1].args"),
        ([{"handler": ADD, "args": [1, 1], "job_id": "d"}, {"handler": ADD, "args": [2, 2], "job_id": "d"}],
         "invalid_argument", "duplicate"),
        ([{"handler": ADD, "args": [i, i]} for i in range(5)], "queue_full", "5 jobs"),
        ([{"handler": T + "noop"} for _ in range(3)], "queue_full", "'small'"),
    ]
    for jobs, code, words in bad_batches:
        with pytest.raises(JobdError) as info:
            q.call("submit_many", jobs=jobs)
        assert info.value.code == code and words in info.value.message, (jobs, info.value)
        assert q.list().total == 1, f"a rejected batch queued jobs: {jobs}"
    ids = q.submit_many([{"handler": ADD, "args": [1, 1]}, {"handler": ADD, "args": [9, 9],
                          "job_id": "existing"}, {"handler": T + "noop", "job_id": "n/1"}])
    assert ids[1:] == ["existing", "n/1"] and q.list().total == 3
    assert q.status("existing").args == [1, 2]        # a resubmit: the original job
    assert q.status("n/1").queue == "small" and q.status(ids[0]).status == "pending"

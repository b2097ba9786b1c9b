"""The client's flow-control methods: what each sends (no daemon), then
`pause`, `resume`, `queues`, `handlers`, `submit(queue=...)`, `list(queue=...)`
and `scale(queue=...)` through the real daemon, blocking and asyncio.

The bulk methods (`cancel_many`, `retry_many`, the filters of `purge`,
`replay`, unique keys) are exercised against the daemon in
tests/test_client_bulk.py; here only their requests are checked.
"""
from __future__ import annotations

import os

import pytest
from conftest import DaemonProc, T, wait_until

from jobd_client import AsyncClient, Client, InvalidArgument, Job, NotFound
from jobd_client import _requests as rq
from jobd_client import protocol as P

QUEUES_CONFIG = """
[queues.slow]
workers = 1
max_size = 50
"""
ENVELOPE = {"id": 1, "ok": True}


# --- requests (no daemon) ----------------------------------------------------------------------

def test_new_op_names_are_in_the_protocol_module() -> None:
    names = (P.OP_PAUSE, P.OP_RESUME, P.OP_QUEUES, P.OP_CANCEL_MANY, P.OP_RETRY_MANY, P.OP_REPLAY)
    assert names == ("pause", "resume", "queues", "cancel_many", "retry_many", "replay")
    assert set(names) <= P.OPS
    assert P.ON_CONFLICT == ("return", "error", "replace")


def test_pause_sends_for_and_returns_the_paused_view() -> None:
    call = rq.pause("default", None, 30, "deploy")
    assert (call.op, call.args) == ("pause", {"queue": "default", "for": 30, "reason": "deploy"})
    assert rq.pause(None, "h", None, None).args == {"handler": "h"}
    paused = {"queue": "default", "since": "x", "until": None, "reason": None, "by_uid": 0}
    assert call.decode({**ENVELOPE, "paused": paused}) == paused


def test_resume_queues_handlers_requests() -> None:
    resume = rq.resume(None, "h")
    assert (resume.op, resume.args) == ("resume", {"handler": "h"})
    assert resume.decode({**ENVELOPE, "resumed": True}) is True
    assert resume.decode({**ENVELOPE, "resumed": False}) is False
    queues = rq.queues()
    assert (queues.op, queues.args) == ("queues", {})
    assert queues.decode({**ENVELOPE, "queues": [{"name": "default"}]}) == [{"name": "default"}]
    assert queues.decode({**ENVELOPE}) == []
    assert rq.handlers().decode({**ENVELOPE, "handlers": [{"name": "h"}]}) == [{"name": "h"}]


def test_cancel_many_and_retry_many_send_the_filter_at_the_top_level() -> None:
    call = rq.cancel_many(["failed", "dead_letter"], {"queue": "q", "tag": "k=v", "ids": ["a"]},
                          False, True)
    assert call.op == "cancel_many"
    assert call.args == {"status": ["failed", "dead_letter"], "queue": "q", "tag": "k=v",
                         "ids": ["a"], "force": False, "dry_run": True}
    reply = {"matched": 3, "cancelled": 2, "sample": ["a", "b", "c"]}
    assert call.decode({**ENVELOPE, **reply}) == reply
    call = rq.retry_many("failed", {"created_before": "2026-01-01T00:00:00Z",
                                    "created_after": "2025-01-01T00:00:00Z",
                                    "error_match": "timeout", "handler": "h"}, False)
    assert (call.op, call.args) == ("retry_many", {
        "status": "failed", "created_before": "2026-01-01T00:00:00Z",
        "created_after": "2025-01-01T00:00:00Z", "error_match": "timeout", "handler": "h",
        "dry_run": False})


def test_all_is_sent_only_when_true_and_nothing_else_is_added() -> None:
    assert rq.cancel_many(None, {"all": True}, True, False).args == {
        "all": True, "force": True, "dry_run": False}
    assert rq.retry_many(None, {"all": False}, False).args == {"dry_run": False}
    assert rq.retry_many(None, {}, True).args == {"dry_run": True}    # the daemon refuses it


def test_a_misspelt_filter_field_raises_before_sending() -> None:
    with pytest.raises(TypeError, match="unknown filter field 'stauts'"):
        rq.cancel_many(None, {"stauts": "failed"}, False, False)  # type: ignore[typeddict-unknown-key]
    with pytest.raises(TypeError, match="known: status, all, created_after"):
        rq.purge(None, None, {"older": 5})  # type: ignore[typeddict-unknown-key]


def test_purge_keeps_its_old_arguments_and_takes_the_filter() -> None:
    assert rq.purge(None, None).args == {}
    assert rq.purge("completed", 60).args == {"status": "completed", "older_than": 60}
    call = rq.purge(["completed", "failed"], None, {"queue": "slow", "handler": "h"})
    assert call.args == {"status": ["completed", "failed"], "queue": "slow", "handler": "h"}
    assert call.decode({**ENVELOPE, "purged": 4}) == 4


def test_replay_returns_the_new_job_id() -> None:
    call = rq.replay("j1", None, None, None, None, None)
    assert (call.op, call.args) == ("replay", {"job_id": "j1"})
    call = rq.replay("j1", [1], {"a": 2}, "high", "slow", 5)
    assert call.args == {"job_id": "j1", "args": [1], "kwargs": {"a": 2}, "priority": "high",
                         "queue": "slow", "delay": 5}
    assert call.decode({**ENVELOPE, "job_id": "j2", "status": "pending"}) == "j2"


def test_submit_options_for_queues_and_unique_keys() -> None:
    options = {"queue": "slow", "unique_key": "k", "unique_for": 60, "on_conflict": "replace"}
    call = rq.submit("h", None, None, options)
    assert {k: call.args[k] for k in options} == options and "job_id" in call.args
    many = rq.submit_many([{"handler": "h", "unique_key": "k", "queue": "slow"}])
    assert many.args["jobs"][0]["unique_key"] == "k" and many.args["jobs"][0]["queue"] == "slow"


def test_list_and_scale_take_a_queue() -> None:
    assert rq.list_jobs(None, None, None, 10, 0, "slow").args == {"queue": "slow", "limit": 10,
                                                                  "offset": 0}
    assert rq.scale(2).args == {"count": 2}
    assert rq.scale(2, "slow").args == {"count": 2, "queue": "slow"}


def test_which_new_ops_a_client_resends() -> None:
    assert {P.OP_QUEUES, P.OP_PAUSE} <= rq.RESENDABLE
    assert not {P.OP_RESUME, P.OP_CANCEL_MANY, P.OP_RETRY_MANY, P.OP_REPLAY} & rq.RESENDABLE


def test_job_tolerates_daemons_with_and_without_the_new_fields() -> None:
    old = Job.from_dict({"id": "a", "status": "pending"})
    assert (old.queue, old.held, old.unique_key, old.replay_of) == (None, None, None, None)
    held = {"reason": "queue_paused", "since": "2026-01-01T00:00:00.000000Z", "until": None}
    new = Job.from_dict({"id": "b", "queue": "slow", "held": held, "unique_key": "k",
                         "replay_of": "a", "breaker": {"later": True}})
    assert (new.queue, new.held, new.unique_key, new.replay_of) == ("slow", held, "k", "a")


# --- through the daemon ----------------------------------------------------------------------------

def test_pause_and_resume_a_queue(make_daemon) -> None:
    d: DaemonProc = make_daemon(workers=1)
    c = d.client()
    paused = c.pause(queue="default", reason="deploy")
    assert paused["queue"] == "default" and paused["reason"] == "deploy"
    assert paused["until"] is None and paused["by_uid"] == os.getuid() and paused["since"]
    job_id = c.submit(T + "add", [1, 2])
    job = c.status(job_id)
    assert job.status == "pending" and job.queue == "default" and job.attempts == 0
    assert job.held is not None and job.held["reason"] == "queue_paused"
    (queue,) = [q for q in c.queues() if q["name"] == "default"]
    assert queue["paused"]["reason"] == "deploy" and queue["held"] == 1
    assert c.resume(queue="default") is True
    assert c.resume(queue="default") is False
    done = c.wait(job_id, timeout=20)
    assert done.ok and done.result == 3 and done.held is None


def test_pause_a_handler_for_a_while_resumes_by_itself(make_daemon) -> None:
    d: DaemonProc = make_daemon(workers=1)
    c = d.client()
    paused = c.pause(handler=T + "add", for_s=0.5, reason="flaky API")
    assert paused["handler"] == T + "add" and paused["until"] is not None
    job_id = c.submit(T + "add", [2, 2])
    rows = {h["name"]: h for h in c.handlers()}
    assert rows[T + "add"]["state"] == "paused" and rows[T + "add"]["paused"]["reason"] == "flaky API"
    assert rows[T + "noop"]["state"] == "ok"
    assert c.wait(job_id, timeout=20).result == 4          # the pause ran out by itself
    wait_until(lambda: next(h for h in c.handlers() if h["name"] == T + "add")["state"] == "ok",
               what="the handler's state to be ok again")


def test_pausing_again_updates_the_reason_and_keeps_since(make_daemon) -> None:
    c = make_daemon(workers=0).client()
    first = c.pause(handler=T + "noop", for_s=100, reason="a")
    second = c.pause(handler=T + "noop", reason="b")
    assert second["since"] == first["since"] and second["until"] is None and second["reason"] == "b"


def test_pause_and_resume_errors(make_daemon) -> None:
    c = make_daemon(workers=0).client()
    with pytest.raises(InvalidArgument):
        c.pause()
    with pytest.raises(InvalidArgument):
        c.pause(queue="default", handler=T + "add")
    with pytest.raises(InvalidArgument):
        c.pause(queue="default", for_s=-1)
    with pytest.raises(NotFound):
        c.pause(queue="nope")
    with pytest.raises(NotFound):
        c.resume(queue="nope")
    with pytest.raises(NotFound):
        c.resume(handler="nope")
    assert all(q["paused"] is None for q in c.queues())    # nothing changed
    assert c.hello()["protocol"] == 1                      # the connection is still usable


def test_submit_to_a_named_queue_list_and_scale_it(make_daemon) -> None:
    d: DaemonProc = make_daemon(workers=1, config=QUEUES_CONFIG)
    c = d.client()
    job_id = c.submit(T + "add", [1, 1], queue="slow")
    other = c.submit(T + "add", [2, 2])
    assert c.wait(job_id, timeout=20).queue == "slow"
    assert c.wait(other, timeout=20).queue == "default"
    page = c.list(queue="slow")
    assert page.total == 1 and page.jobs[0].id == job_id
    assert c.scale(2, queue="slow") == {"previous": 1, "target": 2}
    queues = {q["name"]: q for q in c.queues()}
    assert set(queues) == {"default", "slow"}
    assert queues["slow"]["workers"] == 2 and queues["slow"]["max_size"] == 50
    assert queues["slow"]["completed"] == 1
    with pytest.raises(InvalidArgument, match="queue"):
        c.submit(T + "add", [1, 1], queue="nope")


async def test_async_pause_resume_queues_handlers(make_daemon) -> None:
    d: DaemonProc = make_daemon(workers=1, config=QUEUES_CONFIG)
    async with AsyncClient(d.socket) as c:
        paused = await c.pause(queue="slow", reason="maintenance", for_s=600)
        assert paused["queue"] == "slow" and paused["until"] is not None
        job_id = await c.submit(T + "add", [3, 4], queue="slow")
        job = await c.status(job_id)
        assert job.queue == "slow" and job.held is not None
        assert job.held["reason"] == "queue_paused" and job.held["until"] == paused["until"]
        queues = {q["name"]: q for q in await c.queues()}
        assert queues["slow"]["paused"]["reason"] == "maintenance" and queues["slow"]["held"] == 1
        assert queues["default"]["paused"] is None
        await c.pause(handler=T + "noop")
        rows = {h["name"]: h for h in await c.handlers()}
        assert rows[T + "noop"]["state"] == "paused" and rows[T + "add"]["held"] == 1
        assert await c.resume(handler=T + "noop") is True
        assert await c.resume(queue="slow") is True
        assert (await c.wait(job_id, timeout=20)).result == 7
        with pytest.raises(NotFound):
            await c.resume(queue="nope")
        assert await c.resume(queue="slow") is False


def test_a_client_made_before_the_pause_sees_it(daemon: DaemonProc) -> None:
    """Two clients, one daemon: the pause is the daemon's state, not the client's."""
    a, b = daemon.client(), Client(daemon.socket)
    try:
        a.pause(queue="default")
        job_id = b.submit(T + "noop")
        assert b.status(job_id).held is not None
        a.resume(queue="default")
        assert b.wait(job_id, timeout=20).ok
    finally:
        b.close()

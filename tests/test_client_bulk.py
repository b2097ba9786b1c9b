"""Bulk changes, replays and unique keys through the client and jobd-cli,
against the real daemon (docs/client.md, docs/cli.md).

Reply shapes: `cancel_many` → matched, cancelled, sample (up to 5 ids);
`retry_many` → matched, retried, sample; `replay` → job_id, status, the new
job's view has `replay_of`; a submit whose `unique_key` a live job holds
answers that job's id with `duplicate: true`.

Jobs are kept from starting by pausing their queue or handler, so no test
races a worker.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProc, T, wait_until

from jobd.cli import main
from jobd_client import (
    AsyncClient,
    Client,
    Conflict,
    InvalidArgument,
    NotFound,
)

QUEUES_CONFIG = """
[queues.slow]
workers = 1
"""
SAMPLE_MAX = 5


@pytest.fixture
def bulk_daemon(make_daemon: Callable[..., DaemonProc]) -> DaemonProc:
    return make_daemon(workers=1, config=QUEUES_CONFIG)


@pytest.fixture
def c(bulk_daemon: DaemonProc) -> Client:
    return bulk_daemon.client()


@pytest.fixture
def cli(bulk_daemon: DaemonProc, capsys: pytest.CaptureFixture[str]) -> Callable[..., Any]:
    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--socket", bulk_daemon.socket, *argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def statuses(c: Client, ids: list[str]) -> set[str | None]:
    return {c.status(job_id).status for job_id in ids}


def failed_jobs(c: Client, n: int, message: str = "bad input") -> list[str]:
    ids = [c.submit(T + "permanent", [f"{message} {i}"]) for i in range(n)]
    assert {job.status for job in c.wait_many(ids, timeout=20)} == {"failed"}
    return ids


def check_sample(reply: dict[str, Any], ids: list[str]) -> None:
    sample = reply["sample"]
    assert 0 < len(sample) <= SAMPLE_MAX and len(set(sample)) == len(sample)
    assert set(sample) <= set(ids)


def iso_between(before: str, after: str) -> str:
    """An ISO 8601 UTC time strictly between two of the daemon's timestamps."""
    a, b = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (before, after))
    assert a < b
    return (a + (b - a) / 2).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- cancel_many -----------------------------------------------------------------------------------

def test_cancel_many_counts_in_a_dry_run_then_cancels(c: Client) -> None:
    c.pause(queue="default")
    ids = [c.submit(T + "noop") for _ in range(8)]
    others = [c.submit(T + "add", [1, 1]) for _ in range(2)]
    dry = c.cancel_many(handler=T + "noop", dry_run=True)
    assert dry["matched"] == 8 and dry.get("cancelled", 0) == 0
    check_sample(dry, ids)
    assert statuses(c, ids) == {"pending"}                  # a dry run changes nothing
    done = c.cancel_many(handler=T + "noop")
    assert done["matched"] == 8 and done["cancelled"] == 8
    check_sample(done, ids)
    assert statuses(c, ids) == {"cancelled"} and statuses(c, others) == {"pending"}


def test_a_filter_with_no_field_needs_all(c: Client) -> None:
    c.pause(queue="default")
    ids = [c.submit(T + "noop") for _ in range(3)]
    with pytest.raises(InvalidArgument):
        c.cancel_many()
    with pytest.raises(InvalidArgument):
        c.retry_many(dry_run=True)
    assert statuses(c, ids) == {"pending"}
    assert c.cancel_many(all=True, dry_run=True)["matched"] == 3
    assert c.cancel_many(all=True)["cancelled"] == 3


def test_cancel_many_filters(c: Client) -> None:
    c.pause(queue="default")
    c.pause(queue="slow")
    tagged = [c.submit(T + "noop", tags={"batch": "a"}) for _ in range(3)]
    slow = [c.submit(T + "noop", queue="slow") for _ in range(2)]
    c.status(slow[-1])                                       # a round trip between the batches
    later = [c.submit(T + "add", [i, i]) for i in range(2)]
    assert c.cancel_many(tag="batch=a", dry_run=True)["matched"] == 3
    assert c.cancel_many(queue="slow", dry_run=True)["matched"] == 2
    assert c.cancel_many(ids=[tagged[0], later[1]], dry_run=True)["matched"] == 2
    assert c.cancel_many(status=["pending", "scheduled"], handler=T + "add",
                         dry_run=True)["matched"] == 2
    cut = iso_between(c.status(slow[-1]).created_at or "", c.status(later[0]).created_at or "")
    before = c.cancel_many(created_before=cut, dry_run=True)
    assert before["matched"] == 5 and set(before["sample"]) <= set(tagged + slow)
    after = c.cancel_many(created_after=cut, dry_run=True)
    assert after["matched"] == 2 and set(after["sample"]) == set(later)
    assert c.cancel_many(queue="slow", tag="batch=a", dry_run=True)["matched"] == 0
    assert statuses(c, tagged + slow + later) == {"pending"}


def test_cancel_many_asks_running_jobs_and_force_kills_them(c: Client, tmp_path: Path) -> None:
    started = tmp_path / "started"
    running = c.submit(T + "block", [str(started)])
    wait_until(started.exists, what="the job to run")
    soft = c.cancel_many(handler=T + "block")
    assert soft["matched"] == 1 and soft["cancelled"] == 0
    assert c.status(running).status == "running"
    hard = c.cancel_many(handler=T + "block", force=True)
    assert hard["cancelled"] == 1
    assert c.wait(running, timeout=20).status == "cancelled"


# --- retry_many ------------------------------------------------------------------------------------

def test_retry_many_counts_then_retries_failed_jobs(c: Client) -> None:
    failed = failed_jobs(c, 4)
    completed = c.submit(T + "add", [1, 1])
    assert c.wait(completed, timeout=20).ok
    c.pause(handler=T + "permanent")                         # retried jobs wait, held
    dry = c.retry_many(status="failed", dry_run=True)
    assert dry["matched"] == 4 and dry.get("retried", 0) == 0
    check_sample(dry, failed)
    assert statuses(c, failed) == {"failed"}
    done = c.retry_many(status="failed")
    assert done["matched"] == 4 and done["retried"] == 4
    jobs = [c.status(job_id) for job_id in failed]
    assert {job.status for job in jobs} == {"pending"} and {job.attempts for job in jobs} == {0}
    assert c.status(completed).status == "completed"        # retry never touches a completed job


def test_retry_many_by_error_text(c: Client) -> None:
    timeouts = failed_jobs(c, 2, "upstream timeout")
    failed_jobs(c, 3, "bad input")
    c.pause(handler=T + "permanent")
    reply = c.retry_many(error_match="upstream timeout")
    assert reply["matched"] == 2 and reply["retried"] == 2 and set(reply["sample"]) == set(timeouts)
    assert statuses(c, timeouts) == {"pending"}


# --- purge's filter ----------------------------------------------------------------------------------

def test_purge_takes_the_filter(c: Client) -> None:
    adds = [c.submit(T + "add", [i, 1]) for i in range(3)]
    noops = [c.submit(T + "noop") for _ in range(2)]
    c.wait_many(adds + noops, timeout=20)
    assert c.purge(status="completed", handler=T + "add") == 3
    for job_id in adds:
        with pytest.raises(NotFound):
            c.status(job_id)
    assert statuses(c, noops) == {"completed"}
    assert c.purge(ids=[noops[0]]) == 1
    assert c.purge(older_than=0) == 1                       # the old arguments still work


# --- replay ----------------------------------------------------------------------------------------------

def test_replay_makes_a_new_job_and_leaves_the_original(c: Client) -> None:
    original = c.submit(T + "add", [1, 2], tags={"k": "v"}, queue="slow")
    before = c.wait(original, timeout=20)
    new = c.replay(original)
    assert isinstance(new, str) and new != original
    job = c.wait(new, timeout=20)
    assert job.result == 3 and job.replay_of == original and job.queue == "slow"
    assert job.tags == {"k": "v"} and job.attempts == 1
    after = c.status(original)
    assert (after.status, after.attempts, after.replay_of) == ("completed", before.attempts, None)
    changed = c.replay(original, args=[5, 5], priority="high", queue="default")
    job = c.wait(changed, timeout=20)
    assert (job.result, job.priority, job.queue, job.replay_of) == (10, 20, "default", original)


def test_replay_refuses_a_job_that_has_not_ended(c: Client) -> None:
    c.pause(queue="default")
    pending = c.submit(T + "noop")
    with pytest.raises(Conflict):
        c.replay(pending)
    with pytest.raises(NotFound):
        c.replay("0" * 32)


def test_replay_emits_an_event(bulk_daemon: DaemonProc, c: Client) -> None:
    original = c.submit(T + "noop")
    c.wait(original, timeout=20)
    with bulk_daemon.client().watch(events=["job.replayed"]) as events:
        new = c.replay(original)
        event = next(events)
    assert event.event == "job.replayed" and event.job_id in (new, original)


# --- unique keys ----------------------------------------------------------------------------------------

def test_a_duplicate_submit_returns_the_holder(c: Client) -> None:
    c.pause(queue="default")
    first = c.call("submit", handler=T + "noop", unique_key="nightly-report")
    second = c.call("submit", handler=T + "noop", unique_key="nightly-report")
    assert second["duplicate"] is True and second["job_id"] == first["job_id"]
    assert not first.get("duplicate")
    assert c.submit(T + "noop", unique_key="nightly-report") == first["job_id"]
    assert c.status(first["job_id"]).unique_key == "nightly-report"
    assert c.list(handler=T + "noop").total == 1
    with pytest.raises(Conflict):
        c.submit(T + "noop", unique_key="nightly-report", on_conflict="error")
    c.cancel(first["job_id"])                                 # a terminal holder frees the key
    assert c.submit(T + "noop", unique_key="nightly-report") != first["job_id"]


def test_replace_cancels_a_holder_that_has_not_started(c: Client) -> None:
    c.pause(queue="default")
    holder = c.submit(T + "noop", unique_key="k")
    new = c.submit(T + "noop", unique_key="k", on_conflict="replace")
    assert new != holder and c.status(holder).status == "cancelled"
    assert c.status(new).unique_key == "k"


def test_submit_many_items_take_unique_keys_and_queues(c: Client) -> None:
    c.pause(queue="slow")
    ids = c.submit_many([{"handler": T + "noop", "queue": "slow", "unique_key": "a"},
                         {"handler": T + "noop", "queue": "slow", "unique_key": "b"}])
    jobs = [c.status(job_id) for job_id in ids]
    assert [(j.queue, j.unique_key) for j in jobs] == [("slow", "a"), ("slow", "b")]


# --- asyncio ----------------------------------------------------------------------------------------------

async def test_async_bulk_replay_and_unique(bulk_daemon: DaemonProc) -> None:
    async with AsyncClient(bulk_daemon.socket) as a:
        await a.pause(queue="slow")
        ids = [await a.submit(T + "noop", queue="slow") for _ in range(3)]
        dry = await a.cancel_many(queue="slow", dry_run=True)
        assert dry["matched"] == 3
        assert (await a.cancel_many(queue="slow"))["cancelled"] == 3
        retried = await a.retry_many(ids=ids)
        assert retried["retried"] == 3
        assert {(await a.status(i)).status for i in ids} == {"pending"}
        await a.resume(queue="slow")
        done = await a.wait_many(ids, timeout=20)
        new = await a.replay(ids[0])
        assert (await a.wait(new, timeout=20)).replay_of == ids[0] and done[0].ok
        key = await a.submit(T + "noop", queue="slow", unique_key="u", delay=600)
        assert await a.submit(T + "noop", unique_key="u") == key
        assert await a.purge(status="completed", queue="slow") == 4


# --- jobd-cli ---------------------------------------------------------------------------------------------

@pytest.fixture
def held(c: Client) -> Iterator[list[str]]:
    """Six pending noop jobs in the paused default queue."""
    c.pause(queue="default")
    yield [c.submit(T + "noop") for _ in range(6)]


def test_cli_cancel_all_is_a_dry_run_until_yes(cli: Callable[..., Any], c: Client,
                                               held: list[str]) -> None:
    code, out, _ = cli("cancel", "--all", "--handler", T + "noop")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "6 job(s) match, e.g.:"
    sample = [line.strip() for line in lines[1:-1]]
    assert 0 < len(sample) <= SAMPLE_MAX and set(sample) <= set(held)
    assert lines[-1] == "dry run: nothing was changed; re-run with --yes to cancel them"
    assert statuses(c, held) == {"pending"}
    code, out, _ = cli("--json", "cancel", "--all")             # no filter: all jobs
    reply = json.loads(out)
    assert code == 0 and reply["matched"] == 6 and set(reply["sample"]) <= set(held)
    code, out, _ = cli("cancel", "--all", "--handler", T + "noop", "--yes")
    assert code == 0 and out == "cancelled 6 of 6 matching job(s)\n"
    assert statuses(c, held) == {"cancelled"}
    code, out, _ = cli("cancel", "--all", "--handler", T + "noop", "--status", "pending")
    assert code == 0 and out == "no job matches: nothing to cancel\n"


def test_cli_retry_all_and_replay(cli: Callable[..., Any], c: Client) -> None:
    failed = failed_jobs(c, 3)
    c.pause(handler=T + "permanent")
    code, out, _ = cli("retry", "--all", "--status", "failed", "--error-match", "bad input")
    assert code == 0 and out.splitlines()[0] == "3 job(s) match, e.g.:"
    code, out, _ = cli("retry", "--all", "--status", "failed", "--yes")
    assert code == 0 and out == "retried 3 of 3 matching job(s)\n"
    assert statuses(c, failed) == {"pending"}
    done = c.submit(T + "add", [2, 2])
    c.wait(done, timeout=20)
    code, out, _ = cli("replay", done)
    new = out.strip()
    assert code == 0 and new and new != done and len(out.splitlines()) == 1
    assert c.wait(new, timeout=20).replay_of == done
    code, out, _ = cli("--json", "replay", done, "--args", "[3, 3]")
    assert code == 0 and c.wait(json.loads(out)["job_id"], timeout=20).result == 6
    code, _, err = cli("replay", failed[0])                     # pending again: not ended
    assert code == 1 and err.startswith("error: conflict: ")


def test_cli_submit_unique_key(cli: Callable[..., Any], c: Client) -> None:
    c.pause(queue="default")
    code, out, err = cli("submit", T + "noop", "--unique-key", "daily")
    first = out.strip()
    assert code == 0 and err == ""
    code, out, err = cli("submit", T + "noop", "--unique-key", "daily")
    assert code == 0 and out.strip() == first
    assert err == f"no new job: {first} (pending) holds unique key 'daily'\n"
    code, out, _ = cli("--json", "submit", T + "noop", "--unique-key", "daily")
    assert json.loads(out)["duplicate"] is True and json.loads(out)["job_id"] == first
    code, _, err = cli("submit", T + "noop", "--unique-key", "daily", "--on-conflict", "error")
    assert code == 1 and err.startswith("error: conflict: ")
    assert c.status(first).unique_key == "daily"

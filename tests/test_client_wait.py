"""`wait` and `wait_many`: the jobs once terminal, WaitTimeout when not in time.

Against the in-memory fake daemon (its parked `result` waits show the client
pipelines instead of polling), then against the real daemon.
"""
from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProc, T
from test_client_unit import Conn, FakeDaemon

import jobd_client
from jobd_client import AsyncClient, Client, JobdError, NotFound, WaitTimeout
from jobd_client import _requests as rq

WAIT_S = 10.0


class EndingFake(FakeDaemon):
    """A fake whose `status` can first complete a job: the job ends between the
    client's last `result` reply and its `status` request."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.end_on_status: dict[str, Any] = {}

    def op_status(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        job_id = msg["job_id"]
        if job_id in self.end_on_status:
            self.complete(job_id, self.end_on_status.pop(job_id))
        return super().op_status(conn, msg)


@pytest.fixture
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EndingFake]:
    daemon = EndingFake(str(tmp_path_factory.mktemp("wait", numbered=True) / "s.sock"))
    yield daemon
    if os.path.exists(daemon.path):
        daemon.stop()


@pytest.fixture
def client(fake: EndingFake) -> Iterator[Client]:
    with Client(fake.path, timeout=WAIT_S) as c:
        yield c


def in_background(fn: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=fn)
    thread.start()
    return thread


def complete_once_parked(fake: FakeDaemon, results: dict[str, Any]) -> Callable[[], None]:
    """Complete the jobs once the client has a `result` wait parked for each."""
    def run() -> None:
        fake.wait_for(lambda: {p[2] for p in fake.parked} >= set(results))
        for job_id, value in results.items():
            fake.complete(job_id, value)
    return run


# --- WaitTimeout ---------------------------------------------------------------------------

def test_wait_timeout_is_a_jobd_error_and_a_timeout_error_exported_by_the_package() -> None:
    assert jobd_client.WaitTimeout is WaitTimeout
    assert issubclass(WaitTimeout, JobdError) and issubclass(WaitTimeout, TimeoutError)
    assert "WaitTimeout" in jobd_client.__all__


def test_wait_raises_wait_timeout_with_the_last_view(client: Client, fake: EndingFake) -> None:
    job_id = client.submit("h", args=[1])
    with pytest.raises(WaitTimeout) as info:
        client.wait(job_id, timeout=0)
    exc = info.value
    assert exc.job.id == job_id and exc.job.status == "pending" and exc.job.args == [1]
    assert exc.jobs == [exc.job] and exc.code == "wait_timeout"
    assert f"job {job_id} is still pending after 0 s" in str(exc)
    with pytest.raises(TimeoutError):          # callers that catch any timeout see it too
        client.wait(job_id, timeout=0)


def test_wait_returns_a_job_that_ended_after_its_last_result_reply(client: Client,
                                                                   fake: EndingFake) -> None:
    """The `result` reply said pending, the view says completed: the job is
    returned with the result it now has, not as a timeout or without it."""
    job_id = client.submit("h")
    fake.end_on_status[job_id] = {"late": True}
    job = client.wait(job_id, timeout=0)
    assert job.ok and job.result == {"late": True}


# --- wait_many -------------------------------------------------------------------------------

def test_wait_many_pipelines_one_result_wait_per_job(client: Client, fake: EndingFake) -> None:
    ids = [client.submit("h", job_id=f"j{i}") for i in range(5)]
    helper = in_background(complete_once_parked(fake, {i: i.upper() for i in reversed(ids)}))
    jobs = client.wait_many(ids, timeout=WAIT_S)
    helper.join()
    assert [j.id for j in jobs] == ids and [j.result for j in jobs] == [i.upper() for i in ids]
    assert all(j.ok for j in jobs)
    # All five waits were parked at once (the helper waited for that), each sent
    # once: no polling. Then one status per job for the full view.
    assert len(fake.ops("result")) == 5 and len(fake.ops("status")) == 5
    assert all(r["wait"] == pytest.approx(WAIT_S, abs=1) for r in fake.ops("result"))
    assert fake.accepted == 1


def test_wait_many_timeout_names_the_first_unfinished_and_keeps_every_view(
        client: Client, fake: EndingFake) -> None:
    ids = [client.submit("h", job_id=n) for n in ("a", "b", "c")]
    fake.complete("a", 1)
    fake.complete("c", 3)
    with pytest.raises(WaitTimeout) as info:
        client.wait_many(ids, timeout=0)
    exc = info.value
    assert exc.job.id == "b" and exc.job.status == "pending"
    assert [(j.id, j.status, j.result) for j in exc.jobs] == [
        ("a", "completed", 1), ("b", "pending", None), ("c", "completed", 3)]
    assert "1 of 3 jobs not finished after 0 s; the first, b, is pending" in str(exc)


def test_wait_many_keeps_order_and_duplicates_and_accepts_no_ids(client: Client,
                                                                 fake: EndingFake) -> None:
    for name in ("x", "y"):
        client.submit("h", job_id=name)
        fake.complete(name, name * 2)
    jobs = client.wait_many(["y", "x", "y"], timeout=WAIT_S)
    assert [(j.id, j.result) for j in jobs] == [("y", "yy"), ("x", "xx"), ("y", "yy")]
    assert len(fake.ops("result")) == 2            # one per distinct job
    assert client.wait_many([]) == []


def test_wait_many_sends_at_most_a_window_at_a_time(client: Client, fake: EndingFake,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rq, "WINDOW", 4)
    ids = [client.submit("h", job_id=f"j{i}") for i in range(10)]
    for job_id in ids:
        fake.complete(job_id, job_id)
    assert [j.result for j in client.wait_many(ids, timeout=WAIT_S)] == ids
    assert len(fake.ops("result")) == 10 and len(fake.ops("status")) == 10


def test_wait_many_unknown_job_raises_not_found_and_drops_parked_waits(
        client: Client, fake: EndingFake) -> None:
    client.submit("h", job_id="parked")
    with pytest.raises(NotFound):
        client.wait_many(["parked", "missing"], timeout=WAIT_S)
    # The wait for "parked" was cut off with its connection, so its late reply
    # cannot answer a later call; the client reconnects.
    assert client.hello()["protocol"] == 1
    assert fake.accepted == 2
    with pytest.raises(NotFound):
        client.wait("missing", timeout=1)


# --- async ------------------------------------------------------------------------------------

async def test_async_wait_raises_wait_timeout(fake: EndingFake) -> None:
    async with AsyncClient(fake.path) as c:
        job_id = await c.submit("h")
        with pytest.raises(WaitTimeout) as info:
            await c.wait(job_id, timeout=0)
        assert info.value.job.id == job_id and not info.value.job.done


async def test_async_wait_many(fake: EndingFake) -> None:
    async with AsyncClient(fake.path) as c:
        ids = [await c.submit("h", job_id=f"j{i}") for i in range(3)]
        finish = complete_once_parked(fake, {i: i for i in ids})
        jobs, _ = await asyncio.gather(c.wait_many(ids, timeout=WAIT_S), asyncio.to_thread(finish))
        assert [(j.id, j.result) for j in jobs] == [(i, i) for i in ids]
        assert len(fake.ops("result")) == 3
        with pytest.raises(WaitTimeout) as info:
            await c.wait_many([*ids, await c.submit("h", job_id="open")], timeout=0)
        assert info.value.job.id == "open" and [j.id for j in info.value.jobs] == [*ids, "open"]
        with pytest.raises(NotFound):
            await c.wait_many(["j0", "missing"], timeout=WAIT_S)


# --- the real daemon ---------------------------------------------------------------------------

def test_wait_and_wait_many_against_the_daemon(make_daemon: Callable[..., DaemonProc],
                                               tmp_path: Path) -> None:
    d = make_daemon(workers=2)
    c = d.client(timeout=WAIT_S)
    gate = tmp_path / "gate"
    held = [c.submit(T + "wait_file_then", args=[str(gate), str(tmp_path / "started"), n])
            for n in range(3)]
    with pytest.raises(WaitTimeout) as info:
        c.wait(held[0], timeout=0.2)
    assert info.value.job.status in ("pending", "running")
    with pytest.raises(WaitTimeout) as many:
        c.wait_many(held, timeout=0.2)
    assert [j.id for j in many.value.jobs] == held and not many.value.job.done
    gate.touch()
    jobs = c.wait_many(held, timeout=30)
    assert [(j.status, j.result) for j in jobs] == [("completed", n) for n in range(3)]
    assert c.wait(c.submit(T + "add", args=[2, 3]), timeout=30).result == 5

"""jobd_client against an in-memory fake daemon on a real Unix socket.

The fake speaks the wire protocol (docs/protocol.md) from a thread per connection, so
the blocking and the asyncio client are exercised on identical bytes. Tests
synchronise on the fake's condition variable, never on sleeps.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import jobd_client
from jobd_client import (
    AsyncClient,
    Client,
    DaemonUnavailable,
    Event,
    InvalidArgument,
    Job,
    JobdError,
    NotFound,
    Page,
    RequestTooLarge,
    UnknownOp,
    default_socket_path,
)
from jobd_client import _requests as rq
from jobd_client import protocol as P
from jobd_client.errors import ERRORS, error_from_reply

TERMINAL = {"completed", "failed", "cancelled", "dead_letter"}
WAIT_S = 10.0  # upper bound for a condition that should hold almost at once


class FakeError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Conn:
    """One accepted connection: buffered reads, writes serialised by a lock."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rfile = sock.makefile("rb")
        self.lock = threading.Lock()

    def send(self, msg: dict[str, Any]) -> None:
        # A client that went away does not bother the fake.
        with self.lock, contextlib.suppress(OSError):
            self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def kill(self) -> None:
        """Drop the connection as a crashing daemon would."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class FakeDaemon:
    """Just enough of jobd: jobs in a dict, parked `result` waits, watchers."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.cond = threading.Condition()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.results: dict[str, Any] = {}
        self.requests: list[dict[str, Any]] = []
        self.drop_once: set[str] = set()      # ops answered by closing the connection, once
        self.batch: list[tuple[Conn, dict[str, Any]]] | None = None
        self.batch_size = 0                   # replies held, then sent in reverse order
        self.parked: list[tuple[Conn, Any, str]] = []
        self.watchers: list[tuple[Conn, Any]] = []
        self.conns: list[Conn] = []
        self.accepted = 0
        self.timers: list[threading.Timer] = []
        self.threads: list[threading.Thread] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(16)
        self._spawn(self._accept_loop)

    # --- plumbing ------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # listener shut down
            conn = Conn(sock)
            with self.cond:
                self.conns.append(conn)
                self.accepted += 1
                self.cond.notify_all()
            self._spawn(self._serve, conn)

    def _serve(self, conn: Conn) -> None:
        try:
            for line in iter(conn.rfile.readline, b""):
                self._handle(conn, json.loads(line))
        except (OSError, ValueError):
            pass
        finally:
            with self.cond:
                self.conns.remove(conn)
                self.watchers = [w for w in self.watchers if w[0] is not conn]
                self.cond.notify_all()
            conn.rfile.close()
            conn.sock.close()

    def _handle(self, conn: Conn, msg: dict[str, Any]) -> None:
        with self.cond:
            self.requests.append(msg)
            self.cond.notify_all()
            op = msg.get("op")
            if op in self.drop_once:
                self.drop_once.discard(op)
                conn.kill()
                return
            reply = self._reply(conn, msg)
            if reply is not None:
                self._send(conn, reply)

    def _reply(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any] | None:
        handler = getattr(self, f"op_{msg.get('op')}", None)
        try:
            if handler is None:
                raise FakeError("unknown_op", f"unknown op {msg.get('op')!r}")
            body = handler(conn, msg)
        except FakeError as exc:
            return {"id": msg.get("id"), "ok": False,
                    "error": {"code": exc.code, "message": str(exc)}}
        return None if body is None else {"id": msg.get("id"), "ok": True, **body}

    def _send(self, conn: Conn, reply: dict[str, Any]) -> None:
        if self.batch is None:
            conn.send(reply)
            return
        self.batch.append((conn, reply))
        if len(self.batch) == self.batch_size:
            for held_conn, held in reversed(self.batch):
                held_conn.send(held)
            self.batch = None

    # --- test controls ---------------------------------------------------------

    def wait_for(self, predicate: Callable[[], Any]) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, WAIT_S), "condition not reached"

    def ops(self, op: str) -> list[dict[str, Any]]:
        with self.cond:
            return [r for r in self.requests if r.get("op") == op]

    def hold_replies(self, count: int) -> None:
        with self.cond:
            self.batch, self.batch_size = [], count

    def complete(self, job_id: str, result: Any) -> None:
        with self.cond:
            self.jobs[job_id]["status"] = "completed"
            self.results[job_id] = result
            self._release(job_id)
            self.emit("job.completed", {"job_id": job_id, "duration": 0.1})

    def emit(self, event: str, data: dict[str, Any]) -> None:
        with self.cond:
            for conn, watch_id in self.watchers:
                conn.send({"id": watch_id, "event": event, "data": data})

    def disconnect_all(self) -> None:
        with self.cond:
            killed = list(self.conns)
            for conn in killed:
                conn.kill()
            # Clients may already have reconnected: wait only for the killed ones.
            gone = self.cond.wait_for(lambda: not set(killed) & set(self.conns), WAIT_S)
            assert gone, "connections did not close"

    def stop(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.disconnect_all()
        for thread in self.threads:
            thread.join(WAIT_S)
        os.unlink(self.path)

    # --- ops ---------------------------------------------------------------------

    def _job(self, job_id: Any) -> dict[str, Any]:
        if job_id not in self.jobs:
            raise FakeError("not_found", f"no job {job_id}")
        return self.jobs[job_id]

    def _result_body(self, job_id: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        done = job["status"] in TERMINAL
        return {"job_id": job_id, "status": job["status"], "attempts": 1, "error": None,
                "result": self.results.get(job_id) if done else None,
                "duration": 0.1 if done else None, "completed_at": None}

    def _release(self, job_id: str) -> None:
        for entry in [p for p in self.parked if p[2] == job_id]:
            self.parked.remove(entry)
            entry[0].send({"id": entry[1], "ok": True, **self._result_body(job_id)})

    def op_hello(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        return {"version": "0.0-fake", "protocol": 1, "handlers": ["h"]}

    def op_submit(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        if msg.get("handler") != "h":
            raise FakeError("unknown_handler", f"unknown handler {msg.get('handler')!r}")
        if "priority" in msg and not isinstance(msg["priority"], int):
            raise FakeError("invalid_argument", "priority")
        job_id = msg["job_id"]
        fields = ("handler", "args", "kwargs", "tags")
        view: dict[str, Any] = {k: msg[k] for k in fields if k in msg}
        job = self.jobs.setdefault(job_id, {"id": job_id, "status": "pending", **view})
        return {"job_id": job_id, "status": job["status"]}

    def op_submit_many(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        return {"job_ids": [self.op_submit(conn, j)["job_id"] for j in msg["jobs"]]}

    def op_status(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        return {"job": {**self._job(msg["job_id"]), "added_later": True}}

    def op_progress(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        self._job(msg["job_id"])
        return {"progress": {"current": 1, "total": 2, "percentage": 50.0}}

    def op_result(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any] | None:
        job_id = msg["job_id"]
        if self._job(job_id)["status"] in TERMINAL or not msg.get("wait"):
            return self._result_body(job_id)
        self.parked.append((conn, msg["id"], job_id))  # answered by complete(), out of order
        return None

    def op_list(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        jobs = list(self.jobs.values())
        return {"jobs": jobs[msg.get("offset", 0):][:msg.get("limit", 100)], "total": len(jobs)}

    def op_cancel(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        self._job(msg["job_id"])["status"] = "cancelled"
        return {"cancelled": True, "status": "cancelled"}

    def op_metrics(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        if msg.get("format") == "prometheus":
            return {"text": "jobd_workers_total 2\n"}
        return {"metrics": {"uptime_s": 1.0}}

    def op_big(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        return {"blob": "x" * msg["size"]}

    def op_hang(self, conn: Conn, msg: dict[str, Any]) -> None:
        return None  # never answered

    def op_too_large(self, conn: Conn, msg: dict[str, Any]) -> None:
        # The daemon cannot read the id of a request it refused to parse.
        conn.send({"id": None, "ok": False,
                   "error": {"code": "request_too_large", "message": "line too long"}})
        conn.kill()
        return None

    def op_logs(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        self._job(msg["job_id"])
        text = "line one\nline two\n"[msg["offset"]:]
        return {"text": text, "offset": msg["offset"] + len(text), "truncated": False,
                "complete": False}

    def op_reload(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        return {"reloaded": True, "handlers_added": ["h2"], "handlers_removed": [], "error": None}

    def op_handlers(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        return {"handlers": [{"name": "h", "max_retries": 3}]}

    def op_watch(self, conn: Conn, msg: dict[str, Any]) -> dict[str, Any]:
        if msg.get("job_id") is not None:
            self._job(msg["job_id"])
        self.watchers.append((conn, msg["id"]))  # registered before the ack is sent
        return {}


# --- fixtures -----------------------------------------------------------------------

@pytest.fixture
def sock_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="jc-")  # short: AF_UNIX paths are limited to 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake(sock_dir: str) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(os.path.join(sock_dir, "jobd.sock"))
    yield daemon
    if os.path.exists(daemon.path):
        daemon.stop()


@pytest.fixture
def client(fake: FakeDaemon) -> Iterator[Client]:
    with Client(fake.path, timeout=WAIT_S) as c:
        yield c


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Block on the fake's condition without blocking the event loop."""
    return await asyncio.to_thread(fn)


# --- paths, errors, models ------------------------------------------------------------

@pytest.mark.parametrize(("env", "expected"), [
    ({"JOBD_SOCKET": "/x/s.sock", "RUNTIME_DIRECTORY": "/r"}, "/x/s.sock"),
    ({"RUNTIME_DIRECTORY": "/run/jobd:/run/other", "XDG_RUNTIME_DIR": "/u"}, "/run/jobd/jobd.sock"),
    ({"XDG_RUNTIME_DIR": "/run/user/7"}, "/run/user/7/jobd/jobd.sock"),
    ({}, f"/tmp/jobd-{os.getuid()}/jobd.sock"),
])
def test_default_socket_path(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                             expected: str) -> None:
    for name in ("JOBD_SOCKET", "RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_socket_path() == expected


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_error_from_reply_maps_every_code(code: str) -> None:
    exc = error_from_reply({"code": code, "message": "why"})
    assert type(exc) is ERRORS[code]
    assert exc.code == code and exc.message == "why"
    assert getattr(jobd_client, type(exc).__name__) is type(exc)


def test_error_from_reply_unknown_code_keeps_code() -> None:
    exc = error_from_reply({"code": "brand_new", "message": "m"})
    assert type(exc) is JobdError and exc.code == "brand_new"


def test_job_from_dict_ignores_unknown_keys_and_nulls() -> None:
    job = Job.from_dict({"id": "a", "status": "completed", "args": None, "new_field": 1})
    assert job.id == "a" and job.args == [] and job.tags == {}
    assert job.done and job.ok
    assert not Job.from_dict({"status": "running"}).done
    assert Job.from_dict({"status": "failed"}).done and not Job.from_dict({"status": "failed"}).ok


# --- sync client ----------------------------------------------------------------------

def test_missing_socket_raises_daemon_unavailable_naming_path(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "nothing.sock")
    with pytest.raises(DaemonUnavailable) as info:
        Client(path).hello()
    assert path in str(info.value) and info.value.code == "daemon_unavailable"


def test_hello_and_env_socket(fake: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBD_SOCKET", fake.path)
    with Client() as c:
        assert c.hello() == {"version": "0.0-fake", "protocol": 1, "handlers": ["h"]}


def test_submit_generates_job_id_and_omits_none(client: Client, fake: FakeDaemon) -> None:
    job_id = client.submit("h", args=[1], kwargs={"k": 2}, tags={"t": "1"})
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    sent = fake.ops("submit")[0]
    assert sent["job_id"] == job_id and "priority" not in sent and "delay" not in sent
    assert client.submit("h", job_id="mine", priority=5) == "mine"
    assert fake.ops("submit")[1]["priority"] == 5


def test_submit_many_fills_missing_job_ids(client: Client, fake: FakeDaemon) -> None:
    ids = client.submit_many([{"handler": "h", "job_id": "given"}, {"handler": "h", "args": [1]}])
    assert ids[0] == "given" and re.fullmatch(r"[0-9a-f]{32}", ids[1])
    assert [j["job_id"] for j in fake.ops("submit_many")[0]["jobs"]] == ids


def test_status_list_progress_cancel_metrics(client: Client) -> None:
    job_id = client.submit("h", args=["a"])
    job = client.status(job_id)
    assert isinstance(job, Job) and job.status == "pending" and job.args == ["a"]
    assert client.progress(job_id) == {"current": 1, "total": 2, "percentage": 50.0}
    page = client.list(limit=10)
    assert isinstance(page, Page) and page.total == 1 and page.jobs[0].id == job_id
    assert client.cancel(job_id) is True
    assert client.metrics() == {"uptime_s": 1.0}
    assert client.metrics(format="prometheus") == "jobd_workers_total 2\n"


def test_errors_raise_subclasses_and_connection_stays_usable(client: Client) -> None:
    with pytest.raises(NotFound) as info:
        client.status("missing")
    assert info.value.code == "not_found" and "missing" in info.value.message
    with pytest.raises(UnknownOp):
        client.call("nope")
    with pytest.raises(InvalidArgument):
        client.submit("h", priority="urgent")
    assert client.hello()["protocol"] == 1


def test_id_less_error_is_the_outstanding_requests(client: Client) -> None:
    with pytest.raises(RequestTooLarge):
        client.call("too_large")
    assert client.hello()["protocol"] == 1  # reconnected for the next call


def test_large_reply_line(client: Client) -> None:
    assert len(client.call("big", size=8 * 1024 * 1024)["blob"]) == 8 * 1024 * 1024


def test_wait_returns_job_with_result(client: Client, fake: FakeDaemon) -> None:
    job_id = client.submit("h")

    def finish() -> None:
        fake.wait_for(lambda: fake.parked)
        fake.complete(job_id, {"answer": 42})

    helper = threading.Thread(target=finish)
    helper.start()
    job = client.wait(job_id, timeout=WAIT_S)
    helper.join()
    assert job.done and job.ok and job.result == {"answer": 42}
    assert fake.ops("result")[0]["wait"] == pytest.approx(WAIT_S, abs=1)


def test_reconnects_and_resends_same_job_id(client: Client, fake: FakeDaemon) -> None:
    client.hello()
    fake.drop_once.add("submit")
    job_id = client.submit("h")
    sent = fake.ops("submit")
    assert len(sent) == 2 and sent[0] == sent[1] and sent[0]["job_id"] == job_id
    assert list(fake.jobs) == [job_id] and fake.accepted == 2


def test_reconnects_after_daemon_restart(fake: FakeDaemon) -> None:
    with Client(fake.path, timeout=WAIT_S) as c:
        c.hello()
        fake.stop()
        restarted = FakeDaemon(fake.path)
        try:
            assert c.hello()["protocol"] == 1
        finally:
            restarted.stop()
        with pytest.raises(DaemonUnavailable) as info:
            c.hello()
        assert fake.path in str(info.value)


def test_timeout_drops_connection(fake: FakeDaemon) -> None:
    with Client(fake.path, timeout=0.2) as c:
        with pytest.raises(TimeoutError):
            c.call("hang")
        assert c.hello()["protocol"] == 1  # the late reply cannot answer this call
    assert fake.accepted == 2


def test_watch_yields_events_on_its_own_connection(client: Client, fake: FakeDaemon) -> None:
    with client.watch(events=["job.completed"]) as stream:
        job_id = client.submit("h")  # main connection still usable
        fake.complete(job_id, 1)
        event = next(stream)
    assert event == Event("job.completed", {"job_id": job_id, "duration": 0.1})
    assert event.job_id == job_id
    assert fake.ops("watch")[0]["events"] == ["job.completed"]


def test_watch_close_from_other_thread_ends_iteration(client: Client, fake: FakeDaemon) -> None:
    stream = client.watch()
    seen: list[Event] = []
    cond = threading.Condition()

    def consume() -> None:
        for event in stream:
            with cond:
                seen.append(event)
                cond.notify_all()

    reader = threading.Thread(target=consume)
    reader.start()
    fake.emit("worker.started", {"job_id": None, "worker_id": 1})
    with cond:
        assert cond.wait_for(lambda: seen, WAIT_S)
    stream.close()  # wakes the reader blocked on the socket
    reader.join(WAIT_S)
    assert not reader.is_alive() and seen[0].event == "worker.started"


def test_watch_errors(client: Client, fake: FakeDaemon) -> None:
    with pytest.raises(NotFound):
        client.watch(job_id="missing")
    stream = client.watch()
    fake.disconnect_all()
    with pytest.raises(DaemonUnavailable):
        next(stream)


# --- async client ------------------------------------------------------------------------

async def test_async_missing_socket(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "nothing.sock")
    with pytest.raises(DaemonUnavailable, match=re.escape(path)):
        await AsyncClient.connect(path)


async def test_async_basic_ops_and_errors(fake: FakeDaemon) -> None:
    c = await AsyncClient.connect(fake.path)
    try:
        assert (await c.hello())["protocol"] == 1
        job_id = await c.submit("h", args=[1])
        assert (await c.status(job_id)).args == [1]
        assert (await c.list()).total == 1
        with pytest.raises(NotFound):
            await c.status("missing")
        assert await c.cancel(job_id) is True
    finally:
        await c.close()


async def test_async_pipelined_replies_matched_by_id(fake: FakeDaemon) -> None:
    async with AsyncClient(fake.path) as c:
        a, b = await c.submit("h", job_id="a"), await c.submit("h", job_id="b")
        fake.hold_replies(3)  # the fake answers these three in reverse order
        job_a, job_b, prog = await asyncio.gather(c.status(a), c.status(b), c.progress(a))
        assert (job_a.id, job_b.id, prog["current"]) == ("a", "b", 1)


async def test_async_result_wait_answers_after_later_request(fake: FakeDaemon) -> None:
    async with AsyncClient(fake.path) as c:
        job_id = await c.submit("h")
        waiting = asyncio.create_task(c.wait(job_id, timeout=WAIT_S))
        await in_thread(lambda: fake.wait_for(lambda: fake.parked))
        assert (await c.status(job_id)).status == "pending"  # answered before the wait
        fake.complete(job_id, "done")
        job = await waiting
        assert job.ok and job.result == "done"


async def test_async_many_tasks_share_one_connection(fake: FakeDaemon) -> None:
    async with AsyncClient(fake.path) as c:
        ids = await asyncio.gather(*(c.submit("h", args=[i]) for i in range(50)))
        jobs = await asyncio.gather(*(c.status(i) for i in ids))
        assert [j.args for j in jobs] == [[i] for i in range(50)]
    assert fake.accepted == 1


async def test_async_reconnects_and_resends(fake: FakeDaemon) -> None:
    async with AsyncClient(fake.path) as c:
        await c.hello()
        fake.drop_once.add("submit")
        job_id = await c.submit("h")
        sent = fake.ops("submit")
        assert len(sent) == 2 and sent[0] == sent[1] and list(fake.jobs) == [job_id]


async def test_async_in_flight_wait_is_resent_after_disconnect(fake: FakeDaemon) -> None:
    async with AsyncClient(fake.path) as c:
        job_id = await c.submit("h")
        waiting = asyncio.create_task(c.result(job_id, wait=WAIT_S))
        await in_thread(lambda: fake.wait_for(lambda: fake.parked))
        with fake.cond:
            fake.parked.clear()
        await in_thread(fake.disconnect_all)
        await in_thread(lambda: fake.wait_for(lambda: fake.parked))  # resent on a new connection
        fake.complete(job_id, [1, 2])
        assert (await waiting)["result"] == [1, 2]
        assert len(fake.ops("result")) == 2


async def test_async_reconnect_failure_raises(fake: FakeDaemon) -> None:
    async with AsyncClient(fake.path) as c:
        await c.hello()
        await in_thread(fake.stop)
        with pytest.raises(DaemonUnavailable, match=re.escape(fake.path)):
            await c.hello()


async def test_async_large_reply_line(fake: FakeDaemon) -> None:
    async with AsyncClient(fake.path) as c:
        reply = await c.call("big", size=20 * 1024 * 1024)
        assert len(reply["blob"]) == 20 * 1024 * 1024


async def test_async_watch(fake: FakeDaemon) -> None:
    async with AsyncClient(fake.path) as c:
        async with c.watch() as stream:
            job_id = await c.submit("h")
            fake.complete(job_id, None)
            event = await anext(stream)
        assert event == Event("job.completed", {"job_id": job_id, "duration": 0.1})
        with pytest.raises(NotFound):
            await c.watch(job_id="missing")


async def test_async_watch_aclose_ends_iteration(fake: FakeDaemon) -> None:
    async with AsyncClient(fake.path) as c:
        stream = await c.watch()
        first = asyncio.Event()

        async def consume() -> int:
            count = 0
            async for _ in stream:
                count += 1
                first.set()
            return count

        task = asyncio.create_task(consume())
        fake.emit("worker.started", {"job_id": None})
        await asyncio.wait_for(first.wait(), WAIT_S)
        await stream.aclose()  # the consumer, blocked on the next line, ends cleanly
        assert await asyncio.wait_for(task, WAIT_S) == 1


async def test_async_watch_lost_connection_raises(fake: FakeDaemon) -> None:
    async with AsyncClient(fake.path) as c:
        stream = await c.watch()
        await in_thread(fake.disconnect_all)
        with pytest.raises(DaemonUnavailable):
            await anext(stream)


@pytest.mark.parametrize("op, args", [
    ("retry", {"job_id": "x"}), ("purge", {}), ("cancel", {"job_id": "x"}),
    ("restart_worker", {"worker_id": 1}), ("schedule_remove", {"name": "n"}),
])
def test_an_op_that_is_not_safe_to_repeat_is_not_resent(client: Client, fake: FakeDaemon,
                                                          op: str, args: dict[str, Any]) -> None:
    """The connection dies after the request went out: it may have been applied,
    so the client says so instead of sending it a second time."""
    client.hello()
    fake.drop_once.add(op)
    with pytest.raises(DaemonUnavailable, match="may or may not have been applied"):
        client.call(op, **args)
    assert len(fake.ops(op)) == 1
    assert client.hello()["protocol"] == 1          # and the client reconnects for the next call


async def test_async_an_op_that_is_not_safe_to_repeat_is_not_resent(fake: FakeDaemon) -> None:
    async with AsyncClient(fake.path) as c:
        await c.hello()
        fake.drop_once.add("retry")
        with pytest.raises(DaemonUnavailable, match="may or may not have been applied"):
            await c.call("retry", job_id="x")
        assert len(fake.ops("retry")) == 1
        assert (await c.hello())["protocol"] == 1


def test_any_op_is_resent_when_the_daemon_restarted_while_idle(fake: FakeDaemon) -> None:
    """A connection found dead when sending: nothing reached a daemon, so even a
    `retry` goes out again on a fresh connection."""
    with Client(fake.path, timeout=WAIT_S) as c:
        c.hello()
        fake.stop()
        restarted = FakeDaemon(fake.path)
        try:
            with pytest.raises(UnknownOp):   # the fake has no purge: it answers, so it got it
                c.call("purge")
            assert len(restarted.ops("purge")) == 1
        finally:
            restarted.stop()


# --- logs, reload, handlers -------------------------------------------------------------

def test_new_op_names_are_in_the_protocol_module() -> None:
    assert (P.OP_LOGS, P.OP_RELOAD, P.OP_HANDLERS) == ("logs", "reload", "handlers")
    assert {P.OP_LOGS, P.OP_RELOAD, P.OP_HANDLERS} <= P.OPS


def test_requests_for_logs_reload_handlers() -> None:
    """What each method sends, and what it makes of the reply (no daemon needed)."""
    logs = rq.logs("j1", 7)
    assert (logs.op, logs.args) == ("logs", {"job_id": "j1", "offset": 7})
    assert rq.logs("j1").args == {"job_id": "j1", "offset": 0}
    reply = {"id": 3, "ok": True, "text": "hi\n", "offset": 10, "truncated": True, "complete": True}
    assert logs.decode(reply) == {"text": "hi\n", "offset": 10, "truncated": True, "complete": True}
    reload = rq.reload()
    assert (reload.op, reload.args) == ("reload", {})
    body = {"reloaded": False, "handlers_added": [], "handlers_removed": [], "error": "boom"}
    assert reload.decode({"id": 1, "ok": True, **body}) == body
    handlers = rq.handlers()
    assert (handlers.op, handlers.args) == ("handlers", {})
    assert handlers.decode({"id": 1, "ok": True, "handlers": [{"name": "h"}]}) == [{"name": "h"}]
    assert handlers.decode({"id": 1, "ok": True, "handlers": None}) == []


def test_logs_and_handlers_are_resendable_reload_is_not() -> None:
    assert {P.OP_LOGS, P.OP_HANDLERS} <= rq.RESENDABLE
    assert P.OP_RELOAD not in rq.RESENDABLE


def test_logs_reload_handlers_over_the_wire(client: Client, fake: FakeDaemon) -> None:
    job_id = client.submit("h")
    first = client.logs(job_id)
    assert first == {"text": "line one\nline two\n", "offset": 18, "truncated": False,
                     "complete": False}
    assert client.logs(job_id, offset=9)["text"] == "line two\n"
    assert fake.ops("logs")[1] == {"op": "logs", "id": fake.ops("logs")[1]["id"],
                                   "job_id": job_id, "offset": 9}
    with pytest.raises(NotFound):
        client.logs("missing")
    assert client.reload() == {"reloaded": True, "handlers_added": ["h2"],
                               "handlers_removed": [], "error": None}
    assert client.handlers() == [{"name": "h", "max_retries": 3}]


def test_logs_is_resent_after_a_lost_connection(client: Client, fake: FakeDaemon) -> None:
    job_id = client.submit("h")
    fake.drop_once.add("logs")
    assert client.logs(job_id)["offset"] == 18
    assert len(fake.ops("logs")) == 2


def test_reload_is_not_resent_after_a_lost_connection(client: Client, fake: FakeDaemon) -> None:
    client.hello()
    fake.drop_once.add("reload")
    with pytest.raises(DaemonUnavailable, match="may or may not have been applied"):
        client.reload()
    assert len(fake.ops("reload")) == 1


async def test_async_logs_reload_handlers(fake: FakeDaemon) -> None:
    async with AsyncClient(fake.path) as c:
        job_id = await c.submit("h")
        assert (await c.logs(job_id, 5))["text"] == "one\nline two\n"
        assert (await c.reload())["reloaded"] is True
        assert await c.handlers() == [{"name": "h", "max_retries": 3}]
        fake.drop_once.add("reload")
        with pytest.raises(DaemonUnavailable, match="may or may not have been applied"):
            await c.reload()

"""`GET /api/events` (Server-Sent Events) and the web process's lifecycle: one
shared upstream fanned out to many streams, resume by `Last-Event-ID`, slow
streams dropped, a stop that open streams cannot hold, and a daemon that
goes away and comes back (docs/web.md, "Events")."""
from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import DaemonProc, T
from webproc import WebProc

from jobd_client import AsyncClient

pytestmark = pytest.mark.timeout(120)
JOB_EVENTS = ("job.submitted", "job.started", "job.completed")
# Events enough to overflow a stream's buffer (10,000) past what the kernel holds for it.
STUCK_JOBS = 8000


class SSE:
    """One event stream read by a task: the numbered events in arrival order."""

    def __init__(self, http: httpx.AsyncClient, params: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.http = http
        self.params = params or {}
        self.headers = headers or {}
        self.events: list[tuple[int | None, str, dict[str, Any]]] = []
        self.opened = asyncio.Event()
        self.completed: set[str] = set()
        self.task = asyncio.ensure_future(self.read())

    async def read(self) -> None:
        async with self.http.stream("GET", "/api/events", params=self.params,
                                    headers=self.headers) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            buf = b""
            async for chunk in r.aiter_raw():
                self.opened.set()
                buf += chunk
                *frames, buf = buf.split(b"\n\n")
                for f in frames:
                    self.parse(f)

    def parse(self, text: bytes) -> None:
        seq: int | None = None
        name = ""
        data: dict[str, Any] = {}
        for line in text.split(b"\n"):
            key, _, value = line.partition(b": ")
            if key == b"id":
                seq = int(value)
            elif key == b"event":
                name = value.decode()
            elif key == b"data":
                data = orjson.loads(value)
        if name:
            self.events.append((seq, name, data))
            if name == "job.completed":
                self.completed.add(data["job_id"])

    def named(self, name: str) -> list[tuple[int | None, str, dict[str, Any]]]:
        return [e for e in self.events if e[1] == name]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def submit_jobs(socket_path: str, n: int, batch: int = 500) -> list[str]:
    async with AsyncClient(socket_path) as c:
        ids: list[str] = []
        for start in range(0, n, batch):
            ids += await c.submit_many([{"handler": T + "noop"} for _ in range(min(batch, n - start))])
        return ids


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[DaemonProc, WebProc]]:
    daemon = DaemonProc(tmp_path, workers=2).start()
    web = WebProc(tmp_path, daemon.socket).start()
    yield daemon, web
    web.cleanup()
    daemon.cleanup()


def limits(n: int) -> httpx.Limits:
    return httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)


async def test_50_streams_see_every_event_of_5000_jobs_in_order(stack: tuple[DaemonProc, WebProc]) -> None:
    daemon, web = stack
    async with web.async_http(limits=limits(50), timeout=httpx.Timeout(60)) as http:
        streams = [SSE(http, params={"events": ",".join(JOB_EVENTS)}) for _ in range(50)]
        await until(lambda: all(s.opened.is_set() for s in streams), 20, "50 streams open")
        ids = await submit_jobs(daemon.socket, 5000)
        await until(lambda: all(len(s.completed) == 5000 for s in streams), 90, "every completion")
        first = streams[0].events
        for s in streams:
            numbered = [e for e in s.events if e[0] is not None]
            assert numbered == [e for e in first if e[0] is not None]      # same events, same order
            seqs = [e[0] for e in numbered]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        by_job: dict[str, list[str]] = {}
        for _, name, data in first:
            by_job.setdefault(data["job_id"], []).append(name)
        assert all(by_job[i] == list(JOB_EVENTS) for i in ids)
        for s in streams:
            await s.close()


async def test_each_jobs_events_keep_the_daemons_order(tmp_path: Path) -> None:
    # Every kind of job event through one stream: a job's events arrive (and are
    # numbered) in the order the daemon emitted them, whatever their kind.
    # (No breaker: 300 failures in a row would hold the rest.)
    daemon = DaemonProc(tmp_path, workers=2, config="[breaker]\nbreaker_failures = 0\n").start()
    web = WebProc(tmp_path, daemon.socket).start()
    try:
        await check_order(daemon, web)
    finally:
        web.cleanup()
        daemon.cleanup()


async def check_order(daemon: DaemonProc, web: WebProc) -> None:
    async with web.async_http(limits=limits(2), timeout=httpx.Timeout(60)) as http:
        stream = SSE(http)
        await until(stream.opened.is_set, 20, "the stream")
        async with AsyncClient(daemon.socket) as c:
            failing = await c.submit_many([{"handler": T + "always_fail", "max_retries": 0}
                                           for _ in range(300)])
            fine = await c.submit_many([{"handler": T + "noop"} for _ in range(300)])
        await until(lambda: len(stream.named("job.dead_letter")) == 300 and len(stream.completed) == 300,
                    60, "every job's end")
        by_job: dict[str, list[str]] = {}
        for _, name, data in stream.events:
            if name.startswith("job."):
                by_job.setdefault(data["job_id"], []).append(name)
        for job_id in failing:
            assert by_job[job_id] == ["job.submitted", "job.started", "job.failed", "job.dead_letter"]
        for job_id in fine:
            assert by_job[job_id] == list(JOB_EVENTS)
        await stream.close()


async def test_a_stream_that_never_reads_is_dropped(stack: tuple[DaemonProc, WebProc]) -> None:
    daemon, web = stack
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)     # nothing read, little buffered
    host, port = web.url.removeprefix("http://").rsplit(":", 1)
    stuck.connect((host, int(port)))
    stuck.sendall(f"GET /api/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    async with web.async_http(limits=limits(2), timeout=httpx.Timeout(60)) as http:
        reader = SSE(http)
        await until(reader.opened.is_set, 20, "the reading stream")
        rss_before = web.rss_bytes()
        started = time.monotonic()
        await submit_jobs(daemon.socket, STUCK_JOBS)
        await until(lambda: len(reader.completed) == STUCK_JOBS, 90, "every completion on the reader")
        took = time.monotonic() - started
        rss_growth = web.rss_bytes() - rss_before
        await reader.close()
        last = max(e[0] for e in reader.events if e[0] is not None)
        # Resume: inside the ring the missed events come back; beyond it, a resync.
        recent = SSE(http, headers={"Last-Event-ID": str(last - 5)}, params={"events": "job.completed"})
        await until(lambda: len(recent.events) >= 1, 10, "the resumed events")
        await until(lambda: any(e[0] == last for e in recent.events), 10, "the last event again")
        assert all(e[0] is not None and e[0] > last - 5 for e in recent.events if e[1] != "stats")
        await recent.close()
        old = SSE(http, headers={"Last-Event-ID": "1"})
        await until(lambda: bool(old.events), 10, "a resync")
        assert old.events[0][1] == "resync"
        await old.close()
    stuck.settimeout(20)
    assert drained_to_eof(stuck), "the stuck stream was not closed by the server"
    stuck.close()
    assert rss_growth < 64 * 1024 * 1024, rss_growth
    assert "event stream dropped" in web.log()
    assert "Traceback" not in web.log() and "ERROR" not in web.log()
    print(f"{STUCK_JOBS} jobs with a stuck stream: {took:.1f}s, RSS growth {rss_growth / 1e6:.1f} MB")


def drained_to_eof(sock: socket.socket) -> bool:
    """Read what the server had sent until it closes (True) or the timeout (False)."""
    try:
        while sock.recv(1 << 20):
            pass
        return True
    except (TimeoutError, ConnectionResetError):
        return False


async def test_stop_within_2s_with_streams_open(stack: tuple[DaemonProc, WebProc]) -> None:
    _, web = stack
    async with web.async_http(limits=limits(10)) as http:
        streams = [SSE(http) for _ in range(10)]
        await until(lambda: all(s.opened.is_set() for s in streams), 20, "streams open")
        started = time.monotonic()
        assert web.stop(timeout=10) == 0
        took = time.monotonic() - started
        for s in streams:
            await s.close()
    assert took < 2.5, took


async def test_daemon_down_then_back_without_restarting_web(stack: tuple[DaemonProc, WebProc]) -> None:
    daemon, web = stack
    async with web.async_http(limits=limits(4)) as http:
        stream = SSE(http)
        await until(stream.opened.is_set, 20, "the stream")
        assert daemon.stop() == 0
        r = await http.get("/api/jobs")
        assert r.status_code == 502 and r.json()["error"]["code"] == "unavailable"
        assert "not running" in r.json()["error"]["message"] and r.headers["retry-after"] == "1"
        assert (await http.get("/")).status_code == 200                 # pages still serve
        daemon.start()
        deadline = time.monotonic() + 20
        while (await http.get("/api/jobs")).status_code != 200:
            assert time.monotonic() < deadline, "the API did not recover"
            await asyncio.sleep(0.05)
        await until(lambda: bool(stream.named("resync")), 20, "a resync after the reconnect")
        job = (await http.post("/api/jobs/submit", json={"handler": T + "add", "args": [1, 2]})).json()
        await until(lambda: job["job_id"] in stream.completed, 20, "events after the reconnect")
        resync = stream.named("resync")[0]
        assert resync[0] is not None                        # numbered: part of the sequence
        await stream.close()


def test_stats_events_are_pushed(stack: tuple[DaemonProc, WebProc]) -> None:
    _, web = stack
    with web.http() as http, http.stream("GET", "/api/events", params={"events": "stats"}) as r:
        buf = b""
        for chunk in r.iter_raw():
            buf += chunk
            if b"event: stats\ndata: " in buf and buf.endswith(b"\n\n"):
                break
    frame = buf[buf.index(b"event: stats"):].split(b"\n\n")[0]
    sample = orjson.loads(frame.split(b"data: ", 1)[1])
    assert sample["available"] is True and "counts" in sample and "workers" in sample
    assert b"id: " not in frame

"""`jobd web`: HTTP request rates and SSE fan-out through the web process.

A real daemon and a real `jobd web` process (`--listen 127.0.0.1:0`). The
HTTP client is a minimal keep-alive HTTP/1.1 client on raw asyncio streams, so
the figures are the web process's (and the daemon's), not a client library's:

- `submit`: `POST /api/jobs/submit` of a no-op job, daemon `--workers 0`
  (nothing runs) and `fsync=never` (the HTTP layer, not the disk), over one
  keep-alive connection (one request in flight) and over 16 (16 in flight);
- `status`: `GET /api/jobs/{id}/status` of those jobs, the same two ways;
- `sse fan-out`: 50 `GET /api/events` streams open, N no-op jobs submitted
  straight to the daemon (2 workers); the time until every stream has seen
  every job's `job.completed`, as events delivered per second (all streams)
  and per stream.

Run alone: `python -m bench.web [--quick]`; in the suite: `python -m bench --only web`.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import orjson

from bench.common import NOOP, REPO, Daemon, Rows, log, percentile, standalone
from jobd_client import AsyncClient

SCENARIO = "web"
CONCURRENT = 16
STREAMS = 50
URL_RE = re.compile(rb"serving http://([\d.]+):(\d+)/")


def sizes(quick: bool) -> dict[str, int]:
    return {"requests": 2_000, "jobs": 1_000} if quick else {"requests": 20_000, "jobs": 5_000}


class Web:
    """A `jobd web` subprocess against a daemon's socket."""

    def __init__(self, daemon: Daemon) -> None:
        self.log_path = os.path.join(daemon.root, "web.log")
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("JOBD_CONFIG", None)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobd", "web", "--listen", "127.0.0.1:0", "--socket", daemon.socket],
                cwd=REPO, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        self.host, self.port = self.wait_url()

    def wait_url(self, timeout: float = 60.0) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jobd web exited with {self.proc.returncode}: {self.text()[-2000:]}")
            found = URL_RE.search(self.text().encode())
            if found:
                return found.group(1).decode(), int(found.group(2))
            time.sleep(0.01)
        raise RuntimeError("jobd web did not print its URL")

    def text(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)

    def __enter__(self) -> Web:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HTTP:
    """One keep-alive HTTP/1.1 connection: a request, then its whole response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> HTTP:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, host)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
                "Content-Type: application/json\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line, _, rest = (await self.reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", rest).group(1))  # type: ignore[union-attr]
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def timed(conns: list[HTTP], requests: list[tuple[str, str, bytes]]) -> tuple[float, list[float],
                                                                                   list[bytes]]:
    """Spread `requests` over `conns` (each one request in flight): elapsed, latencies, bodies."""
    latencies: list[float] = []
    bodies: list[bytes] = [b""] * len(requests)
    next_index = iter(range(len(requests)))

    async def worker(c: HTTP) -> None:
        for i in next_index:
            t0 = time.perf_counter()
            status, body = await c.request(*requests[i])
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"{requests[i][:2]} answered {status}: {body[:300]!r}")
            bodies[i] = body
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    return time.perf_counter() - t0, latencies, bodies


async def request_rates(web: Web, n: int, rows: Rows) -> None:
    submit = orjson.dumps({"handler": NOOP})
    for conns_n in (1, CONCURRENT):
        conns = [await HTTP.open(web.host, web.port) for _ in range(conns_n)]
        try:
            elapsed, lat, bodies = await timed(conns, [("POST", "/api/jobs/submit", submit)] * n)
            record(rows, f"POST submit, {conns_n} keep-alive conn, fsync=never, N={n:,}", n, elapsed, lat)
            ids = [orjson.loads(b)["job_id"] for b in bodies]
            elapsed, lat, _ = await timed(conns, [("GET", f"/api/jobs/{i}/status", b"") for i in ids])
            record(rows, f"GET status, {conns_n} keep-alive conn, N={n:,}", n, elapsed, lat)
        finally:
            for c in conns:
                c.close()


def record(rows: Rows, params: str, n: int, elapsed: float, lat: list[float]) -> None:
    rows.add(SCENARIO, params, "requests/s", n / elapsed)
    rows.add(SCENARIO, params, "p50 latency ms", percentile(lat, 50) * 1e3)
    rows.add(SCENARIO, params, "p99 latency ms", percentile(lat, 99) * 1e3)
    log(f"web: {params}: {n / elapsed:,.0f} requests/s (p50 {percentile(lat, 50) * 1e3:.2f} ms)")


async def sse_reader(web: Web, jobs: int, opened: asyncio.Event, counts: list[int]) -> None:
    """One stream: count events until `jobs` completions were seen."""
    reader, writer = await asyncio.open_connection(web.host, web.port)
    writer.write(f"GET /api/events HTTP/1.1\r\nHost: {web.host}\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    opened.set()
    completed = events = 0
    tail = b""
    while completed < jobs:
        chunk = await reader.read(1 << 20)
        if not chunk:
            raise RuntimeError("event stream closed")
        data = tail + chunk
        completed += data.count(b"event: job.completed\n")
        events += data.count(b"\nevent: job.")
        tail = data[-40:]                           # a marker split across reads is not lost ...
        completed -= tail.count(b"event: job.completed\n")   # ... nor counted twice
        events -= tail.count(b"\nevent: job.")
    counts.append(events)
    writer.close()


async def fan_out(web: Web, daemon: Daemon, jobs: int, rows: Rows) -> None:
    opened = [asyncio.Event() for _ in range(STREAMS)]
    counts: list[int] = []
    readers = [asyncio.ensure_future(sse_reader(web, jobs, o, counts)) for o in opened]
    await asyncio.gather(*(o.wait() for o in opened))
    await asyncio.sleep(0.5)                         # the shared upstream connects
    async with AsyncClient(daemon.socket) as c:
        t0 = time.perf_counter()
        for start in range(0, jobs, 500):
            await c.submit_many([{"handler": NOOP}] * min(500, jobs - start))
        await asyncio.wait_for(asyncio.gather(*readers), 300)
        elapsed = time.perf_counter() - t0
    total = sum(counts)
    params = f"SSE fan-out, {STREAMS} streams, {jobs:,} jobs (2 workers)"
    rows.add(SCENARIO, params, "events delivered/s (all streams)", total / elapsed)
    rows.add(SCENARIO, params, "events/s per stream", total / elapsed / STREAMS)
    rows.add(SCENARIO, params, "s until every stream saw every job end", elapsed)
    log(f"web: {params}: {total / elapsed:,.0f} events/s delivered in {elapsed:.2f} s")


def run(args: argparse.Namespace) -> Rows:
    rows = Rows()
    n = sizes(args.quick)
    for rep in range(args.repeats):
        log(f"web rep {rep + 1}")
        with Daemon(workers=0, fsync="never", root=args.data_root) as d, Web(d) as web:
            asyncio.run(request_rates(web, n["requests"], rows))
        with Daemon(workers=2, fsync="never", root=args.data_root) as d, Web(d) as web:
            asyncio.run(fan_out(web, d, n["jobs"], rows))
    return rows


def main(argv: list[str] | None = None) -> None:
    standalone(__doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    main()

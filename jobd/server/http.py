"""`[monitoring] metrics_listen`: the Prometheus text over HTTP at /metrics.

A deliberately tiny HTTP/1.0-style responder on the daemon's loop (standard
library only): one request per connection, GET /metrics or 404. Bind it to
loopback (the default suggestion) unless the network is trusted.

Anyone who can reach the port can connect, including users the job socket
refuses, and each connection holds one of the daemon's file descriptors. So
at most `MAX_CLIENTS` are open at once (more are answered 503 and closed) and
each is aborted `CLIENT_TIMEOUT` seconds after it was accepted, whether it
never sent a whole request or never read the answer (docs/operations.md).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

log = logging.getLogger("jobd.http")

MAX_HEADER = 16 * 1024
MAX_CLIENTS = 8            # open connections; a scraper needs one
CLIENT_TIMEOUT = 5.0       # seconds from accept to gone, request and answer included
BACKLOG = 1024
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_listen(value: str) -> tuple[str, int]:
    """"127.0.0.1:9464" / "[::1]:9464" / ":9464" → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"metrics_listen must look like HOST:PORT, got {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class _Slots:
    """What the connections of one listener share: how many are open."""

    def __init__(self) -> None:
        self.open = 0


class _MetricsHTTP(asyncio.Protocol):
    def __init__(self, render: Callable[[], str], slots: _Slots) -> None:
        self.render = render
        self.slots = slots
        self.counted = False
        self.deadline: asyncio.TimerHandle | None = None
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        if self.slots.open >= MAX_CLIENTS:
            self._respond(503, "Service Unavailable", "too many connections\n")
            return
        self.slots.open += 1
        self.counted = True
        self.deadline = asyncio.get_running_loop().call_later(CLIENT_TIMEOUT, transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted:
            self.slots.open -= 1
            self.counted = False
        if self.deadline is not None:
            self.deadline.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return                      # answered already: one request per connection
        self.buf += data
        if b"\r\n\r\n" not in self.buf and b"\n\n" not in self.buf:
            if len(self.buf) > MAX_HEADER:
                self._respond(431, "Request Header Fields Too Large", "too large\n")
            return
        parts = self.buf.split(b"\r\n", 1)[0].split()
        method, path = (parts[0], parts[1]) if len(parts) >= 2 else (b"", b"")
        if method not in (b"GET", b"HEAD"):
            self._respond(405, "Method Not Allowed", "only GET\n")
        elif path.split(b"?", 1)[0] in (b"/metrics", b"/metrics/"):
            self._respond(200, "OK", self.render(), head=method == b"HEAD")
        else:
            self._respond(404, "Not Found", "try /metrics\n")

    def _respond(self, code: int, reason: str, body: str, head: bool = False) -> None:
        assert self.transport is not None
        payload = body.encode()
        header = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {CONTENT_TYPE}\r\n"
                  f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode()
        self.transport.write(header + (b"" if head else payload))
        self.transport.close()


async def serve(listen: str, render: Callable[[], str]) -> asyncio.AbstractServer:
    host, port = parse_listen(listen)
    loop = asyncio.get_running_loop()
    slots = _Slots()
    # A burst of connects must reach `accept` (and get its 503 or its slot),
    # not be refused by a full kernel queue: the default backlog is 100.
    server = await loop.create_server(lambda: _MetricsHTTP(render, slots), host, port,
                                      backlog=BACKLOG)
    log.info("metrics served over HTTP at http://%s:%d/metrics", host, port)
    return server

"""One upstream `watch` per web process, fanned out to every event stream.

The upstream is opened when the first stream (or the lanes view) asks, and
reopened with backoff when the daemon goes away. Each event gets this
process's next sequence number and is rendered once as an SSE frame; the
last `ring_size` frames stay in a ring so a stream that reconnects with
`Last-Event-ID` gets what it missed. A gap the ring cannot fill (too old, or
events lost while the upstream was down) is a `resync` frame: the client
reloads what it shows.

Each stream has its own bounded buffer. The hub never waits for a stream: a
stream whose buffer is full is marked dropped and let go (its connection is
closed), so a browser that stopped reading cannot slow the others nor make
this process grow.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from jobd_client import protocol as P
from jobd_client.aio import AsyncWatchStream
from jobd_client.errors import JobdError

log = logging.getLogger("jobd.web")

RING_SIZE = 10_000
STREAM_BUFFER = 10_000           # frames waiting for one stream before it is dropped
BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)
EV_RESYNC = "resync"
EV_STATS = "stats"
Listener = Callable[[str, dict[str, Any]], None]


def frame(name: str, data: Any, seq: int | None = None) -> bytes:
    """One SSE event: `id:` (when numbered), `event:`, `data:` (JSON, one line)."""
    head = b"id: %d\n" % seq if seq is not None else b""
    return head + b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class Stream:
    """What one SSE connection waits on: its frames, a wake-up, and whether it
    was dropped for falling behind."""

    __slots__ = ("frames", "names", "limit", "wake", "gone", "dropped")

    def __init__(self, names: frozenset[str] | None, limit: int) -> None:
        self.frames: deque[bytes] = deque()
        self.names = names
        self.limit = limit
        self.wake = asyncio.Event()
        self.gone = asyncio.Event()     # set when dropped: its writer is cancelled
        self.dropped = False

    def wants(self, name: str) -> bool:
        return self.names is None or name in self.names or name == EV_RESYNC

    def offer(self, data: bytes) -> None:
        if self.dropped:
            return
        if len(self.frames) >= self.limit:
            self.dropped = True          # fell behind: let it go rather than wait or grow
            self.frames.clear()
            self.gone.set()
        else:
            self.frames.append(data)
        self.wake.set()

    def take(self) -> bytes:
        """Every frame waiting, joined: one write for a burst."""
        out = b"".join(self.frames)
        self.frames.clear()
        self.wake.clear()
        return out


class Entry:
    __slots__ = ("seq", "name", "data")

    def __init__(self, seq: int, name: str, data: bytes) -> None:
        self.seq = seq
        self.name = name
        self.data = data


class EventHub:
    """The shared upstream, the ring, and the open streams."""

    def __init__(self, open_watch: Callable[[], AsyncWatchStream], ring_size: int = RING_SIZE,
                 stream_buffer: int = STREAM_BUFFER) -> None:
        self.open_watch = open_watch
        self.ring: deque[Entry] = deque(maxlen=ring_size)
        self.stream_buffer = stream_buffer
        self.seq = 0
        self.streams: set[Stream] = set()
        self.listeners: list[Listener] = []
        self.connected = False
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.upstream: AsyncWatchStream | None = None

    # --- streams ----------------------------------------------------------------------

    def subscribe(self, last_id: int | None, names: frozenset[str] | None) -> Stream:
        """A new stream; with `last_id`, first what it missed since then, or a resync."""
        self.start()
        stream = Stream(names, self.stream_buffer)
        if last_id is not None:
            self.catch_up(stream, last_id)
        self.streams.add(stream)
        return stream

    def catch_up(self, stream: Stream, last_id: int) -> None:
        missed = self.since(last_id)
        if missed is None:
            stream.offer(frame(EV_RESYNC, {"reason": "events since the last id are no longer kept",
                                           "last_event_id": last_id, "next_id": self.seq + 1}))
            return
        for entry in missed:
            if stream.wants(entry.name):
                stream.offer(entry.data)

    def since(self, last_id: int) -> Iterable[Entry] | None:
        """The entries after `last_id`, or None when the ring no longer holds them
        (or the id is from another run of this process)."""
        if last_id > self.seq:
            return None
        if last_id == self.seq:
            return ()
        if not self.ring or self.ring[0].seq > last_id + 1:
            return None
        return itertools.islice(self.ring, last_id + 1 - self.ring[0].seq, None)

    def unsubscribe(self, stream: Stream) -> None:
        self.streams.discard(stream)

    def broadcast(self, name: str, data: Any) -> None:
        """An unnumbered frame (e.g. `stats`) to every stream that wants it; not kept."""
        if not self.streams:
            return
        rendered = frame(name, data)
        for stream in list(self.streams):
            if stream.wants(name):
                stream.offer(rendered)

    # --- upstream ---------------------------------------------------------------------

    def start(self) -> None:
        """Open the upstream if it is not open yet (the first stream asks)."""
        if self.task is None and not self.closed:
            self.task = asyncio.get_running_loop().create_task(self.run())

    def publish(self, name: str, data: dict[str, Any]) -> None:
        self.seq += 1
        entry = Entry(self.seq, name, frame(name, data, self.seq))
        self.ring.append(entry)
        for stream in list(self.streams):
            if stream.wants(name):
                stream.offer(entry.data)
        for listener in self.listeners:
            listener(name, data)

    async def run(self) -> None:
        """Keep one watch open; after any gap, a numbered `resync` tells streams."""
        failures = 0
        first = True
        while not self.closed:
            try:
                await self.follow(first)
                failures = 0
            except (JobdError, OSError) as e:
                log.debug("event upstream: %s", e)
                failures += 1
            self.connected = False
            first = False
            await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])

    async def follow(self, first: bool) -> None:
        stream = self.upstream = self.open_watch()
        try:
            await stream.open()
            self.connected = True
            if not first:
                self.publish(EV_RESYNC, {"reason": "reconnected to jobd; events may have been missed"})
            async for event in stream:
                if event.event == P.EV_WATCH_LAGGED:
                    return                  # the daemon let us go: reconnect, then resync
                self.publish(event.event, event.data)
        finally:
            await stream.aclose()

    def end_streams(self) -> None:
        """End every stream now (a stop was asked: open streams must not hold it)."""
        self.closed = True
        for stream in list(self.streams):
            stream.wake.set()

    async def close(self) -> None:
        """End every stream and stop the upstream."""
        self.end_streams()
        if self.upstream is not None:
            await self.upstream.aclose()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

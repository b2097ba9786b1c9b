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
import time
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
# The job events: up to three per job (submitted, started, completed), tens of
# thousands a second on a busy queue, and most of what a watch costs the daemon
# and this process. Given `open_flow`, they come on a second upstream watch, open
# only while a stream wants one of them (and LINGER_S after): a page that does not
# (the overview, jobs list, queues, alerts) costs the daemon nothing per job. All
# of a job's events come on that one connection, so they keep the daemon's order.
# Every other event comes on the first watch, open from the first stream on.
# Without `open_flow`, one watch carries everything.
FLOW = frozenset({P.EV_SUBMITTED, P.EV_STARTED, P.EV_PROGRESS, P.EV_COMPLETED, P.EV_FAILED,
                  P.EV_DEAD_LETTER, P.EV_CANCELLED, P.EV_REPLAYED})
ROUTINE = P.EVENTS - FLOW
READY_S = 3.0                    # how long a new stream waits for its upstreams before it starts
LEASE_S = 120.0                  # how long the flow watch stays open for the lanes after they were asked
LINGER_S = 30.0                  # ... and after its last stream left (a reconnecting stream resumes)
Listener = Callable[[str, dict[str, Any]], None]


def frame(name: str, data: Any, seq: int | None = None) -> bytes:
    """One SSE event: `id:` (when numbered), `event:`, `data:` (JSON, one line)."""
    head = b"id: %d\n" % seq if seq is not None else b""
    return head + b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def run_base() -> int:
    """Where this run's ids start: the start time in microseconds (below 2**53, exact
    in JavaScript). A `Last-Event-ID` from an earlier run of the process is then
    below this run's ids and gets a resync, never events that are not the ones
    it missed (it would take over a million events a second to overlap)."""
    return int(time.time() * 1_000_000)


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

    @property
    def wants_flow(self) -> bool:
        return self.names is None or not self.names.isdisjoint(FLOW)

    def offer(self, data: bytes) -> None:
        if self.dropped:
            return
        if len(self.frames) >= self.limit:
            self.dropped = True          # fell behind: let it go rather than wait or grow
            log.warning("event stream dropped: %d events behind (it does not read)", len(self.frames))
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
                 stream_buffer: int = STREAM_BUFFER, first_id: int | None = None,
                 open_flow: Callable[[], AsyncWatchStream] | None = None) -> None:
        self.open_watch = open_watch
        self.open_flow = open_flow
        self.ring: deque[Entry] = deque(maxlen=ring_size)
        self.stream_buffer = stream_buffer
        self.seq = run_base() if first_id is None else first_id   # the last id given out
        self.streams: set[Stream] = set()
        self.listeners: list[Listener] = []
        self.connected = False
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.upstream: AsyncWatchStream | None = None
        self.flow_task: asyncio.Task[None] | None = None
        self.flow_upstream: AsyncWatchStream | None = None
        self.flow_streams = 0            # streams that want flow events: the flow watch is open while > 0
        self.flow_since: int | None = None   # flow events after this seq are all here (None: not connected)
        self.flow_lease = 0.0            # loop time until which the flow watch stays open with no stream
        self.up = {ROUTINE: asyncio.Event(), FLOW: asyncio.Event()}

    # --- streams ----------------------------------------------------------------------

    def subscribe(self, last_id: int | None, names: frozenset[str] | None) -> Stream:
        """A new stream; with `last_id`, first what it missed since then, or a resync."""
        self.start()
        stream = Stream(names, self.stream_buffer)
        if self.needs_flow(stream):
            self.flow_streams += 1
            self.start_flow()
        if last_id is not None:
            self.catch_up(stream, last_id)
        self.streams.add(stream)
        return stream

    async def ready(self, stream: Stream) -> None:
        """Wait (a little) until the upstreams `stream` needs are subscribed, so that
        what happens once its response has started reaches it. A daemon that is
        down is not waited for past READY_S: the stream says so with `stats`."""
        needed = [self.up[ROUTINE]] + ([self.up[FLOW]] if self.needs_flow(stream) else [])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in needed)), READY_S)

    def catch_up(self, stream: Stream, last_id: int) -> None:
        missed = self.since(last_id)
        if self.needs_flow(stream) and (self.flow_since is None or last_id < self.flow_since):
            missed = None                # flow events were not followed all that time
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
        if stream in self.streams and self.needs_flow(stream):
            self.flow_streams -= 1
            if self.flow_streams == 0:
                self.lease_flow(LINGER_S)
        self.streams.discard(stream)

    def needs_flow(self, stream: Stream) -> bool:
        """Whether `stream` needs the flow watch (there is one, and it wants flow events)."""
        return self.open_flow is not None and stream.wants_flow

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
            self.task = asyncio.get_running_loop().create_task(self.run(ROUTINE))

    def start_flow(self) -> None:
        if self.flow_task is None and self.open_flow is not None and not self.closed:
            self.flow_task = asyncio.get_running_loop().create_task(self.run(FLOW))

    def lease_flow(self, seconds: float = LEASE_S) -> None:
        """Keep the flow watch open `seconds` with no stream (the lanes are built from it)."""
        if self.open_flow is None:
            return                       # one watch carries every event
        loop = asyncio.get_running_loop()
        self.flow_lease = max(self.flow_lease, loop.time() + seconds)
        self.start_flow()
        loop.call_later(seconds, self.maybe_stop_flow)

    def maybe_stop_flow(self) -> None:
        if self.flow_streams == 0 and asyncio.get_running_loop().time() >= self.flow_lease:
            self.stop_flow()

    @property
    def flow_connected(self) -> bool:
        return self.open_flow is None or self.flow_since is not None

    def stop_flow(self) -> None:
        """No stream wants flow events: close their watch (its `finally` closes the connection)."""
        if self.flow_task is not None:
            self.flow_task.cancel()
        self.flow_task = None
        self.flow_since = None
        self.up[FLOW].clear()

    def publish(self, name: str, data: dict[str, Any]) -> None:
        self.seq += 1
        entry = Entry(self.seq, name, frame(name, data, self.seq))
        self.ring.append(entry)
        for stream in list(self.streams):
            if stream.wants(name):
                stream.offer(entry.data)
        for listener in self.listeners:
            listener(name, data)

    async def run(self, names: frozenset[str]) -> None:
        """Keep one watch of `names` open; after any gap, a numbered `resync` tells streams."""
        failures = 0
        first = True
        while not self.closed:
            try:
                await self.follow(names, first)
                failures = 0
            except (JobdError, OSError) as e:
                log.debug("event upstream: %s", e)
                failures += 1
            self.up[names].clear()
            if names is ROUTINE:
                self.connected = False
            else:
                self.flow_since = None
            first = False
            await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])

    async def follow(self, names: frozenset[str], first: bool) -> None:
        opener = self.open_flow if names is FLOW else self.open_watch
        assert opener is not None
        stream = opener()
        if names is ROUTINE:
            self.upstream = stream
        else:
            self.flow_upstream = stream
        try:
            await stream.open()
            self.up[names].set()
            if names is ROUTINE:
                self.connected = True
            else:
                self.flow_since = self.seq
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
        for up in self.up.values():
            up.set()                     # a stream still waiting to start goes on, and ends
        for stream in list(self.streams):
            stream.wake.set()

    async def close(self) -> None:
        """End every stream and stop the upstream."""
        self.end_streams()
        for upstream in (self.upstream, self.flow_upstream):
            if upstream is not None:
                await upstream.aclose()
        for task in (self.task, self.flow_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

"""jobd.web.hub: the shared upstream, the ring, resume and resync, bounded
streams, with an in-memory watch instead of a daemon."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from jobd.web.hub import EV_RESYNC, EventHub, Stream, frame, run_base
from jobd_client.errors import DaemonUnavailable
from jobd_client.models import Event

LOST = object()


class FakeWatch:
    """Plays AsyncWatchStream: events put on `feed` come out; LOST ends it as a lost connection."""

    def __init__(self, feed: asyncio.Queue[Any]) -> None:
        self.feed = feed
        self.closed = False

    async def open(self) -> FakeWatch:
        return self

    def __aiter__(self) -> FakeWatch:
        return self

    async def __anext__(self) -> Event:
        item = await self.feed.get()
        if item is LOST:
            raise DaemonUnavailable("/fake", "watch connection lost")
        name, data = item
        return Event(name, data)

    async def aclose(self) -> None:
        self.closed = True


def decode(raw: bytes) -> list[tuple[int | None, str, dict[str, Any]]]:
    out = []
    for f in raw.split(b"\n\n"):
        if not f:
            continue
        fields = dict(line.split(b": ", 1) for line in f.split(b"\n"))
        seq = int(fields[b"id"]) if b"id" in fields else None
        out.append((seq, fields[b"event"].decode(), orjson.loads(fields[b"data"])))
    return out


async def settle(pred: Any) -> None:
    for _ in range(200):
        if pred():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def hub_with_feed(**kw: Any) -> tuple[EventHub, asyncio.Queue[Any], list[FakeWatch]]:
    feed: asyncio.Queue[Any] = asyncio.Queue()
    opened: list[FakeWatch] = []

    def open_watch() -> Any:
        watch = FakeWatch(feed)
        opened.append(watch)
        return watch
    return EventHub(open_watch, **{"first_id": 0, **kw}), feed, opened


def test_frame_format() -> None:
    expected = b'id: 7\nevent: job.completed\ndata: {"job_id":"a"}\n\n'
    assert frame("job.completed", {"job_id": "a"}, 7) == expected
    assert frame("stats", {"x": 1}) == b'event: stats\ndata: {"x":1}\n\n'


async def test_events_are_numbered_and_fanned_out() -> None:
    hub, feed, opened = hub_with_feed()
    a = hub.subscribe(None, None)
    b = hub.subscribe(None, frozenset({"job.completed"}))
    await settle(lambda: hub.connected)
    for i in range(3):
        feed.put_nowait(("job.submitted", {"job_id": f"j{i}"}))
        feed.put_nowait(("job.completed", {"job_id": f"j{i}"}))
    await settle(lambda: hub.seq == 6)
    assert [(s, n) for s, n, _ in decode(a.take())] == [
        (1, "job.submitted"), (2, "job.completed"), (3, "job.submitted"), (4, "job.completed"),
        (5, "job.submitted"), (6, "job.completed")]
    assert [s for s, _, _ in decode(b.take())] == [2, 4, 6]
    assert len(opened) == 1                       # one upstream for every stream
    await hub.close()
    assert opened[0].closed


async def test_last_event_id_resumes_inside_the_ring_and_resyncs_beyond() -> None:
    hub, feed, _ = hub_with_feed(ring_size=5)
    hub.subscribe(None, None)
    await settle(lambda: hub.connected)
    for i in range(8):
        feed.put_nowait(("job.submitted", {"job_id": f"j{i}"}))
    await settle(lambda: hub.seq == 8)
    assert [s for s, _, _ in decode(hub.subscribe(5, None).take())] == [6, 7, 8]
    assert decode(hub.subscribe(8, None).take()) == []
    assert [s for s, _, _ in decode(hub.subscribe(3, None).take())] == [4, 5, 6, 7, 8]  # ring starts at 4
    for last in (2, 0, 99):                      # too old, or from another run of the process
        (event,) = decode(hub.subscribe(last, None).take())
        assert event[0] is None and event[1] == EV_RESYNC
    await hub.close()


async def test_upstream_loss_reconnects_and_sends_a_numbered_resync() -> None:
    hub, feed, opened = hub_with_feed()
    stream = hub.subscribe(None, frozenset({"job.completed"}))
    await settle(lambda: hub.connected)
    feed.put_nowait(("job.completed", {"job_id": "before"}))
    feed.put_nowait(LOST)
    await settle(lambda: len(opened) == 2 and hub.connected)
    feed.put_nowait(("job.completed", {"job_id": "after"}))
    await settle(lambda: hub.seq == 3)
    events = decode(stream.take())
    assert [(s, n) for s, n, _ in events] == [(1, "job.completed"), (2, EV_RESYNC), (3, "job.completed")]
    await hub.close()


async def test_a_full_stream_is_dropped_and_the_others_keep_going() -> None:
    hub, feed, _ = hub_with_feed(stream_buffer=10)
    slow = hub.subscribe(None, None)
    fast = hub.subscribe(None, None)
    await settle(lambda: hub.connected)
    got = 0
    for i in range(30):
        feed.put_nowait(("job.submitted", {"job_id": f"j{i}"}))
        await settle(lambda i=i: hub.seq == i + 1)
        got += len(decode(fast.take()))
    assert got == 30
    assert slow.dropped and slow.gone.is_set() and not slow.frames
    await hub.close()


def test_stream_filter_always_lets_resync_through() -> None:
    stream = Stream(frozenset({"job.failed"}), 5)
    assert stream.wants("job.failed") and stream.wants(EV_RESYNC) and not stream.wants("job.completed")


async def test_broadcast_is_not_numbered_nor_kept() -> None:
    hub, _, _ = hub_with_feed()
    stream = hub.subscribe(None, None)
    hub.broadcast("stats", {"t": 1})
    assert decode(stream.take()) == [(None, "stats", {"t": 1})]
    assert hub.seq == 0 and not hub.ring
    await hub.close()


def test_a_run_numbers_from_its_start_time() -> None:
    before = int(time.time() * 1_000_000)
    base = run_base()
    assert before <= base <= int(time.time() * 1_000_000) and base < 2 ** 53


async def test_an_id_from_an_earlier_run_gets_a_resync() -> None:
    start = run_base()
    last_of_earlier = start + 1000                   # an earlier run gave out 1,000 events
    hub, feed, _ = hub_with_feed(first_id=start + 5_000_000)   # this run began 5 s later
    hub.subscribe(None, None)
    await settle(lambda: hub.connected)
    feed.put_nowait(("job.submitted", {"job_id": "a"}))
    await settle(lambda: len(hub.ring) == 1)
    for last in (last_of_earlier, 3, hub.seq + 10):
        (event,) = decode(hub.subscribe(last, None).take())
        assert event[1] == EV_RESYNC
    assert [n for _, n, _ in decode(hub.subscribe(hub.seq - 1, None).take())] == ["job.submitted"]
    await hub.close()


async def test_end_streams_wakes_every_stream() -> None:
    hub, _, _ = hub_with_feed()
    stream = hub.subscribe(None, None)
    hub.end_streams()
    assert hub.closed and stream.wake.is_set()
    await hub.close()

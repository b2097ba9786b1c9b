"""jobd.web.hub with `open_flow`: the job-flow events on their own upstream watch,
open only while a stream wants them (and a while after), with in-memory watches."""
from __future__ import annotations

import asyncio
from typing import Any

from test_web_hub import FakeWatch, decode, settle

from jobd.web import hub as hub_module
from jobd.web.hub import EV_RESYNC, EventHub

OVERVIEW = frozenset({"stats", "queue.paused"})
JOB_PAGE = frozenset({"stats", "job.progress", "job.completed"})


def split_hub() -> tuple[EventHub, asyncio.Queue[Any], list[FakeWatch]]:
    """A hub whose routine events come from `routine` and flow events from each opened flow watch."""
    routine: asyncio.Queue[Any] = asyncio.Queue()
    flows: list[FakeWatch] = []

    def open_flow() -> Any:
        watch = FakeWatch(asyncio.Queue())
        flows.append(watch)
        return watch
    return EventHub(lambda: FakeWatch(routine), first_id=0, open_flow=open_flow), routine, flows


async def test_a_stream_without_flow_events_opens_no_flow_watch() -> None:
    hub, routine, flows = split_hub()
    s = hub.subscribe(None, OVERVIEW)
    await settle(lambda: hub.connected)
    routine.put_nowait(("queue.paused", {"queue": "q"}))
    await settle(lambda: hub.seq == 1)
    assert [n for _, n, _ in decode(s.take())] == ["queue.paused"]
    assert flows == [] and hub.flow_task is None
    await hub.close()


async def test_the_flow_watch_follows_the_streams_that_want_it(monkeypatch: Any) -> None:
    monkeypatch.setattr(hub_module, "LINGER_S", 0.05)
    hub, routine, flows = split_hub()
    page = hub.subscribe(None, JOB_PAGE)
    await settle(lambda: hub.flow_connected and hub.connected)
    assert len(flows) == 1
    flows[0].feed.put_nowait(("job.progress", {"job_id": "a", "percentage": 50.0}))
    routine.put_nowait(("queue.paused", {"queue": "q"}))
    await settle(lambda: hub.seq == 2)
    assert [n for _, n, _ in decode(page.take())] == ["job.progress"]
    hub.unsubscribe(page)
    assert hub.flow_task is not None                     # it lingers for a reconnecting stream
    await settle(lambda: hub.flow_task is None and flows[0].closed)
    assert not hub.flow_connected
    await hub.close()


async def test_resuming_past_a_time_the_flow_was_not_followed_is_a_resync() -> None:
    hub, routine, flows = split_hub()
    hub.subscribe(None, OVERVIEW)
    await settle(lambda: hub.connected)
    routine.put_nowait(("queue.paused", {"queue": "q"}))
    await settle(lambda: hub.seq == 1)
    overview_again = hub.subscribe(0, OVERVIEW)          # routine events only: caught up from the ring
    assert [n for _, n, _ in decode(overview_again.take())] == ["queue.paused"]
    job_page = hub.subscribe(0, JOB_PAGE)                # flow events were not followed then
    assert [n for _, n, _ in decode(job_page.take())] == [EV_RESYNC]
    await hub.close()

"""`GET /api/events`: Server-Sent Events from the shared hub.

A raw ASGI endpoint, so that the writer, the client's disconnect and the
hub's verdicts (dropped for falling behind, shutting down) are all watched
at once: a stream that cannot be written to is cancelled, not waited for.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from starlette.requests import Request

from jobd.web.guard import Receive, Scope, Send
from jobd.web.hub import Stream
from jobd.web.services import services

PING_S = 15.0
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"),
           (b"cache-control", b"no-store"), (b"x-accel-buffering", b"no")]
RETRY_MS = 2000


def last_event_id(request: Request) -> int | None:
    """`Last-Event-ID` (or `?last_event_id=`): the id of the last event the client has."""
    text = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if text is None or not text.strip().isdigit():
        return None
    return int(text.strip())


def event_names(request: Request) -> frozenset[str] | None:
    text = request.query_params.get("events", "")
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    return names or None


class EventsEndpoint:
    """A class, so that Starlette's Route hands it the raw ASGI triple."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await stream_events(scope, receive, send)


async def stream_events(scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    hub = services(request).hub
    stream = hub.subscribe(last_event_id(request), event_names(request))
    try:
        await hub.ready(stream)
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": b"retry: %d\n\n" % RETRY_MS,
                    "more_body": True})
        writer = asyncio.ensure_future(pump(stream, send, lambda: hub.closed))
        await first_of(writer, until_disconnect(receive), stream.gone.wait())
        ended = writer.done() and not writer.cancelled() and writer.exception() is None
    finally:
        hub.unsubscribe(stream)
    if ended and not stream.dropped:
        await send({"type": "http.response.body", "body": b""})
    # Otherwise return without ending the response: the server closes the connection.


async def first_of(*aws: Awaitable[object]) -> None:
    """Wait until one of `aws` ends, then cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def pump(stream: Stream, send: Send, closing: Callable[[], bool]) -> None:
    """Write what the hub gives the stream; a ping comment when nothing came for a while."""
    while not stream.dropped and not closing():
        if not stream.frames:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.wake.wait(), PING_S)
        if stream.dropped or closing():
            return
        body = stream.take() or b": ping\n\n"
        await send({"type": "http.response.body", "body": body, "more_body": True})


async def until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass

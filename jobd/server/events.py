"""The live event stream behind `watch` (docs/events.md).

Every job and worker event goes through `EventHub.publish`; job status
changes reach it as a store listener (`on_change`). With no watchers either
costs one truth test, and so does an event no watcher asked for (`names`,
the union of their filters); the store is listened to only while a watcher
wants a status event: a watcher of alerts or pauses costs nothing per job.
Each watcher is a connection with a filter; the event's data is encoded once
and framed per watcher.

Slow watchers: a watcher whose connection has more than `max_buffered`
bytes written to its socket and not read (half of `max_unsent_bytes` in
`[server]`, 4 MiB by default) is sent a final `watch.lagged` event and
disconnected, so a client that never reads cannot slow the daemon or grow
its memory (docs/events.md). Requests on a connection that does not read
wait instead (server.py): a reply can wait for the client, an event cannot,
as the jobs it reports do not. Events collected in the current turn do not
count: the client has had no chance to read them yet.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from jobd import constants as C
from jobd.core.job import Job, iso
from jobd.server.connection import NL, Connection


class Changes(Protocol):
    """Where job status changes come from (the store)."""

    def listen(self, fn: Callable[[Job, str], None]) -> None: ...
    def unlisten(self, fn: Callable[[Job, str], None]) -> None: ...


_FAILED_EVENT = frozenset((C.RETRYING, C.FAILED, C.DEAD_LETTER))
STATUS_EVENTS = frozenset((C.EV_SUBMITTED, C.EV_STARTED, C.EV_COMPLETED, C.EV_FAILED,
                           C.EV_DEAD_LETTER, C.EV_CANCELLED))   # what `on_change` publishes
MAX_BUFFERED = 4 * 1024 * 1024     # the default: half of the default max_unsent_bytes
LAGGED_ABORT_AFTER = 30.0      # seconds a dropped watcher has to read what is queued


@dataclass(eq=False)
class Watcher:
    conn: Connection
    prefix: bytes                  # b'{"id":<rid>,"event":"'
    job_id: str | None
    events: frozenset[str] | None
    sent: int = 0


class EventHub:
    def __init__(self, changes: Changes, max_buffered: int = MAX_BUFFERED) -> None:
        self.changes = changes          # the store: status changes, listened to while watched
        self.watchers: list[Watcher] = []
        self.names: frozenset[str] | None = frozenset()   # events some watcher wants; None: any
        self.listening = False          # on the store's changes: while a watcher wants STATUS_EVENTS
        self.max_buffered = max_buffered
        self.published = 0

    def subscribe(self, conn: Connection, rid: Any, job_id: str | None,
                  events: frozenset[str] | None) -> None:
        prefix = b'{"id":' + orjson.dumps(rid) + b',"event":"'
        watcher = Watcher(conn, prefix, job_id, events)
        self.watchers.append(watcher)
        self._filters_changed()
        conn.cleanup.append(lambda: self._drop(watcher))

    def _drop(self, watcher: Watcher) -> None:
        if watcher in self.watchers:
            self.watchers.remove(watcher)
            self._filters_changed()

    def _filters_changed(self) -> None:
        self.names = self._wanted()
        listen = self.names is None or not self.names.isdisjoint(STATUS_EVENTS)
        if listen and not self.listening:
            self.changes.listen(self.on_change)
        elif self.listening and not listen:
            self.changes.unlisten(self.on_change)
        self.listening = listen

    def _wanted(self) -> frozenset[str] | None:
        names: set[str] = set()
        for w in self.watchers:
            if w.events is None:
                return None
            names |= w.events
        return frozenset(names)

    def on_change(self, job: Job, old: str) -> None:
        """A job's status changed (a store listener while anyone watches): its events."""
        if not self.watchers:
            return
        publish, new = self.publish, job.status
        if old == "":
            publish(C.EV_SUBMITTED, job.id, {"handler": job.handler, "priority": job.priority})
        if new == C.RUNNING:
            publish(C.EV_STARTED, job.id, {"worker_id": job.worker_id, "attempt": job.attempts})
        elif new == C.COMPLETED:
            publish(C.EV_COMPLETED, job.id, {"duration": job.duration()})
        elif new in _FAILED_EVENT and old != new:
            publish(C.EV_FAILED, job.id, {"error": job.error, "will_retry": new == C.RETRYING,
                                          "attempts": job.attempts})
            if new == C.DEAD_LETTER:
                publish(C.EV_DEAD_LETTER, job.id, {"handler": job.handler,
                                                   "final_error": job.error,
                                                   "total_attempts": job.attempts})
        elif new == C.CANCELLED:
            publish(C.EV_CANCELLED, job.id, {})

    def publish(self, name: str, job_id: str | None, data: dict[str, Any]) -> None:
        self.published += 1
        if not self.watchers or (self.names is not None and name not in self.names):
            return
        data["job_id"] = job_id
        data["timestamp"] = _now_iso()
        body: bytes | None = None
        for w in list(self.watchers):
            if (w.job_id is not None and w.job_id != job_id) or \
                    (w.events is not None and name not in w.events):
                continue
            if body is None:
                body = name.encode() + b'","data":' + orjson.dumps(data) + b"}" + NL
            self._send(w, body)

    def _send(self, w: Watcher, body: bytes) -> None:
        conn = w.conn
        if conn.closing:
            return
        if conn.unread_in_transport() > self.max_buffered:
            lagged = {"job_id": None, "timestamp": _now_iso(), "dropped_after": w.sent}
            conn.send_event(w.prefix + C.EV_WATCH_LAGGED.encode() + b'","data":'
                           + orjson.dumps(lagged) + b"}" + NL)
            conn.flush()
            conn.close(abort_after=LAGGED_ABORT_AFTER)
            self._drop(w)
            return
        w.sent += 1
        conn.send_event(w.prefix + body)


def _now_iso() -> str:
    return iso(time.time()) or ""

"""Waiting for jobs to end through the event stream: `wait ID ID...` and `watch ID`.

Both subscribe first and read the jobs' state second, so a job that ends in
between is seen either way, then learn of each end from an event instead of
polling: waiting for a thousand jobs costs one connection and one `result`
call per job, whatever their run time. A `watch.lagged` event (the daemon
dropped events for a slow reader) means an end may have been missed: they
subscribe again and re-read the state.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from jobd import constants as C
from jobd_client import Client, Event, WatchStream

# The events after which a job may be terminal; `job.failed` only when it will not retry.
ENDING_EVENTS = (C.EV_COMPLETED, C.EV_FAILED, C.EV_DEAD_LETTER, C.EV_CANCELLED)
Outcome = dict[str, Any]            # a `result` reply body: job_id, status, result, error, ...


def status_of(client: Client, job_id: str) -> str | None:
    status = client.result(job_id).get("status")
    return status if isinstance(status, str) else None


def job_ended(client: Client, job_id: str, event: Event) -> bool:
    """Whether `event` (one of the job's) is its last one."""
    if event.event in (C.EV_COMPLETED, C.EV_CANCELLED, C.EV_DEAD_LETTER):
        return True
    if event.event != C.EV_FAILED or event.data.get("will_retry") is not False:
        return False
    # A dead-lettered job's `job.dead_letter` follows this event: end on that one, so
    # it is shown too. (Not terminal: someone ran `retry` meanwhile; keep watching.)
    status = status_of(client, job_id)
    return status in C.TERMINAL and status != C.DEAD_LETTER


# --- one job, every event (`watch ID`) ---------------------------------------------------

def _nothing() -> None:
    pass


def watch_until_end(client: Client, job_id: str, show: Callable[[Event], None],
                    subscribed: Callable[[], None] = _nothing) -> None:
    """Hand each of the job's events to `show` until the job has ended.
    `subscribed` is called once, when the subscription stands and the job was
    seen not ended: every event from then on is shown."""
    while True:
        with client.watch(job_id) as stream:
            if status_of(client, job_id) in C.TERMINAL:
                return              # it ended before we were subscribed
            subscribed()
            subscribed = _nothing
            if not _show_until_end(client, job_id, stream, show):
                return


def _show_until_end(client: Client, job_id: str, stream: WatchStream,
                    show: Callable[[Event], None]) -> bool:
    """False once the job ended; True when events were dropped (subscribe again)."""
    for event in stream:
        if event.event == C.EV_WATCH_LAGGED:
            return True
        show(event)
        if job_ended(client, job_id, event):
            return False
    return False


# --- several jobs, their ends only (`wait ID ID...`) -------------------------------------

class Waiter:
    """Collects the outcomes of `job_ids` as they end; `on_end` sees each at once."""

    def __init__(self, client: Client, job_ids: list[str],
                 on_end: Callable[[str, Outcome], None] | None = None) -> None:
        self.client, self.on_end = client, on_end
        self.pending = list(dict.fromkeys(job_ids))      # argument order, once each
        self.outcomes: dict[str, Outcome] = {}

    def run(self, timeout: float | None) -> dict[str, Outcome]:
        """Wait until every job ended or `timeout` s passed; every job's outcome by id."""
        deadline = None if timeout is None else time.monotonic() + timeout
        lagged = True
        while lagged and self.pending and not _expired(deadline):
            with self.client.watch(events=list(ENDING_EVENTS)) as stream, \
                    _closed_at(stream, deadline):
                self.settle(list(self.pending))
                lagged = bool(self.pending) and self._read(stream)
        self.settle(list(self.pending))      # a last look: what ended by the deadline counts
        return self.outcomes

    def settle(self, job_ids: list[str]) -> None:
        """Read the outcome of each of `job_ids`; those that have ended leave `pending`."""
        for job_id in job_ids:
            outcome = self.outcomes[job_id] = self.client.result(job_id)
            if outcome.get("status") in C.TERMINAL:
                self.pending.remove(job_id)
                if self.on_end is not None:
                    self.on_end(job_id, outcome)

    def _read(self, stream: WatchStream) -> bool:
        """Settle jobs as their events come; True when events were dropped."""
        for event in stream:        # ends early when the deadline closes the stream
            if event.event == C.EV_WATCH_LAGGED:
                return True
            job_id = event.data.get("job_id")
            if job_id in self.pending:
                self.settle([job_id])
            if not self.pending:
                break
        return False


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


@contextlib.contextmanager
def _closed_at(stream: WatchStream, deadline: float | None) -> Iterator[None]:
    """Close `stream` at `deadline` (from a timer thread: closing ends its iteration)."""
    if deadline is None:
        yield
        return
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), stream.close)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()

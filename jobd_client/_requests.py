"""Each client method as data: the op to send and how to decode its reply.

`Client` and `AsyncClient` differ only in how they move bytes; everything a
method means (argument names, defaults left to the daemon, which reply field is
returned) is written once here. `status`, `wait` and `wait_many` need several
round trips, so each is a small generator that yields batches of `Call`s (sent
pipelined, the replies in the same order) and is driven by either client.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypedDict, TypeVar

from . import protocol as P
from .errors import WaitTimeout, error_from_reply
from .models import Event, Job, Page
from .protocol import TERMINAL

T = TypeVar("T")
Reply = dict[str, Any]
# `wait` without a timeout polls in chunks so a lost reply never blocks forever.
WAIT_CHUNK_S = 60.0
# Requests per batch. A blocking client writes a whole batch before reading:
# 256 small requests fit in a socket buffer, so the write never waits on a
# daemon that stopped reading until its replies are read (docs/protocol.md §3).
WINDOW = 256
_ENVELOPE = ("id", "ok")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request: `op`, its arguments, and the decoder for the method's return value.

    `hold` is how long the daemon may legitimately keep the reply back (the
    `wait` of `result`), so a blocking client can stretch its socket timeout.
    """

    op: str
    args: dict[str, Any]
    decode: Callable[[Reply], T]
    hold: float = 0.0


Batch = list[Call[Any]]
# A multi-call method: yields batches, is sent each batch's decoded replies, returns T.
Steps = Generator[Batch, list[Any], T]

# Ops a client may send again when the connection died after the request went
# out (the daemon may have applied it): reads, and changes whose repeat changes
# nothing (submits carry a job id; scale sets a target; schedule_add upserts;
# a second pause leaves the same pause, its `since` kept). cancel, retry, purge,
# restart_worker, schedule_remove, reload, resume (a repeat answers `resumed:
# false`), cancel_many and retry_many (their counts would be the repeat's) and
# replay (a second new job) are not: a repeat would answer differently or act twice.
RESENDABLE = frozenset({
    P.OP_HELLO, P.OP_SUBMIT, P.OP_SUBMIT_MANY, P.OP_STATUS, P.OP_PROGRESS, P.OP_RESULT,
    P.OP_WAIT, P.OP_LIST, P.OP_DEAD_LETTERS, P.OP_METRICS, P.OP_WORKERS, P.OP_SCALE,
    P.OP_SCHEDULE_ADD, P.OP_SCHEDULE_LIST, P.OP_LOGS, P.OP_HANDLERS, P.OP_QUEUES, P.OP_PAUSE,
    P.OP_ALERTS, P.OP_FAILURE_GROUPS,
})


class MoreFilters(TypedDict, total=False):
    """The filter fields `list` takes besides its named arguments."""

    created_before: str       # ISO 8601
    created_after: str
    error_match: str          # a substring of the job's error
    ids: list[str]
    signature: str            # a failure group's (`failure_groups`)


class ListFilter(MoreFilters, total=False):
    """Which jobs `dead_letters` shows; every field given must match."""

    queue: str
    handler: str
    tag: str                  # "key=value"


class JobFilter(ListFilter, total=False):
    """Which jobs a bulk op (`cancel_many`, `retry_many`, `purge`) touches, besides
    `status`; every field given must match. `all=True` stands for "no filter":
    without it a filter with no field is refused (`invalid_argument`)."""

    all: bool


FILTER_FIELDS = JobFilter.__optional_keys__


def lost_after_send(op: str) -> str:
    return (f"connection lost after {op!r} was sent; it may or may not have been "
            "applied (not resent: repeating it is not harmless)")


def compact(**args: Any) -> dict[str, Any]:
    """Drop None-valued arguments so the daemon applies its own defaults."""
    return {k: v for k, v in args.items() if v is not None}


def new_job_id() -> str:
    """A client-side job id, so a resend after reconnect cannot duplicate the job."""
    return uuid.uuid4().hex


def message(op: str, request_id: int, args: Mapping[str, Any]) -> dict[str, Any]:
    """The request object sent on the wire."""
    return {"op": op, "id": request_id, **args}


def check(reply: Reply) -> Reply:
    """Return the reply, or raise the JobdError subclass for `ok: false`."""
    if reply.get("ok") is not True:
        raise error_from_reply(reply.get("error"))
    return reply


def body(reply: Reply) -> Reply:
    """The reply without its envelope (`ok`, `id`)."""
    return {k: v for k, v in reply.items() if k not in _ENVELOPE}


def pick(key: str) -> Callable[[Reply], Any]:
    """Decoder returning one field of the reply."""
    return lambda reply: reply.get(key)


def event_from(msg: Reply) -> Event | None:
    """An Event from a watch line, or None when the line is not an event."""
    name = msg.get("event")
    if not isinstance(name, str):
        return None
    data = msg.get("data")
    return Event(name, data if isinstance(data, dict) else {})


# --- one builder per op (docs/protocol.md) ------------------------------------

def generic(op: str, args: dict[str, Any]) -> Call[Reply]:
    """Any op; returns the reply body. A numeric `wait` lets the reply be held that long."""
    wait = args.get("wait")
    hold = float(wait) if isinstance(wait, (int, float)) else 0.0
    return Call(op, compact(**args), body, hold)


def hello() -> Call[Reply]:
    return Call(P.OP_HELLO, {}, body)


def submit_args(handler: str, args: list[Any] | None = None,
                kwargs: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """A submit object with a job_id always set (idempotent resend)."""
    out = compact(handler=handler, args=args, kwargs=kwargs, **options)
    out.setdefault("job_id", new_job_id())
    return out


def submit(handler: str, args: list[Any] | None, kwargs: dict[str, Any] | None,
           options: dict[str, Any]) -> Call[str]:
    return Call(P.OP_SUBMIT, submit_args(handler, args, kwargs, **options), pick("job_id"))


def submit_many(jobs: list[dict[str, Any]]) -> Call[list[str]]:
    filled = [submit_args(**job) for job in jobs]
    return Call(P.OP_SUBMIT_MANY, {"jobs": filled}, pick("job_ids"))


def status(job_id: str) -> Call[Job]:
    return Call(P.OP_STATUS, {"job_id": job_id}, lambda r: Job.from_dict(r.get("job") or {}))


def progress(job_id: str) -> Call[dict[str, Any] | None]:
    return Call(P.OP_PROGRESS, {"job_id": job_id}, pick("progress"))


def result(job_id: str, wait: float | None = None) -> Call[Reply]:
    return Call(P.OP_RESULT, compact(job_id=job_id, wait=wait), body, float(wait or 0.0))


def cancel(job_id: str, force: bool = False) -> Call[bool]:
    return Call(P.OP_CANCEL, {"job_id": job_id, "force": force}, lambda r: bool(r.get("cancelled")))


def list_jobs(status: str | list[str] | None, handler: str | None, tag: str | None,
              limit: int, offset: int, queue: str | None = None,
              where: MoreFilters | None = None) -> Call[Page]:
    fields: dict[str, Any] = {**(where or {}), **compact(handler=handler, tag=tag, queue=queue)}
    args = {**job_filter(status, fields), "limit": limit, "offset": offset}
    return Call(P.OP_LIST, args, Page.from_reply)


def dead_letters(limit: int, offset: int, where: ListFilter | None = None) -> Call[Page]:
    args = {**job_filter(None, where or {}), "limit": limit, "offset": offset}
    return Call(P.OP_DEAD_LETTERS, args, Page.from_reply)


def failure_groups(status: str | None, queue: str | None, handler: str | None,
                   limit: int | None) -> Call[list[dict[str, Any]]]:
    """The groups: `signature`, `handler`, `error_type`, `message`, `count`,
    `first_seen`, `last_seen`, `sample_ids`; largest first."""
    args = compact(status=status, queue=queue, handler=handler, limit=limit)
    return Call(P.OP_FAILURE_GROUPS, args, lambda r: r.get("groups") or [])


def retry(job_id: str) -> Call[str]:
    return Call(P.OP_RETRY, {"job_id": job_id}, pick("status"))


def purge(status: str | list[str] | None, older_than: float | None,
          where: JobFilter | None = None) -> Call[int]:
    args = {**job_filter(status, where or {}), **compact(older_than=older_than)}
    return Call(P.OP_PURGE, args, lambda r: int(r.get("purged", 0)))


def metrics(format: str = "json") -> Call[Any]:
    field = "text" if format == "prometheus" else "metrics"
    return Call(P.OP_METRICS, {"format": format}, pick(field))


def workers() -> Call[list[dict[str, Any]]]:
    return Call(P.OP_WORKERS, {}, pick("workers"))


def scale(count: int, queue: str | None = None) -> Call[Reply]:
    return Call(P.OP_SCALE, compact(count=count, queue=queue), body)


def restart_worker(worker_id: Any) -> Call[bool]:
    return Call(P.OP_RESTART_WORKER, {"worker_id": worker_id}, lambda r: bool(r.get("restarted")))


def watch(job_id: str | None, events: list[str] | None) -> Call[Reply]:
    return Call(P.OP_WATCH, compact(job_id=job_id, events=events), body)


def schedule_add(name: str, cron: str, handler: str, args: list[Any] | None,
                 kwargs: dict[str, Any] | None, timezone: str,
                 options: dict[str, Any]) -> Call[dict[str, Any]]:
    fields = compact(name=name, cron=cron, handler=handler, args=args, kwargs=kwargs,
                     timezone=timezone, **options)
    return Call(P.OP_SCHEDULE_ADD, fields, pick("schedule"))


def schedule_list() -> Call[list[dict[str, Any]]]:
    return Call(P.OP_SCHEDULE_LIST, {}, pick("schedules"))


def schedule_remove(name: str) -> Call[bool]:
    return Call(P.OP_SCHEDULE_REMOVE, {"name": name}, lambda r: bool(r.get("removed")))


def logs(job_id: str, offset: int = 0) -> Call[Reply]:
    """`text` from `offset` on, the `offset` to continue from, `truncated`, `complete`."""
    return Call(P.OP_LOGS, {"job_id": job_id, "offset": offset}, body)


def reload() -> Call[Reply]:
    """`reloaded`, `handlers_added`, `handlers_removed`, `error`."""
    return Call(P.OP_RELOAD, {}, body)


def handlers() -> Call[list[Any]]:
    return Call(P.OP_HANDLERS, {}, lambda r: r.get("handlers") or [])


# --- flow control: queues, pauses, bulk changes, replays ------------------------------

def queues() -> Call[list[Any]]:
    return Call(P.OP_QUEUES, {}, lambda r: r.get("queues") or [])


def pause(queue: str | None, handler: str | None, for_s: float | None,
          reason: str | None) -> Call[dict[str, Any]]:
    """`for_s` is the op's `for` (a keyword in Python). Returns the `paused` view."""
    args = compact(queue=queue, handler=handler, reason=reason, **{"for": for_s})
    return Call(P.OP_PAUSE, args, lambda r: r.get("paused") or {})


def resume(queue: str | None, handler: str | None) -> Call[bool]:
    """True when it was paused."""
    return Call(P.OP_RESUME, compact(queue=queue, handler=handler), lambda r: bool(r.get("resumed")))


def breaker_reset(handler: str) -> Call[bool]:
    """True when the breaker was open (or half-open) and is now closed."""
    return Call(P.OP_BREAKER_RESET, {"handler": handler}, lambda r: bool(r.get("reset")))


def quarantine(handler: str, reason: str | None) -> Call[dict[str, Any]]:
    """The quarantine: `reason`, `since` (an existing one is kept as it was)."""
    return Call(P.OP_QUARANTINE, compact(handler=handler, reason=reason),
                lambda r: r.get("quarantine") or {})


def release(handler: str) -> Call[bool]:
    """True when the handler was quarantined."""
    return Call(P.OP_RELEASE, {"handler": handler}, lambda r: bool(r.get("released")))


def job_filter(status: str | list[str] | None, where: Mapping[str, Any]) -> dict[str, Any]:
    """The filter fields of a bulk request. A misspelt field raises TypeError
    here: sent, the daemon would not know it and the filter would match more."""
    unknown = sorted(set(where) - FILTER_FIELDS)
    if unknown:
        known = ", ".join(["status", *sorted(FILTER_FIELDS)])
        raise TypeError(f"unknown filter field {', '.join(map(repr, unknown))}; known: {known}")
    out = compact(status=status, **{k: v for k, v in where.items() if k != "all"})
    if where.get("all"):
        out["all"] = True
    return out


def cancel_many(status: str | list[str] | None, where: JobFilter, force: bool,
                dry_run: bool) -> Call[Reply]:
    """`matched`, `cancelled`, `sample` (up to 5 ids)."""
    args = {**job_filter(status, where), "force": force, "dry_run": dry_run}
    return Call(P.OP_CANCEL_MANY, args, body)


def retry_many(status: str | list[str] | None, where: JobFilter, dry_run: bool) -> Call[Reply]:
    """`matched`, `retried`, `sample` (up to 5 ids)."""
    return Call(P.OP_RETRY_MANY, {**job_filter(status, where), "dry_run": dry_run}, body)


def replay(job_id: str, args: list[Any] | None, kwargs: dict[str, Any] | None,
           priority: int | str | None, queue: str | None, delay: float | None) -> Call[str]:
    """A new job from a terminal one; returns the new job's id."""
    fields = compact(job_id=job_id, args=args, kwargs=kwargs, priority=priority, queue=queue,
                     delay=delay)
    return Call(P.OP_REPLAY, fields, pick("job_id"))


# --- alerts -----------------------------------------------------------------------------

def alerts() -> Call[list[Any]]:
    """The firing alerts."""
    return Call(P.OP_ALERTS, {}, lambda r: r.get("alerts") or [])


def alert_test() -> Call[dict[str, Any]]:
    """Send the test alert; the reply says whether it was queued and for which targets."""
    return Call(P.OP_ALERT_TEST, {}, lambda r: {k: v for k, v in r.items() if k not in ("id", "ok")})


# --- status, wait, wait_many: several round trips -----------------------------------

def status_steps(job_id: str) -> Steps[Job]:
    """The calls of `status`: the job view, and for a completed job its result."""
    job: Job
    (job,) = yield [status(job_id)]
    if job.status != P.COMPLETED:
        return job
    (res,) = yield [result(job_id)]
    return replace(job, result=res.get("result"))


def wait_steps(job_ids: Sequence[str], timeout: float | None) -> Steps[list[Job]]:
    """The calls of `wait_many` (and `wait`, with one id): the jobs, in the order of
    `job_ids`, once all are terminal, each with its result.

    `result` with a wait for up to WINDOW jobs at a time, so the daemon answers
    each when it ends (no polling); then every job's view. Raises WaitTimeout,
    with those views, if one is still not terminal when `timeout` s have passed.
    """
    unique = list(dict.fromkeys(job_ids))
    ended = yield from _until_terminal(unique, _deadline(timeout))
    views = dict(zip(unique, (yield from _in_windows([status(i) for i in unique]))))
    # A job that ended after its last `result` reply: fetch the outcome it now has.
    late = [i for i in unique if views[i].done and i not in ended]
    ended.update(zip(late, (yield from _in_windows([result(i) for i in late]))))
    jobs = [_with_result(views[i], ended.get(i)) for i in job_ids]
    unfinished = [job for job in jobs if not job.done]
    if unfinished:
        raise WaitTimeout(unfinished[0], jobs, timeout)
    return jobs


def _until_terminal(job_ids: list[str], deadline: float | None) -> Steps[dict[str, Reply]]:
    """The terminal `result` replies by job id, asking until all are or time is up."""
    ended: dict[str, Reply] = {}
    left = job_ids
    while left:
        window = left[:WINDOW]
        replies = yield [result(i, wait=_chunk(deadline)) for i in window]
        ended.update((i, r) for i, r in zip(window, replies) if r.get("status") in TERMINAL)
        left = [i for i in left if i not in ended]
        if _expired(deadline):
            break
    return ended


def _in_windows(calls: list[Call[T]]) -> Steps[list[T]]:
    """Send `calls` WINDOW at a time; their decoded replies in order."""
    out: list[T] = []
    for start in range(0, len(calls), WINDOW):
        out += yield calls[start:start + WINDOW]
    return out


def _with_result(job: Job, res: Reply | None) -> Job:
    return job if res is None else replace(job, result=res.get("result"))


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _chunk(deadline: float | None) -> float:
    if deadline is None:
        return WAIT_CHUNK_S
    return max(0.0, min(WAIT_CHUNK_S, deadline - time.monotonic()))


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline

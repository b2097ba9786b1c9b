"""The job record: one `__slots__` object per job, its view and its persisted form.

A job is stored as a `Job` object (about 600 B when small). Timestamps are
float seconds since the epoch inside the daemon and ISO 8601 strings in the
view. Empty containers are shared, never copied, to keep pending jobs small.

A job's `args` and `kwargs`, and an inline `result`, are kept as the compact
JSON text they arrived as (bytes, or an `orjson.Fragment` for a result) and
are never decoded in the daemon: decoded, JSON made of tiny containers costs
up to ~26 times its size (`[{},{},...]`), and a job holds it until it expires
(docs/design.md, "Memory"). orjson writes them into replies, WAL records and
worker frames as they are.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from jobd import constants as C

EMPTY_LIST: list[Any] = []
EMPTY_DICT: dict[str, Any] = {}
_PENDING_S = C.PENDING
_DEFAULT_Q = C.DEFAULT_QUEUE
EMPTY_ARGS = b"[]"           # a job's args/kwargs when none were given (shared)
EMPTY_KWARGS = b"{}"
_Fragment = orjson.Fragment
_dumps = orjson.dumps

_UTC = UTC
_intern = sys.intern
_new = object.__new__


_iso_second = -1
_iso_prefix = ""


def iso(ts: float | None) -> str | None:
    """Epoch seconds → `2026-11-28T10:00:00.123456Z` (or None); the same text as
    `datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")` (microseconds
    rounded half to even), at a fraction of its cost: the date and time of day are
    formatted once per second (every result reply and job view has timestamps)."""
    global _iso_second, _iso_prefix
    if ts is None:
        return None
    second = int(ts // 1)
    micro = round((ts - second) * 1e6)
    if micro >= 1_000_000:
        second += 1
        micro -= 1_000_000
    if second != _iso_second:
        t = time.gmtime(second)       # %Y would not pad years 1-999 to four digits
        _iso_prefix = (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
                       f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}")
        _iso_second = second
    return f"{_iso_prefix}.{micro:06d}Z"


def parse_iso(text: str) -> float:
    """ISO 8601 → epoch seconds; a string without an offset is taken as UTC."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_UTC)
    return dt.timestamp()


@dataclass(slots=True)
class SubmitSpec:
    """A validated submit, not yet admitted. `args`/`kwargs` are the decoded
    values (a schedule keeps them), `args_json`/`kwargs_json` the compact text
    a job keeps (`compact_json`)."""
    job_id: str | None
    handler: str
    args: list[Any]
    kwargs: dict[str, Any]
    args_json: bytes
    kwargs_json: bytes
    priority: int | None
    max_retries: int | None
    retry_delay: float | None
    retry_backoff: float | None
    timeout: float | None
    tags: dict[str, Any]
    name: str | None
    depends_on: list[str]
    run_at: float | None       # absolute epoch seconds, from delay or run_at
    has_timeout: bool
    queue: str | None = None   # the submit's `queue` (None: its handler's)
    unique_key: str | None = None
    unique_for: float | None = None
    on_conflict: str = "return"
    plain: bool = False        # only handler/args/kwargs/job_id: every option from defaults
    replay_of: str | None = None
    duplicate: bool = False    # set by the submit: a job holding its unique_key was answered


# A plain submit (handler, args, args JSON, kwargs, kwargs JSON, job_id or None):
# only those fields, every option from the handler's defaults (the common case).
PlainSubmit = tuple[str, list[Any], bytes, dict[str, Any], bytes, "str | None"]


class JobIds:
    """New job ids: 32 hex digits, a random 80-bit prefix drawn at each start
    followed by a 48-bit counter. Unique across restarts (a fresh prefix) and
    ~15x cheaper than `uuid4().hex`, which costs a getrandom() call per job."""

    def __init__(self) -> None:
        self.prefix = os.urandom(10).hex()
        self.count = 0

    def next(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count:012x}"


class Job:
    """One job. Heaps order `(key, seq, job)` tuples; two entries with the
    same key and seq (the same job pushed twice) must never compare the jobs
    themselves, so a job is never less than another (`__lt__`)."""

    __slots__ = (
        "id", "name", "handler", "args", "kwargs", "status", "priority",
        "attempts", "max_retries", "retry_delay", "retry_backoff", "timeout",
        "tags", "depends_on", "created_at", "scheduled_for", "started_at",
        "completed_at", "worker_id", "progress", "error", "result",
        "result_ref", "seq", "cancel_requested", "schedule", "jitter",
        "max_delay", "finished_attempt_at", "wal_seq", "queue", "unique_key", "unique_for",
        "replay_of", "lane", "qtoken",
    )

    # The slots' types (annotations only: no class attributes are created).
    id: str
    name: str | None
    handler: str
    args: bytes                 # the JSON array, as it arrived (EMPTY_ARGS: none)
    kwargs: bytes               # the JSON object (EMPTY_KWARGS: none)
    status: str
    priority: int
    attempts: int
    max_retries: int
    retry_delay: float
    retry_backoff: float
    timeout: float | None
    tags: dict[str, Any]
    depends_on: list[str]
    created_at: float
    scheduled_for: float | None
    started_at: float | None
    completed_at: float | None
    worker_id: int | None
    progress: dict[str, Any] | None
    error: str | None
    result: Any                 # None, or the inline result as an orjson.Fragment
    result_ref: list[Any] | None
    seq: int
    cancel_requested: bool
    schedule: str | None
    jitter: bool | None
    max_delay: float | None
    finished_attempt_at: float | None
    wal_seq: int
    queue: str                  # the queue it runs in (its pool of workers)
    unique_key: str | None      # at most one non-terminal job holds a key
    unique_for: float | None    # ... for at most this long after its submit
    replay_of: str | None       # the job it was replayed from
    lane: Any                   # its (queue, handler) lane (jobd/core/flow.py), not persisted
    qtoken: int                 # pushes into its lane so far: only the latest entry is live

    def __init__(self) -> None:
        self.name: str | None = None
        self.args = EMPTY_ARGS
        self.kwargs = EMPTY_KWARGS
        self.status = C.PENDING
        self.priority = C.DEFAULT_PRIORITY
        self.attempts = 0
        self.max_retries = 3
        self.retry_delay = 1.0
        self.retry_backoff = 2.0
        self.timeout: float | None = None
        self.tags: dict[str, Any] = EMPTY_DICT
        self.depends_on: list[str] = EMPTY_LIST
        self.created_at = 0.0
        self.scheduled_for: float | None = None
        self.started_at: float | None = None
        self.completed_at: float | None = None
        self.worker_id: int | None = None
        self.progress: dict[str, Any] | None = None
        self.error: str | None = None
        self.result: Any = None
        self.result_ref: list[Any] | None = None
        self.seq = 0
        self.cancel_requested = False
        self.schedule: str | None = None
        self.jitter: bool | None = None
        self.max_delay: float | None = None
        self.finished_attempt_at: float | None = None
        self.wal_seq = 0       # journal seq of the submit record; 0 once known durable
        self.queue = C.DEFAULT_QUEUE
        self.unique_key: str | None = None
        self.unique_for: float | None = None
        self.replay_of: str | None = None
        self.lane: Any = None
        self.qtoken = 0

    @classmethod
    def new(cls, job_id: str, handler: str, priority: int, seq: int, created_at: float,
            defaults: tuple[Any, ...], name: str | None, args: bytes,
            kwargs: bytes, tags: dict[str, Any], depends_on: list[str],
            queue: str = C.DEFAULT_QUEUE, lane: Any = None) -> Job:
        """A job as submitted, every slot set once (the submit hot path).
        `defaults` = (max_retries, retry_delay, retry_backoff, timeout, jitter,
        max_delay), already merged for the handler; `args`/`kwargs` are JSON
        text (`compact_json`); status is set by the caller."""
        job = _new(cls)
        job.id = job_id
        job.handler = handler
        job.priority = priority
        job.seq = seq
        job.created_at = created_at
        (job.max_retries, job.retry_delay, job.retry_backoff, job.timeout, job.jitter,
         job.max_delay) = defaults
        job.name = name
        job.args = args
        job.kwargs = kwargs
        job.tags = tags
        job.depends_on = depends_on
        job.status = _PENDING_S
        job.attempts = 0
        job.scheduled_for = job.started_at = job.completed_at = job.worker_id = None
        job.progress = job.error = job.result = job.result_ref = None
        job.cancel_requested = False
        job.schedule = job.finished_attempt_at = None
        job.wal_seq = 0
        job.queue = queue
        job.lane = lane
        job.unique_key = job.unique_for = job.replay_of = None
        job.qtoken = 0
        return job

    def __lt__(self, other: object) -> bool:
        return False

    # --- persisted form (WAL submit records and snapshots) -------------------
    def to_record(self) -> list[Any]:
        """Everything needed to rebuild this job, positionally (`RECORD_FIELDS`);
        trailing fields that hold their default are left off to stay small."""
        if (self.attempts == 0 and self.timeout is None and self.tags is EMPTY_DICT
                and self.depends_on is EMPTY_LIST and self.scheduled_for is None
                and self.started_at is None and self.completed_at is None
                and self.progress is None and self.error is None and self.result is None
                and self.result_ref is None and not self.cancel_requested
                and self.schedule is None and self.jitter is None and self.max_delay is None
                and self.worker_id is None and self.queue == _DEFAULT_Q
                and self.unique_key is None and self.replay_of is None):
            return self.new_record()        # the shape of almost every submit
        rec = [self.id, self.handler, self.status, self.priority, self.seq,
               self.created_at, self.max_retries, self.retry_delay, self.retry_backoff,
               self.name, _args_field(self.args), _kwargs_field(self.kwargs), self.attempts,
               self.timeout, self.tags,
               self.depends_on, self.scheduled_for, self.started_at, self.completed_at,
               self.progress, self.error, self.result, self.result_ref,
               self.cancel_requested, self.schedule, self.jitter, self.max_delay,
               self.worker_id, self.queue, self.unique_key, self.unique_for, self.replay_of]
        n = len(rec)
        while n > _REQUIRED:
            value, default = rec[n - 1], _DEFAULTS[n - 1]
            if not (value is default or (type(value) is type(default) and value == default)):
                break
            n -= 1
        del rec[n:]
        return rec

    def new_record(self) -> list[Any]:
        """`to_record` of a job just submitted with only defaults set."""
        if self.queue != _DEFAULT_Q or self.unique_key is not None \
                or self.replay_of is not None:
            return self.to_record()
        rec = [self.id, self.handler, self.status, self.priority, self.seq,
               self.created_at, self.max_retries, self.retry_delay, self.retry_backoff]
        if self.kwargs is not EMPTY_KWARGS:
            rec += (self.name, _args_field(self.args), _Fragment(self.kwargs))
        elif self.args is not EMPTY_ARGS:
            rec += (self.name, _Fragment(self.args))
        elif self.name is not None:
            rec.append(self.name)
        return rec

    @classmethod
    def from_record(cls, rec: list[Any]) -> Job:
        """Rebuild a job; shared strings are interned (one copy per handler name)."""
        job = cls.__new__(cls)
        if len(rec) < _FULL:
            rec = rec + _DEFAULTS_LIST[len(rec):]
        (job.id, handler, status, job.priority, job.seq, job.created_at, job.max_retries,
         retry_delay, retry_backoff, job.name, args, kwargs, job.attempts, job.timeout, tags,
         depends_on, job.scheduled_for, job.started_at, job.completed_at, job.progress,
         job.error, job.result, job.result_ref, job.cancel_requested, job.schedule,
         job.jitter, job.max_delay, job.worker_id, queue, job.unique_key, job.unique_for,
         job.replay_of) = rec
        job.queue = _intern(queue)
        job.handler = _intern(handler)
        job.status = _intern(status)
        job.retry_delay = _FLOATS.setdefault(retry_delay, retry_delay)
        job.retry_backoff = _FLOATS.setdefault(retry_backoff, retry_backoff)
        # Replay decoded them: back to compact text (see the module docstring).
        job.args = _dumps(args) if args else EMPTY_ARGS
        job.kwargs = _dumps(kwargs) if kwargs else EMPTY_KWARGS
        job.result = compact_result(job.result)
        job.tags = tags or EMPTY_DICT
        job.depends_on = depends_on or EMPTY_LIST
        job.finished_attempt_at = None
        job.wal_seq = 0
        job.lane = None
        job.qtoken = 0
        return job

    # --- the view clients see (docs/protocol.md) ---------------------------------------
    def view(self, held: dict[str, Any] | None = None,
             signature: str | None = None) -> dict[str, Any]:
        """`held`: why it may not start now (jobd/core/flow.py `Hold.view`), if
        pending; `signature`: its failure group's (jobd/core/failures.py), if
        failed or dead_letter."""
        return {
            "id": self.id, "name": self.name, "handler": self.handler,
            "args": _Fragment(self.args), "kwargs": _Fragment(self.kwargs),
            "status": self.status,
            "priority": self.priority, "attempts": self.attempts,
            "max_retries": self.max_retries, "retry_delay": self.retry_delay,
            "retry_backoff": self.retry_backoff, "timeout": self.timeout,
            "tags": self.tags, "depends_on": self.depends_on,
            "created_at": iso(self.created_at),
            "scheduled_for": iso(self.scheduled_for),
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "worker_id": self.worker_id, "progress": self.progress,
            "error": self.error, "queue": self.queue, "held": held,
            "unique_key": self.unique_key, "replay_of": self.replay_of,
            "signature": signature,
        }

    @property
    def terminal(self) -> bool:
        return self.status in C.TERMINAL

    def duration(self) -> float | None:
        """Run time of the last attempt, when it has finished."""
        if self.started_at is None or self.completed_at is None:
            return None
        return max(0.0, self.completed_at - self.started_at)

    def matches_tag(self, key: str, value: str) -> bool:
        if key not in self.tags:
            return False
        have = self.tags[key]
        if isinstance(have, bool):
            return value == ("true" if have else "false")
        return str(have) == value


def _args_field(args: bytes) -> Any:
    """A job's args as a record field: left off (the default) when empty."""
    return EMPTY_LIST if args is EMPTY_ARGS else _Fragment(args)


def _kwargs_field(kwargs: bytes) -> Any:
    return EMPTY_DICT if kwargs is EMPTY_KWARGS else _Fragment(kwargs)


def compact_result(result: Any) -> Any:
    """A decoded inline result (replay) as compact JSON text again."""
    return result if result is None or type(result) is _Fragment else _Fragment(_dumps(result))


RECORD_FIELDS = (
    "id", "handler", "status", "priority", "seq", "created_at", "max_retries",
    "retry_delay", "retry_backoff", "name", "args", "kwargs", "attempts", "timeout",
    "tags", "depends_on", "scheduled_for", "started_at", "completed_at", "progress",
    "error", "result", "result_ref", "cancel_requested", "schedule", "jitter",
    "max_delay", "worker_id", "queue", "unique_key", "unique_for", "replay_of",
)
_REQUIRED = 9            # id .. retry_backoff are always written
_DEFAULTS: tuple[Any, ...] = (
    None, None, None, None, None, None, None, None, None,     # required fields
    None, EMPTY_LIST, EMPTY_DICT, 0, None, EMPTY_DICT, EMPTY_LIST, None, None, None,
    None, None, None, None, False, None, None, None, None, C.DEFAULT_QUEUE, None, None, None,
)
_DEFAULTS_LIST = list(_DEFAULTS)
_FULL = len(RECORD_FIELDS)
assert len(_DEFAULTS) == _FULL
_FLOATS: dict[float, float] = {}


def progress_view(current: float, total: float | None, message: str, ts: float) -> dict[str, Any]:
    """The job view's `progress` object; percentage is null without a total."""
    pct: float | None = None
    if total:
        pct = round(max(0.0, min(100.0, current * 100.0 / total)), 2)
    return {"current": current, "total": total, "percentage": pct,
            "message": message, "updated_at": iso(ts)}

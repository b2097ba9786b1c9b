"""The job record: one `__slots__` object per job, its view and its persisted form.

A job is stored as a `Job` object (about 600 B when small). Timestamps are
float seconds since the epoch inside the daemon and ISO 8601 strings in the
view. Empty containers are shared, never copied, to keep pending jobs small.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from jobd import constants as C

EMPTY_LIST: list[Any] = []
EMPTY_DICT: dict[str, Any] = {}

_UTC = timezone.utc


def iso(ts: float | None) -> str | None:
    """Epoch seconds → `2026-11-28T10:00:00.123456Z` (or None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, _UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> float:
    """ISO 8601 → epoch seconds; a string without an offset is taken as UTC."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_UTC)
    return dt.timestamp()


class Job:
    """One job. Compares by nothing; heaps order `(key, seq, job)` tuples."""

    __slots__ = (
        "id", "name", "handler", "args", "kwargs", "status", "priority",
        "attempts", "max_retries", "retry_delay", "retry_backoff", "timeout",
        "tags", "depends_on", "created_at", "scheduled_for", "started_at",
        "completed_at", "worker_id", "progress", "error", "result",
        "result_ref", "seq", "cancel_requested", "schedule", "jitter",
        "max_delay", "finished_attempt_at",
    )

    def __init__(self) -> None:
        self.name: str | None = None
        self.args: list[Any] = EMPTY_LIST
        self.kwargs: dict[str, Any] = EMPTY_DICT
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

    # --- persisted form (WAL submit records and snapshots) -------------------
    def to_record(self) -> dict[str, Any]:
        """Everything needed to rebuild this job; omits defaults to stay small."""
        rec: dict[str, Any] = {
            "id": self.id, "h": self.handler, "st": self.status,
            "p": self.priority, "q": self.seq, "c": self.created_at,
            "mr": self.max_retries, "rd": self.retry_delay, "rb": self.retry_backoff,
        }
        optional = (
            ("n", self.name, None), ("a", self.args, EMPTY_LIST),
            ("k", self.kwargs, EMPTY_DICT), ("at", self.attempts, 0),
            ("to", self.timeout, None), ("tg", self.tags, EMPTY_DICT),
            ("d", self.depends_on, EMPTY_LIST), ("sf", self.scheduled_for, None),
            ("sa", self.started_at, None), ("ca", self.completed_at, None),
            ("pr", self.progress, None), ("e", self.error, None),
            ("r", self.result, None), ("rr", self.result_ref, None),
            ("cr", self.cancel_requested, False), ("sc", self.schedule, None),
            ("j", self.jitter, None), ("md", self.max_delay, None),
            ("w", self.worker_id, None),
        )
        for key, value, default in optional:
            if value is not default and value != default:
                rec[key] = value
        return rec

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Job:
        job = cls()
        job.id = rec["id"]
        job.handler = rec["h"]
        job.status = rec["st"]
        job.priority = rec["p"]
        job.seq = rec["q"]
        job.created_at = rec["c"]
        job.max_retries = rec["mr"]
        job.retry_delay = rec["rd"]
        job.retry_backoff = rec["rb"]
        get = rec.get
        job.name = get("n")
        job.args = get("a") or EMPTY_LIST
        job.kwargs = get("k") or EMPTY_DICT
        job.attempts = get("at", 0)
        job.timeout = get("to")
        job.tags = get("tg") or EMPTY_DICT
        job.depends_on = get("d") or EMPTY_LIST
        job.scheduled_for = get("sf")
        job.started_at = get("sa")
        job.completed_at = get("ca")
        job.progress = get("pr")
        job.error = get("e")
        job.result = get("r")
        job.result_ref = get("rr")
        job.cancel_requested = get("cr", False)
        job.schedule = get("sc")
        job.jitter = get("j")
        job.max_delay = get("md")
        job.worker_id = get("w")
        return job

    # --- the view clients see (SPEC §4) ---------------------------------------
    def view(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "handler": self.handler,
            "args": self.args, "kwargs": self.kwargs, "status": self.status,
            "priority": self.priority, "attempts": self.attempts,
            "max_retries": self.max_retries, "retry_delay": self.retry_delay,
            "retry_backoff": self.retry_backoff, "timeout": self.timeout,
            "tags": self.tags, "depends_on": self.depends_on,
            "created_at": iso(self.created_at),
            "scheduled_for": iso(self.scheduled_for),
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "worker_id": self.worker_id, "progress": self.progress,
            "error": self.error,
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


def progress_view(current: float, total: float | None, message: str, ts: float) -> dict[str, Any]:
    """The `progress` object of SPEC §4; percentage is null without a total."""
    pct: float | None = None
    if total:
        pct = round(max(0.0, min(100.0, current * 100.0 / total)), 2)
    return {"current": current, "total": total, "percentage": pct,
            "message": message, "updated_at": iso(ts)}

"""What the client hands back: the job view, a page of jobs, one event.

Frozen so a Job read from the daemon cannot be mistaken for live state; use
`dataclasses.replace` for a changed copy.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .protocol import COMPLETED, TERMINAL


@dataclass(frozen=True, slots=True)
class Job:
    """The job view, plus `result` (filled by `status` and `wait` for a completed job, else None).

    `queue`, `held` (null, or `{reason, since, until}`: why a due job may not
    start now), `unique_key`, `replay_of` (the job it was replayed from) and
    `signature` (a failed or dead-letter job's failure group) are None from a
    daemon that does not send them.
    """

    id: str | None = None
    name: str | None = None
    handler: str | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    status: str | None = None
    priority: int | None = None
    attempts: int | None = None
    max_retries: int | None = None
    retry_delay: float | None = None
    retry_backoff: float | None = None
    timeout: float | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    created_at: str | None = None
    scheduled_for: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    worker_id: Any = None
    progress: dict[str, Any] | None = None
    error: str | None = None
    result: Any = None
    queue: str | None = None
    held: dict[str, Any] | None = None
    unique_key: str | None = None
    replay_of: str | None = None
    signature: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        """Build from a job view, ignoring keys we do not know so the daemon may add fields.

        Null values take the field default, so `args`/`tags`/... are never None.
        """
        return cls(**{k: v for k, v in d.items() if k in _JOB_FIELDS and v is not None})

    @property
    def done(self) -> bool:
        """True once the job can no longer change by itself (a terminal status)."""
        return self.status in TERMINAL

    @property
    def ok(self) -> bool:
        """True when the job completed successfully."""
        return self.status == COMPLETED


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a `list`/`dead_letters` answer; `total` counts all matches."""

    jobs: list[Job]
    total: int

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> Page:
        """Decode the `jobs`/`total` reply fields."""
        return cls([Job.from_dict(j) for j in reply.get("jobs", [])], int(reply.get("total", 0)))


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a `watch` stream: the event name and its data."""

    event: str
    data: dict[str, Any]

    @property
    def job_id(self) -> str | None:
        """The job the event is about (None for worker events with no job)."""
        return self.data.get("job_id")


_JOB_FIELDS = frozenset(f.name for f in fields(Job))

"""Which jobs a bulk op touches (pure): the filter of `cancel_many`,
`retry_many` and `purge` (docs/flow-control.md, "Bulk operations")."""
from __future__ import annotations

from dataclasses import dataclass

from jobd.core.job import Job


@dataclass(frozen=True)
class Filter:
    """Which jobs a bulk op touches; every field given must match."""

    statuses: frozenset[str] | None = None
    queue: str | None = None
    handler: str | None = None
    tag: tuple[str, str] | None = None
    created_before: float | None = None
    created_after: float | None = None
    error_match: str | None = None
    ids: tuple[str, ...] | None = None
    completed_before: float | None = None      # purge's `older_than`, as a time

    def match(self, job: Job) -> bool:
        return ((self.statuses is None or job.status in self.statuses)
                and (self.handler is None or job.handler == self.handler)
                and (self.queue is None or job.queue == self.queue)
                and (self.created_before is None or _us(job.created_at) < self.created_before)
                and (self.created_after is None or _us(job.created_at) > self.created_after)
                and (self.tag is None or job.matches_tag(*self.tag))
                and (self.error_match is None
                     or (job.error is not None and self.error_match in job.error))
                and (self.completed_before is None
                     or (job.completed_at or 0.0) <= self.completed_before))


def _us(t: float) -> float:
    """A time as views show it (ISO, microseconds): a filter by a time read
    from a view treats the job it was read from as at that time."""
    return round(t, 6)

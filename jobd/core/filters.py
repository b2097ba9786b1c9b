"""Which jobs a bulk op touches (pure): the filter of `cancel_many`,
`retry_many` and `purge` (docs/flow-control.md, "Bulk operations"), and of
`list` and `dead_letters`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from jobd.core.failures import FailureGroups, signature_of
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
    signature: str | None = None               # of a failure group (jobd/core/failures.py)
    # The table's failure groups, when bound (`with_groups`): a job's group is
    # then looked up in O(1) instead of its error being normalised again.
    groups: FailureGroups | None = field(default=None, compare=False, repr=False)

    def with_groups(self, groups: FailureGroups) -> Filter:
        return dataclasses.replace(self, groups=groups)

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
                     or (job.completed_at or 0.0) <= self.completed_before)
                and (self.signature is None or self._in_group(job)))

    def _in_group(self, job: Job) -> bool:
        """Is the job, now, in the failure group of `signature`?"""
        assert self.signature is not None
        if self.groups is not None:
            return self.groups.holds(job, self.signature)
        return signature_of(job) == self.signature

    def candidates(self, jobs: dict[str, Job]) -> list[Job] | None:
        """The jobs that can match at all, when fewer than the table: those
        named by `ids`, or the members of the signature's groups (a list: a
        walk over it is not disturbed by changes). None: every job."""
        if self.ids is not None:
            found = (jobs.get(i) for i in self.ids)
            return [j for j in found if j is not None]
        if self.signature is not None and self.groups is not None:
            return self.groups.members_of(self.signature)
        return None


def _us(t: float) -> float:
    """A time as views show it (ISO, microseconds): a filter by a time read
    from a view treats the job it was read from as at that time."""
    return round(t, 6)

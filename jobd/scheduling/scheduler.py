"""Cron schedules in the running daemon: one timer, firing, add/remove, config.

Definitions live in the job table's `schedules`, changed only through records
(`SA` add/replace, `SR` remove, `ST` fired) like every other state, so a
restart rebuilds them. This class keeps what follows from them and the
clock: each schedule's parsed expression and next run, a heap of next runs,
and one loop timer armed for the earliest.

A run is submitted through `Jobs.submit` (a real job: WAL, metrics,
events) with a job id derived from (schedule, fire time), then an `ST` record
notes it: the fire time and when it ran. A crash between the two cannot make
a second job for the same run: the catch-up after the restart submits the
same id, which returns the job that already exists. Once noted, the catch-up
looks only past when it ran, so later restarts make no more runs for the
same outage. See docs/schedules.md.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable, Mapping
from typing import Any

from jobd import constants as C
from jobd.core import records as R
from jobd.core.job import iso
from jobd.errors import OpError
from jobd.jobs import Jobs
from jobd.scheduling.cron import Cron, CronError, parse
from jobd.scheduling.runs import fire_job_id
from jobd.scheduling.specs import (
    ScheduleSpec,
    check_config,
    last_due,
    same_definition,
    submit_request,
    view,
)
from jobd.server.args import parse_submit
from jobd.storage.store import Store

log = logging.getLogger("jobd.schedules")


class Scheduler:
    def __init__(self, *, store: Store, jobs: Jobs, handlers: Mapping[str, Any],
                 loop: asyncio.AbstractEventLoop, wake: Callable[[], None],
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.schedules = store.table.schedules     # read here, changed by records only
        self.jobs = jobs
        self.handlers = handlers
        self.loop = loop
        self.wake = wake            # records to write outside a request: run the daemon's turn
        self.clock = clock
        self._cron: dict[str, Cron] = {}
        self._next: dict[str, float | None] = {}
        self._heap: list[tuple[float, str]] = []     # lazy: valid while _next agrees
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self, entries: list[dict[str, Any]]) -> None:
        """After recovery, before serving: reconcile the config entries, fire at
        most one catch-up run per schedule that missed runs, arm the timer."""
        self.apply_config(entries)
        now = self.clock()
        for name in sorted(self.schedules):
            self._catch_up(name, now)
        self._arm()

    def _catch_up(self, name: str, now: float) -> None:
        rec = self.schedules[name]
        cron = self._parse(name, rec)
        if cron is None:
            return
        # `last_run` is when it last ran, not the due time: a catch-up names
        # its job after the first missed due time, but it also covered the
        # rest of the outage, which the next start must not make up again.
        since = max(rec.get("last_run") or 0.0, rec.get("updated_at") or 0.0)
        missed = _next_fire(cron, since)
        if missed is not None and missed <= now:
            log.info("schedule %r missed its run at %s while jobd was down: running it once now",
                     name, iso(missed))
            self._fire(name, missed)
        self._set_next(name, _next_fire(cron, now))

    # --- changes -----------------------------------------------------------------------
    def add(self, spec: ScheduleSpec, source: str) -> tuple[dict[str, Any], int]:
        """Add or replace (upsert) a schedule; returns its view and the journal seq."""
        self._check_open()
        now = self.clock()
        old = self.schedules.get(spec.name)
        undo = [R.SCHEDULE_ADD, old] if old is not None else [R.SCHEDULE_REMOVE, spec.name]
        seq = self._commit([R.SCHEDULE_ADD, spec.record(source, now, old)], undo)
        self._track(spec.name, now)
        return view(self.schedules[spec.name], self._next.get(spec.name)), seq

    def remove(self, name: str) -> tuple[bool, int]:
        self._check_open()
        old = self.schedules.get(name)
        if old is None:
            return False, 0
        seq = self._commit([R.SCHEDULE_REMOVE, name], [R.SCHEDULE_ADD, old])
        self._track(name, self.clock())
        return True, seq

    def views(self) -> list[dict[str, Any]]:
        return [view(self.schedules[name], self._next.get(name))
                for name in sorted(self.schedules)]

    def apply_config(self, entries: list[dict[str, Any]]) -> None:
        """Make the config's schedules so: add or update what changed, remove
        config schedules no longer listed; leave schedules added over the socket.
        An entry that does not check out raises ConfigError and changes nothing."""
        specs = check_config(entries, self.handlers)
        changed = [s for s in specs if not self._unchanged(s)]
        wanted = {s.name for s in specs}
        stale = [name for name, rec in self.schedules.items()
                 if rec.get("source") == C.SCHEDULE_SOURCE_CONFIG and name not in wanted]
        for spec in changed:
            self.add(spec, C.SCHEDULE_SOURCE_CONFIG)
        for name in stale:
            self.remove(name)
        if specs or stale:
            log.info("schedules from config: %d listed, %d added or updated, %d removed",
                     len(specs), len(changed), len(stale))
        if changed or stale:
            self.wake()          # write the records (this may run outside a request)

    def _unchanged(self, spec: ScheduleSpec) -> bool:
        rec = self.schedules.get(spec.name)
        return rec is not None and same_definition(rec, spec.definition(C.SCHEDULE_SOURCE_CONFIG))

    def _check_open(self) -> None:
        if not self.jobs.accepting:
            raise OpError(C.E_UNAVAILABLE, "jobd is shutting down")

    def _commit(self, rec: list[Any], undo: list[Any]) -> int:
        """Journal then apply; if the write fails, `undo` (a record) restores the old state."""
        seq = self.store.commit(rec, self._undo, undo)
        return seq

    def _undo(self, rec: list[Any]) -> None:
        self.store.revert(rec)
        body = rec[1]
        self._track(body["name"] if isinstance(body, dict) else body, self.clock())

    # --- next runs and the timer -------------------------------------------------------
    def _track(self, name: str, now: float) -> None:
        """Recompute a schedule's next run after a change; forget it when gone."""
        rec = self.schedules.get(name)
        if rec is None:
            self._cron.pop(name, None)
            self._next.pop(name, None)
        else:
            cron = self._parse(name, rec)
            self._set_next(name, _next_fire(cron, now) if cron is not None else None)
        self._arm()

    def _parse(self, name: str, rec: Mapping[str, Any]) -> Cron | None:
        """The schedule's expression; None (dormant, logged) if it no longer parses,
        e.g. its time zone left the tz database."""
        try:
            cron = parse(rec["cron"], rec["timezone"])
        except CronError as e:
            log.error("schedule %r is dormant: %s", name, e)
            self._cron.pop(name, None)
            return None
        self._cron[name] = cron
        return cron

    def _set_next(self, name: str, due: float | None) -> None:
        if self._next.get(name, -1.0) == due:
            return
        self._next[name] = due
        if due is not None:
            heapq.heappush(self._heap, (due, name))

    def _earliest(self) -> float | None:
        heap = self._heap
        while heap:
            due, name = heap[0]
            if self._next.get(name) == due:
                return due
            heapq.heappop(heap)
        return None

    def _arm(self) -> None:
        """One loop timer for the earliest next run (woken at least every
        SCHEDULE_MAX_SLEEP seconds, to follow wall-clock jumps)."""
        due = self._earliest()
        if due == self._timer_due and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = due
        if due is not None:
            delay = min(max(0.0, due - self.clock()), C.SCHEDULE_MAX_SLEEP)
            self._timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due = None
        if not self.jobs.accepting:
            return                 # shutting down: skip the run, arm nothing
        now = self.clock()
        fired = 0
        while self._heap and self._heap[0][0] <= now:
            due, name = heapq.heappop(self._heap)
            if self._next.get(name) != due:
                continue
            self._fire(name, due)
            fired += 1
            # Runs missed meanwhile (a busy loop, a clock jump) are not made up.
            cron = self._cron.get(name)
            self._set_next(name, _next_fire(cron, now) if cron is not None else None)
        if fired:
            self.wake()
        self._arm()

    # --- firing ------------------------------------------------------------------------
    def _fire(self, name: str, due: float) -> None:
        """Submit the run due at `due` and record it (`ST`)."""
        rec = self.schedules[name]
        now = self.clock()
        try:
            spec = parse_submit(submit_request(rec, fire_job_id(name, due)), now)
            job, _ = self.jobs.submit(spec)
        except OpError as e:
            log.warning("schedule %r: run due at %s not submitted: %s: %s",
                        name, iso(due), e.code, e.message)
            return
        except Exception:  # noqa: BLE001 - one bad schedule must not stop the others
            log.exception("schedule %r: run due at %s failed", name, iso(due))
            return
        undo = [R.SCHEDULE_FIRED, name, last_due(rec), rec.get("last_job_id"), rec.get("last_run")]
        self._commit([R.SCHEDULE_FIRED, name, due, job.id, now], undo)
        log.debug("schedule %r fired for %s: job %s", name, iso(due), job.id)


def _next_fire(cron: Cron, after: float) -> float | None:
    try:
        return cron.next_fire(after)
    except CronError as e:
        log.error("schedule with cron %r will not fire again: %s", cron.expr, e)
        return None

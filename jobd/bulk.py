"""Bulk operations: `cancel_many`, `retry_many` and `purge` over a filter,
and `replay` of a finished job (docs/flow-control.md, "Bulk operations").

A bulk op touches only the jobs that existed when it arrived: it takes a
list of them then (a C-speed copy of the table's values) and walks it in
slices of a few milliseconds, one slice per loop turn, so other clients keep
being answered while it runs over a million jobs. Each job is checked
against the filter when its slice comes (it may have changed since), and
changed through the same paths as the single-job ops (`Jobs.cancel`,
`Jobs.retry`, a delete record), so retried jobs pass the same rate limits
and holds as any other pending job. Running an interrupted op again
finishes it: each step is idempotent.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from jobd import constants as C
from jobd.core import records as R
from jobd.core.filters import Filter
from jobd.core.job import Job, SubmitSpec
from jobd.core.lifecycle import RETRYABLE
from jobd.errors import OpError
from jobd.jobs import Jobs, Runner
from jobd.storage.store import Store

log = logging.getLogger("jobd.bulk")

SLICE_S = 0.004            # work per loop turn, at most (then the loop answers others)
CHECK_EVERY = 256          # jobs between two looks at the clock
SAMPLE = 5                 # ids a reply shows of what matched
CANCEL, RETRY, PURGE = "cancel", "retry", "purge"

Done = Callable[[dict[str, Any], int], None]       # (reply fields, journal seq to wait for)


class Bulk:
    def __init__(self, *, jobs: Jobs, store: Store, runner: Runner,
                 loop: asyncio.AbstractEventLoop, clock: Callable[[], float]) -> None:
        self.jobs = jobs
        self.store = store
        self.runner = runner
        self.loop = loop
        self.clock = clock
        self.running = 0           # bulk ops in progress

    def start(self, kind: str, flt: Filter, done: Done, *, force: bool = False,
              dry_run: bool = False) -> None:
        """Begin `kind` over the jobs that match now; `done(reply, seq)` when finished."""
        table = self.store.table.jobs
        todo = flt.candidates(table)
        if todo is None:
            todo = list(table.values())
        state = _Run(kind, flt, todo, force, dry_run, done)
        self.running += 1
        log.info("%s over %d job(s) begins%s", _OP[kind], len(todo), " (dry run)" if dry_run else "")
        self._slice(state)

    def _slice(self, st: _Run) -> None:
        """One slice of the walk; the next is scheduled for the next loop turn."""
        try:
            end = time.perf_counter() + SLICE_S
            todo, i, n = st.todo, st.at, len(st.todo)
            act = self._act[st.kind]
            while i < n:
                stop = min(n, i + CHECK_EVERY)
                while i < stop:
                    job = todo[i]
                    i += 1
                    if job.status and st.flt.match(job) and _applies(st.kind, job):
                        st.matched += 1
                        if len(st.sample) < SAMPLE:
                            st.sample.append(job.id)
                        if not st.dry_run:
                            act(self, st, job)
                if time.perf_counter() >= end:
                    break
            st.at = i
            if st.deleting:
                st.seq = max(st.seq, self.store.commit([R.DELETE, st.deleting]))
                st.deleting = []
        except Exception:
            self.running -= 1
            log.exception("%s failed after %d job(s)", _OP[st.kind], st.at)
            raise
        if st.at < len(st.todo):
            self.loop.call_soon(self._slice, st)
            return
        self.running -= 1
        self._finish(st)

    def _finish(self, st: _Run) -> None:
        if st.kind == PURGE and st.done_n:
            self.jobs.sweep_results()
        if st.kind == RETRY and st.done_n:
            self.jobs.wake()
        reply: dict[str, Any] = {"matched": st.matched, _DONE_FIELD[st.kind]: st.done_n,
                                 "sample": st.sample}
        if st.dry_run:
            reply["dry_run"] = True
        elif st.kind == PURGE:
            reply = {"purged": st.done_n}      # as `purge` always answered
        log.info("%s done: %d matched, %d %s%s", _OP[st.kind], st.matched, st.done_n,
                 _DONE_FIELD[st.kind], " (dry run)" if st.dry_run else "")
        st.todo = []
        st.done(reply, st.seq)

    # --- what each op does to one job ----------------------------------------------------
    def _cancel(self, st: _Run, job: Job) -> None:
        cancelled, seq = self.jobs.cancel(job, st.force, self.runner)
        st.seq = max(st.seq, seq)
        st.done_n += cancelled

    def _retry(self, st: _Run, job: Job) -> None:
        st.seq = max(st.seq, self.store.commit([R.RETRY, job.id, self.clock()]))
        st.done_n += 1

    def _purge(self, st: _Run, job: Job) -> None:
        st.deleting.append(job.id)
        st.done_n += 1

    _act: dict[str, Callable[[Bulk, _Run, Job], None]] = {
        CANCEL: _cancel, RETRY: _retry, PURGE: _purge}

    # --- replay ------------------------------------------------------------------------------
    def replay(self, job: Job, overrides: dict[str, Any]) -> tuple[Job, int]:
        """A new job from a finished one: its handler, args, kwargs, priority,
        queue, tags, timeout and retry options, with `overrides` (args,
        kwargs, priority, queue, run_at) over them; not its id or unique key."""
        if not job.terminal:
            raise OpError(C.E_CONFLICT, f"job {job.id} is {job.status}; only a finished job "
                                        "(completed, failed, cancelled, dead_letter) can be replayed")
        if "args_json" in overrides:
            args, args_json = overrides["args"], overrides["args_json"]
        else:
            args_json = bytes(job.args)
            args = orjson.loads(args_json)
        if "kwargs_json" in overrides:
            kwargs, kwargs_json = overrides["kwargs"], overrides["kwargs_json"]
        else:
            kwargs_json = bytes(job.kwargs)
            kwargs = orjson.loads(kwargs_json)
        priority = overrides.get("priority")
        spec = SubmitSpec(
            job_id=None, handler=job.handler, args=args, kwargs=kwargs, args_json=args_json,
            kwargs_json=kwargs_json, priority=job.priority if priority is None else priority,
            max_retries=job.max_retries, retry_delay=job.retry_delay,
            retry_backoff=job.retry_backoff, timeout=job.timeout, tags=job.tags, name=job.name,
            depends_on=[], run_at=overrides.get("run_at"), has_timeout=True,
            queue=overrides.get("queue") or job.queue, replay_of=job.id)
        new, seq = self.jobs.submit(spec)
        log.info("job %s (%s) replayed as %s", job.id, job.handler, new.id)
        return new, seq


class _Run:
    """One bulk op in progress."""

    __slots__ = ("kind", "flt", "todo", "force", "dry_run", "done", "at", "matched",
                 "done_n", "sample", "seq", "deleting")

    def __init__(self, kind: str, flt: Filter, todo: list[Job], force: bool, dry_run: bool,
                 done: Done) -> None:
        self.kind = kind
        self.flt = flt
        self.todo = todo
        self.force = force
        self.dry_run = dry_run
        self.done = done
        self.at = 0
        self.matched = 0
        self.done_n = 0
        self.sample: list[str] = []
        self.seq = 0
        self.deleting: list[str] = []


def _applies(kind: str, job: Job) -> bool:
    """Whether the op can act on the job at all (what `matched` counts)."""
    if kind == CANCEL:
        return not job.terminal
    if kind == RETRY:
        return job.status in RETRYABLE
    return job.terminal


_OP = {CANCEL: "cancel_many", RETRY: "retry_many", PURGE: "purge"}
_DONE_FIELD = {CANCEL: "cancelled", RETRY: "retried", PURGE: "purged"}

"""The queue's operations: every state change is a WAL record applied to State.

`JobQueue` is the one owner of job state. Each mutation builds a record,
appends it to the journal (with an undo for client-originated changes, in
case the write fails) and applies it. The server waits for the journal to
make the record durable before it acknowledges.
"""
from __future__ import annotations

import heapq
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from jobd import constants as C
from jobd.config import Config
from jobd.core.job import EMPTY_DICT, EMPTY_LIST, Job, JobIds, progress_view
from jobd.core.retry import next_step
from jobd.core.state import State
from jobd.errors import OpError, invalid, not_found
from jobd.handlers import HandlerSpec
from jobd.server.args import MAX_TIMESTAMP, SubmitSpec
from jobd.storage import records as R
from jobd.storage.wal import Journal

log = logging.getLogger("jobd.queue")

Waiter = Callable[[Job], None]
EVICTION_LOG_S = 1.0        # at most one "dead-letter queue full" line this often
_DEFAULT_KEYS = ("max_retries", "retry_delay", "retry_backoff", "timeout", "jitter", "max_delay")


def _override(defaults: tuple[Any, ...], spec: SubmitSpec) -> tuple[Any, ...]:
    """The handler's defaults with what the submit itself set."""
    max_retries, retry_delay, retry_backoff, timeout, jitter, max_delay = defaults
    return (max_retries if spec.max_retries is None else spec.max_retries,
            retry_delay if spec.retry_delay is None else spec.retry_delay,
            retry_backoff if spec.retry_backoff is None else spec.retry_backoff,
            spec.timeout if spec.has_timeout else timeout, jitter, max_delay)


class JobQueue:
    def __init__(self, cfg: Config, state: State, journal: Journal,
                 handlers: dict[str, HandlerSpec], clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.state = state
        self.journal = journal
        self.handlers = handlers
        self.clock = clock
        self.waiters: dict[str, list[Waiter]] = {}
        self.accepting = True
        self._defaults: dict[str, tuple[int, tuple[Any, ...]]] = {}
        self.on_pending: Callable[[], None] = lambda: None
        self.on_retry_delay: Callable[[str, float], None] = lambda handler, delay: None
        self.on_evicted: Callable[[int], None] = lambda n: None
        self._evictions_logged = -EVICTION_LOG_S
        self._evictions_unlogged = 0
        self.rng = random.Random()
        self.ids = JobIds()

    # --- recording ----------------------------------------------------------------
    def commit(self, rec: list[Any]) -> int:
        seq = self.journal.append(rec)
        self.state.apply(rec)
        return seq

    def get(self, job_id: Any) -> Job:
        job = self.state.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise not_found(job_id)
        return job

    # --- submit ---------------------------------------------------------------------
    def _check_admit(self, spec: SubmitSpec, batch: dict[str, Job]) -> None:
        if spec.handler not in self.handlers:
            raise OpError(C.E_UNKNOWN_HANDLER, f"no handler registered as {spec.handler!r}")
        for dep in spec.depends_on:
            if dep not in self.state.jobs and dep not in batch:
                raise OpError(C.E_NOT_FOUND, f"depends_on: no job with id {dep!r}")

    def defaults(self, handler: str) -> tuple[int, tuple[Any, ...]]:
        """A handler's job defaults, merged once:
        [handler."NAME"] config > @handler option > [retry] default.
        Returns (priority, (max_retries, retry_delay, retry_backoff, timeout,
        jitter, max_delay)) as `Job.new` takes them."""
        cached = self._defaults.get(handler)
        if cached is not None:
            return cached
        from jobd.server.args import priority_value
        retry = self.cfg.retry
        merged: dict[str, Any] = {
            "priority": C.DEFAULT_PRIORITY, "max_retries": retry.max_retries,
            "retry_delay": retry.retry_delay, "retry_backoff": retry.retry_backoff,
            "timeout": None, "jitter": None, "max_delay": None,
        }
        for source in (self.handlers[handler].options, self.cfg.handler.get(handler, {})):
            for key, value in source.items():
                if key in merged and value is not None:
                    merged[key] = value
        for key in ("retry_delay", "retry_backoff", "timeout", "max_delay"):
            if merged[key] is not None:
                merged[key] = float(merged[key])
        cached = (priority_value(merged["priority"]),
                  tuple(merged[k] for k in _DEFAULT_KEYS))
        self._defaults[handler] = cached
        return cached

    def build(self, spec: SubmitSpec, now: float) -> Job:
        """A new Job from a validated spec (submit arguments win over defaults);
        its status is set by `place`."""
        priority, defaults = self.defaults(spec.handler)
        if not spec.plain:
            defaults = _override(defaults, spec)
            if spec.priority is not None:
                priority = spec.priority
        return Job.new(spec.job_id or self.ids.next(), spec.handler, priority,
                       self.state.next_seq(), now, defaults, spec.name, spec.args_json,
                       spec.kwargs_json, spec.tags, spec.depends_on)

    def place(self, job: Job, run_at: float | None, now: float,
              batch: dict[str, Job] | None = None) -> None:
        """Choose the initial status: failed (a dependency already ended
        unsuccessfully, with or without a delay), scheduled, waiting or pending."""
        deps = self._deps_state(job, batch or {}) if job.depends_on else C.COMPLETED
        if deps == C.FAILED:
            job.status = C.FAILED
            job.error = f"dependency {self.state.failed_dep(job)} ended unsuccessfully"
            job.completed_at = now
            return
        if run_at is not None:
            job.scheduled_for = run_at
            if run_at > now:
                job.status = C.SCHEDULED
                return
        job.status = C.PENDING if deps == C.COMPLETED else C.WAITING

    def _deps_state(self, job: Job, batch: dict[str, Job]) -> str:
        if any(d in batch and batch[d].status not in C.TERMINAL for d in job.depends_on):
            return C.WAITING          # a sibling in the same batch cannot be done yet
        return self.state.deps_state(job)

    def _check_room(self, jobs: int, args_bytes: int) -> None:
        """`queue_full` unless `jobs` more jobs holding `args_bytes` of args
        and kwargs fit within [queue] max_size and max_args_bytes."""
        q, state = self.cfg.queue, self.state
        if state.queued + jobs > q.max_size:
            raise OpError(C.E_QUEUE_FULL, f"queue is full ({q.max_size} jobs)")
        if state.args_bytes + args_bytes > q.max_args_bytes:
            raise OpError(C.E_QUEUE_FULL, f"queue is full: jobs hold {state.args_bytes} bytes of "
                                          f"args and kwargs (max_args_bytes {q.max_args_bytes})")

    def submit(self, spec: SubmitSpec) -> tuple[Job, int]:
        """Admit one job; returns (job, journal seq to wait for)."""
        self._check_open()
        if spec.job_id is not None and spec.job_id in self.state.jobs:
            job = self.state.jobs[spec.job_id]
            return job, job.wal_seq        # a resubmit: answered once the original is durable
        self._check_admit(spec, {})
        self._check_room(1, len(spec.args_json) + len(spec.kwargs_json))
        now = self.clock()
        job = self.build(spec, now)
        self.place(job, spec.run_at, now)
        return job, self._insert(job)

    def submit_plain(self, handler: str, args: bytes, kwargs: bytes,
                     job_id: str | None) -> tuple[Job, int]:
        """`submit` for a job with only handler, args, kwargs and maybe job_id:
        the same checks and records in one short path (most submits)."""
        if not self.accepting:
            self._check_open()
        state = self.state
        if job_id is None:
            job_id = self.ids.next()
        elif job_id in state.jobs:
            job = state.jobs[job_id]
            return job, job.wal_seq        # a resubmit: answered once the original is durable
        defaults = self._defaults.get(handler)
        if defaults is None:
            if handler not in self.handlers:
                raise OpError(C.E_UNKNOWN_HANDLER, f"no handler registered as {handler!r}")
            defaults = self.defaults(handler)
        if state.queued >= self.cfg.queue.max_size or \
                state.args_bytes + len(args) + len(kwargs) > self.cfg.queue.max_args_bytes:
            self._check_room(1, len(args) + len(kwargs))      # raises, naming the limit
        job = Job.new(job_id, handler, defaults[0], state.next_seq(), self.clock(), defaults[1],
                      None, args, kwargs, EMPTY_DICT, EMPTY_LIST)
        seq = self.journal.append([R.SUBMIT, job.new_record()], self._undo_submit, job_id)
        job.wal_seq = seq
        state.insert(job)
        self.on_pending()
        return job, seq

    def _insert(self, job: Job) -> int:
        seq = self.journal.append([R.SUBMIT, job.to_record()], self._undo_submit, job.id)
        job.wal_seq = seq
        self.state.insert(job)
        if job.status == C.PENDING:
            self.on_pending()
        return seq

    def _undo_submit(self, job_id: str) -> None:
        job = self.state.jobs.get(job_id)
        if job is not None and job.status != C.RUNNING:
            self.state.apply([R.DELETE, [job_id]])

    def submit_many(self, specs: list[SubmitSpec]) -> tuple[list[str], int]:
        """All or nothing: validate every job and the dependency graph first."""
        self._check_open()
        new_id, known = self.ids.next, self.state.jobs
        for spec in specs:
            if spec.job_id is None:
                spec.job_id = new_id()
        fresh = [s for s in specs if s.job_id not in known]
        # Resubmitted jobs: the reply also waits for their original submits.
        seq = max((known[s.job_id].wal_seq for s in specs if s.job_id in known), default=0)
        ids = dict.fromkeys(s.job_id for s in fresh)
        if len(ids) != len(fresh):
            raise invalid("jobs", "duplicate job_id in the batch")
        for spec in fresh:
            self._check_admit(spec, ids)  # type: ignore[arg-type]
        linked = any(s.depends_on for s in fresh)
        if linked:
            _check_acyclic(fresh)
        self._check_room(len(fresh), sum(len(s.args_json) + len(s.kwargs_json) for s in fresh))
        now = self.clock()
        batch: dict[str, Job] = {}
        for spec in _dependency_order(fresh) if linked else fresh:
            job = self.build(spec, now)
            self.place(job, spec.run_at, now, batch)
            batch[job.id] = job
            seq = self._insert(job)
        return [s.job_id or "" for s in specs], seq

    def _check_open(self) -> None:
        if not self.accepting:
            raise OpError(C.E_UNAVAILABLE, "jobd is shutting down")

    # --- client-driven changes -----------------------------------------------------
    def cancel(self, job: Job, force: bool) -> tuple[bool, int]:
        """(cancelled now?, seq). Running jobs: request, or kill with force."""
        if job.terminal:
            return False, 0
        if job.status != C.RUNNING:
            return True, self.commit([R.CANCEL, job.id, self.clock()])
        if force:
            return True, 0       # the pool kills the worker and records the cancel
        if job.cancel_requested:
            return False, 0
        return False, self.commit([R.CANCEL_REQUEST, job.id])

    def retry(self, job: Job) -> int:
        if job.status not in (C.DEAD_LETTER, C.FAILED, C.CANCELLED):
            raise OpError(C.E_CONFLICT, f"job {job.id} is {job.status}; only dead_letter, "
                                        "failed or cancelled jobs can be retried")
        seq = self.commit([R.RETRY, job.id, self.clock()])
        self.on_pending()
        return seq

    def purge(self, status: str | None, older_than: float | None) -> tuple[int, int]:
        statuses = (status,) if status else tuple(C.TERMINAL)
        cutoff = self.clock() - older_than if older_than is not None else None
        ids = [j.id for j in self.state.jobs.values()
               if j.status in statuses and (cutoff is None or (j.completed_at or 0) <= cutoff)]
        if not ids:
            return 0, 0
        return len(ids), self.commit([R.DELETE, ids])

    # --- worker-driven changes -----------------------------------------------------
    def start(self, job: Job, worker_id: int) -> None:
        self.commit(R.start(job.id, self.clock(), worker_id))

    def progress(self, job: Job, current: float, total: float | None, message: str) -> None:
        prog = progress_view(current, total, message, self.clock())
        self.commit([R.PROGRESS, job.id, prog])

    def complete(self, job: Job, result: Any, ref: Any = None) -> None:
        self.commit(R.complete(job.id, self.clock(), result, ref))

    def fail_attempt(self, job: Job, error: str, next_status: str, due: float | None) -> None:
        self.commit(R.fail(job.id, self.clock(), error, next_status, due))
        if next_status == C.DEAD_LETTER:
            self.evict_dead_letters()

    def evict_dead_letters(self) -> None:
        """Keep the dead-letter queue within `[dead_letter] max_size` the
        moment a job enters it: the oldest are deleted (a `D` record),
        counted and logged."""
        evicted = self.state.dead_overflow(self.cfg.dead_letter.max_size)
        if not evicted:
            return
        self.commit([R.DELETE, [j.id for j in evicted]])
        self.on_evicted(len(evicted))
        self._log_evictions(evicted)

    def _log_evictions(self, evicted: list[Job]) -> None:
        """One line per eviction, at most one line per EVICTION_LOG_S: a
        failing handler can push thousands of jobs through a full queue."""
        now = time.monotonic()
        if now - self._evictions_logged < EVICTION_LOG_S:
            self._evictions_unlogged += len(evicted)
            return
        self._evictions_logged = now
        job, more = evicted[0], len(evicted) - 1 + self._evictions_unlogged
        self._evictions_unlogged = 0
        log.warning("dead-letter queue full (max_size %d): deleted its oldest job %s (%s)%s",
                    self.cfg.dead_letter.max_size, job.id, job.handler,
                    f" and {more} more since the last such line" if more else "")

    def attempt_failed(self, job: Job, error: str, kind: int, after: float) -> None:
        """Apply the retry policy to a failed attempt (SPEC §4). The daemon's
        tick re-arms its timer for a retry's due time."""
        log.info("job %s (%s) attempt %d failed: %s", job.id, job.handler, job.attempts,
                 error.splitlines()[0] if error else "")
        r = self.cfg.retry
        status, delay = next_step(
            job.attempts, job.max_retries, kind, after, job.cancel_requested,
            job.retry_delay, job.retry_backoff,
            r.max_delay if job.max_delay is None else job.max_delay,
            r.jitter if job.jitter is None else job.jitter, self.rng)
        due = None
        if delay is not None:
            self.on_retry_delay(job.handler, delay)
            # Retry(after=1e15) or a huge max_delay: still a time the view can show.
            due = min(self.clock() + delay, MAX_TIMESTAMP)
        self.fail_attempt(job, error, status, due)

    def cancelled_by_force(self, job: Job) -> int:
        return self.commit([R.CANCEL, job.id, self.clock()])

    def requeue(self, job: Job, uncount: bool) -> None:
        self.commit([R.REQUEUE, job.id, uncount])
        self.on_pending()

    # --- waiting for results ----------------------------------------------------------
    def add_waiter(self, job_id: str, fn: Waiter) -> None:
        self.waiters.setdefault(job_id, []).append(fn)

    def remove_waiter(self, job_id: str, fn: Waiter) -> None:
        fns = self.waiters.get(job_id)
        if fns and fn in fns:
            fns.remove(fn)
            if not fns:
                del self.waiters[job_id]

    def notify_terminal(self, job: Job) -> None:
        for fn in self.waiters.pop(job.id, ()):
            fn(job)


def _check_acyclic(specs: list[SubmitSpec]) -> None:
    """A batch whose jobs depend on each other in a cycle is invalid."""
    graph = {s.job_id: [d for d in s.depends_on] for s in specs if s.job_id}
    state: dict[str, int] = {}

    def visit(node: str) -> None:
        stack = [(node, iter(graph.get(node, ())))]
        state[node] = 1
        while stack:
            cur, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[cur] = 2
                stack.pop()
            elif nxt in graph:
                if state.get(nxt) == 1:
                    raise invalid("depends_on", f"dependency cycle through job {nxt!r}")
                if nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, iter(graph[nxt])))

    for node in graph:
        if node not in state:
            visit(node)


def _dependency_order(specs: list[SubmitSpec]) -> list[SubmitSpec]:
    """Jobs in batch order, except that a job comes after the batch jobs it
    depends on (Kahn's algorithm on indexes; the batch is known acyclic)."""
    index = {s.job_id: i for i, s in enumerate(specs)}
    blockers = [sum(1 for d in s.depends_on if d in index) for s in specs]
    unblocks: dict[int, list[int]] = {}
    for i, s in enumerate(specs):
        for d in s.depends_on:
            if d in index:
                unblocks.setdefault(index[d], []).append(i)
    ready = [i for i, n in enumerate(blockers) if n == 0]
    heapq.heapify(ready)
    out: list[SubmitSpec] = []
    while ready:
        i = heapq.heappop(ready)
        out.append(specs[i])
        for nxt in unblocks.get(i, ()):
            blockers[nxt] -= 1
            if blockers[nxt] == 0:
                heapq.heappush(ready, nxt)
    return out

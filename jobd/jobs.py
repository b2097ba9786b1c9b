"""Jobs: every change a client or a worker makes to a job, over a `Store`.

`Jobs` is where requests and outcomes become state records: submit, cancel,
retry, purge, expiry; a job started, its progress, its result, a failed
attempt (the retry policy: jobd/core/lifecycle.py), a job put back. Each
change is one record committed to the store (written to the log, then
applied); the reply that acknowledges it waits for that record to be
durable. It also holds the result waiters (`result`/`wait` with a wait
time), told through the store's listener list when a job ends.

`Jobs` is the `Outcomes` the pool reports to, and a cancel reaches the job's
worker through the `Runner` port the pool implements.
"""
from __future__ import annotations

import heapq
import logging
import operator
import random
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any, Protocol

import orjson

from jobd import constants as C
from jobd.config import Config
from jobd.core import records as R
from jobd.core.flow import QueueGate
from jobd.core.job import (
    EMPTY_DICT,
    EMPTY_LIST,
    Job,
    JobIds,
    PlainSubmit,
    SubmitSpec,
    progress_view,
)
from jobd.core.lifecycle import (
    FAIL_CRASH,
    FAIL_ERROR,
    FAIL_RATE_LIMITED,
    FAIL_SNOOZE,
    RETRYABLE,
    next_step,
)
from jobd.core.signature import check
from jobd.core.values import MAX_TIMESTAMP, priority_value
from jobd.errors import OpError, did_you_mean, invalid, not_found
from jobd.handlers import HandlerSpec, json_options
from jobd.storage.logs import JobLogs
from jobd.storage.results import ResultStore, file_stem
from jobd.storage.store import Store

_IS_PLAIN = operator.attrgetter("plain")

log = logging.getLogger("jobd.jobs")

Waiter = Callable[[Job], None]
EVICTION_LOG_S = 1.0        # at most one "dead-letter queue full" line this often
_DEFAULT_KEYS = ("max_retries", "retry_delay", "retry_backoff", "timeout", "jitter", "max_delay")




class JobStats(Protocol):
    """What `Jobs` reports that no status change shows (jobd/runtime/metrics.py)."""

    def observe_result_size(self, handler: str, size: int) -> None: ...
    def observe_retry_delay(self, handler: str, seconds: float) -> None: ...
    def count_evicted(self, n: int) -> None: ...
    def count_deduplicated(self, handler: str) -> None: ...


class Guard(Protocol):
    """What decides on breakers and quarantine after an attempt (jobd/control.py)."""

    def attempt_done(self, job: Job, was_trial: bool, failed: bool | None,
                     crashed: bool) -> None:
        """`failed`: True a counted failure, False a success, None not counted."""


class Runner(Protocol):
    """How a cancel reaches a job's worker (the pool implements it)."""

    def take_back(self, job: Job) -> None:
        """`job` (pending, now cancelled) may have been sent ahead to a worker: drop it there."""

    def request_cancel(self, job: Job) -> None:
        """Tell the running `job` that its cancel was requested."""

    def kill(self, job: Job) -> None:
        """Stop the running `job` now (it is recorded cancelled already)."""


def _override(defaults: tuple[Any, ...], spec: SubmitSpec) -> tuple[Any, ...]:
    """The handler's defaults with what the submit itself set."""
    max_retries, retry_delay, retry_backoff, timeout, jitter, max_delay = defaults
    return (max_retries if spec.max_retries is None else spec.max_retries,
            retry_delay if spec.retry_delay is None else spec.retry_delay,
            retry_backoff if spec.retry_backoff is None else spec.retry_backoff,
            spec.timeout if spec.has_timeout else timeout, jitter, max_delay)


class Jobs:
    def __init__(self, cfg: Config, store: Store, handlers: dict[str, HandlerSpec],
                 results: ResultStore, logs: JobLogs, stats: JobStats, wake: Callable[[], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.store = store
        self.table = store.table
        self.handlers = handlers
        self.results = results
        self.logs = logs
        self.stats = stats
        self.wake = wake                   # a job became pending: dispatch this turn
        self.clock = clock
        self.waiters: dict[str, list[Waiter]] = {}
        self.accepting = True
        self.rng = random.Random()
        self.ids = JobIds()
        self._defaults: dict[str, tuple[int, tuple[Any, ...], bool, QueueGate]] = {}
        self._lanes: dict[str, Any] = {}    # handler → the ready lane of its jobs (jobd/core/flow.py)
        self._evictions_logged = -EVICTION_LOG_S
        self._evictions_unlogged = 0
        self.runner: Runner | None = None   # the pool, once built (a replaced job may be sent ahead)
        self.guard: Guard | None = None     # breakers and quarantine, once built
        self._insert = store.insert         # bound once: the submit hot path
        self._next_seq = store.next_seq

    def set_handlers(self, handlers: dict[str, HandlerSpec]) -> None:
        """New handler code (a reload): submits are checked against it from now on."""
        self.handlers = handlers
        self._defaults.clear()
        self._lanes.clear()

    def handler_options(self, name: str) -> dict[str, Any]:
        """A handler's options as its jobs get them: `@handler` options, then
        its `[handler."NAME"]` config over them (JSON)."""
        merged = {**json_options(self.handlers[name].options),
                  **self.cfg.handler.get(name, {})}
        priority, defaults, _, queue = self.defaults(name)
        merged.update(zip(_DEFAULT_KEYS, defaults))
        merged["priority"] = priority
        merged["queue"] = queue.name
        return merged

    def get(self, job_id: Any) -> Job:
        job = self.table.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise not_found(job_id)
        return job

    def close(self) -> None:
        """A graceful stop began: new submits are refused (`unavailable`)."""
        self.accepting = False

    # --- submit ------------------------------------------------------------------------
    # One path: `submit` for a full spec, `submit_plain` for the common submit
    # of only handler/args/kwargs/job_id (no spec object, defaults merged once
    # per handler); both take the same checks and `_admit` the job the same way.
    def submit(self, spec: SubmitSpec) -> tuple[Job, int]:
        """Admit one job; returns (job, journal seq to wait for)."""
        self._check_open()
        held = self._existing(spec.job_id)
        if held is not None:
            return held, held.wal_seq
        self._check_admit(spec, {})
        now = self.clock()
        replaced = None
        if spec.unique_key is not None:
            holder = self._holder(spec, now)
            if holder is not None:
                if spec.on_conflict != C.ON_CONFLICT_REPLACE or holder.status == C.RUNNING:
                    spec.duplicate = True
                    return holder, holder.wal_seq
                replaced = holder
        room = 0 if replaced is not None and replaced.queue == self._queue(spec).name else 1
        self._check_room(room, len(spec.args_json) + len(spec.kwargs_json), self._queue(spec))
        if replaced is not None:
            self._replace(replaced, now)
        job = self.build(spec, now)
        self.store.place(job, spec.run_at, now)
        return job, self._admit(job)

    def _holder(self, spec: SubmitSpec, now: float) -> Job | None:
        """The job holding the submit's unique_key, if any (one past its
        `unique_for` holds it no more); `conflict` for on_conflict "error"."""
        assert spec.unique_key is not None
        holder = self.table.unique.get(spec.unique_key)
        if holder is None or (holder.unique_for is not None
                              and now >= holder.created_at + holder.unique_for):
            return None
        if spec.on_conflict == C.ON_CONFLICT_ERROR:
            self.stats.count_deduplicated(spec.handler)
            raise OpError(C.E_CONFLICT, f"unique_key {spec.unique_key!r} is held by job "
                                        f"{holder.id} ({holder.status})")
        if spec.on_conflict != C.ON_CONFLICT_REPLACE or holder.status == C.RUNNING:
            self.stats.count_deduplicated(spec.handler)
        return holder

    def _replace(self, holder: Job, now: float) -> None:
        """on_conflict "replace": the holder, not running, is cancelled."""
        log.info("job %s (%s) cancelled: replaced by a submit with its unique_key %r",
                 holder.id, holder.handler, holder.unique_key)
        self.store.commit([R.CANCEL, holder.id, now])
        if self.runner is not None:
            self.runner.take_back(holder)

    def submit_plain(self, handler: str, args: list[Any], args_json: bytes,
                     kwargs: dict[str, Any], kwargs_json: bytes,
                     job_id: str | None) -> tuple[Job, int]:
        """`submit` of a job with only handler, args, kwargs and maybe job_id
        (most submits): pending at once, every option from the defaults."""
        if not self.accepting:
            self._check_open()
        if job_id is None:
            job_id = self.ids.next()
        else:
            held = self._existing(job_id)
            if held is not None:
                return held, held.wal_seq
        defaults = self._defaults.get(handler) or self.defaults(handler)
        if args or kwargs or defaults[2]:
            self.check_call(handler, len(args), kwargs)
        table, size = self.table, len(args_json) + len(kwargs_json)
        if table.queued >= self.cfg.queue.max_size or defaults[3].max_size or \
                table.args_bytes + size > self.cfg.queue.max_args_bytes:
            self._check_room(1, size, defaults[3])      # raises, naming the limit
        job = Job.new(job_id, handler, defaults[0], self._next_seq(), self.clock(),
                      defaults[1], None, args_json, kwargs_json, EMPTY_DICT, EMPTY_LIST,
                      defaults[3].name, self._lanes[handler])
        seq = self._insert(job, job.new_record())      # `_admit`, inlined: the hot path
        self.wake()
        return job, seq

    def submit_many(self, specs: list[SubmitSpec]) -> tuple[list[str], int]:
        """All or nothing: validate every job and the dependency graph first."""
        self._check_open()
        new_id, known = self.ids.next, self.table.jobs
        for spec in specs:
            if spec.job_id is None:
                spec.job_id = new_id()
        fresh = [s for s in specs if s.job_id not in known]
        now = self.clock()
        replaced: list[Job] = []
        # Plain specs (the usual batch) have no unique key, queue or dependency.
        plain = all(map(_IS_PLAIN, fresh))
        if not plain and any(s.unique_key is not None for s in fresh):
            fresh, replaced = self._unique_batch(fresh, now)
        # Resubmitted jobs: the reply also waits for their original submits.
        seq = max((known[s.job_id].wal_seq for s in specs if s.job_id in known), default=0)
        ids: dict[str, None] = dict.fromkeys(s.job_id or "" for s in fresh)
        if len(ids) != len(fresh):
            raise invalid("jobs", "duplicate job_id in the batch")
        for spec in fresh:
            self._check_admit(spec, ids)
        linked = not plain and any(s.depends_on for s in fresh)
        if linked:
            _check_acyclic(fresh)
        self._check_room(len(fresh), sum(len(s.args_json) + len(s.kwargs_json) for s in fresh))
        if plain:           # their handlers' queues, known
            self._check_queues_room(self._queue(spec) for spec in fresh)
        else:               # each looked up now: an unknown queue is refused
            self._check_queues_room([self._queue(spec) for spec in fresh])
        for holder in replaced:
            self._replace(holder, now)
        batch: dict[str, Job] = {}
        for spec in _dependency_order(fresh) if linked else fresh:
            job = self.build(spec, now)
            self.store.place(job, spec.run_at, now, batch)
            batch[job.id] = job
            seq = self._admit(job)
        return [s.job_id or "" for s in specs], seq

    def submit_many_plain(self, items: list[PlainSubmit]) -> tuple[list[str], int]:
        """`submit_many` of a batch whose every job is plain (`submit_plain`'s
        fields only: no options, unique keys, queues or dependencies): the same
        checks, all before anything is admitted, without a spec per job."""
        self._check_open()
        new_id, known, defaults_of = self.ids.next, self.table.jobs, self._defaults.get
        ids: list[str] = []
        fresh: list[tuple[str, PlainSubmit, tuple[Any, ...]]] = []
        seq = size = 0
        for item in items:
            handler, args, args_json, kwargs, kwargs_json, job_id = item
            if job_id is None:
                job_id = new_id()
            elif job_id in known:       # a resubmit: its reply waits for the original
                seq = max(seq, known[job_id].wal_seq)
                ids.append(job_id)
                continue
            defaults = defaults_of(handler) or self.defaults(handler)
            if args or kwargs or defaults[2]:
                self.check_call(handler, len(args), kwargs)
            size += len(args_json) + len(kwargs_json)
            ids.append(job_id)
            fresh.append((job_id, item, defaults))
        if len({f[0] for f in fresh}) != len(fresh):
            raise invalid("jobs", "duplicate job_id in the batch")
        self._check_room(len(fresh), size)
        self._check_queues_room(f[2][3] for f in fresh)
        now, lanes = self.clock(), self._lanes
        for job_id, (handler, _, args_json, _, kwargs_json, _), defaults in fresh:
            job = Job.new(job_id, handler, defaults[0], self._next_seq(), now, defaults[1], None,
                          args_json, kwargs_json, EMPTY_DICT, EMPTY_LIST, defaults[3].name,
                          lanes[handler])
            seq = self._insert(job, job.new_record())
        if fresh:
            self.wake()
        return ids, seq

    def _check_queues_room(self, queues: Iterable[QueueGate]) -> None:
        """`queue_full` unless each queue with a max_size has room for the
        batch's jobs that go to it (one entry per job in `queues`)."""
        if not any(q.max_size for q in self.store.ready.queues.values()):
            return
        per_queue: dict[str, int] = {}
        for q in queues:
            per_queue[q.name] = per_queue.get(q.name, 0) + 1
        for name, n in per_queue.items():
            self._check_room(n, 0, self.store.ready.queues[name])

    def _unique_batch(self, fresh: list[SubmitSpec], now: float
                      ) -> tuple[list[SubmitSpec], list[Job]]:
        """Unique keys in a batch: a spec whose key is held (on_conflict
        "return") takes the holder's id and creates nothing; "error" refuses
        the batch; "replace" returns the holders to cancel. Two specs with
        one key: `invalid_argument`."""
        keys: set[str] = set()
        keep: list[SubmitSpec] = []
        replaced: list[Job] = []
        for spec in fresh:
            key = spec.unique_key
            if key is None:
                keep.append(spec)
                continue
            if key in keys:
                raise invalid("jobs", f"unique_key {key!r} appears twice in the batch")
            keys.add(key)
            holder = self._holder(spec, now)
            if holder is None:
                keep.append(spec)
            elif spec.on_conflict == C.ON_CONFLICT_REPLACE and holder.status != C.RUNNING:
                replaced.append(holder)
                keep.append(spec)
            else:
                spec.job_id = holder.id
                spec.duplicate = True
        return keep, replaced

    def _admit(self, job: Job) -> int:
        """Record a new job (its submit is undone if the write fails)."""
        seq = self._insert(job)
        if job.status == C.PENDING:
            self.wake()
        return seq

    def _existing(self, job_id: str | None) -> Job | None:
        """A resubmit of an existing id returns that job (answered once its
        submit is durable), never a duplicate."""
        return None if job_id is None else self.table.jobs.get(job_id)

    def _check_open(self) -> None:
        if not self.accepting:
            raise OpError(C.E_UNAVAILABLE, "jobd is shutting down")

    def _check_admit(self, spec: SubmitSpec, batch: dict[str, Any]) -> None:
        if spec.handler not in self.handlers:
            raise self._unknown_handler(spec.handler)
        self.check_call(spec.handler, len(spec.args), spec.kwargs)
        for dep in spec.depends_on:
            if dep not in self.table.jobs and dep not in batch:
                raise OpError(C.E_NOT_FOUND, f"depends_on: no job with id {dep!r}")

    def check_call(self, handler: str, nargs: int, kwargs: Collection[str]) -> None:
        """`invalid_argument` naming the parameter unless the args bind to the
        handler's parameters (a wrong call would fail every attempt)."""
        shape = self.handlers[handler].shape
        wrong = check(shape, nargs, kwargs) if shape is not None else None
        if wrong is not None:
            raise invalid(*wrong)

    def _unknown_handler(self, name: str) -> OpError:
        """`unknown_handler`, naming the registered handlers the name is close to."""
        return OpError(C.E_UNKNOWN_HANDLER, f"no handler registered as {name!r}"
                                            + did_you_mean(name, list(self.handlers)))

    def _queue(self, spec: SubmitSpec) -> QueueGate:
        """The queue a submit goes to: its `queue`, else its handler's."""
        if spec.queue is None:
            return self.defaults(spec.handler)[3]
        gate = self.store.ready.queues.get(spec.queue)
        if gate is None:
            raise invalid("queue", f"no queue named {spec.queue!r}"
                          + did_you_mean(spec.queue, list(self.store.ready.queues)))
        return gate

    def _check_room(self, jobs: int, args_bytes: int, queue: QueueGate | None = None) -> None:
        """`queue_full` unless `jobs` more jobs holding `args_bytes` of args
        and kwargs fit within [queue] max_size and max_args_bytes, and the
        queue's own max_size."""
        q, table = self.cfg.queue, self.table
        if queue is not None and queue.max_size and queue.queued + jobs > queue.max_size:
            raise OpError(C.E_QUEUE_FULL, f"queue {queue.name!r} is full ({queue.max_size} jobs)")
        if table.queued + jobs > q.max_size:
            raise OpError(C.E_QUEUE_FULL, f"queue is full ({q.max_size} jobs)")
        if table.args_bytes + args_bytes > q.max_args_bytes:
            raise OpError(C.E_QUEUE_FULL, f"queue is full: jobs hold {table.args_bytes} bytes of "
                                          f"args and kwargs (max_args_bytes {q.max_args_bytes})")

    def defaults(self, handler: str) -> tuple[int, tuple[Any, ...], bool, QueueGate]:
        """A handler's job defaults, merged once:
        [handler."NAME"] config > @handler option > [retry] default.
        Returns (priority, (max_retries, retry_delay, retry_backoff, timeout,
        jitter, max_delay)) as `Job.new` takes them, whether a call without
        arguments must be checked (the function has required parameters), and
        the queue its jobs go to."""
        cached = self._defaults.get(handler)
        if cached is not None:
            return cached
        if handler not in self.handlers:
            raise self._unknown_handler(handler)
        retry = self.cfg.retry
        merged: dict[str, Any] = {
            "priority": C.DEFAULT_PRIORITY, "max_retries": retry.max_retries,
            "retry_delay": retry.retry_delay, "retry_backoff": retry.retry_backoff,
            "timeout": None, "jitter": None, "max_delay": None, "queue": C.DEFAULT_QUEUE,
        }
        for source in (self.handlers[handler].options, self.cfg.handler.get(handler, {})):
            for key, value in source.items():
                if key in merged and value is not None:
                    merged[key] = value
        for key in ("retry_delay", "retry_backoff", "timeout", "max_delay"):
            if merged[key] is not None:
                merged[key] = float(merged[key])
        shape = self.handlers[handler].shape
        cached = (priority_value(merged["priority"]),
                  tuple(merged[k] for k in _DEFAULT_KEYS),
                  shape is not None and bool(shape.required),
                  self.store.ready.queue(merged["queue"]))
        self._defaults[handler] = cached
        self._lanes[handler] = self.store.ready.lane(cached[3].name, handler)
        return cached

    def build(self, spec: SubmitSpec, now: float) -> Job:
        """A new Job from a validated spec (submit arguments win over defaults);
        its status is set by `place`."""
        priority, defaults, _, queue = self._defaults.get(spec.handler) or self.defaults(spec.handler)
        if spec.plain:
            return Job.new(spec.job_id or self.ids.next(), spec.handler, priority,
                           self._next_seq(), now, defaults, None, spec.args_json,
                           spec.kwargs_json, EMPTY_DICT, EMPTY_LIST, queue.name,
                           self._lanes[spec.handler])
        defaults = _override(defaults, spec)
        if spec.priority is not None:
            priority = spec.priority
        job = Job.new(spec.job_id or self.ids.next(), spec.handler, priority,
                      self._next_seq(), now, defaults, spec.name, spec.args_json,
                      spec.kwargs_json, spec.tags, spec.depends_on,
                      spec.queue or queue.name,
                      # its handler's lane when it goes to the handler's queue
                      self._lanes[spec.handler] if spec.queue is None else None)
        if spec.unique_key is not None:
            job.unique_key = spec.unique_key
            job.unique_for = spec.unique_for
        if spec.replay_of is not None:
            job.replay_of = spec.replay_of
        return job

    # --- client-driven changes -------------------------------------------------------------
    def cancel(self, job: Job, force: bool, runner: Runner) -> tuple[bool, int]:
        """(cancelled now?, seq). A job not yet running is cancelled at once
        (and taken back from a worker it was sent ahead to); a running one is
        asked to stop, or with `force` its worker is killed."""
        if job.terminal:
            return False, 0
        if job.status != C.RUNNING:
            seq = self.store.commit([R.CANCEL, job.id, self.clock()])
            runner.take_back(job)
            return True, seq
        if force:
            seq = self.cancelled_by_force(job)
            runner.kill(job)
            return True, seq
        if job.cancel_requested:
            return False, 0
        seq = self.store.commit([R.CANCEL_REQUEST, job.id])
        runner.request_cancel(job)
        return False, seq

    def retry(self, job: Job) -> int:
        if job.status not in RETRYABLE:
            raise OpError(C.E_CONFLICT, f"job {job.id} is {job.status}; only dead_letter, "
                                        "failed or cancelled jobs can be retried")
        seq = self.store.commit([R.RETRY, job.id, self.clock()])
        self.wake()
        return seq

    def purge(self, status: str | None, older_than: float | None) -> tuple[int, int]:
        statuses = (status,) if status else tuple(C.TERMINAL)
        cutoff = self.clock() - older_than if older_than is not None else None
        ids = [j.id for j in self.store.scan()
               if j.status in statuses and (cutoff is None or (j.completed_at or 0) <= cutoff)]
        if not ids:
            return 0, 0
        seq = self.store.commit([R.DELETE, ids])
        self.sweep_results()
        return len(ids), seq

    def cancel_interrupted(self, jobs: list[Job]) -> None:
        """After a crash: a requeued job whose cancel had been requested is not run again."""
        for job in jobs:
            if job.cancel_requested:
                self.store.commit([R.CANCEL, job.id, self.clock()])

    # --- outcomes: what the pool reports ----------------------------------------------------
    def start(self, job: Job, worker_id: int) -> None:
        self.store.commit(R.start(job.id, self.clock(), worker_id))

    def progress(self, job: Job, current: float, total: float | None, message: str) -> None:
        prog = progress_view(current, total, message, self.clock())
        self.store.commit([R.PROGRESS, job.id, prog])

    def complete(self, job: Job, raw: bytes) -> None:
        """The job's result, as the raw JSON the worker sent: inline in the
        log, or (larger) in a file written off the loop, recorded when written."""
        self.stats.observe_result_size(job.handler, len(raw))
        if self.results.is_inline(raw):
            trial = job.lane.handler.breaker.trial
            self.store.commit(R.complete(job.id, self.clock(), orjson.Fragment(raw), None))
            if trial is not None and trial == job.id and self.guard is not None:
                self.guard.attempt_done(job, True, False, False)
            return

        def stored(ref: list[Any] | None, error: str | None) -> None:
            if job.status != C.RUNNING:
                return
            if ref is None:
                self.attempt_failed(job, error or "result could not be stored", 0, 0.0)
            else:
                was_trial = self._is_trial(job)
                self.store.commit(R.complete(job.id, self.clock(), None, ref))
                if was_trial and self.guard is not None:
                    self.guard.attempt_done(job, True, False, False)
            self.wake()
        self.results.store(job.id, raw, stored)

    def log(self, job: Job, data: bytes) -> None:
        """Output the job printed or logged (kept with it, `logs` op)."""
        self.logs.append(job.id, data)

    def attempt_failed(self, job: Job, error: str, kind: int, after: float) -> None:
        """Apply the retry policy to a failed attempt. The daemon's tick
        re-arms its timer for a retry's due time."""
        if kind == FAIL_RATE_LIMITED or kind == FAIL_SNOOZE:
            self._held_back(job, kind, after)
            return
        log.info("job %s (%s) attempt %d failed: %s", job.id, job.handler, job.attempts,
                 _first_line(error))
        crashed = kind == FAIL_CRASH
        r = self.cfg.retry
        status, delay = next_step(
            job.attempts, job.max_retries, FAIL_ERROR if crashed else kind, after,
            job.cancel_requested, job.retry_delay, job.retry_backoff,
            r.max_delay if job.max_delay is None else job.max_delay,
            r.jitter if job.jitter is None else job.jitter, self.rng)
        if crashed and status == C.RETRYING:
            poison = job.lane.handler.breaker.spec.poison_after
            kills = self.table.crashes.get(job.id, 0) + 1
            if poison and kills >= poison:
                status, delay = C.DEAD_LETTER, None
                error = f"poison: the job killed its worker {kills} times; last: {error}"
                log.warning("job %s (%s) is poison: it killed its worker %d times",
                            job.id, job.handler, kills)
        now = self.clock()
        due = None
        if delay is not None:
            self.stats.observe_retry_delay(job.handler, delay)
            # Retry(after=1e15) or a huge max_delay: still a time the view can show.
            due = min(now + delay, MAX_TIMESTAMP)
        was_trial = self._is_trial(job)
        self.store.commit(R.fail(job.id, now, error, status, due, crashed))
        if self.guard is not None and status != C.CANCELLED:
            self.guard.attempt_done(job, was_trial, status != C.FAILED, crashed)
        if status == C.DEAD_LETTER:
            log.warning("job %s (%s) moved to the dead-letter queue after %d attempt(s): %s",
                        job.id, job.handler, job.attempts, _first_line(error))
            self.evict_dead_letters()

    @staticmethod
    def _is_trial(job: Job) -> bool:
        """Is the job its handler's half-open breaker trial?"""
        trial = job.lane.handler.breaker.trial
        return trial is not None and bool(trial == job.id)

    def _held_back(self, job: Job, kind: int, after: float) -> None:
        """`RateLimited(after)` or `Snooze(after)`: held back, never failed.
        The attempt is not counted. RateLimited puts the job back to pending
        in its place and holds its handler's starts until `after` seconds
        from now; Snooze makes only this job wait (scheduled) that long. A
        job whose cancel was requested ends cancelled instead."""
        now = self.clock()
        if job.cancel_requested:
            self.store.commit([R.CANCEL, job.id, now])
            return
        until = min(now + max(0.0, after), MAX_TIMESTAMP)
        if kind == FAIL_SNOOZE:
            log.info("job %s (%s) snoozed for %.3gs", job.id, job.handler, after)
            self.store.commit([R.SNOOZE, job.id, now, until])
            return
        log.info("job %s (%s) rate limited by its service: %s holds for %.3gs",
                 job.id, job.handler, job.handler, after)
        self.store.commit([R.RATE_HOLD, job.handler, now, until])
        self.store.commit([R.REQUEUE, job.id, True])
        self.wake()

    def cancelled_by_force(self, job: Job) -> int:
        return self.store.commit([R.CANCEL, job.id, self.clock()])

    def requeue(self, job: Job, uncount: bool) -> None:
        """A running job put back to pending, its attempt not counted when
        `uncount` (the graceful stop killed it: it runs again after the restart)."""
        self.store.commit([R.REQUEUE, job.id, uncount])
        log.warning("job %s (%s) was still running at the stop: put back to pending, it runs "
                    "again%s", job.id, job.handler, " (attempt not counted)" if uncount else "")
        self.wake()

    # --- expiry --------------------------------------------------------------------------------
    def expire(self) -> int:
        """Keep the dead-letter queue within its size; drop finished jobs past
        results.ttl and dead letters past retention_days."""
        self.evict_dead_letters()           # e.g. max_size lowered since the last start
        dl = self.cfg.dead_letter
        ids = self.table.expired(self.clock(), self.cfg.results.ttl, dl.retention_days * 86400.0)
        if ids:
            self.store.commit([R.DELETE, ids])
            self.sweep_results()
            self.wake()
        return len(ids)

    def sweep_results(self) -> None:
        """Delete the result files and captured output of jobs that are gone (purged, expired)."""
        live = {file_stem(j.id) for j in self.store.scan() if j.result_ref}
        self.results.forget_missing(lambda stem: stem in live)
        self.logs.flush()
        everyone = {file_stem(j.id) for j in self.store.scan()}
        self.logs.forget_missing(lambda stem: stem in everyone)

    def evict_dead_letters(self) -> None:
        """Keep the dead-letter queue within `[dead_letter] max_size` the
        moment a job enters it: the oldest are deleted (a `D` record),
        counted and logged."""
        evicted = self.table.dead_overflow(self.cfg.dead_letter.max_size)
        if not evicted:
            return
        self.store.commit([R.DELETE, [j.id for j in evicted]])
        self.stats.count_evicted(len(evicted))
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

    # --- waiting for results ---------------------------------------------------------------------
    # Jobs listens to status changes only while someone waits: most changes
    # then cost no call here.
    def add_waiter(self, job_id: str, fn: Waiter) -> None:
        if not self.waiters:
            self.store.listen(self._on_change)
        self.waiters.setdefault(job_id, []).append(fn)

    def remove_waiter(self, job_id: str, fn: Waiter) -> None:
        fns = self.waiters.get(job_id)
        if fns and fn in fns:
            fns.remove(fn)
            if not fns:
                del self.waiters[job_id]
                self._maybe_unlisten()

    def _on_change(self, job: Job, old: str) -> None:
        if job.status in C.TERMINAL and job.id in self.waiters:
            for fn in self.waiters.pop(job.id, ()):
                fn(job)
            self._maybe_unlisten()

    def _maybe_unlisten(self) -> None:
        if not self.waiters:
            self.store.unlisten(self._on_change)




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


def _first_line(text: str | None) -> str:
    return text.splitlines()[0] if text else ""

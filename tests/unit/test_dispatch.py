"""The dispatcher (jobd/pool/dispatch.py), driven without processes.

The real `Dispatcher`, `Arbiter` and `Jobs` run over an in-memory store
(`MemoryStore`) and worker handles without sockets: frames the daemon sends
a worker are read back from the handle's buffer, and the test plays the
worker by handing the arbiter the frames a worker would answer, in an order
chosen to hit each race exactly. Nothing is timed; no process is forked.
"""
from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from jobd import constants as C
from jobd.config import load
from jobd.core import records as R
from jobd.core.flow import HandlerFlow
from jobd.core.job import EMPTY_ARGS, EMPTY_KWARGS, Job
from jobd.handlers import HandlerSpec
from jobd.jobs import Jobs
from jobd.pool import frames as F
from jobd.pool.arbiter import Arbiter
from jobd.pool.dispatch import Dispatcher
from jobd.pool.handle import WorkerHandle, Workers
from jobd.storage.logs import JobLogs
from jobd.storage.results import ResultStore
from jobd.storage.store import MemoryStore

HANDLER = "t.noop"
LIMITED = "t.limited"


class Stats:
    """The JobStats port: records nothing the tests need."""

    def observe_result_size(self, handler: str, size: int) -> None: ...
    def observe_retry_delay(self, handler: str, seconds: float) -> None: ...
    def count_evicted(self, n: int) -> None: ...
    def count_deduplicated(self, handler: str) -> None: ...


class Events:
    watchers: list[Any] = []

    def publish(self, name: str, job_id: str | None, data: dict[str, Any]) -> None: ...


class NoForkServer:
    """The arbiter never spawns here: handles are made by the test."""

    def spawn(self, wid: int, sock: Any) -> None:
        raise AssertionError("no processes in unit tests")


class Rig:
    """A dispatcher with its arbiter and `Jobs`, and workers the test plays."""

    def __init__(self, tmp_path: Any, dispatcher_class: type[Dispatcher] = Dispatcher,
                 prefetch: int = 2, limits: dict[str, int] | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        cfg = load(None, env={"JOBD_SOCKET": str(tmp_path / "s"), "JOBD_DATA_DIR": str(tmp_path)})
        handlers = {name: HandlerSpec(name, lambda: None, False, {}) for name in (HANDLER, LIMITED)}
        self.store = MemoryStore()
        self.clock = itertools.count(1_800_000_000.0, 0.001).__next__
        results = ResultStore(str(tmp_path / "results"), 1 << 20, 1 << 16, self.loop)
        logs = JobLogs(str(tmp_path / "logs"), 1 << 20, lambda job_id: job_id)
        self.jobs = Jobs(cfg, self.store, handlers, results, logs, Stats(), lambda: None, self.clock)
        self.workers = Workers(self.loop, self.store.ready.queue)
        self.store.ready.configure([], {HANDLER: HandlerFlow(),
                                        LIMITED: HandlerFlow(max_concurrency=(limits or {}).get(LIMITED, 0))})
        self.dispatcher = dispatcher_class(store=self.store, outcomes=self.jobs,
                                           workers=self.workers, prefetch=prefetch,
                                           memory_limit=0, clock=self.clock)
        self.arbiter = Arbiter(forkserver=NoForkServer(), cfg=cfg.workers,  # type: ignore[arg-type]
                               loop=self.loop, outcomes=self.jobs, dispatcher=self.dispatcher,
                               workers=self.workers, events=Events(), wake=lambda: None,
                               fatal=lambda why: None)
        self.n = 0
        self.ran: Counter[str] = Counter()      # runs the played workers made, job by job

    def close(self) -> None:
        self.loop.close()

    def worker(self) -> WorkerHandle:
        """A ready, idle worker (as after its READY frame)."""
        w = WorkerHandle(len(self.workers.all) + 1, None, self.loop.call_later,
                         self.arbiter.timed_out)
        self.workers.add(w, self.workers.pool(C.DEFAULT_QUEUE))
        self.arbiter._on_frame(w, F.READY, orjson.dumps([1000 + w.id, 0]))
        return w

    def submit(self, priority: int = 10, handler: str = HANDLER) -> str:
        self.n += 1
        job = Job.new(f"j{self.n}", handler, priority, self.store.next_seq(), self.clock(),
                      (0, 1.0, 2.0, None, None, None), None, EMPTY_ARGS, EMPTY_KWARGS, {}, [])
        self.store.place(job, None, self.clock())
        self.store.insert(job)
        return job.id

    def sent(self, w: WorkerHandle) -> list[tuple[int, str]]:
        """Frames sent to `w` since the last look: (kind, job id)."""
        frames, used = F.parse(w.wbuf)
        del w.wbuf[:used]
        return [(kind, orjson.loads(body)[0] if kind == F.RUN else body.decode())
                for kind, body in frames]

    # what a worker answers -------------------------------------------------------------
    def done(self, w: WorkerHandle, job_id: str) -> None:
        """`w` ran `job_id` and reports its result."""
        self.ran[job_id] += 1
        self.arbiter._on_frame(w, F.DONE, F.pack_done(job_id, b"null"))

    def dropped(self, w: WorkerHandle, job_id: str, ran: bool) -> None:
        self.arbiter._on_frame(w, F.DROPPED, orjson.dumps([job_id, ran]))

    def starts(self) -> Counter[str]:
        """How many times each job was recorded as started."""
        return Counter(rec[1] for rec in self.store.records if rec[0] == R.START)

    def status(self, job_id: str) -> str:
        job = self.store.get(job_id)
        assert job is not None
        return job.status


@pytest.fixture
def rig(tmp_path: Any) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


class DropWithoutWaiting(Dispatcher):
    """The double-run bug fixed in session 4, put back: a job taken back from
    a worker goes back to the queue at once, without waiting for the worker
    to say whether it had started it."""

    def take_back(self, job: Job) -> None:
        w = self.reserved.pop(job.id, None)
        if w is None:
            return
        w.queued = type(w.queued)(e for e in w.queued if e[0] is not job)
        self.workers.send(w, F.frame(F.DROP, job.id.encode()))
        w.drops += 1
        self.ready.push(job)


def drain(rig: Rig) -> None:
    """Run everything left: each worker finishes its current job, again and again."""
    for _ in range(100):
        rig.dispatcher.dispatch()
        for w in rig.workers:                # a job taken back had not started yet
            for kind, job_id in rig.sent(w):
                if kind == F.DROP:
                    rig.dropped(w, job_id, False)
        rig.dispatcher.dispatch()
        busy = [w for w in rig.workers if w.job is not None]
        if not busy and rig.store.top() is None:
            return
        for w in busy:
            rig.sent(w)
            rig.done(w, w.job.id)            # type: ignore[union-attr]
    raise AssertionError("jobs still left after 100 rounds")


def take_back_race(rig: Rig) -> list[list[tuple[int, str]]]:
    """Two busy workers with low jobs sent ahead; a high job arrives and the
    low ones are taken back. Worker 1 had already finished its job and started
    the first job sent to it when the DROPs arrived (it answers `ran`); worker
    2 had not (it answers not started) and goes idle. Returns the frames each
    step sent (w1, w2 after the first dispatch; after the high submit; w2 once
    idle); the starts are in the store's records."""
    w1, w2 = rig.worker(), rig.worker()
    seen = []
    a1, a2, b, c, d, e = (rig.submit(priority=0) for _ in range(6))
    rig.dispatcher.dispatch()
    seen += [rig.sent(w1), rig.sent(w2)]
    rig.submit(priority=30)
    rig.dispatcher.dispatch()
    seen += [rig.sent(w1), rig.sent(w2)]
    rig.done(w2, a2)                       # worker 2 had not started c or e
    rig.dropped(w2, c, False)
    rig.dropped(w2, e, False)
    rig.dispatcher.dispatch()              # idle now: it takes the best pending job
    seen.append(rig.sent(w2))
    rig.done(w1, a1)                       # worker 1 had finished a1 and started b
    rig.dropped(w1, b, True)
    rig.dropped(w1, d, False)
    rig.done(w1, b)
    drain(rig)
    return seen


def test_a_job_taken_back_after_its_worker_started_it_runs_once(rig: Rig) -> None:
    seen = take_back_race(rig)
    a1, a2, b, c, d, e, high = (f"j{i}" for i in range(1, 8))
    assert seen[0] == [(F.RUN, a1), (F.RUN, b), (F.RUN, d)]      # a1 runs, b and d sent ahead
    assert seen[1] == [(F.RUN, a2), (F.RUN, c), (F.RUN, e)]
    assert seen[2] == [(F.DROP, b), (F.DROP, d)]                  # outranked by `high`: taken back
    assert seen[3] == [(F.DROP, c), (F.DROP, e)]
    assert seen[4][0] == (F.RUN, high)
    once = Counter({j: 1 for j in (a1, a2, b, c, d, e, high)})
    assert rig.ran == once, rig.ran                 # what the workers ran
    starts = rig.starts()
    assert starts == once, starts                   # what the daemon recorded
    assert all(rig.status(j) == C.COMPLETED for j in starts)
    assert rig.store.table.counts[C.RUNNING] == 0


def test_the_race_script_catches_the_old_double_run(tmp_path: Any) -> None:
    """The same script against a dispatcher with the old bug: b runs twice
    (worker 1 had started it; it was queued again at once and ran elsewhere)."""
    r = Rig(tmp_path, DropWithoutWaiting)
    try:
        take_back_race(r)
        assert r.ran["j3"] == 2, r.ran
    finally:
        r.close()


def test_a_cancelled_job_sent_ahead_is_dropped_and_never_started(rig: Rig) -> None:
    w = rig.worker()
    first, ahead = rig.submit(), rig.submit()
    rig.submit()
    rig.dispatcher.dispatch()
    assert [f for f in rig.sent(w) if f[0] == F.RUN][:2] == [(F.RUN, first), (F.RUN, ahead)]
    cancelled, _ = rig.jobs.cancel(rig.store.get(ahead), False, rig.arbiter)   # type: ignore[arg-type]
    assert cancelled and rig.sent(w) == [(F.DROP, ahead)]
    rig.done(w, first)
    assert w.job is None and w.status == C.W_BUSY        # waits for the DROP's answer
    rig.dropped(w, ahead, False)
    assert rig.status(ahead) == C.CANCELLED and rig.starts()[ahead] == 0


def test_a_cancelled_job_that_had_started_keeps_its_outcome_not_a_second_run(rig: Rig) -> None:
    w = rig.worker()
    first, ahead = rig.submit(), rig.submit()
    rig.submit()
    rig.dispatcher.dispatch()
    rig.sent(w)
    rig.jobs.cancel(rig.store.get(ahead), False, rig.arbiter)   # type: ignore[arg-type]
    rig.done(w, first)
    rig.dropped(w, ahead, True)          # it had started: it stays cancelled, not requeued
    assert w.job is not None and w.job.id == "j3"         # the next job sent ahead is current
    rig.done(w, ahead)                   # its outcome is not the current job's: ignored
    assert rig.status(ahead) == C.CANCELLED and rig.starts()[ahead] == 0
    assert rig.status("j3") == C.RUNNING
    assert all(job.id != ahead for job in rig.store.life.ready.order())


def test_priority_then_fifo_with_one_worker(rig: Rig) -> None:
    w = rig.worker()
    rig.dispatcher.prefetch = 0
    ids = [rig.submit(priority=p) for p in (0, 20, 10, 20, 0)]
    order = []
    for _ in ids:
        rig.dispatcher.dispatch()
        (kind, job_id), = rig.sent(w)
        order.append(job_id)
        rig.done(w, job_id)
    assert order == [ids[1], ids[3], ids[2], ids[0], ids[4]]


def test_a_limited_handler_never_runs_more_than_its_limit_and_others_pass_it(tmp_path: Any) -> None:
    r = Rig(tmp_path, prefetch=0, limits={LIMITED: 1})
    try:
        ws = [r.worker() for _ in range(3)]
        limited = [r.submit(priority=30, handler=LIMITED) for _ in range(3)]
        other = [r.submit(priority=0) for _ in range(2)]
        r.dispatcher.dispatch()
        running = {w.job.id for w in ws if w.job is not None}
        assert running == {limited[0], *other}            # the limit holds; others are not blocked
        holder = next(w for w in ws if w.job is not None and w.job.id == limited[0])
        r.done(holder, limited[0])
        r.dispatcher.dispatch()
        assert holder.job is not None and holder.job.id == limited[1]   # one slot freed, one job
        assert r.store.ready.handlers[LIMITED].running == 1
    finally:
        r.close()


def test_jobs_of_a_handler_the_code_does_not_register_are_held_until_it_does(tmp_path: Any) -> None:
    r = Rig(tmp_path, prefetch=0)
    try:
        r.store.ready.configure([], {HANDLER: HandlerFlow()})   # LIMITED is not in the loaded code
        w = r.worker()
        held = r.submit(priority=30, handler=LIMITED)
        other = r.submit(priority=0)
        r.dispatcher.dispatch()
        assert r.sent(w) == [(F.RUN, other)]                # the held job did not block it
        assert r.status(held) == C.PENDING
        hold = r.store.ready.hold_of(r.store.get(held), r.clock())     # type: ignore[arg-type]
        assert hold is not None and hold.reason == C.H_QUARANTINED
        r.done(w, other)
        r.store.ready.configure([], {HANDLER: HandlerFlow(), LIMITED: HandlerFlow()})   # reload
        r.dispatcher.dispatch()
        assert r.sent(w) == [(F.RUN, held)]
    finally:
        r.close()

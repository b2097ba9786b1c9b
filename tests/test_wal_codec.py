"""Property tests of the WAL (pure; no daemon): the record codec, scanning
of any prefix of a log, and replay of any prefix of a valid history of job
state changes into a fresh `Lifecycle` (docs/wal.md).
"""
from __future__ import annotations

import math
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from jobd import constants as C
from jobd.core import records as R
from jobd.core.job import EMPTY_ARGS, EMPTY_KWARGS, Job, compact_result, progress_view
from jobd.core.lifecycle import Lifecycle as State
from jobd.storage import codec

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Histories are long, so shrinking a failure can take minutes, longer than
# the suite's per-test timeout: report the first failing history unshrunk
# (the assertion names the job and its view). Add Phase.shrink to dig in.
HISTORY_SETTINGS = settings(SETTINGS, max_examples=60,
                            phases=[Phase.explicit, Phase.reuse, Phase.generate])

# --- JSON values ------------------------------------------------------------------------

scalars = (st.none() | st.booleans()
           | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=30))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=8)
records = st.lists(json_values, min_size=1, max_size=4)     # a record is a JSON array


def same(a: Any, b: Any) -> bool:
    """JSON equality that tells -0.0 from 0.0 and 1 from 1.0 and True from 1."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def encode_log(recs: list[Any]) -> tuple[bytes, list[int]]:
    """The log bytes and the offset just past each record."""
    buf = bytearray()
    ends = []
    for rec in recs:
        codec.encode_into(buf, rec)
        ends.append(len(buf))
    return bytes(buf), ends


@SETTINGS
@given(st.lists(records, max_size=10))
def test_codec_round_trips_any_json_records(recs):
    data, ends = encode_log(recs)
    assert data == b"".join(codec.encode(r) for r in recs)
    found = codec.scan(data)
    assert found.damage is None and found.good_end == len(data) == found.size
    assert found.tail_bytes == 0
    assert len(found.records) == len(recs)
    assert all(same(a, b) for a, b in zip(found.records, recs))
    # with a sink, records are handed over in order and not collected
    seen: list[Any] = []
    assert codec.scan(data, seen.append).records == []
    assert all(same(a, b) for a, b in zip(seen, recs)) and len(seen) == len(recs)


@SETTINGS
@given(st.lists(records, min_size=1, max_size=15), st.data())
def test_scan_of_any_prefix_yields_exactly_the_whole_records_in_it(recs, data):
    log, ends = encode_log(recs)
    cut = data.draw(st.integers(min_value=0, max_value=len(log)), label="cut")
    found = codec.scan(log[:cut])
    whole = sum(1 for e in ends if e <= cut)
    assert len(found.records) == whole
    assert all(same(a, b) for a, b in zip(found.records, recs))
    assert found.good_end == (ends[whole - 1] if whole else 0)
    assert found.tail_bytes == cut - found.good_end
    assert (found.damage is None) == (cut == found.good_end)
    # nothing valid follows a torn tail: recovery may cut it
    assert codec.next_good_record(log[:cut], found.good_end) is None


@SETTINGS
@given(st.lists(records, min_size=2, max_size=10), st.data())
def test_a_damaged_record_stops_the_scan_and_later_records_are_found(recs, data):
    log, ends = encode_log(recs)
    starts = [0] + ends[:-1]
    victim = data.draw(st.integers(min_value=0, max_value=len(recs) - 2), label="victim")
    pos = data.draw(st.integers(min_value=starts[victim], max_value=ends[victim] - 1),
                    label="pos")
    flip = data.draw(st.integers(min_value=1, max_value=255), label="flip")
    damaged = bytearray(log)
    damaged[pos] ^= flip
    found = codec.scan(bytes(damaged))
    assert found.damage is not None
    assert len(found.records) == victim
    assert all(same(a, b) for a, b in zip(found.records, recs))
    later = codec.next_good_record(bytes(damaged), found.good_end)
    assert later is not None and later <= starts[victim + 1]


# --- job records ------------------------------------------------------------------------

small_json = st.recursive(st.none() | st.booleans() | st.integers(-1000, 1000)
                          | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                          max_leaves=8)
times = st.floats(min_value=1e9, max_value=4e9, allow_nan=False)
opt_time = st.none() | times


@st.composite
def jobs(draw: st.DrawFn) -> Job:
    job = Job()
    job.id = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,20}", fullmatch=True))
    job.handler = draw(st.sampled_from(["a.b", "jobd_testhandlers.noop", "x"]))
    job.name = draw(st.none() | st.text(max_size=10))
    args = draw(st.lists(small_json, max_size=3))
    kwargs = draw(st.dictionaries(st.text(max_size=5), small_json, max_size=3))
    job.args = orjson.dumps(args) if args else EMPTY_ARGS        # kept as JSON text
    job.kwargs = orjson.dumps(kwargs) if kwargs else EMPTY_KWARGS
    job.status = draw(st.sampled_from(C.STATUSES))
    job.priority = draw(st.integers(0, 1000))
    job.attempts = draw(st.integers(0, 50))
    job.max_retries = draw(st.integers(0, 1000))
    job.retry_delay = draw(st.floats(0, 1e6))
    job.retry_backoff = draw(st.floats(1, 100))
    job.timeout = draw(st.none() | st.floats(0.001, 1e6))
    job.tags = draw(st.dictionaries(st.text(max_size=5),
                                    st.text(max_size=5) | st.integers(-(2**63), 2**63) | st.booleans(),
                                    max_size=3))
    job.depends_on = draw(st.lists(st.text(min_size=1, max_size=5), max_size=3, unique=True))
    job.created_at = draw(times)
    job.scheduled_for = draw(opt_time)
    job.started_at = draw(opt_time)
    job.completed_at = draw(opt_time)
    job.worker_id = draw(st.none() | st.integers(0, 100))
    job.progress = draw(st.none() | st.builds(progress_view, st.floats(0, 100),
                                              st.none() | st.floats(1, 100),
                                              st.text(max_size=5), times))
    job.error = draw(st.none() | st.text(max_size=20))
    job.result = compact_result(draw(small_json))
    job.result_ref = draw(st.none() | st.lists(st.text(max_size=5) | st.integers(0, 9),
                                               min_size=1, max_size=3))
    job.seq = draw(st.integers(0, 2**40))
    job.cancel_requested = draw(st.booleans())
    job.jitter = draw(st.none() | st.booleans())
    job.max_delay = draw(st.none() | st.floats(0, 1e4))
    return job


def all_fields(job: Job) -> dict[str, Any]:
    return {k: getattr(job, k) for k in Job.__slots__ if k != "finished_attempt_at"}


def json_fields(job: Job) -> dict[str, Any]:
    """`all_fields` with the result (an orjson Fragment) as its JSON text."""
    fields = all_fields(job)
    fields["result"] = orjson.dumps(fields["result"])
    return fields


@SETTINGS
@given(jobs())
def test_job_record_round_trips_through_the_wal(job):
    rec = [R.SUBMIT, job.to_record()]
    back = codec.scan(codec.encode(rec)).records[0]
    again = Job.from_record(back[1])
    # args, kwargs and result are JSON text (orjson Fragments compare by identity)
    assert same(json_fields(again), json_fields(job)) or json_fields(again) == json_fields(job)
    assert orjson.dumps(again.view()) == orjson.dumps(job.view())
    assert orjson.dumps(again.to_record()) == orjson.dumps(job.to_record())


# --- histories of state changes -----------------------------------------------------------

class History:
    """Builds a random but valid sequence of WAL records the way the daemon
    does: each record is made from the live state, appended, then applied
    (submits insert the live Job object, like `JobQueue._insert`)."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.live = State()
        self.records: list[Any] = []
        self.now = 1_800_000_000.0
        self.n = 0

    def clock(self) -> float:
        self.now += self.draw(st.floats(0.001, 10.0), label="dt")
        return self.now

    def commit(self, rec: list[Any]) -> None:
        self.records.append(rec)
        self.live.apply(rec)

    def jobs_in(self, *statuses: str) -> list[Job]:
        return [j for j in self.live.table.jobs.values() if j.status in statuses]

    def pick(self, *statuses: str) -> Job | None:
        cands = self.jobs_in(*statuses)
        return self.draw(st.sampled_from(cands), label="job") if cands else None

    # one method per kind of change ---------------------------------------------------
    def submit(self) -> None:
        draw, live = self.draw, self.live
        job = Job()
        job.id = f"j{self.n}"
        self.n += 1
        job.handler = draw(st.sampled_from(["h.a", "h.b"]), label="handler")
        job.priority = draw(st.sampled_from([0, 10, 20, 30, 500]), label="priority")
        args = draw(st.lists(small_json, max_size=2), label="args")
        job.args = orjson.dumps(args) if args else EMPTY_ARGS
        job.created_at = self.clock()
        job.seq = live.table.next_seq()
        open_jobs = [j.id for j in live.table.jobs.values() if j.status not in C.TERMINAL]
        all_ids = list(live.table.jobs)
        if all_ids and draw(st.booleans(), label="has deps"):
            pool = open_jobs if open_jobs and draw(st.integers(0, 3)) else all_ids
            job.depends_on = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3,
                                           unique=True), label="deps")
        # what JobQueue.place does
        deps = live.table.deps_state(job) if job.depends_on else C.COMPLETED
        if deps == C.FAILED:
            job.status = C.FAILED
            job.error = f"dependency {live.table.failed_dep(job)} ended unsuccessfully"
            job.completed_at = job.created_at
        elif draw(st.booleans(), label="delayed"):
            job.scheduled_for = job.created_at + draw(st.floats(1, 1000), label="delay")
            job.status = C.SCHEDULED
        else:
            job.status = C.PENDING if deps == C.COMPLETED else C.WAITING
        self.records.append([R.SUBMIT, job.to_record()])
        live.insert(job)

    def chain(self) -> None:
        """A long chain, each job waiting on the one before, hanging off an
        open job: failing or cancelling its root cascades thousands deep
        (deeper than the interpreter's recursion limit)."""
        draw, live = self.draw, self.live
        roots = [j.id for j in live.table.jobs.values() if j.status in (C.PENDING, C.RUNNING,
                                                                   C.SCHEDULED, C.WAITING)]
        if not roots:
            return
        prev = draw(st.sampled_from(roots), label="chain root")
        for _ in range(draw(st.integers(1, 2500), label="chain depth")):
            job = Job()
            job.id = f"j{self.n}"
            self.n += 1
            job.handler = "h.c"
            job.created_at = self.now
            job.seq = live.table.next_seq()
            job.depends_on = [prev]
            job.status = C.WAITING
            self.records.append([R.SUBMIT, job.to_record()])
            live.insert(job)
            prev = job.id

    def start(self) -> None:
        job = self.live.ready.pop()
        if job is not None:
            self.commit(R.start(job.id, self.clock(), self.draw(st.integers(1, 4))))

    def progress(self) -> None:
        job = self.pick(C.RUNNING)
        if job is not None:
            self.commit([R.PROGRESS, job.id, progress_view(3, 10, "m", self.clock())])

    def complete(self) -> None:
        job = self.pick(C.RUNNING)
        if job is not None:
            self.commit(R.complete(job.id, self.clock(), self.draw(small_json), None))

    def fail(self) -> None:
        job = self.pick(C.RUNNING)
        if job is not None:
            status = self.draw(st.sampled_from([C.RETRYING, C.FAILED, C.DEAD_LETTER]))
            ts = self.clock()
            due = ts + self.draw(st.floats(0.1, 100)) if status == C.RETRYING else None
            self.commit(R.fail(job.id, ts, "boom", status, due))

    def cancel(self) -> None:
        job = self.pick(C.SCHEDULED, C.WAITING, C.PENDING, C.RETRYING, C.RUNNING)
        if job is not None:
            self.commit([R.CANCEL, job.id, self.clock()])

    def cancel_request(self) -> None:
        cands = [j for j in self.jobs_in(C.RUNNING) if not j.cancel_requested]
        if cands:
            self.commit([R.CANCEL_REQUEST, self.draw(st.sampled_from(cands)).id])

    def requeue(self) -> None:
        job = self.pick(C.RUNNING)
        if job is not None:
            self.commit([R.REQUEUE, job.id, self.draw(st.booleans())])

    def retry(self) -> None:
        job = self.pick(C.FAILED, C.CANCELLED, C.DEAD_LETTER)
        if job is not None:
            self.commit([R.RETRY, job.id, self.clock()])

    def purge(self) -> None:
        done = self.jobs_in(*C.TERMINAL)
        if done:
            ids = self.draw(st.lists(st.sampled_from([j.id for j in done]), min_size=1,
                                     unique=True), label="purge")
            self.commit([R.DELETE, ids])

    def promote(self) -> None:
        """Time passing: not a record, so only done on copies (see below)."""


ACTIONS = (["submit"] * 4 + ["start"] * 4 + ["complete"] * 3 + ["purge"] * 2
           + ["progress", "fail", "cancel", "cancel_request", "requeue", "retry", "chain"])


@st.composite
def histories(draw: st.DrawFn) -> History:
    h = History(draw)
    # a drawn count, not st.lists: hypothesis keeps lists short on average
    for _ in range(draw(st.integers(0, 80), label="steps")):
        getattr(h, draw(st.sampled_from(ACTIONS), label="action"))()
    return h


def replay(recs: list[Any]) -> State:
    s = State()
    for rec in recs:
        s.apply(rec)
    return s


def pending_order(s: State) -> list[str]:
    """The ids the ready queue would hand out, in order (each once: a job may
    have two valid entries after replay, since its submit entry is never
    popped when a start record is replayed and a requeue pushes it again with
    the same seq; the dispatcher starts whatever it pops, so the second is
    stale by the time it comes up)."""
    return [job.id for job in s.ready.order()]


def check_consistent(s: State) -> None:
    by_status: dict[str, list[Job]] = {k: [] for k in C.STATUSES}
    for jid, job in s.table.jobs.items():
        assert job.id == jid
        by_status[job.status].append(job)
        assert job.attempts >= 0
        assert job.seq <= s.table.seq
        if job.terminal:
            assert job.completed_at is not None, job.view()
    for status, members in by_status.items():
        assert s.table.counts[status] == len(members), (status, s.table.counts, len(members))
    assert sum(s.table.counts.values()) == len(s.table.jobs)
    assert s.table.queued == sum(len(by_status[x]) for x in C.QUEUED)
    # running jobs are exactly those in the running table
    assert set(s.table.running) == {j.id for j in by_status[C.RUNNING]}
    # every pending job is reachable through the heap, once, in priority/FIFO order
    order = pending_order(s)
    pending = by_status[C.PENDING]
    assert sorted(order) == sorted(j.id for j in pending), "pending jobs not all reachable"
    expected = sorted(pending, key=lambda j: (-j.priority, j.seq))
    assert order == [j.id for j in expected]
    # every scheduled or retrying job has a live timer
    timed = {job.id for due, _, job in s.timers.entries() if job.scheduled_for == due}
    for job in by_status[C.SCHEDULED] + by_status[C.RETRYING]:
        assert job.scheduled_for is not None and job.id in timed, job.view()
    # a waiting job still waits on something, and will hear about it
    for job in by_status[C.WAITING]:
        assert s.table.deps_state(job) == C.WAITING, (job.view(), [
            (d, s.table.jobs[d].status if d in s.table.jobs else None) for d in job.depends_on])
        open_deps = [d for d in job.depends_on
                     if d in s.table.jobs and s.table.jobs[d].status != C.COMPLETED]
        assert any(job in s.table.dependents.get(d, ()) for d in open_deps), job.view()


def fingerprint(s: State) -> dict[str, Any]:
    return {
        "views": {j.id: (orjson.dumps(j.view()), j.seq, j.cancel_requested, orjson.dumps(j.result))
                  for j in s.table.jobs.values()},
        "order": list(s.table.jobs), "counts": dict(s.table.counts), "pending": pending_order(s),
    }


@HISTORY_SETTINGS
@given(histories(), st.data())
def test_replay_of_any_prefix_of_a_valid_log_is_consistent(h, data):
    check_consistent(h.live)
    # the whole log, through the codec, rebuilds exactly the live state
    log, ends = encode_log(h.records)
    full = State()
    found = codec.scan(log, full.apply)
    assert found.damage is None
    check_consistent(full)
    assert fingerprint(full) == fingerprint(h.live)
    assert full.table.seq == h.live.table.seq
    # any byte prefix (a crash at any moment) replays to a consistent state
    # equal to replaying the whole records in it
    cut = data.draw(st.integers(0, len(log)), label="cut")
    part = State()
    found = codec.scan(log[:cut], part.apply)
    whole = sum(1 for e in ends if e <= cut)
    check_consistent(part)
    assert fingerprint(part) == fingerprint(replay(h.records[:whole]))
    # after recovery, running jobs go back to pending and time moves on
    part.recover_running()
    check_consistent(part)
    part.promote_due(h.now + 10_000)
    check_consistent(part)
    counts = part.table.counts
    assert counts[C.SCHEDULED] == counts[C.RETRYING] == counts[C.RUNNING] == 0


@HISTORY_SETTINGS
@given(histories(), st.data())
def test_a_snapshot_replays_to_the_same_state(h, data):
    """Compaction: snapshot(live) + the records after it == live + those records."""
    snap = [orjson.loads(orjson.dumps(r)) for r in h.live.snapshot()]
    restored = replay(snap)
    check_consistent(restored)
    assert fingerprint(restored) == fingerprint(h.live)
    assert restored.table.seq == h.live.table.seq
    # keep going on both: the same further records lead to the same state
    more = History(data.draw)
    more.live, more.now, more.n = h.live, h.now, h.n
    for _ in range(data.draw(st.integers(0, 40), label="more steps")):
        getattr(more, data.draw(st.sampled_from(ACTIONS), label="action"))()
    for rec in more.records:
        restored.apply(orjson.loads(orjson.dumps(rec)))
    check_consistent(restored)
    assert fingerprint(restored) == fingerprint(more.live)


def test_a_purged_completed_dependency_does_not_strand_its_dependents():
    """A waits on B and C; B completes and is purged; then C completes: A runs."""
    s = State()
    for job_id, deps, status in (("B", [], C.PENDING), ("C", [], C.PENDING),
                                 ("A", ["B", "C"], C.WAITING)):
        job = Job()
        job.id, job.handler, job.seq, job.created_at = job_id, "h", s.table.next_seq(), 1.0
        job.depends_on, job.status = deps, status
        s.apply([R.SUBMIT, job.to_record()])
    for rec in (R.start("B", 2.0, 1), R.complete("B", 3.0, None, None), [R.DELETE, ["B"]],
                R.start("C", 4.0, 1), R.complete("C", 5.0, None, None)):
        s.apply(rec)
        check_consistent(s)
    assert s.table.jobs["A"].status == C.PENDING
    assert pending_order(s) == ["A"]

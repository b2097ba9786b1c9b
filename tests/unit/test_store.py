"""jobd/storage/store.py: `MemoryStore` and `WalStore` reach the same state
for the same calls (and the WAL replays to it); `insert` sets `wal_seq`;
a `WalStore` submit whose write fails is taken out again; claiming,
giving back and peeking at the queue; listeners; `revert`.
"""
from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobd import constants as C
from jobd.core import records as R
from jobd.core.job import EMPTY_DICT, EMPTY_KWARGS, EMPTY_LIST, Job
from jobd.core.lifecycle import Lifecycle
from jobd.storage import wal
from jobd.storage.store import MemoryStore, Store, WalStore

T0 = 1_800_000_000.0
DEFAULTS = (3, 1.0, 2.0, None, None, None)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def make_wal_store(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> Iterator[Callable[[], WalStore]]:
    stores: list[WalStore] = []

    def make() -> WalStore:
        wal_dir = str(tmp_path / "wal")
        life = Lifecycle(framing=wal.FRAMING)
        segment, offset, _ = wal.recover(wal_dir, life.replay)
        journal = wal.Journal(wal_dir, "never", 100, 1 << 20, segment, offset, loop, life.snapshot)
        store = WalStore(life, journal)
        stores.append(store)
        return store
    yield make
    for store in stores:
        if not store.wal.closed:
            store.wal.close()


def new_job(store: Store, job_id: str, priority: int = 10, deps: list[str] = EMPTY_LIST,
            run_at: float | None = None, args: bytes = b"[1]") -> Job:
    job = Job.new(job_id, "h", priority, store.next_seq(), T0, DEFAULTS, None, args,
                  EMPTY_KWARGS, EMPTY_DICT, deps)
    store.place(job, run_at, T0)
    return job


def script(store: Store) -> None:
    """The same calls, whichever store (no time passes: promotion is not logged)."""
    for name, prio in (("a", 10), ("b", 20), ("c", 10)):
        store.insert(new_job(store, name, prio))
    store.insert(new_job(store, "w", deps=["a"]))
    store.insert(new_job(store, "s", run_at=T0 + 30))
    store.commit([R.SCHEDULE_ADD, {"name": "n", "cron": "* * * * *"}])
    job = store.claim()
    assert job is not None and job.id == "b"
    store.commit(R.start(job.id, T0 + 1, 1))
    store.commit(R.complete(job.id, T0 + 2, orjson.Fragment(b'{"ok":true}'), None))
    job = store.claim()
    assert job is not None and job.id == "a"
    store.commit(R.start("a", T0 + 3, 2))
    store.commit(R.fail("a", T0 + 4, "boom", C.RETRYING, T0 + 5))
    store.commit([R.CANCEL, "c", T0 + 6])
    store.commit([R.RETRY, "c", T0 + 7])
    store.commit([R.DELETE, ["b"]])


def state(store: Store) -> dict[str, Any]:
    t = store.table
    return {"jobs": [orjson.dumps(j.to_record()) for j in store.scan()],
            "counts": dict(t.counts), "seq": t.seq, "schedules": t.schedules,
            "running": sorted(t.running), "args_bytes": t.args_bytes,
            "next_due": store.next_due(), "top": getattr(store.top(), "id", None)}


# --- the same state ------------------------------------------------------------------------------

def test_memory_and_wal_stores_reach_the_same_state_and_the_wal_replays_to_it(make_wal_store):
    memory, walstore = MemoryStore(), make_wal_store()
    script(memory)
    script(walstore)
    assert state(memory) == state(walstore)
    walstore.wal.close()
    assert state(make_wal_store()) == state(memory)          # recovered from disk
    replayed = Lifecycle()
    for rec in memory.records:                                # what a log would hold
        replayed.apply(orjson.loads(orjson.dumps(rec)))
    assert state(MemoryStore(replayed)) == state(memory)


@pytest.mark.parametrize("kind", ["memory", "wal"])
def test_insert_sets_wal_seq_to_the_submits_sequence_number(make_wal_store, kind):
    store: Store = MemoryStore() if kind == "memory" else make_wal_store()
    first = new_job(store, "a")
    assert store.insert(first) == first.wal_seq == 1
    store.commit([R.SEQ, 0])
    second = new_job(store, "b")
    assert store.insert(second) == second.wal_seq == 3


def test_a_memory_store_is_durable_at_once_and_a_wal_store_once_written(make_wal_store):
    memory, walstore = MemoryStore(), make_wal_store()
    assert memory.insert(new_job(memory, "a")) == memory.durable == 1
    seq = walstore.insert(new_job(walstore, "a"))
    assert walstore.durable == 0
    walstore.wal.flush()
    assert walstore.durable == seq == 1


# --- a failed write ----------------------------------------------------------------------------------

class DiskFull:
    """The journal's descriptor pointed at /dev/full (ENOSPC), and back."""

    def __init__(self, store: WalStore) -> None:
        self.fd = store.wal.fd
        self.saved = os.dup(self.fd)
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, self.fd)
        os.close(full)

    def end(self) -> None:
        os.dup2(self.saved, self.fd)
        os.close(self.saved)


def test_a_submit_whose_write_fails_is_taken_out_again(make_wal_store):
    store = make_wal_store()
    store.insert(new_job(store, "old"))
    store.wal.flush()
    store.insert(new_job(store, "new", args=b"[1,2,3]"))
    store.commit([R.SCHEDULE_ADD, {"name": "n"}])             # not a submit: kept
    assert store.get("new") is not None and store.table.counts[C.PENDING] == 2
    full = DiskFull(store)
    try:
        store.wal.write_buffer()
    finally:
        full.end()
    assert store.get("new") is None
    assert store.table.counts[C.PENDING] == 1 and store.table.args_bytes == len(b"[1]") + 2
    assert store.top() is store.get("old")
    store.wal.close()
    again = make_wal_store()
    assert [j.id for j in again.scan()] == ["old"] and "n" in again.table.schedules


def test_a_listener_counting_by_status_stays_in_step_when_a_submit_is_taken_out(make_wal_store):
    store = make_wal_store()
    by_status: Counter[str] = Counter()

    def count(job: Job, old: str) -> None:
        by_status[old] -= 1
        by_status[job.status] += 1
    store.listen(count)
    store.insert(new_job(store, "a"))
    store.wal.flush()
    store.insert(new_job(store, "refused"))
    full = DiskFull(store)
    try:
        store.wal.write_buffer()
    finally:
        full.end()
    assert store.table.counts[C.PENDING] == 1
    assert by_status[C.PENDING] == store.table.counts[C.PENDING]


def test_a_submit_whose_job_already_started_stays_when_its_write_fails(make_wal_store):
    """Its start record is kept and written later; replay counts it as an orphan."""
    store = make_wal_store()
    store.insert(new_job(store, "a"))
    job = store.claim()
    assert job is not None
    store.commit(R.start("a", T0 + 1, 1))
    full = DiskFull(store)
    try:
        store.wal.write_buffer()
    finally:
        full.end()
    assert store.get("a") is job and job.status == C.RUNNING
    store.wal.close()
    again = make_wal_store()
    assert len(again.table) == 0 and again.table.orphan_records == 1


# --- the queue ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["memory", "wal"])
def test_claim_unclaim_and_top(make_wal_store, kind):
    store: Store = MemoryStore() if kind == "memory" else make_wal_store()
    assert store.claim() is None and store.top() is None
    for name, prio in (("low", 0), ("hi1", 20), ("hi2", 20)):
        store.insert(new_job(store, name, prio))
    top = store.top()
    assert top is not None and top.id == "hi1" and store.top() is top     # left in place
    claimed = store.claim()
    assert claimed is top
    assert getattr(store.top(), "id", None) == "hi2"
    store.unclaim(claimed)                                    # given back: its old place
    assert store.top() is claimed
    store.commit([R.CANCEL, "hi1", T0])
    assert [getattr(store.claim(), "id", None) for _ in range(3)] == ["hi2", "low", None]


@pytest.mark.parametrize("kind", ["memory", "wal"])
def test_timers_through_the_store(make_wal_store, kind):
    store: Store = MemoryStore() if kind == "memory" else make_wal_store()
    store.insert(new_job(store, "s", run_at=T0 + 10))
    assert store.next_due() == T0 + 10 and store.top() is None
    assert store.promote_due(T0 + 9) == 0
    assert store.promote_due(T0 + 10) == 1
    assert getattr(store.claim(), "id", None) == "s" and store.next_due() is None


# --- listeners and revert ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["memory", "wal"])
def test_listeners_hear_every_change_made_through_the_store(make_wal_store, kind):
    store: Store = MemoryStore() if kind == "memory" else make_wal_store()
    first: list[tuple[str, str]] = []
    second: list[tuple[str, str]] = []
    store.listen(lambda job, old: first.append((job.id, old)))
    store.listen(lambda job, old: second.append((job.id, job.status)))
    store.insert(new_job(store, "a"))
    store.commit(R.start("a", T0, 1))
    store.commit(R.complete("a", T0 + 1, None, None))
    assert first == [("a", ""), ("a", C.PENDING), ("a", C.RUNNING)]
    assert second == [("a", C.PENDING), ("a", C.RUNNING), ("a", C.COMPLETED)]


def test_revert_changes_memory_only(make_wal_store):
    memory, walstore = MemoryStore(), make_wal_store()
    for store in (memory, walstore):
        store.insert(new_job(store, "a"))
        store.revert([R.DELETE, ["a"]])
        assert store.get("a") is None
    assert len(memory.records) == 1 and walstore.wal.appended == 1


def test_scan_is_every_job_in_submit_order():
    store = MemoryStore()
    for name in ("z", "a", "m"):
        store.insert(new_job(store, name))
    assert [j.id for j in store.scan()] == ["z", "a", "m"]

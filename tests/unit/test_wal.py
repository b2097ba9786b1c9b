"""jobd/storage/wal.py on a temp directory with a real event loop, no daemon:
appending and flushing under each fsync mode, what durability listeners are
told, a write that fails (the journal's descriptor pointed at /dev/full:
a real ENOSPC) undoing its submits and keeping its other records, closing,
recovery (torn tails cut, damage refused, newer formats refused, holes
refused) and compaction into a snapshot that recovery replays.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobd import constants as C
from jobd.core import records as R
from jobd.core.job import EMPTY_ARGS, EMPTY_DICT, EMPTY_KWARGS, EMPTY_LIST, Job
from jobd.core.lifecycle import Lifecycle
from jobd.storage import codec, wal
from jobd.storage.codec import CorruptLog
from jobd.storage.wal import FORMAT, SNAPSHOT_END, WAL_FORMAT, Journal, StorageError

HEADER = codec.encode([FORMAT, WAL_FORMAT])
T0 = 1_800_000_000.0


class Told:
    """A durability listener that records what it is told."""

    def __init__(self, on_durable: Callable[[int], None] | None = None) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.hook = on_durable

    def on_durable(self, seq: int) -> None:
        self.events.append(("durable", seq))
        if self.hook is not None:
            self.hook(seq)

    def on_failed(self, first: int, last: int, why: str) -> None:
        self.events.append(("failed", first, last, why))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def wal_dir(tmp_path: Path) -> str:
    return str(tmp_path / "wal")


@pytest.fixture
def open_journal(wal_dir: str, loop: asyncio.AbstractEventLoop) -> Iterator[Callable[..., Journal]]:
    """Recover the directory and open a journal on it (closed at the end)."""
    opened: list[Journal] = []

    def make(mode: str = "never", interval_ms: int = 1, segment_bytes: int = 1 << 20,
             source: Callable[[], Iterable[Any]] = lambda: ()) -> Journal:
        segment, offset, _ = wal.recover(wal_dir, lambda rec: None)
        journal = Journal(wal_dir, mode, interval_ms, segment_bytes, segment, offset, loop, source)
        opened.append(journal)
        return journal
    yield make
    for journal in opened:
        if not journal.closed:
            journal.close()


def replayed(wal_dir: str) -> list[Any]:
    """Every record recovery hands on, format records included."""
    out: list[Any] = []
    wal.recover(wal_dir, out.append)
    return out


def segment(wal_dir: str, num: int = 1, kind: str = "log") -> str:
    return os.path.join(wal_dir, f"{num:08d}.{kind}")


class DiskFull:
    """Point the journal's descriptor at /dev/full (every write: ENOSPC) and back."""

    def __init__(self, journal: Journal) -> None:
        self.fd = journal.fd
        self.saved = os.dup(self.fd)
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, self.fd)
        os.close(full)

    def end(self) -> None:
        os.dup2(self.saved, self.fd)
        os.close(self.saved)


# --- a new segment, appending, flushing ------------------------------------------------------

def test_recover_of_a_new_directory_creates_it_private(wal_dir):
    assert wal.recover(wal_dir, lambda rec: None) == (1, 0, 0)
    assert os.stat(wal_dir).st_mode & 0o777 == 0o700


def test_a_new_segment_begins_with_its_format_record(wal_dir, open_journal):
    journal = open_journal()
    assert Path(segment(wal_dir)).read_bytes() == HEADER
    assert journal.offset == len(HEADER)
    assert os.stat(segment(wal_dir)).st_mode & 0o777 == 0o600
    assert replayed(wal_dir) == [[FORMAT, WAL_FORMAT]]


def test_append_only_buffers_and_flush_writes_the_batch(wal_dir, open_journal):
    journal = open_journal()
    seqs = [journal.append(["S", i]) for i in range(3)]
    assert seqs == [1, 2, 3] and journal.written == 0
    assert os.path.getsize(segment(wal_dir)) == len(HEADER)
    assert journal.pending
    journal.flush()
    assert journal.written == 3 and not journal.buf
    assert replayed(wal_dir) == [[FORMAT, WAL_FORMAT], ["S", 0], ["S", 1], ["S", 2]]
    assert journal.offset == os.path.getsize(segment(wal_dir))
    assert journal.bytes_written == journal.offset - len(HEADER)


def test_a_reopened_journal_appends_after_what_is_there(wal_dir, open_journal):
    first = open_journal()
    first.append(["S", "a"])
    first.close()
    second = open_journal()
    second.append(["S", "b"])
    second.flush()
    assert replayed(wal_dir) == [[FORMAT, WAL_FORMAT], ["S", "a"], ["S", "b"]]   # one header


@pytest.mark.parametrize("mode", ["never", "interval"])
def test_without_always_a_written_record_counts_as_durable(open_journal, mode):
    journal = open_journal(mode=mode, interval_ms=60_000)
    told = Told()
    journal.listeners.append(told)
    journal.append(["S", 1])
    journal.append(["S", 2])
    assert journal.flush(urgent=True) is False           # never blocks on an fsync
    journal.flush()
    journal.append(["S", 3])
    journal.flush()
    assert told.events == [("durable", 2), ("durable", 3)]
    assert journal.durable == 3 and journal.fsyncs == 0


def test_always_mode_fsyncs_inline_when_a_reply_waits(open_journal):
    journal = open_journal(mode="always", interval_ms=60_000)
    told = Told()
    journal.listeners.append(told)
    journal.append(["S", 1])
    journal.append(["S", 2])
    assert journal.flush(urgent=True) is True
    assert (journal.durable, journal.fsyncs) == (2, 1)
    assert told.events == [("durable", 2)]
    assert journal.flush(urgent=True) is False            # nothing new to sync


def test_always_mode_syncs_lazily_on_the_helper_thread_when_nobody_waits(loop, open_journal):
    journal = open_journal(mode="always", interval_ms=1)
    synced = loop.create_future()
    told = Told(lambda seq: synced.done() or synced.set_result(seq))
    journal.listeners.append(told)
    journal.append(["S", 1])
    journal.append(["S", 2])
    assert journal.flush() is False
    assert journal.written == 2 and journal.durable == 0 and told.events == []
    assert loop.run_until_complete(asyncio.wait_for(synced, 10)) == 2
    assert journal.fsyncs == 1 and told.events == [("durable", 2)]


def test_every_listener_is_told_each_durable_seq_in_order(open_journal):
    journal = open_journal(mode="always", interval_ms=60_000)
    a, b = Told(), Told()
    journal.listeners += [a, b]
    for batch in (2, 1, 3):
        for _ in range(batch):
            journal.append(["P", "x"])
        journal.flush(urgent=True)
    assert a.events == b.events == [("durable", 2), ("durable", 3), ("durable", 6)]


# --- a failed write ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["never", "interval", "always"])
def test_a_failed_write_undoes_its_submits_and_keeps_the_other_records(wal_dir, open_journal,
                                                                      mode):
    journal = open_journal(mode=mode, interval_ms=60_000)
    told = Told()
    journal.listeners.append(told)
    journal.append(["S", "before"])
    journal.flush(urgent=True)
    undone: list[str] = []
    journal.append(["S", "s1"], undone.append, "s1")
    journal.append(["B", "kept"])
    journal.append(["S", "s2"], undone.append, "s2")
    assert journal.holds_undoable
    before = len(told.events)
    full = DiskFull(journal)
    try:
        journal.write_buffer()     # flush's write (its fsync would meet /dev/full, not a disk)
    finally:
        full.end()
    assert undone == ["s2", "s1"]                          # newest first
    failed = told.events[before]
    assert failed[:3] == ("failed", 2, 4)
    assert failed[3].startswith("WAL write failed: ") and "No space left" in failed[3]
    assert not journal.holds_undoable
    assert bytes(journal.buf) == codec.encode(["B", "kept"])
    if mode == "always":                                    # nothing of the batch acknowledged
        assert told.events[before:] == [failed] and journal.durable == 1
    # the disk has room again: the kept record is written, the submits never are
    journal.flush()
    journal.append(["S", "after"])
    journal.flush(urgent=True)
    assert replayed(wal_dir) == [[FORMAT, WAL_FORMAT], ["S", "before"], ["B", "kept"],
                                 ["S", "after"]]


def test_a_failed_write_leaves_the_file_as_it_was(wal_dir, open_journal):
    journal = open_journal()
    journal.append(["S", "a"])
    journal.flush()
    size = os.path.getsize(segment(wal_dir))
    journal.append(["S", "b"], lambda arg: None)
    full = DiskFull(journal)
    try:
        journal.write_buffer()
    finally:
        full.end()
    assert os.path.getsize(segment(wal_dir)) == size == journal.offset


class ReadOnly:
    """Point the journal's descriptor at a read-only one of its own segment:
    writes fail (EBADF), fsync still works, as on a disk that is full."""

    def __init__(self, journal: Journal, path: str) -> None:
        self.fd = journal.fd
        self.saved = os.dup(self.fd)
        ro = os.open(path, os.O_RDONLY)
        os.dup2(ro, self.fd)
        os.close(ro)

    def end(self) -> None:
        os.dup2(self.saved, self.fd)
        os.close(self.saved)


def test_records_kept_after_a_failed_write_are_not_durable_until_written(wal_dir, open_journal):
    journal = open_journal(mode="always", interval_ms=60_000)
    told = Told()
    journal.listeners.append(told)
    journal.append(["S", "before"])
    journal.flush(urgent=True)
    journal.append(["S", "undone"], lambda arg: None)
    kept = journal.append(["B", "kept"])
    fault = ReadOnly(journal, segment(wal_dir))
    try:
        journal.flush(urgent=True)
    finally:
        fault.end()
    assert told.events[1][:3] == ("failed", 2, 3)
    assert journal.durable < kept and ("durable", kept) not in told.events


def test_failure_says_why_while_writes_fail_and_clears_when_one_succeeds(open_journal):
    """What the StorageError alert reads (jobd/alerts)."""
    journal = open_journal(mode="always", interval_ms=60_000)
    assert journal.failure is None
    journal.append(["S", "a"])
    journal.flush(urgent=True)
    assert journal.failure is None
    journal.append(["B", "kept"])
    fault = DiskFull(journal)
    try:
        journal.flush(urgent=True)
        assert journal.failure is not None and "WAL write failed" in journal.failure
        journal.flush(urgent=True)          # still full: still failing
        assert journal.failure is not None
    finally:
        fault.end()
    journal.flush(urgent=True)              # the kept record reaches the file
    assert journal.failure is None


# --- closing ------------------------------------------------------------------------------------------

def test_close_writes_and_syncs_what_is_buffered_then_refuses_appends(wal_dir, open_journal):
    journal = open_journal(mode="always", interval_ms=60_000)
    told = Told()
    journal.listeners.append(told)
    journal.append(["S", 1])
    journal.append(["S", 2])
    journal.close()
    assert journal.closed and journal.fd == -1
    assert (journal.durable, journal.fsyncs) == (2, 1) and told.events == [("durable", 2)]
    assert replayed(wal_dir)[1:] == [["S", 1], ["S", 2]]
    with pytest.raises(StorageError):
        journal.append(["S", 3])
    assert replayed(wal_dir)[1:] == [["S", 1], ["S", 2]]


# --- recovery -----------------------------------------------------------------------------------------

def write_log(wal_dir: str, records: list[Any], num: int = 1, header: bytes = HEADER) -> bytes:
    os.makedirs(wal_dir, exist_ok=True)
    data = header + b"".join(codec.encode(r) for r in records)
    Path(segment(wal_dir, num)).write_bytes(data)
    return data


@pytest.mark.parametrize("cut", [1, 5, 11, -1])
def test_recover_cuts_a_torn_tail_and_keeps_every_whole_record(wal_dir, open_journal, cut):
    data = write_log(wal_dir, [["S", 1], ["S", 2]])
    torn = codec.encode(["S", 3])
    Path(segment(wal_dir)).write_bytes(data + torn[:cut])
    assert wal.recover(wal_dir, lambda rec: None) == (1, len(data), 3)
    assert Path(segment(wal_dir)).read_bytes() == data          # cut on disk, not just skipped
    journal = open_journal()                                    # and appending goes on there
    journal.append(["S", 4])
    journal.flush()
    assert replayed(wal_dir)[1:] == [["S", 1], ["S", 2], ["S", 4]]


def test_damage_followed_by_valid_records_is_refused_and_left_alone(wal_dir):
    data = bytearray(write_log(wal_dir, [["S", 1], ["S", 2], ["S", 3]]))
    data[len(HEADER) + codec.HEADER_SIZE + 1] ^= 0xFF          # inside the first record
    Path(segment(wal_dir)).write_bytes(bytes(data))
    with pytest.raises(CorruptLog, match="not a torn tail"):
        wal.recover(wal_dir, lambda rec: None)
    assert Path(segment(wal_dir)).read_bytes() == bytes(data)


def test_a_torn_tail_is_only_cut_in_the_newest_segment(wal_dir):
    data = write_log(wal_dir, [["S", 1]], num=1)
    Path(segment(wal_dir, 1)).write_bytes(data + b"DJ\x00")
    write_log(wal_dir, [["S", 2]], num=2)
    with pytest.raises(CorruptLog):
        wal.recover(wal_dir, lambda rec: None)


def test_a_missing_segment_is_a_hole_in_the_history(wal_dir):
    write_log(wal_dir, [["S", 1]], num=1)
    write_log(wal_dir, [["S", 3]], num=3)
    with pytest.raises(CorruptLog, match="00000002.log is missing"):
        wal.recover(wal_dir, lambda rec: None)


def test_recover_removes_temp_files_a_crash_left(wal_dir):
    write_log(wal_dir, [["S", 1]])
    Path(segment(wal_dir, 2, "snap.tmp")).write_bytes(b"half a snapshot")
    assert len(replayed(wal_dir)) == 2
    assert sorted(os.listdir(wal_dir)) == ["00000001.log"]


# --- formats ------------------------------------------------------------------------------------------

def test_a_segment_of_a_newer_format_is_refused_by_replay(wal_dir):
    write_log(wal_dir, [["S", 1]], header=codec.encode([FORMAT, WAL_FORMAT + 1]))
    with pytest.raises(CorruptLog, match=f"WAL format {WAL_FORMAT + 1}"):
        wal.recover(wal_dir, Lifecycle(framing=wal.FRAMING).replay)


@pytest.mark.parametrize("version", [WAL_FORMAT + 1, "2", None, 2.0])
def test_check_format_accepts_only_known_integer_formats(version):
    with pytest.raises(CorruptLog):
        wal.check_format(version, "somewhere")


def test_an_older_segment_without_a_format_record_still_replays(wal_dir):
    write_log(wal_dir, [[R.SEQ, 7]], header=b"")              # format 1: no V record
    life = Lifecycle(framing=wal.FRAMING)
    wal.recover(wal_dir, life.replay)
    wal.check_format(1, "an old file")
    assert life.table.seq == 7


def write_snapshot(wal_dir: str, num: int, records: list[Any], header: bytes = HEADER,
                   end: int | None = None) -> None:
    os.makedirs(wal_dir, exist_ok=True)
    body = b"".join(codec.encode(r) for r in records)
    count = 1 + len(records) if end is None else end
    tail = codec.encode([SNAPSHOT_END, count]) if end != -1 else b""
    Path(segment(wal_dir, num, "snap")).write_bytes(header + body + tail)


def test_a_snapshot_of_a_newer_format_is_refused(wal_dir):
    write_snapshot(wal_dir, 2, [[R.SEQ, 1]], header=codec.encode([FORMAT, WAL_FORMAT + 1]))
    write_log(wal_dir, [], num=2)
    with pytest.raises(CorruptLog, match="newer jobd"):
        wal.recover(wal_dir, lambda rec: None)


@pytest.mark.parametrize("end", [-1, 1, 5])      # no end record; a count that does not match
def test_a_snapshot_without_its_whole_body_is_refused(wal_dir, end):
    write_snapshot(wal_dir, 2, [[R.SEQ, 1], [R.SEQ, 2]], end=end)
    write_log(wal_dir, [], num=2)
    with pytest.raises(CorruptLog, match="incomplete"):
        wal.recover(wal_dir, lambda rec: None)


def test_a_snapshot_without_the_segment_after_it_is_a_hole(wal_dir):
    write_snapshot(wal_dir, 3, [[R.SEQ, 1]])
    with pytest.raises(CorruptLog, match="hole"):
        wal.recover(wal_dir, lambda rec: None)


def test_recovery_starts_at_the_newest_snapshot_and_ignores_older_files(wal_dir):
    write_log(wal_dir, [[R.SEQ, 1]], num=1)                  # before the snapshot: not read
    write_snapshot(wal_dir, 2, [[R.SEQ, 5]])
    write_log(wal_dir, [[R.SEQ, 9]], num=2)
    seen: list[Any] = []
    assert wal.recover(wal_dir, seen.append) == (2, os.path.getsize(segment(wal_dir, 2)), 5)
    assert seen == [[R.SEQ, 5], [FORMAT, WAL_FORMAT], [R.SEQ, 9]]   # snapshot marks not passed on


# --- compaction ---------------------------------------------------------------------------------------

def new_job(life: Lifecycle, job_id: str) -> Job:
    job = Job.new(job_id, "h", 10, life.table.next_seq(), T0, (3, 1.0, 2.0, None, None, None),
                  None, b'["padding padding padding"]', EMPTY_KWARGS, EMPTY_DICT, EMPTY_LIST)
    life.place(job, None, T0)
    return job


def state(life: Lifecycle) -> dict[str, Any]:
    return {"jobs": [orjson.dumps(j.to_record()) for j in life.table.jobs.values()],
            "counts": life.table.counts, "seq": life.table.seq,
            "ready": [j.id for j in life.ready.order()]}


def test_compaction_writes_a_snapshot_that_recovery_replays(wal_dir, open_journal):
    life = Lifecycle(framing=wal.FRAMING)
    journal = open_journal(segment_bytes=4096, source=life.snapshot)

    def commit(rec: list[Any]) -> None:           # append, then apply: WalStore's order
        journal.append(rec)
        life.apply(rec)

    n = 0
    while journal.segment == 1:
        job = new_job(life, f"j{n}")
        commit([R.SUBMIT, job.to_record()])
        if n % 3 == 0:
            commit(R.start(job.id, T0 + n, 1))
        if n % 6 == 0:
            commit(R.complete(job.id, T0 + n, {"n": n}, None))
        n += 1
        journal.flush()
    assert journal.compacting and journal.offset == len(HEADER)
    commit([R.CANCEL, "j1", T0 + 999])           # after the compaction: the new segment
    commit([R.DELETE, ["j2"]])
    journal.flush()
    journal.close()                               # waits for the snapshot's thread
    assert sorted(os.listdir(wal_dir)) == ["00000002.log", "00000002.snap"]
    fresh = Lifecycle(framing=wal.FRAMING)
    segment_no, size, count = wal.recover(wal_dir, fresh.replay)
    assert (segment_no, size) == (2, os.path.getsize(segment(wal_dir, 2)))
    assert state(fresh) == state(life)
    assert fresh.table.jobs["j1"].status == C.CANCELLED and "j2" not in fresh.table.jobs
    assert count > 0 and fresh.table.orphan_records == 0


def test_disk_bytes_counts_segments_and_snapshots_only(wal_dir, open_journal):
    journal = open_journal()
    journal.append(["S", "x" * 100])
    journal.flush()
    Path(wal_dir, "notes.txt").write_bytes(b"x" * 1000)
    assert journal.disk_bytes() == os.path.getsize(segment(wal_dir))


def test_job_records_round_trip_through_a_journal(wal_dir, open_journal):
    journal = open_journal()
    job = Job.new("a", "h", 10, 1, T0, (3, 1.0, 2.0, None, None, None), "n", b"[1,2]",
                  b'{"k":"v"}', {"t": 1}, ["dep"])
    journal.append([R.SUBMIT, job.to_record()])
    journal.close()
    back = Job.from_record(replayed(wal_dir)[1][1])
    assert (back.args, back.kwargs, back.tags, back.depends_on) == (b"[1,2]", b'{"k":"v"}',
                                                                   {"t": 1}, ["dep"])
    assert back.args is not EMPTY_ARGS

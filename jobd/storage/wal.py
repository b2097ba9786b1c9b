"""The journal: WAL segments and snapshots on disk, group commit, compaction.

Layout under `<data_dir>/wal/`:

    00000003.snap   live state before segment 3 (written tmp → fsync → rename)
    00000003.log    records appended after that snapshot
    00000004.log    ...

Group commit: `append()` only adds to an in-memory buffer. Once per event-loop
turn the daemon calls `flush()`, which writes the whole buffer with one
`write()` and, in `always` mode, runs one `fsync()` on a helper thread so the
loop keeps serving while the disk works. Replies wait for `durable_seq`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, Protocol

from jobd.storage import codec, files
from jobd.storage.codec import CorruptLog

log = logging.getLogger("jobd.wal")

_SEGMENT_RE = re.compile(r"^(\d{8})\.(log|snap)$")
# The log's own framing records (state records are jobd/core/records.py):
FORMAT: Final = "V"        # ["V", format]   first record of every segment and snapshot
SNAPSHOT_END: Final = "E"  # ["E", records_before]   a snapshot's last record: it is whole
WAL_FORMAT: Final = 2      # 2: files begin with V, snapshots end with E; 1: neither
_SNAPSHOT_MARKS = (FORMAT, SNAPSHOT_END)
COMPACT_RETRY_S = 30       # after a compaction could not start a new segment
RETRY_WRITE_S = 0.5        # records kept after a failed write are retried this often
FAILURE_LOG_S = 5.0        # at most one "write failed" line this often


class StorageError(Exception):
    """The WAL could not be written; nothing in the failed batch is acknowledged."""


def _name(num: int, kind: str) -> str:
    return f"{num:08d}.{kind}"


# Appends need their data and the file's new size on disk, not its times:
# fdatasync gives exactly that (the segment's directory entry is fsynced
# once, when the segment is created).
_datasync = os.fdatasync


def _list_files(wal_dir: str) -> tuple[list[int], list[int]]:
    """(segment numbers, snapshot numbers), ascending."""
    segs: list[int] = []
    snaps: list[int] = []
    for entry in os.listdir(wal_dir):
        m = _SEGMENT_RE.match(entry)
        if m:
            (segs if m.group(2) == "log" else snaps).append(int(m.group(1)))
    return sorted(segs), sorted(snaps)


def _write_header(fd: int) -> int:
    """Write the format record at the start of a new segment; its size."""
    header = _header()
    files.write_all(fd, header)
    return len(header)


def recover(wal_dir: str, sink: Callable[[Any], None]) -> tuple[int, int, int]:
    """Replay snapshot + segments into `sink`; cut a torn tail.

    Returns (current segment number, its size, records replayed). Raises
    `CorruptLog` for damage anywhere but the tail of the newest segment.
    """
    count = 0
    os.makedirs(wal_dir, mode=0o700, exist_ok=True)
    files.remove_temp_files(wal_dir)        # a compaction cut short by a crash
    segs, snaps = _list_files(wal_dir)
    base = snaps[-1] if snaps else 0
    if base:
        count += _replay_snapshot(os.path.join(wal_dir, _name(base, "snap")), sink)
    live = [n for n in segs if n >= base]
    _check_continuous(wal_dir, base, live)
    for i, num in enumerate(live):
        count += _replay_segment(os.path.join(wal_dir, _name(num, "log")), sink,
                                 last=i == len(live) - 1)
    current = live[-1] if live else max(base, 1)
    path = os.path.join(wal_dir, _name(current, "log"))
    return current, os.path.getsize(path) if os.path.exists(path) else 0, count


def _replay_snapshot(path: str, sink: Callable[[Any], None]) -> int:
    """Replay a snapshot. One written since format 2 begins with a V record
    and must end with its E record: cut at a record boundary it would
    otherwise look whole. Older snapshots have neither and are read as before."""
    marks: dict[str, int] = {}

    def body(rec: Any) -> None:
        if rec[0] in _SNAPSHOT_MARKS:
            marks[rec[0]] = rec[1]
        else:
            sink(rec)
    found = codec.scan(files.read(path), body)
    if found.damage:
        raise CorruptLog(f"snapshot {path} is damaged: {found.damage}")
    if FORMAT in marks:
        check_format(marks[FORMAT], path)
    whole = marks.get(SNAPSHOT_END) == found.count - 1 if FORMAT in marks \
        else found.count > 0 and SNAPSHOT_END not in marks
    if not whole:
        raise CorruptLog(f"snapshot {path} is incomplete: it does not end with its end "
                             f"record ({found.count} records read)")
    return found.count


def check_format(version: Any, where: str) -> None:
    """A file written by a newer jobd is not read (it may hold records this
    one would misread); older formats are."""
    if not isinstance(version, int) or version > WAL_FORMAT:
        raise CorruptLog(f"{where} has WAL format {version!r}; this jobd reads formats "
                         f"up to {WAL_FORMAT} (written by a newer jobd?)")


def _format_seen(rec: list[Any]) -> None:
    check_format(rec[1] if len(rec) > 1 else None, "a WAL segment")


# What replay does with the log's own records when a segment hands them to
# the state's interpreter (jobd/core/lifecycle.py takes them as `framing`).
FRAMING: dict[str, Callable[[list[Any]], None]] = {FORMAT: _format_seen}


def _header() -> bytes:
    """The first record of every new segment and snapshot."""
    buf = bytearray()
    codec.encode_into(buf, [FORMAT, WAL_FORMAT])
    return bytes(buf)


def _check_continuous(wal_dir: str, base: int, live: list[int]) -> None:
    """The history must have no hole: the segments after the newest snapshot
    (or from 1 without one) are consecutive, starting at its number."""
    first = base or 1
    expected = list(range(first, first + len(live)))
    if (base and not live) or live != expected:
        missing = sorted(set(range(first, (live or [first])[-1] + 1)) - set(live))
        what = f"segment {_name(missing[0], 'log')}" if missing else "a segment"
        raise CorruptLog(
            f"WAL history in {wal_dir} has a hole: {what} is missing "
            f"({'after snapshot ' + _name(base, 'snap') if base else 'no snapshot'}; "
            f"segments {', '.join(str(n) for n in live)}). Refusing to start rather than "
            "drop jobs; see docs/wal.md (Recovery).")


def _replay_segment(path: str, sink: Callable[[Any], None], last: bool) -> int:
    """Replay one segment; returns how many records it held."""
    data = files.read(path)
    found = codec.scan(data, sink)
    if not found.damage:
        return found.count
    later = codec.next_good_record(data, found.good_end)
    if not last or later is not None:
        where = f"offset {found.good_end} of {path}"
        raise CorruptLog(
            f"WAL corrupted at {where} ({found.damage}); valid records follow, "
            "so this is not a torn tail. Refusing to start rather than drop jobs; "
            "see docs/wal.md (Recovery) for how to inspect and repair.")
    with open(path, "r+b") as f:
        f.truncate(found.good_end)
        os.fsync(f.fileno())
    log.warning("WAL tail of %s was torn or corrupt: dropped %d bytes (kept %d records)",
                path, found.tail_bytes, found.count)
    return found.count


class DurabilityListener(Protocol):
    def on_durable(self, seq: int) -> None: ...
    def on_failed(self, first: int, last: int, why: str) -> None: ...


class Journal:
    """Appends records with group commit; compacts into snapshots."""

    def __init__(self, wal_dir: str, mode: str, interval_ms: int, segment_bytes: int,
                 segment: int, offset: int, loop: asyncio.AbstractEventLoop,
                 snapshot_source: Callable[[], Iterable[Any]]) -> None:
        self.dir = wal_dir
        self.mode = mode
        self.interval = interval_ms / 1000.0
        self.segment_bytes = segment_bytes
        self.segment = segment
        self.offset = offset
        self.loop = loop
        self.snapshot_source = snapshot_source    # the live state's records (compaction)
        # Told when records become durable or fail (the server: replies wait for them).
        self.listeners: list[DurabilityListener] = []
        self.fd = files.open_append(os.path.join(wal_dir, _name(segment, "log")))
        files.fsync_dir(wal_dir)        # a segment created just now must survive a crash too
        if offset == 0:           # a new segment starts with its format record
            self.offset = _write_header(self.fd)
        self.closed = False      # after close(): nothing may be appended or written
        self.buf = bytearray()
        self.appended = 0        # seq of the last record appended
        self.written = 0         # seq of the last record written to the file
        self.durable = 0         # seq of the last record known durable
        self.fsyncs = 0
        self.bytes_written = 0
        self.syncing = False
        # (undo, arg, start, end): how to revert a buffered submit, and where it is in `buf`
        self.undo: list[tuple[Callable[[Any], None], Any, int, int]] = []
        self.compacting = False
        self._compact_retry_at = 0.0   # monotonic time before which compaction waits
        self._retry_handle: asyncio.TimerHandle | None = None   # rewrite kept records
        self._failure_logged = -FAILURE_LOG_S
        # The last failure: its text, and the seq a write must pass (or the
        # fsync count that must move on) for it to be over (`failure`).
        self._failed: tuple[str, int, int] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="jobd-fsync")
        self._interval_handle: asyncio.TimerHandle | None = None
        self._lazy_handle: asyncio.TimerHandle | None = None
        if mode == "interval":
            self._interval_handle = loop.call_later(self.interval, self._interval_sync)

    # --- appending ---------------------------------------------------------------
    def append(self, record: Any, undo: Callable[[Any], None] | None = None,
               undo_arg: Any = None) -> int:
        """Buffer one record; returns its sequence number. Hot path.
        `undo(undo_arg)` reverts the change if the write fails."""
        if self.closed:
            # A change after the final flush would be lost (and its bytes
            # could reach whatever file now has the old descriptor's number).
            raise StorageError("the WAL is closed: jobd has stopped")
        if undo is None:
            codec.encode_into(self.buf, record)
        else:
            start = len(self.buf)
            codec.encode_into(self.buf, record)
            self.undo.append((undo, undo_arg, start, len(self.buf)))
        self.appended += 1
        return self.appended

    @property
    def pending(self) -> bool:
        return bool(self.buf) or self.written != self.durable

    def flush(self, urgent: bool = False) -> bool:
        """Write the buffer (one syscall) and, in `always` mode, fsync it when
        a reply waits; returns True when it fsynced (the loop was blocked).

        `urgent` says a reply is waiting for durability. Records nobody waits
        for (a job started, progress, a completion no client asked about)
        are written at once but fsynced lazily, within `fsync_interval_ms`
        or by the next urgent fsync, whichever comes first: losing them in a
        power cut only means a job runs again (at-least-once), and it saves
        an fsync per turn while workers drain the queue.
        """
        if self.buf:
            self._write_buffer()
        if self.mode == "always" and self.written > self.durable:
            if urgent:
                self._sync_inline()       # even while a lazy sync runs: nobody waits for that
                if not self.syncing:
                    self._maybe_compact()
                return True
            if not self.syncing and self._lazy_handle is None:
                self._lazy_handle = self.loop.call_later(self.interval, self._lazy_sync)
        elif not self.syncing:
            self._maybe_compact()
        return False

    @property
    def holds_undoable(self) -> bool:
        """Buffered records that a failed write would undo (submits)."""
        return bool(self.undo)

    def write_buffer(self) -> None:
        """Write what is buffered now (no fsync); a failure undoes the batch."""
        if self.buf:
            self._write_buffer()

    def _lazy_sync(self) -> None:
        self._lazy_handle = None
        if self.buf:
            self._write_buffer()
        if not self.syncing and self.written > self.durable:
            self.syncing = True
            target = self.written
            fut = self.loop.run_in_executor(self._executor, _datasync, self.fd)
            fut.add_done_callback(lambda f: self._lazy_synced(f.exception(), target))

    def _lazy_synced(self, exc: BaseException | None, target: int) -> None:
        self.syncing = False
        self._synced(exc, target)
        self.flush()

    def _write_buffer(self) -> None:
        if self.closed:
            return
        first = self.written + 1
        try:
            files.write_all(self.fd, self.buf)
        except OSError as e:
            self._fail_batch(first, self.appended, f"WAL write failed: {e}")
            return
        self.offset += len(self.buf)
        self.bytes_written += len(self.buf)
        self.buf.clear()
        self.written = self.appended
        self.undo.clear()
        if self.mode != "always":
            self._set_durable(self.written)

    def _fail_batch(self, first: int, last: int, why: str) -> None:
        """A batch did not reach the file: answer its waiters with the error,
        undo its submits, and keep every other record (a start, an outcome, a
        cancel...) for the next write: the change is already live in memory,
        so memory and log agree again once the disk takes it."""
        now = time.monotonic()
        if now - self._failure_logged >= FAILURE_LOG_S:      # a full disk fails every turn
            self._failure_logged = now
            log.error("%s; %d new record(s) not acknowledged (submits undone; other "
                      "records kept and retried)", why, max(0, last - first + 1))
        try:
            os.ftruncate(self.fd, self.offset)
        except OSError:
            log.exception("could not cut the WAL back to %d bytes", self.offset)
        kept = bytearray()
        pos = 0
        for _undo, _arg, start, end in self.undo:
            kept += self.buf[pos:start]
            pos = end
        kept += self.buf[pos:]
        for undo, arg, _start, _end in reversed(self.undo):
            undo(arg)
        self.undo.clear()
        self.buf = kept           # `written` stays: none of these records is in the file
        if kept and self._retry_handle is None:   # no turn may come soon to write them
            self._retry_handle = self.loop.call_later(RETRY_WRITE_S, self._retry_write)
        for listener in self.listeners:
            listener.on_failed(first, last, why)
        self._failed = (why, last, -1)
        if self.mode != "always":
            self._set_durable(self.written)

    @property
    def failure(self) -> str | None:
        """Why the log cannot be written, while it cannot: the last failed
        write until a later write reaches the file, the last failed fsync until
        an fsync succeeds. Read by the alerts, never on the hot path."""
        if self._failed is None:
            return None
        why, last_seq, fsyncs = self._failed
        failing = self.written < last_seq if fsyncs < 0 else self.fsyncs == fsyncs
        return why if failing else None

    def _retry_write(self) -> None:
        self._retry_handle = None
        if self.buf:
            self.flush(urgent=False)      # fsynced lazily; a new failure re-arms this

    def _sync_inline(self) -> None:
        """fsync what is written, on the loop thread. A reply waits for it:
        handing it to a thread costs two GIL handoffs, more than the fsync
        itself here (bench/RESULTS.md), and requests that arrive meanwhile
        wait in the socket buffers and share the next fsync. Lazy syncs
        nobody waits for run on the helper thread."""
        target = self.written
        try:
            _datasync(self.fd)
        except OSError as e:
            self._synced(e, target)
        else:
            self._synced(None, target)

    def _synced(self, exc: BaseException | None, target: int) -> None:
        self.fsyncs += 1
        if exc is not None:
            log.critical("WAL fsync failed: %s", exc)
            self._failed = (f"WAL fsync failed: {exc}", 0, self.fsyncs)
            for listener in self.listeners:
                listener.on_failed(self.durable + 1, target, f"WAL fsync failed: {exc}")
        self._set_durable(target)

    def _set_durable(self, seq: int) -> None:
        if seq > self.durable:
            self.durable = seq
            for listener in self.listeners:
                listener.on_durable(seq)

    def _interval_sync(self) -> None:
        self._interval_handle = self.loop.call_later(self.interval, self._interval_sync)
        if self.syncing or self.offset == 0:
            return
        self.syncing = True
        fut = self.loop.run_in_executor(self._executor, _datasync, self.fd)
        fut.add_done_callback(self._interval_synced)

    def _interval_synced(self, fut: asyncio.Future[None]) -> None:
        self.syncing = False
        self.fsyncs += 1
        if fut.exception() is not None:
            log.critical("WAL fsync failed: %s", fut.exception())
            self._failed = (f"WAL fsync failed: {fut.exception()}", 0, self.fsyncs)
        self._maybe_compact()

    # --- compaction -------------------------------------------------------------
    def _maybe_compact(self) -> None:
        if (self.offset >= self.segment_bytes and not self.compacting
                and not self.buf
                and time.monotonic() >= self._compact_retry_at):
            self.compact()

    def compact(self) -> None:
        """Start a new segment and write a snapshot of live state before it.

        Records appended from now on go to the new segment. The snapshot is
        encoded here (the loop owns the state) and written, fsynced and
        renamed on the helper thread; until the rename, recovery still uses
        the old snapshot and replays the old segment followed by the new one.
        """
        if self.buf:
            self._write_buffer()
        snap = bytearray(_header())
        records = 1
        for record in self.snapshot_source():
            codec.encode_into(snap, record)
            records += 1
        codec.encode_into(snap, [SNAPSHOT_END, records])
        old_fd, new = self.fd, self.segment + 1
        try:
            self.fd = self._next_segment(old_fd, new)
        except OSError as e:
            # The WAL keeps working on the old segment; retried later.
            log.error("WAL compaction postponed %ds: cannot start segment %d: %s",
                      COMPACT_RETRY_S, new, e)
            self._compact_retry_at = time.monotonic() + COMPACT_RETRY_S
            return
        os.close(old_fd)
        self.segment, self.offset, self.compacting = new, len(_header()), True
        fut = self.loop.run_in_executor(self._executor, self._write_snapshot, new, bytes(snap))
        fut.add_done_callback(self._compacted)

    def _next_segment(self, old_fd: int, num: int) -> int:
        """Open segment `num` after making the old one durable; on failure
        nothing changes (an empty new file is removed again)."""
        os.fsync(old_fd)
        path = os.path.join(self.dir, _name(num, "log"))
        fd = files.open_append(path)
        try:
            files.fsync_dir(self.dir)
            _write_header(fd)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return fd

    def _write_snapshot(self, num: int, data: bytes) -> None:
        final = os.path.join(self.dir, _name(num, "snap"))
        tmp = final + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, files.FILE_MODE)
        try:
            files.write_all(fd, data)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            os.close(fd)
        os.rename(tmp, final)
        files.fsync_dir(self.dir)
        segs, snaps = _list_files(self.dir)
        for n in segs:
            if n < num:
                os.unlink(os.path.join(self.dir, _name(n, "log")))
        for n in snaps:
            if n < num:
                os.unlink(os.path.join(self.dir, _name(n, "snap")))

    def _compacted(self, fut: asyncio.Future[None]) -> None:
        self.compacting = False
        if fut.exception() is not None:
            log.error("WAL compaction failed (the old segments are kept): %s", fut.exception())
        else:
            log.info("WAL compacted into snapshot %d", self.segment)

    # --- shutdown and introspection ---------------------------------------------
    def disk_bytes(self) -> int:
        total = 0
        for entry in os.scandir(self.dir):
            if _SEGMENT_RE.match(entry.name):
                total += entry.stat().st_size
        return total

    def close(self) -> None:
        """Write and fsync everything; the loop must not append afterwards."""
        for handle in (self._interval_handle, self._lazy_handle, self._retry_handle):
            if handle is not None:
                handle.cancel()
        self._executor.shutdown(wait=True)
        if self.buf:
            self._write_buffer()
        try:
            os.fsync(self.fd)
            self.fsyncs += 1
        except OSError as e:
            log.critical("final WAL fsync failed: %s", e)
        self._set_durable(self.written)
        self.closed = True
        os.close(self.fd)
        self.fd = -1            # never a number another file may have been given

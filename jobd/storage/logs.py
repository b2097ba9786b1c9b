"""Each job's captured output (what it printed and logged), kept with the job.

One file per job under `<data_dir>/logs/`, named like its result file (a
digest of the job id). Output arrives from workers in pieces; pieces are
buffered and appended once per loop turn (`flush`). A job keeps the last
`[results] log_max_bytes` of its output: past twice that, the file is
rewritten with its tail (written to a temp file, renamed), and the number of
bytes dropped so far is kept in the file's first line, so offsets stay
meaningful across restarts. Files are 0600; they go when their job goes
(purge, expiry), like result files.

Offsets are positions in the job's whole output since it started (dropped
bytes included): a reader passes back the offset it was given to continue.
Not fsynced: after a power cut the last output may be missing (it is not
job state; docs/durability.md).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from jobd.storage.files import FILE_MODE, read, remove_temp_files, remove_unreferenced

log = logging.getLogger("jobd.logs")

HEADER = b"jobd-log dropped=%020d\n"        # fixed size: rewritten in place when it changes
HEADER_SIZE = len(HEADER % 0)
MAX_READ = 1024 * 1024                        # most one `logs` reply carries


@dataclass(frozen=True)
class Chunk:
    text: str
    offset: int          # where the next read continues
    truncated: bool      # output before the offset asked for was dropped


class JobLogs:
    def __init__(self, directory: str, max_bytes: int, stem: Callable[[str], str]) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.stem = stem                      # job id → file name stem (as results use)
        self.pending: dict[str, bytearray] = {}
        os.makedirs(directory, mode=0o700, exist_ok=True)
        remove_temp_files(directory)

    def path(self, job_id: str) -> str:
        return os.path.join(self.dir, self.stem(job_id) + ".log")

    def append(self, job_id: str, data: bytes) -> None:
        """Output from the job's worker; written at the next `flush`."""
        buf = self.pending.get(job_id)
        if buf is None:
            self.pending[job_id] = bytearray(data)
        else:
            buf += data

    def flush(self) -> None:
        """Append every job's buffered output to its file (once per loop turn)."""
        pending, self.pending = self.pending, {}
        for job_id, data in pending.items():
            try:
                self._write(job_id, bytes(data))
            except OSError as e:
                log.error("cannot keep the output of job %s: %s", job_id, e)

    def _write(self, job_id: str, data: bytes) -> None:
        path = self.path(job_id)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                os.write(fd, HEADER % 0)
                size = HEADER_SIZE
            os.write(fd, data)
            size += len(data)
        finally:
            os.close(fd)
        if size - HEADER_SIZE > 2 * self.max_bytes:
            self._keep_tail(path)

    def _keep_tail(self, path: str) -> None:
        """Rewrite the file with the last `max_bytes` of output."""
        raw = read(path)
        dropped, body = _split(raw)
        cut = len(body) - self.max_bytes
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            os.write(fd, HEADER % (dropped + cut) + body[cut:])
        finally:
            os.close(fd)
        os.rename(tmp, path)

    def read(self, job_id: str, offset: int) -> Chunk:
        """Output from `offset` on (what has reached the file; `flush` first)."""
        try:
            raw = read(self.path(job_id))
        except FileNotFoundError:
            return Chunk("", 0, offset > 0)
        dropped, body = _split(raw)
        total = dropped + len(body)
        start = max(offset, dropped)
        if start >= total:
            return Chunk("", total, offset < dropped)
        piece = body[start - dropped:start - dropped + MAX_READ]
        return Chunk(piece.decode("utf-8", "replace"), start + len(piece), offset < dropped)

    def forget_missing(self, live: Callable[[str], bool]) -> int:
        """Delete the output of jobs that are gone (purged, expired)."""
        return remove_unreferenced(self.dir, live)


def _split(raw: bytes) -> tuple[int, bytes]:
    """(bytes dropped before the kept output, the kept output)."""
    if raw[:9] == b"jobd-log " and len(raw) >= HEADER_SIZE:
        try:
            return int(raw[17:HEADER_SIZE - 1]), raw[HEADER_SIZE:]
        except ValueError:
            pass
    return 0, raw

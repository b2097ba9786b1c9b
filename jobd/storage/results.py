"""Result storage: small results inline in the WAL, large ones in files.

A result is the raw JSON the worker produced. Up to `inline_max_bytes` it
travels inside the WAL's complete record (as an `orjson.Fragment`, never
re-parsed). Larger results are written to `<data_dir>/results/<job id>.json`
(`.json.z`, zlib-compressed, above `compress_min_bytes`) on a helper thread,
fsynced, and only then is the job recorded complete with a reference
`[file name, raw size]` in the WAL.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import zlib
from collections.abc import Callable
from typing import Any

import orjson

from jobd.core.job import Job
from jobd.storage.files import FILE_MODE, fsync_dir, remove_temp_files, remove_unreferenced

log = logging.getLogger("jobd.results")



class ResultStore:
    def __init__(self, directory: str, inline_max: int, compress_min: int,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.dir = directory
        self.inline_max = inline_max
        self.compress_min = compress_min
        self.loop = loop
        self.storing: set[str] = set()     # file stems being written (not yet referenced)
        self.writes: set[asyncio.Future[list[Any]]] = set()   # in flight, for `drain`
        os.makedirs(directory, mode=0o700, exist_ok=True)
        remove_temp_files(directory)        # writes a crash cut short

    def is_inline(self, raw: bytes) -> bool:
        return len(raw) <= self.inline_max

    def store(self, job_id: str, raw: bytes, done: Callable[[list[Any] | None, str | None], None]) -> None:
        """Write a large result off the loop thread; `done(ref, error)` runs on the loop."""
        assert self.loop is not None
        stem = _file_name(job_id)
        self.storing.add(stem)
        fut = self.loop.run_in_executor(None, self._write, job_id, raw)
        self.writes.add(fut)

        def finished(f: asyncio.Future[list[Any]]) -> None:
            self.writes.discard(f)
            self.storing.discard(stem)      # `done` records the reference now
            exc = f.exception()
            if exc is not None:
                log.error("could not store the result of job %s: %s", job_id, exc)
                done(None, f"result could not be stored: {exc}")
            else:
                done(f.result(), None)
        fut.add_done_callback(finished)

    async def drain(self) -> None:
        """Wait until every result write in flight has ended and its `done`
        has run (a graceful stop records those completions before it closes
        the WAL: a finished job must not run again after a restart)."""
        while self.writes:
            await asyncio.wait(list(self.writes))
            await asyncio.sleep(0)          # done callbacks run after the futures settle

    def _write(self, job_id: str, raw: bytes) -> list[Any]:
        compress = len(raw) > self.compress_min      # "above compress_min_bytes"
        name = _file_name(job_id) + (".json.z" if compress else ".json")
        data = zlib.compress(raw, 1) if compress else raw
        path = os.path.join(self.dir, name)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        fsync_dir(self.dir)                 # the name must outlive a power cut too
        return [name, len(raw)]

    def load(self, job: Job) -> Any:
        """The result as something orjson can dump (a Fragment for raw JSON)."""
        if job.result_ref is None:
            return job.result
        name = job.result_ref[0]
        try:
            with open(os.path.join(self.dir, name), "rb") as f:
                data = f.read()
        except OSError as e:
            log.error("result file %s of job %s is unreadable: %s", name, job.id, e)
            return None
        if name.endswith(".z"):
            data = zlib.decompress(data)
        return orjson.Fragment(data)

    def forget_missing(self, live: Callable[[str], bool]) -> int:
        """Delete result files whose job no longer exists (purged or expired),
        sparing files being written (not referenced yet)."""
        return remove_unreferenced(self.dir, lambda stem: live(stem) or stem in self.storing)


def _file_name(job_id: str) -> str:
    """Job ids may hold '/', so files are named by a digest of the id."""
    return hashlib.sha256(job_id.encode()).hexdigest()[:32]


def file_stem(job_id: str) -> str:
    return _file_name(job_id)

"""jobd/storage/results.py: the inline/file boundary, compression only above
`compress_min_bytes`, the files written (private, no temp left, the
reference recorded), a write that fails, reading results back, and
`drain()` waiting for every write in flight and its `done` callback, on a
real loop with a thread-pool executor.

tests/test_units.py covers the sweep that spares files being written.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobd.core.job import EMPTY_ARGS, EMPTY_DICT, EMPTY_KWARGS, EMPTY_LIST, Job
from jobd.storage.results import ResultStore, file_stem

INLINE_MAX, COMPRESS_MIN = 100, 1000


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(4)
    loop.set_default_executor(executor)
    yield loop
    executor.shutdown(wait=True)
    loop.close()


def results(tmp_path: Path, loop: asyncio.AbstractEventLoop | None = None) -> ResultStore:
    return ResultStore(str(tmp_path / "results"), INLINE_MAX, COMPRESS_MIN, loop)


def job_with(job_id: str, result: Any = None, ref: list[Any] | None = None) -> Job:
    job = Job.new(job_id, "h", 10, 1, 0.0, (3, 1.0, 2.0, None, None, None), None, EMPTY_ARGS,
                  EMPTY_KWARGS, EMPTY_DICT, EMPTY_LIST)
    job.result, job.result_ref = result, ref
    return job


def raw_of(size: int) -> bytes:
    """A JSON string of exactly `size` bytes."""
    return b'"' + b"x" * (size - 2) + b'"'


class Done:
    """`done(ref, error)` callbacks, as they arrive, with the thread they ran on."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Any] | None, str | None]] = []
        self.threads: set[int] = set()

    def __call__(self, ref: list[Any] | None, error: str | None) -> None:
        self.calls.append((ref, error))
        self.threads.add(threading.get_ident())


def store_and_drain(rs: ResultStore, loop: asyncio.AbstractEventLoop, job_id: str,
                    raw: bytes) -> tuple[list[Any] | None, str | None]:
    done = Done()
    rs.store(job_id, raw, done)
    loop.run_until_complete(rs.drain())
    assert len(done.calls) == 1 and done.threads == {threading.get_ident()}   # on the loop
    return done.calls[0]


# --- the boundaries ---------------------------------------------------------------------------

def test_inline_up_to_and_including_inline_max(tmp_path):
    rs = results(tmp_path)
    assert rs.is_inline(raw_of(INLINE_MAX)) and rs.is_inline(b"1")
    assert not rs.is_inline(raw_of(INLINE_MAX + 1))


@pytest.mark.parametrize("size,compressed", [
    (INLINE_MAX + 1, False), (COMPRESS_MIN, False), (COMPRESS_MIN + 1, True), (50_000, True)])
def test_compressed_only_above_compress_min(tmp_path, loop, size, compressed):
    rs = results(tmp_path, loop)
    raw = raw_of(size)
    ref, error = store_and_drain(rs, loop, "job/1", raw)
    assert error is None and ref is not None
    name, raw_size = ref
    assert raw_size == size
    assert name == file_stem("job/1") + (".json.z" if compressed else ".json")
    data = (tmp_path / "results" / name).read_bytes()
    assert (zlib.decompress(data) if compressed else data) == raw
    assert orjson.dumps(rs.load(job_with("job/1", ref=ref))) == raw


def test_result_files_are_private_and_no_temp_file_is_left(tmp_path, loop):
    rs = results(tmp_path, loop)
    ref, _ = store_and_drain(rs, loop, "a", raw_of(5000))
    assert ref is not None
    assert os.listdir(tmp_path / "results") == [ref[0]]
    assert os.stat(tmp_path / "results" / ref[0]).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "results").st_mode & 0o777 == 0o700
    assert not rs.storing and not rs.writes


def test_a_write_that_fails_reports_the_error_to_done(tmp_path, loop):
    rs = results(tmp_path, loop)
    shutil.rmtree(rs.dir)                                    # nowhere to write
    ref, error = store_and_drain(rs, loop, "a", raw_of(500))
    assert ref is None
    assert error is not None and error.startswith("result could not be stored: ")
    assert not rs.storing and not rs.writes


def test_load_gives_inline_results_and_none_for_a_missing_file(tmp_path):
    rs = results(tmp_path)
    inline = orjson.Fragment(b'{"a":1}')
    assert rs.load(job_with("a", result=inline)) is inline
    assert rs.load(job_with("b")) is None
    assert rs.load(job_with("c", ref=["missing.json", 10])) is None


def test_a_new_store_removes_temp_files_a_crash_left(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    (d / "abc.json.tmp").write_bytes(b"half")
    (d / "def.json").write_bytes(b"1")
    results(tmp_path)
    assert os.listdir(d) == ["def.json"]


# --- drain ---------------------------------------------------------------------------------------

class GatedStore(ResultStore):
    """A store whose file writes wait for the test to open a gate."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.gate = threading.Event()

    def _write(self, job_id: str, raw: bytes) -> list[Any]:
        if not self.gate.wait(10):
            raise TimeoutError("the test never opened the gate")
        return super()._write(job_id, raw)


def spin(loop: asyncio.AbstractEventLoop, turns: int = 5) -> None:
    """Let the loop run a few turns (no time passes)."""
    for _ in range(turns):
        loop.run_until_complete(asyncio.sleep(0))


def test_drain_waits_for_writes_in_flight_and_their_done_callbacks(tmp_path, loop):
    rs = GatedStore(str(tmp_path / "results"), INLINE_MAX, COMPRESS_MIN, loop)
    done = Done()
    for i in range(3):
        rs.store(f"j{i}", raw_of(200 + i), done)
    assert len(rs.writes) == 3 and len(rs.storing) == 3
    task = loop.create_task(rs.drain())
    spin(loop)
    assert not task.done() and done.calls == []              # still waiting on the gate
    rs.gate.set()
    loop.run_until_complete(task)
    assert sorted(ref[1] for ref, _ in done.calls if ref) == [200, 201, 202]
    assert not rs.writes and not rs.storing


def test_drain_also_waits_for_a_write_started_by_a_done_callback(tmp_path, loop):
    rs = results(tmp_path, loop)
    done = Done()

    def first(ref: list[Any] | None, error: str | None) -> None:
        done(ref, error)
        rs.store("second", raw_of(300), done)                # e.g. the next result arrives

    rs.store("first", raw_of(200), first)
    loop.run_until_complete(rs.drain())
    assert [ref[1] for ref, _ in done.calls if ref] == [200, 300]
    assert not rs.writes


def test_drain_with_nothing_in_flight_returns_at_once(tmp_path, loop):
    loop.run_until_complete(asyncio.wait_for(results(tmp_path, loop).drain(), 1))

"""jobd/storage/logs.py: a job's captured output, bounded, read by offsets that survive trimming."""
from __future__ import annotations

import os
import stat

from jobd.storage.logs import HEADER_SIZE, JobLogs


def make(tmp_path, max_bytes=100):
    return JobLogs(str(tmp_path / "logs"), max_bytes, lambda job_id: job_id)


def test_output_is_buffered_until_flush_then_read_from_offsets(tmp_path):
    logs = make(tmp_path)
    logs.append("a", b"hello ")
    logs.append("a", b"world\n")
    assert logs.read("a", 0).text == ""                      # not flushed yet
    logs.flush()
    chunk = logs.read("a", 0)
    assert (chunk.text, chunk.offset, chunk.truncated) == ("hello world\n", 12, False)
    assert logs.read("a", 6).text == "world\n"
    assert logs.read("a", 12).text == "" and logs.read("a", 12).offset == 12
    assert logs.read("a", 99).offset == 12                    # past the end: the end
    mode = os.stat(logs.path("a")).st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_past_twice_the_limit_only_the_tail_is_kept_and_offsets_still_count(tmp_path):
    logs = make(tmp_path, max_bytes=100)
    for i in range(30):
        logs.append("a", f"{i:09d}\n".encode())              # 10 bytes a line, 300 in all
        logs.flush()
    size = os.path.getsize(logs.path("a")) - HEADER_SIZE
    assert 100 <= size <= 200
    head = logs.read("a", 0)
    assert head.truncated is True
    assert head.offset == 300                                  # whole-output positions
    assert head.text.endswith("000000029\n") and head.text.startswith(f"{(300 - size) // 10:09d}")
    assert logs.read("a", 290).text == "000000029\n" and not logs.read("a", 290).truncated
    again = make(tmp_path, max_bytes=100)                      # after a restart: same offsets
    assert again.read("a", 290).text == "000000029\n"


def test_unknown_jobs_read_empty_and_gone_jobs_are_swept(tmp_path):
    logs = make(tmp_path)
    assert logs.read("nobody", 0).text == ""
    for job_id in ("keep", "drop"):
        logs.append(job_id, b"x\n")
    logs.flush()
    assert logs.forget_missing(lambda stem: stem == "keep") == 1
    assert os.path.exists(logs.path("keep")) and not os.path.exists(logs.path("drop"))


def test_leftover_temp_files_are_removed_at_start(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log.tmp").write_bytes(b"half")
    make(tmp_path)
    assert not (tmp_path / "logs" / "a.log.tmp").exists()

"""jobd/storage/files.py: private modes, whole writes, leftovers of interrupted writes."""
from __future__ import annotations

import os
import stat

from jobd.storage import files


def test_appended_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        fd = files.open_append(str(tmp_path / "seg"))
    finally:
        os.umask(old)
    try:
        files.write_all(fd, b"abc")
        files.write_all(fd, bytearray(b"def"))
    finally:
        os.close(fd)
    assert stat.S_IMODE(os.stat(tmp_path / "seg").st_mode) == files.FILE_MODE == 0o600
    assert files.read(str(tmp_path / "seg")) == b"abcdef"       # appended, whole


def test_write_all_writes_everything_through_a_pipe_that_takes_it_in_parts():
    r, w = os.pipe()
    data = b"x" * (1 << 20)                     # more than a pipe's buffer: several writes
    pid = os.fork()
    if pid == 0:                                # the reader, so the writer is never stuck
        os.close(w)
        total = 0
        while chunk := os.read(r, 1 << 16):
            total += len(chunk)
        os._exit(0 if total == len(data) else 1)
    os.close(r)
    files.write_all(w, data)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0       # the reader got every byte


def test_leftover_temp_files_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "00000003.snap.tmp").write_bytes(b"half")
    (tmp_path / "abc.json.tmp").write_bytes(b"half")
    (tmp_path / "00000003.log").write_bytes(b"keep")
    (tmp_path / "dir.tmp").mkdir()              # only files are leftovers
    files.remove_temp_files(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000003.log", "dir.tmp"]


def test_fsync_dir_accepts_a_directory(tmp_path):
    files.fsync_dir(str(tmp_path))              # raises on a non-directory
    try:
        files.fsync_dir(str(tmp_path / "missing"))
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("a missing directory must raise")

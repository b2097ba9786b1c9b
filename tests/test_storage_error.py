"""A full disk: submits answer storage_error, nothing is acknowledged, the daemon lives on."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import T, wait_until

from jobd_client import JobdError

IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _tmpfs(tmp_path: Path, options: str):
    """A tmpfs with `options` (needs root: CI runs as root)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"{options},mode=0700", "tmpfs", str(mnt)],
                         capture_output=True)
    if res.returncode != 0:
        if IN_CI:
            pytest.fail(f"cannot mount a tmpfs in CI: {res.stderr.decode()}")
        pytest.skip("mounting a tmpfs needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 512 KiB tmpfs."""
    yield from _tmpfs(tmp_path, "size=512k")


@pytest.fixture
def few_inodes_fs(tmp_path: Path):
    """A tmpfs with room for data but only a few files."""
    yield from _tmpfs(tmp_path, "size=8m,nr_inodes=32")


def _fill(path: Path) -> None:
    """Write zeros until the filesystem is full."""
    with open(path, "wb", buffering=0) as f:
        chunk = b"\0" * 4096
        while True:
            try:
                f.write(chunk)
            except OSError:
                break
        for size in (512, 64, 1):       # squeeze out the last bytes too
            while True:
                try:
                    f.write(b"\0" * size)
                except OSError:
                    break


def test_disk_full_answers_storage_error_and_acknowledges_nothing(make_daemon, small_fs):
    d = make_daemon(start=False, workers=0)
    d.data_dir = str(small_fs / "data")
    d.start()
    c = d.client()
    kept = [c.submit(T + "add", args=[i, i]) for i in range(5)]
    filler = small_fs / "filler"
    _fill(filler)
    with pytest.raises(JobdError) as err:
        c.submit(T + "echo", args=["x" * 20000], job_id="refused-job")
    assert err.value.code == "storage_error"
    assert c.hello()["protocol"] == 1                      # the connection is still usable
    with pytest.raises(JobdError) as missing:
        c.status("refused-job")
    assert missing.value.code == "not_found"             # nothing was kept in memory either
    assert c.list().total == 5
    filler.unlink()
    again = c.submit(T + "echo", args=["y"], job_id="after-space")
    assert c.status(again).status == "pending"
    c.close()
    assert d.stop() == 0
    d.start()
    c = d.client()
    ids = {j.id for j in c.list(limit=100).jobs}
    assert ids == set(kept) | {"after-space"}
    wait_until(lambda: "WAL write failed" in d.log(), what="the failure in the log")


def test_a_resubmit_is_not_acknowledged_before_the_original_is_durable(make_daemon, small_fs):
    """[submit X, submit X] pipelined while the disk is full: the write of X
    fails, so the resubmit (answered from memory) must fail with it."""
    import socket

    import orjson
    d = make_daemon(start=False, workers=0)
    d.data_dir = str(small_fs / "data")
    d.start()
    _fill(small_fs / "filler")
    req = {"op": "submit", "handler": T + "echo", "args": ["x" * 20000], "job_id": "twice"}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(d.socket)
    sock.sendall(orjson.dumps({**req, "id": 1}) + b"\n" + orjson.dumps({**req, "id": 2}) + b"\n")
    buf = b""
    while buf.count(b"\n") < 2:
        buf += sock.recv(65536)
    sock.close()
    replies = [orjson.loads(line) for line in buf.split(b"\n")[:2]]
    assert [r["id"] for r in replies] == [1, 2]
    assert [r["ok"] for r in replies] == [False, False], replies
    assert {r["error"]["code"] for r in replies} == {"storage_error"}


def test_a_refused_submit_never_runs_and_the_daemon_restarts(make_daemon, small_fs, tmp_path):
    """With a worker idle, a submit whose write fails must not start (its start
    record would follow a submit the log never got), and after the disk frees
    up and the daemon is killed, it starts again from that log."""
    d = make_daemon(start=False, workers=1)
    d.data_dir = str(small_fs / "data")
    d.start()
    c = d.client()
    out = tmp_path / "ran"
    done = c.submit(T + "add", args=[1, 1])
    assert c.wait(done, timeout=15).status == "completed"     # the worker is up and idle
    filler = small_fs / "filler"
    _fill(filler)
    with pytest.raises(JobdError) as err:
        c.submit(T + "append", args=[str(out), "x" * 20000], job_id="refused")
    assert err.value.code == "storage_error"
    filler.unlink()
    marker = c.submit(T + "add", args=[2, 2])
    assert c.wait(marker, timeout=15).result == 4
    assert not out.exists(), "a job refused with storage_error ran"
    c.close()
    d.kill9()
    d.start()
    c = d.client()
    assert {j.id for j in c.list().jobs} == {done, marker}
    assert "Traceback" not in d.log()


def test_a_compaction_that_cannot_start_a_segment_leaves_the_daemon_serving(make_daemon,
                                                                           few_inodes_fs):
    """No inode for the next segment: compaction is postponed (and logged);
    every request is still answered and submits go to the current segment."""
    d = make_daemon(start=False, workers=0, config="[wal]\nsegment_bytes = 4096\n")
    d.data_dir = str(few_inodes_fs / "data")
    d.start()
    c = d.client()
    fillers = []
    while True:                                  # use up the inodes
        try:
            path = few_inodes_fs / f"filler{len(fillers)}"
            path.touch()
            fillers.append(path)
        except OSError:
            break
    ids = [c.submit(T + "echo", args=["x" * 200]) for _ in range(60)]   # ~4 segments' worth
    assert c.hello()["protocol"] == 1
    assert c.list(limit=100).total == 60
    wait_until(lambda: "compaction postponed" in d.log(), what="the postponement in the log")
    for path in fillers:
        path.unlink()
    c.close()
    d.kill9()
    d.start()
    assert [j.id for j in d.client().list(limit=100).jobs] == ids


def _completed_while_full(d, small_fs: Path, tmp_path: Path):
    """Start `d` on the small filesystem; a job (20 kB result) completes while
    the disk is full, so its completion record fails to write."""
    d.data_dir = str(small_fs / "data")
    d.start()
    c = d.client()
    started, release = tmp_path / "started", tmp_path / "release"
    job = c.submit(T + "wait_file_then", args=[str(release), str(started), "r" * 20000])
    wait_until(started.exists, what="the job to start")
    _fill(small_fs / "filler")
    release.touch()                                   # it completes while the disk is full
    wait_until(lambda: c.status(job).status == "completed", what="the job to complete")
    wait_until(lambda: "WAL write failed" in d.log(), what="the failed write")
    return d, c, job


def test_an_outcome_recorded_while_the_disk_is_full_is_written_once_it_frees(make_daemon,
                                                                          small_fs, tmp_path):
    """A job finishes while the WAL cannot be written: its completion is kept
    for the next write instead of being dropped, so after the disk frees up
    and the daemon is killed, the job is still completed (it does not run again)."""
    d, c, job = _completed_while_full(make_daemon(start=False, workers=1), small_fs, tmp_path)
    (small_fs / "filler").unlink()
    marker = c.submit(T + "add", args=[1, 1])          # the next write carries it
    assert c.wait(marker, timeout=15).result == 2
    c.close()
    d.kill9()
    d.start()
    done = d.client().status(job)
    assert done.status == "completed" and done.result == "r" * 20000


def test_records_kept_after_a_failed_write_are_written_without_new_activity(make_daemon,
                                                                             small_fs, tmp_path):
    """Nothing else happens after the disk frees up (no request, no heartbeat
    for a long while): the kept completion still reaches the WAL on its own."""
    quiet = "[workers]\nheartbeat_interval = 60\nheartbeat_timeout = 120\n"
    d, c, job = _completed_while_full(make_daemon(start=False, workers=1, config=quiet),
                                      small_fs, tmp_path)
    wal_files = sorted((small_fs / "data" / "wal").glob("*.log"))
    size = wal_files[-1].stat().st_size
    (small_fs / "filler").unlink()                    # and no request from here on
    wait_until(lambda: wal_files[-1].stat().st_size > size + 20000, timeout=10,
               what="the kept completion to be written")
    c.close()
    d.kill9()
    d.start()
    assert d.client().status(job).status == "completed"

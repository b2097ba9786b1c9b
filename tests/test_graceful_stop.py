"""A graceful stop records every outcome before it closes the log.

A job that finishes while the daemon stops on SIGTERM has its outcome in the
WAL when the daemon exits, including a result too large to live inline, whose
file is written on a helper thread: the stop waits for that write, records
the completion, and only then closes the log.
"""
from __future__ import annotations

import hashlib
import signal
from pathlib import Path

from conftest import T, wait_until

BIG = 24 * 1024 * 1024          # large enough that writing the file takes a while


def result_files(d) -> list[Path]:
    return sorted((Path(d.data_dir) / "results").iterdir())


def test_a_large_result_finishing_during_sigterm_is_recorded(make_daemon, tmp_path):
    d = make_daemon(workers=1, config="[results]\ninline_max_bytes = 1024\n"
                                      "[workers]\nshutdown_timeout = 20\n")
    c = d.client(timeout=30)
    release, started = tmp_path / "go", tmp_path / "started"
    job = c.submit(T + "wait_file_then_big", args=[str(release), str(started), BIG])
    wait_until(started.exists, 10, what="the job to start")
    d.proc.send_signal(signal.SIGTERM)               # type: ignore[union-attr]
    wait_until(lambda: "stopping gracefully" in d.log(), 10, what="the stop to begin")
    release.touch()                                   # the job ends while the daemon stops
    assert d.stop(timeout=30) == 0, d.log()
    log = d.log()
    assert "Bad file descriptor" not in log, log
    assert "Traceback" not in log, log

    d.workers = 0                                     # nothing may run it again
    d.start()
    c = d.client(timeout=30)
    done = c.status(job)
    assert done.status == "completed", (done, d.log())
    assert done.attempts == 1
    result = c.result(job)["result"]
    assert len(result) == BIG and hashlib.sha256(result.encode()).digest() == \
        hashlib.sha256(b"x" * BIG).digest()
    assert len(result_files(d)) == 1                  # referenced, not orphaned

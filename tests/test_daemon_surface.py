"""The daemon's command line and defaults as docs/configuration.md states them, through real processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import T, wait_until

import jobd


def _jobd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobd", *args], capture_output=True, text=True,
                          timeout=30)


def test_version_help_and_no_subcommand():
    res = _jobd("--version")
    assert res.returncode == 0 and jobd.__version__ in res.stdout + res.stderr
    res = _jobd("--help")
    assert res.returncode == 0
    for sub in ("serve", "demo"):
        assert sub in res.stdout
    res = _jobd()
    assert res.returncode == 2 and "serve" in res.stdout + res.stderr


def test_default_worker_count_is_the_usable_cpus(make_daemon):
    d = make_daemon(start=False)
    d.workers = None                      # no --workers, no [workers] count
    d.start()
    c = d.client()
    usable = len(os.sched_getaffinity(0))
    wait_until(lambda: len(c.workers()) == usable, what=f"{usable} workers")
    assert c.metrics()["workers"]["target"] == usable


def test_sigint_is_a_graceful_stop(make_daemon):
    d = make_daemon(workers=1)
    c = d.client()
    done = c.submit(T + "add", args=[2, 3])
    assert c.wait(done, timeout=15).status == "completed"
    c.close()
    assert d.stop(sig=signal.SIGINT) == 0, d.log()
    assert "SIGINT received: stopping gracefully" in d.log()
    assert not Path(d.socket).exists()


def test_a_due_retry_reenters_behind_jobs_already_pending(make_daemon, tmp_path):
    """A due retry re-enters at its priority, behind jobs already pending."""
    d = make_daemon(workers=1, config="[retry]\njitter = false\n")
    c = d.client()
    order, release, started = tmp_path / "order", tmp_path / "release", tmp_path / "started"
    flaky = c.submit(T + "fail_times", args=[str(order), 1], retry_delay=1.5)
    wait_until(lambda: c.status(flaky).status == "retrying", what="the first attempt to fail")
    blocker = c.submit(T + "wait_file", args=[str(release), str(started)])
    wait_until(lambda: started.exists(), what="the blocker to hold the only worker")
    later = c.submit(T + "append", args=[str(order), "later"])     # pending before the retry is due
    wait_until(lambda: c.status(flaky).status == "pending", what="the retry to become due")
    release.touch()
    assert c.wait(flaky, timeout=15).status == "completed"
    assert c.wait(later, timeout=15).status == "completed"
    assert c.status(blocker).status == "completed"
    firsts = [line.split()[0] for line in order.read_text().splitlines()]
    assert firsts == ["1", "later", "2"], firsts   # attempt 1, then the job pending first, then the retry

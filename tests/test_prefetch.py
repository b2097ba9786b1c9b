"""Jobs sent ahead to busy workers (prefetch) keep every promise of the queue."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from conftest import T, wait_until


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _backlog(c, tmp_path: Path, n: int = 3) -> tuple[str, list[str], Path]:
    pidfile = tmp_path / "pid"
    out = tmp_path / "out"
    blocker = c.submit(T + "block", args=[str(pidfile)], max_retries=0)
    wait_until(lambda: _lines(pidfile), what="the blocking job to start and write its pid")
    ids = [c.submit(T + "append", args=[str(out), i]) for i in range(n)]
    return blocker, ids, out


def test_a_job_sent_ahead_is_still_pending_and_cancels_at_once(make_daemon, tmp_path):
    d = make_daemon(workers=1)
    c = d.client()
    blocker, ids, out = _backlog(c, tmp_path)
    wait_until(lambda: c.metrics()["workers"]["prefetched"] >= 1, what="jobs sent ahead")
    assert [c.status(i).status for i in ids] == ["pending"] * 3
    for job_id in ids:
        assert c.cancel(job_id) is True
    assert c.metrics()["workers"]["prefetched"] == 0
    assert c.cancel(blocker, force=True) is True
    marker = c.submit(T + "add", args=[1, 1])
    assert c.wait(marker, timeout=15).status == "completed"
    assert _lines(out) == []                     # no cancelled job ran
    assert [c.status(i).status for i in ids] == ["cancelled"] * 3


def test_jobs_sent_ahead_to_a_dying_worker_run_elsewhere_once(make_daemon, tmp_path):
    d = make_daemon(workers=1)
    c = d.client()
    blocker, ids, out = _backlog(c, tmp_path)
    wait_until(lambda: c.metrics()["workers"]["prefetched"] >= 1, what="jobs sent ahead")
    os.kill(int(_lines(tmp_path / "pid")[0]), signal.SIGKILL)
    for job_id in ids:
        job = c.wait(job_id, timeout=20)
        assert job.status == "completed" and job.attempts == 1
    assert sorted(int(line.split()[0]) for line in _lines(out)) == [0, 1, 2]
    assert c.status(blocker).status == "dead_letter"


def test_graceful_stop_gives_jobs_sent_ahead_back(make_daemon, tmp_path):
    d = make_daemon(workers=1, config="[workers]\nshutdown_timeout = 1\n")
    c = d.client()
    blocker, ids, out = _backlog(c, tmp_path)
    wait_until(lambda: c.metrics()["workers"]["prefetched"] >= 1, what="jobs sent ahead")
    c.close()
    assert d.stop() == 0
    d.workers = 0
    d.start()
    c = d.client()
    assert _lines(out) == []
    assert {c.status(i).status for i in ids} == {"pending"}
    assert all(c.status(i).attempts == 0 for i in ids)


def test_prefetch_zero_sends_nothing_ahead(make_daemon, tmp_path):
    d = make_daemon(workers=1, config="[workers]\nprefetch = 0\n")
    c = d.client()
    blocker, ids, out = _backlog(c, tmp_path)
    extra = c.submit(T + "add", args=[1, 2])
    assert c.status(extra).status == "pending"
    assert c.metrics()["workers"]["prefetched"] == 0
    c.cancel(blocker, force=True)
    assert c.wait(ids[-1], timeout=15).status == "completed"

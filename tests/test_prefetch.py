"""Jobs sent ahead to busy workers (prefetch) keep every promise of the queue."""
from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
from pathlib import Path

import orjson
from conftest import T, wait_until

from jobd.pool import frames as F
from jobd.pool.child import Worker
from jobd_client import AsyncClient


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


def test_cancelled_jobs_sent_ahead_never_run_when_the_current_job_ends_normally(make_daemon, tmp_path):
    """The worker holds jobs sent ahead; cancelling them must stop them even though the
    current job never polls for control frames (it just returns)."""
    d = make_daemon(workers=1)
    c = d.client()
    started, release, out = tmp_path / "started", tmp_path / "release", tmp_path / "out"
    current = c.submit(T + "wait_file", args=[str(release), str(started)])
    wait_until(lambda: _lines(started), what="the current job to start")
    ids = [c.submit(T + "append", args=[str(out), i]) for i in range(3)]
    wait_until(lambda: c.metrics()["workers"]["prefetched"] >= 1, what="jobs sent ahead")
    for job_id in ids:
        assert c.cancel(job_id) is True
    release.touch()
    assert c.wait(current, timeout=15).status == "completed"
    marker = c.submit(T + "append", args=[str(out), "marker"], timeout=10)
    assert c.wait(marker, timeout=15).status == "completed"
    assert [line.split()[0] for line in _lines(out)] == ["marker"]    # no cancelled job ran
    assert [c.status(i).status for i in ids] == ["cancelled"] * 3
    assert c.workers()[0]["jobs_completed"] == 2


def test_worker_answers_each_drop_saying_whether_the_job_had_started():
    """The worker side of DROP, over a real socketpair: a job still waiting in the
    worker is removed (ran = false); one it already started is reported (ran = true)."""
    daemon_end, worker_end = socket.socketpair()
    try:
        w = Worker(worker_end, worker_id=1, heartbeat=60)
        run = orjson.dumps(["job-2", T + "noop", [], {}, 1, {}])
        daemon_end.sendall(F.frame(F.RUN, run) + F.frame(F.DROP, b"job-2") + F.frame(F.DROP, b"job-1"))
        wait_until(lambda: w.reader.poller.poll(0), what="frames to arrive")
        w.poll()
        assert w.pending == []                                      # job-2 will not run
        daemon_end.settimeout(5)
        got, buf = [], bytearray()
        while len(got) < 2:
            buf += daemon_end.recv(65536)
            frames, used = F.parse(buf)
            del buf[:used]
            got += [(kind, orjson.loads(body)) for kind, body in frames]
        assert got == [(F.DROPPED, ["job-2", False]), (F.DROPPED, ["job-1", True])]
    finally:
        daemon_end.close()
        worker_end.close()


def test_a_higher_priority_job_overtakes_jobs_sent_ahead(make_daemon, tmp_path):
    """Higher priority runs first, even when lower ones were already sent
    ahead to the busy worker: they are taken back and run after it."""
    d = make_daemon(workers=1)
    c = d.client()
    started, release, out = tmp_path / "started", tmp_path / "release", tmp_path / "out"
    current = c.submit(T + "wait_file", args=[str(release), str(started)])
    wait_until(lambda: _lines(started), what="the current job to start")
    low = [c.submit(T + "append", args=[str(out), f"low{i}"], priority="low") for i in range(3)]
    wait_until(lambda: c.metrics()["workers"]["prefetched"] >= 1, what="jobs sent ahead")
    urgent = c.submit(T + "append", args=[str(out), "critical"], priority="critical")
    release.touch()                                  # the current job ends normally
    for job_id in [current, urgent, *low]:
        assert c.wait(job_id, timeout=15).status == "completed"
    assert [line.split()[0] for line in _lines(out)] == ["critical", "low0", "low1", "low2"]
    assert all(c.status(i).attempts == 1 for i in low)     # taken back, run once


async def test_jobs_taken_back_for_priority_run_exactly_once(make_daemon, tmp_path):
    """Jobs sent ahead are taken back whenever a higher priority arrives; a
    worker may have started one just before the DROP reached it. That job
    must stay its job (not run again elsewhere), and every other one must
    run once. Pipelined submits at random priorities make the race frequent."""
    d = make_daemon(workers=2)
    out = tmp_path / "out"
    rng = random.Random(7)
    async with AsyncClient(d.socket) as c:
        ids = []
        for chunk in range(12):
            ids += await asyncio.gather(*(
                c.submit(T + "append", args=[str(out), f"{chunk}-{i}"],
                         priority=rng.choice(["low", "normal", "high", "critical"]))
                for i in range(50)))
        jobs = [await c.wait(job_id, timeout=30) for job_id in ids]
    assert all(j.status == "completed" and j.attempts == 1 for j in jobs)
    ran = [line.split()[0] for line in _lines(out)]
    assert len(ran) == len(set(ran)) == 600, sorted(v for v in set(ran) if ran.count(v) > 1)


def test_a_job_cancelled_and_retried_while_its_drop_is_unanswered_runs_once(make_daemon,
                                                                             tmp_path):
    """The worker is busy, so the DROP of a cancelled job sent ahead waits;
    `retry` queues the job again meanwhile. When the worker finally answers,
    the job must not be queued a second time."""
    d = make_daemon(workers=1)
    c = d.client()
    started, release, out = tmp_path / "started", tmp_path / "release", tmp_path / "out"
    current = c.submit(T + "wait_file", args=[str(release), str(started)])
    wait_until(lambda: _lines(started), what="the current job to start")
    ids = [c.submit(T + "append", args=[str(out), f"job{i}"]) for i in range(8)]
    wait_until(lambda: c.metrics()["workers"]["prefetched"] >= 1, what="jobs sent ahead")
    assert c.cancel(ids[0]) is True
    assert c.retry(ids[0]) == "pending"
    # A backlog behind it, so that it is sent ahead again (stays pending) when popped.
    ids += [c.submit(T + "append", args=[str(out), f"low{i}"], priority="low") for i in range(20)]
    release.touch()
    for job_id in [current, *ids]:
        assert c.wait(job_id, timeout=15).status == "completed"
    marker = c.submit(T + "append", args=[str(out), "marker"])
    assert c.wait(marker, timeout=15).status == "completed"
    ran = [line.split()[0] for line in _lines(out)]
    expected = [f"job{i}" for i in range(8)] + [f"low{i}" for i in range(20)] + ["marker"]
    assert sorted(ran) == sorted(expected), ran


def test_jobs_sent_ahead_behind_a_long_job_run_on_a_worker_that_comes_free(make_daemon, tmp_path):
    """A worker busy with a long job answers a DROP at once (its watcher
    thread reads it), so jobs sent ahead to it run on a new worker instead
    of waiting for the long job to end."""
    d = make_daemon(workers=1)
    c = d.client()
    blocker, ids, out = _backlog(c, tmp_path)
    wait_until(lambda: sum(w["status"] == "busy" for w in c.workers()) == 1,
               what="the worker busy")
    c.scale(2)                                   # the new worker takes the jobs sent ahead
    for job_id in ids:
        assert c.wait(job_id, timeout=20).status == "completed"
    assert c.status(blocker).status == "running"
    assert sorted(int(line.split()[0]) for line in _lines(out)) == [0, 1, 2]
    c.cancel(blocker, force=True)

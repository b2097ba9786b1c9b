"""Every way a worker (or the daemon) can die, through real processes (docs/design.md).

Each fault must fail the attempt with an error that says what happened, apply
the retry policy, and leave the pool back at full strength with new processes.
Throughout: no job is `running` without a live worker running it.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import T, pid_alive, wait_until

from jobd_client import AsyncClient, Client, DaemonUnavailable, JobdError

FAST = """
[retry]
retry_delay = 0.05
retry_backoff = 1.0
jitter = false
"""

HEARTBEAT = FAST + """
[workers]
heartbeat_interval = 0.2
heartbeat_timeout = 1.0
"""


def read_pid(path: Path) -> int:
    return int(path.read_text().split()[-1])


def wait_for_pid(path: Path, count: int = 1, timeout: float = 10.0) -> int:
    """The pid the `count`-th attempt wrote to `path`."""
    def got() -> int | None:
        if not path.exists():
            return None
        lines = path.read_text().split()
        return int(lines[count - 1]) if len(lines) >= count else None
    return wait_until(got, timeout, what=f"attempt {count} to write its pid")


def orphans(c: Client) -> list[str]:
    """Running jobs whose worker is not (alive and) running them.

    `list` and `workers` are two requests, so a job seen running may have
    ended in between: a suspect counts only if a fresh `status` shows the same
    attempt still running.
    """
    running = c.list(status="running", limit=10_000).jobs
    if not running:
        return []
    workers = {w["id"]: w for w in c.workers()}
    out = []
    for job in running:
        w = workers.get(job.worker_id)
        if w is not None and w["current_job"] == job.id and w["pid"] and pid_alive(w["pid"]):
            continue
        now = c.status(job.id)
        if now.status == "running" and now.worker_id == job.worker_id \
                and now.started_at == job.started_at:
            out.append(f"{job.id} on worker {job.worker_id}: {w}")
    return out


def assert_no_orphans(c: Client, grace: float = 3.0) -> None:
    """The invariant; a worker that just died may be unreaped for a moment (grace)."""
    deadline = time.monotonic() + grace
    while found := orphans(c):
        assert time.monotonic() < deadline, f"jobs running without a live worker: {found}"
        time.sleep(0.02)


def wait_job(c: Client, job_id: str, statuses: set[str], timeout: float = 15.0) -> Any:
    """Wait for a status, checking the invariant on every poll."""
    def check() -> Any:
        assert_no_orphans(c)
        job = c.status(job_id)
        return job if job.status in statuses else None
    return wait_until(check, timeout, interval=0.02, what=f"job {job_id} to be {statuses}")


def wait_full_strength(c: Client, n: int, gone: set[int] = frozenset(), timeout: float = 15.0
                       ) -> list[dict[str, Any]]:
    """n live, healthy, ready workers, none of them with a pid in `gone`."""
    def ok() -> list[dict[str, Any]] | None:
        ws = c.workers()
        if len(ws) != n:
            return None
        for w in ws:
            if not w["healthy"] or w["status"] == "stopping" or not w["pid"] \
                    or w["pid"] in gone or not pid_alive(w["pid"]):
                return None
        return ws
    return wait_until(ok, timeout, what=f"{n} healthy workers")


# --- a worker dies ---------------------------------------------------------------------------

def test_worker_sigkilled_mid_job_retries_and_is_replaced(make_daemon, tmp_path):
    d = make_daemon(workers=2, config=FAST)
    c = d.client(timeout=20)
    before = {w["pid"] for w in wait_full_strength(c, 2)}
    pidfile = tmp_path / "pid"
    jid = c.submit(T + "block_once", args=[str(pidfile)], max_retries=1, retry_delay=0.5)
    pid = wait_for_pid(pidfile)
    assert pid in before
    running = wait_job(c, jid, {"running"})
    assert running.attempts == 1
    os.kill(pid, signal.SIGKILL)
    retrying = wait_job(c, jid, {"retrying"})
    assert "SIGKILL" in retrying.error and f"pid {pid}" in retrying.error, retrying.error
    assert retrying.attempts == 1
    done = wait_job(c, jid, {"completed", "failed", "dead_letter"})
    assert done.status == "completed" and done.attempts == 2
    assert c.result(jid)["result"] == 2
    after = wait_full_strength(c, 2, gone={pid})
    assert pid not in {w["pid"] for w in after}
    assert not pid_alive(pid)
    assert_no_orphans(c)


def test_handler_calling_os_exit(make_daemon):
    d = make_daemon(workers=2, config=FAST)
    c = d.client(timeout=20)
    before = {w["pid"] for w in wait_full_strength(c, 2)}
    jid = c.submit(T + "exit_hard", kwargs={"code": 3}, max_retries=1)
    job = wait_job(c, jid, {"dead_letter", "completed", "failed"})
    assert job.status == "dead_letter" and job.attempts == 2
    assert "exit status 3" in job.error, job.error
    # both workers that ran it died; the pool replaced them
    ws = wait_full_strength(c, 2)
    assert len(before - {w["pid"] for w in ws}) >= 1
    assert c.wait(c.submit(T + "add", args=[1, 2]), timeout=10).result == 3
    assert_no_orphans(c)


def test_handler_past_its_timeout(make_daemon, tmp_path):
    d = make_daemon(workers=2, config=FAST)
    c = d.client(timeout=20)
    wait_full_strength(c, 2)
    pidfile = tmp_path / "pid"
    t0 = time.monotonic()
    jid = c.submit(T + "block", args=[str(pidfile)], timeout=0.3, max_retries=1)
    job = wait_job(c, jid, {"dead_letter", "completed", "failed"})
    assert job.status == "dead_letter" and job.attempts == 2
    assert job.error == "timeout"
    assert time.monotonic() - t0 < 8          # two 0.3 s attempts, not a hang
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) == 2
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10, what="timed-out workers to die")
    wait_full_strength(c, 2, gone=set(pids))
    assert_no_orphans(c)


def test_timeout_then_success(make_daemon, tmp_path):
    """A timed-out attempt is retried as configured and may then succeed."""
    d = make_daemon(workers=1, config=FAST)
    c = d.client(timeout=20)
    pidfile = tmp_path / "pid"
    jid = c.submit(T + "block_once", args=[str(pidfile)], timeout=0.3, max_retries=1)
    job = wait_job(c, jid, {"dead_letter", "completed", "failed"})
    assert job.status == "completed" and job.attempts == 2
    assert c.result(jid)["result"] == 2
    wait_full_strength(c, 1, gone={read_pid(pidfile)})


def test_worker_without_heartbeats_is_killed(make_daemon, tmp_path):
    d = make_daemon(workers=2, config=HEARTBEAT)
    c = d.client(timeout=20)
    wait_full_strength(c, 2)
    pidfile = tmp_path / "pid"
    jid = c.submit(T + "stop_self", args=[str(pidfile)], max_retries=0)
    pid = wait_for_pid(pidfile)
    # the worker is frozen (SIGSTOP), so it is alive but silent
    job = wait_job(c, jid, {"dead_letter", "completed", "failed"}, timeout=10)
    assert job.status == "dead_letter" and job.attempts == 1
    assert "heartbeat" in job.error and f"pid {pid}" in job.error, job.error
    wait_until(lambda: not pid_alive(pid), 5, what="the frozen worker to be killed")
    wait_full_strength(c, 2, gone={pid})
    # healthy workers were not touched by the short heartbeat timeout
    assert c.wait(c.submit(T + "sleep", args=[1.5]), timeout=10).status == "completed"
    assert_no_orphans(c)


def test_idle_worker_killed_is_replaced(make_daemon):
    d = make_daemon(workers=2)
    c = d.client(timeout=20)
    ws = wait_full_strength(c, 2)
    victim = ws[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    after = wait_full_strength(c, 2, gone={victim})
    assert ws[1]["pid"] in {w["pid"] for w in after}
    assert c.wait(c.submit(T + "add", args=[2, 2]), timeout=10).result == 4
    assert c.list(status="failed", limit=0).total == 0
    assert c.list(status="retrying", limit=0).total == 0


# --- the daemon dies -----------------------------------------------------------------------

def test_kill9_daemon_under_load(make_daemon):
    d = make_daemon(workers=2)
    c = d.client(timeout=30)
    ids: list[str] = []
    for _ in range(3):
        ids += c.submit_many([{"handler": T + "sleep", "args": [0.02]} for _ in range(100)])
    wait_until(lambda: c.list(status="completed", limit=0).total >= 20, 20,
               what="some jobs to complete")
    # a single snapshot may fall between a job's end and the next dispatch
    wait_until(lambda: c.list(status="running", limit=0).total >= 1, 5, what="running jobs")
    old = d.worker_pids()
    assert len(old) >= 3                     # the fork server and two workers
    d.kill9()
    wait_until(lambda: not any(pid_alive(p) for p in old), 10,
               what="the old daemon's processes to exit")
    d.start()
    c = d.client(timeout=30)
    assert {j.id for j in c.list(limit=1000).jobs} == set(ids)
    wait_until(lambda: c.list(status="completed", limit=0).total == len(ids), 40,
               what="every acknowledged job to complete")
    for job in c.list(limit=1000).jobs:
        assert job.status == "completed" and 1 <= job.attempts <= 2, job
    assert not any(pid_alive(p) for p in old)


def test_sigterm_with_running_jobs(make_daemon, tmp_path):
    d = make_daemon(workers=2, config="[workers]\nshutdown_timeout = 2\n")
    c = d.client(timeout=20)
    pidfile = tmp_path / "pid"
    short = c.submit(T + "sleep", args=[0.5])
    stuck = c.submit(T + "block", args=[str(pidfile)])
    wait_until(lambda: c.status(short).status == "running"
               and c.status(stuck).status == "running", 10, what="both jobs running")
    wait_for_pid(pidfile)
    assert c.status(stuck).attempts == 1
    old = d.worker_pids()
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)       # type: ignore[union-attr]
    # new work is refused while the daemon drains
    accepted: list[str] = []

    def refused() -> bool:
        try:
            accepted.append(c.submit(T + "noop"))
        except JobdError as e:
            # the block job keeps the daemon draining for 2 s: this connection is alive
            assert e.code == "unavailable", e
            return True
        return False
    wait_until(refused, 5, what="submits to be refused")
    code = d.stop(timeout=10)
    took = time.monotonic() - t0
    assert code == 0, d.log()
    assert took < 2 + 3, took                # shutdown_timeout plus a little
    wait_until(lambda: not any(pid_alive(p) for p in old), 5, what="workers to exit")

    d.workers = 0                            # restart without workers to look at the queue
    d.start()
    c = d.client(timeout=20)
    done = c.status(short)
    assert done.status == "completed"
    assert c.result(short)["result"] == 0.5
    again = c.status(stuck)
    assert again.status == "pending"
    assert again.attempts == 0               # the killed attempt is not counted
    assert again.error is None
    for jid in accepted:                     # everything acknowledged is still there
        assert c.status(jid).status == "pending"
    c.scale(1)
    running = wait_job(c, stuck, {"running"})
    assert running.attempts == 1
    wait_for_pid(pidfile, count=2)
    assert c.cancel(stuck, force=True) is True
    assert c.status(stuck).status == "cancelled"


# --- cancel ----------------------------------------------------------------------------------

def test_force_cancel_kills_the_worker(make_daemon, tmp_path):
    d = make_daemon(workers=2)
    c = d.client(timeout=20)
    wait_full_strength(c, 2)
    pidfile = tmp_path / "pid"
    jid = c.submit(T + "block", args=[str(pidfile)])
    pid = wait_for_pid(pidfile)
    wait_job(c, jid, {"running"})
    assert c.cancel(jid, force=True) is True
    job = c.status(jid)
    assert job.status == "cancelled"
    wait_until(lambda: not pid_alive(pid), 5, what="the worker to be killed")
    wait_full_strength(c, 2, gone={pid})
    # it stays cancelled: the dead worker does not turn it into a failed attempt
    assert c.status(jid).status == "cancelled"
    assert c.result(jid)["status"] == "cancelled"
    assert c.cancel(jid, force=True) is False             # terminal already
    assert_no_orphans(c)


def test_cooperative_cancel(make_daemon, tmp_path):
    d = make_daemon(workers=1)
    c = d.client(timeout=20)
    marker = tmp_path / "started"
    jid = c.submit(T + "cooperative", args=[str(marker)])
    wait_until(marker.exists, 10, what="the job to start")
    pid = c.workers()[0]["pid"]
    assert c.cancel(jid) is False                          # running: only requested
    assert c.status(jid).status in ("running", "completed")
    job = c.wait(jid, timeout=10)
    assert job.status == "completed"                       # its outcome stands
    assert job.result == "stopped on request"
    assert c.workers()[0]["pid"] == pid                    # nothing was killed


def test_fork_server_death_stops_the_daemon_cleanly(make_daemon, tmp_path):
    """Without its fork server the daemon cannot keep its pool: it exits
    non-zero at once, leaves no worker behind, and loses no job."""
    from conftest import _children
    d = make_daemon(workers=2)
    c = d.client()
    mark = tmp_path / "started"
    job_id = c.submit(T + "block", args=[str(mark)])
    wait_until(mark.exists, what="the blocking job to start")
    everyone = d.worker_pids()
    fork_server = _children(d.pid)[0]
    os.kill(fork_server, signal.SIGKILL)
    assert d.proc.wait(20) == 1
    assert "fork server exited" in d.log()
    wait_until(lambda: not any(pid_alive(p) for p in everyone), what="old workers to exit")
    d.workers = 0
    d.start()
    job = d.client().status(job_id)
    assert job.status == "pending" and job.attempts == 0


def test_a_client_connecting_during_a_graceful_stop_is_answered(make_daemon, tmp_path):
    """While running jobs finish, a *new* connection gets answers (submit: unavailable),
    not a hang in the listen backlog; once the daemon has exited, connecting fails fast."""
    d = make_daemon(workers=1, config="[workers]\nshutdown_timeout = 20\n")
    c = d.client(timeout=20)
    started, release = tmp_path / "started", tmp_path / "release"
    job = c.submit(T + "wait_file", args=[str(release), str(started)])
    wait_until(lambda: started.exists(), 10, what="the job to start")
    d.proc.send_signal(signal.SIGTERM)       # type: ignore[union-attr]
    wait_until(lambda: "stopping gracefully" in d.log(), 10, what="the stop to begin")
    with Client(socket_path=d.socket, timeout=5) as late:
        assert late.status(job).status == "running"
        with pytest.raises(JobdError) as refused:
            late.submit(T + "noop")
        assert refused.value.code == "unavailable"
    release.touch()
    assert d.stop(timeout=20) == 0, d.log()
    with pytest.raises(DaemonUnavailable):
        Client(socket_path=d.socket, timeout=5).hello()


def test_a_client_reconnects_after_the_daemon_restarts(make_daemon):
    d = make_daemon(workers=1)
    c = d.client(timeout=20)
    first = c.submit(T + "add", args=[1, 2])
    assert c.wait(first, timeout=15).status == "completed"
    assert d.stop() == 0
    d.start()
    assert c.status(first).status == "completed"          # same Client object, new connection
    second = c.submit(T + "add", args=[2, 2])
    assert c.wait(second, timeout=15).result == 4


async def test_an_async_client_reconnects_after_the_daemon_restarts(make_daemon):
    """The loop does not run while the daemon restarts (d.stop/d.start block):
    the first call finds a connection that looks alive but is dead."""
    d = make_daemon(workers=1)
    async with AsyncClient(d.socket) as c:
        first = await c.submit(T + "add", args=[1, 2])
        assert (await c.wait(first, timeout=15)).status == "completed"
        assert d.stop() == 0
        d.start()
        job = await c.status(first)                   # same client, new connection
        assert job.status == "completed" and job.result == 3
        second = await c.submit(T + "add", args=[2, 2])
        assert (await c.wait(second, timeout=15)).result == 4

"""`[server] busy_poll_us`: after a request the loop keeps polling for that long
instead of sleeping, and then really stops (the real daemon, its CPU time read
from /proc)."""
from __future__ import annotations

import os
import time

from conftest import T

POLL = "[server]\nbusy_poll_us = 10000\n"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spaced_requests(c, n: int, gap: float) -> None:
    """`n` requests, `gap` seconds apart: each one starts a polling window."""
    for _ in range(n):
        c.hello()
        time.sleep(gap)          # the load pattern under test, not synchronisation


def test_busy_poll_spends_cpu_after_requests_then_stops(make_daemon):
    d = make_daemon(workers=0, config=POLL)
    c = d.client(timeout=10)
    c.hello()
    before = cpu_seconds(d.pid)
    spaced_requests(c, 20, 0.015)
    polled = cpu_seconds(d.pid) - before
    # 20 windows of 10 ms: ~0.2 s of polling (less on a loaded machine).
    assert polled >= 0.05, f"the loop did not keep polling: {polled:.3f}s of CPU"
    time.sleep(0.05)             # let the last window end
    idle_from = cpu_seconds(d.pid)
    time.sleep(1.0)              # a measurement window: nothing happens in it
    idle = cpu_seconds(d.pid) - idle_from
    assert idle < 0.2, f"still polling without requests: {idle:.3f}s of CPU in 1s"


def test_no_busy_poll_by_default(make_daemon):
    d = make_daemon(workers=0)
    c = d.client(timeout=10)
    c.hello()
    before = cpu_seconds(d.pid)
    spaced_requests(c, 20, 0.015)
    assert cpu_seconds(d.pid) - before < 0.05


def test_jobs_run_and_answer_with_busy_poll(make_daemon):
    d = make_daemon(workers=2, config=POLL)
    c = d.client(timeout=20)
    for i in range(50):
        job = c.wait(c.submit(T + "add", args=[i, 1]), timeout=10)
        assert job.status == "completed" and job.result == i + 1

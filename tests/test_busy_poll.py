"""Adaptive busy polling (`[server] busy_poll_us`, jobd/runtime/idlepoll.py), on the
real daemon: it polls when the next event comes soon, costs nothing when
requests come slowly, and never outlives its window. CPU time is read from /proc;
the poller's state from `metrics` (`polling`)."""
from __future__ import annotations

import os
import time

from conftest import T, wait_until

from jobd.runtime.idlepoll import FLOOR, GROW_START, IdlePoller

WIDE = "[server]\nbusy_poll_us = 10000\n"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spaced_requests(c, n: int, gap: float) -> None:
    """`n` requests, `gap` seconds apart: the load pattern under test."""
    for _ in range(n):
        c.hello()
        time.sleep(gap)          # the pacing being tested, not synchronisation


def polling(c) -> dict:
    return c.metrics()["polling"]


# --- the daemon --------------------------------------------------------------------------

def test_back_to_back_requests_find_the_loop_polling(make_daemon):
    # A 2 ms cap rather than the default 200 µs, so that a slow machine's
    # client gaps are still "short": the mechanism is under test here.
    d = make_daemon(workers=0, config="[server]\nbusy_poll_us = 2000\n")
    c = d.client(timeout=10)
    for _ in range(300):
        c.hello()
    p = polling(c)
    assert p["max_us"] == 2000
    assert p["caught"] >= 100, p


def test_polling_is_on_by_default_with_a_200_us_cap(make_daemon):
    d = make_daemon(workers=0)
    assert polling(d.client(timeout=10))["max_us"] == 200


def test_requests_at_an_idle_pace_cost_no_polling(make_daemon):
    d = make_daemon(workers=0)
    c = d.client(timeout=10)
    c.hello()
    before = cpu_seconds(d.pid)
    spaced_requests(c, 20, 0.015)                    # gaps far beyond 200 µs
    assert cpu_seconds(d.pid) - before < 0.05
    # Whatever the first requests taught it, the window has shrunk to 0 after
    # a few misses (at most log2(200 µs / 2 µs) ~ 7), and stays there.
    p = polling(c)
    assert p["window_us"] == 0 and p["missed"] <= 8, p


def test_window_grows_spends_cpu_then_stops_and_shrinks(make_daemon):
    d = make_daemon(workers=0, config=WIDE)          # windows up to 10 ms
    c = d.client(timeout=10)
    c.hello()
    before = cpu_seconds(d.pid)
    spaced_requests(c, 30, 0.003)                    # gaps within 10 ms: worth polling for
    polled = cpu_seconds(d.pid) - before
    assert polled >= 0.03, f"the loop did not keep polling: {polled:.3f}s of CPU"
    assert polling(c)["window_us"] > 0
    time.sleep(0.05)                                 # let the last window (<= 10 ms) end
    idle_from = cpu_seconds(d.pid)
    time.sleep(1.0)                                  # a measurement window: nothing happens
    idle = cpu_seconds(d.pid) - idle_from
    assert idle < 0.2, f"still polling without requests: {idle:.3f}s of CPU in 1s"
    spaced_requests(c, 20, 0.03)                     # gaps beyond 10 ms: each miss halves it
    p = polling(c)
    assert p["window_us"] == 0 and p["missed"] > 0, p


def test_busy_poll_off(make_daemon):
    d = make_daemon(workers=0, config="[server]\nbusy_poll_us = 0\n")
    c = d.client(timeout=10)
    c.hello()
    before = cpu_seconds(d.pid)
    spaced_requests(c, 30, 0.003)
    assert cpu_seconds(d.pid) - before < 0.05
    p = polling(c)
    assert p["max_us"] == 0 and p["caught"] == 0


def test_jobs_run_and_answer_with_polling(make_daemon):
    d = make_daemon(workers=2, config=WIDE)
    c = d.client(timeout=20)
    for i in range(50):
        job = c.wait(c.submit(T + "add", args=[i, 1]), timeout=10)
        assert job.status == "completed" and job.result == i + 1


def test_no_polling_while_a_job_runs(make_daemon):
    """While a job runs the loop sleeps: its worker and the client waiting for
    it must never wait for the CPU the loop would spin on."""
    d = make_daemon(workers=1, config=WIDE)
    c = d.client(timeout=20)
    for _ in range(50):                              # teach the loop to poll
        c.hello()
    assert polling(c)["window_us"] > 0
    job_id = c.submit(T + "sleep", args=[3.0])
    wait_until(lambda: c.metrics()["queue"]["running"] == 1, timeout=10)
    start = cpu_seconds(d.pid)
    spaced_requests(c, 100, 0.003)                   # polled for when no job runs (above)
    busy = cpu_seconds(d.pid) - start
    assert c.status(job_id).status == "running"      # the whole pattern ran beside the job
    assert busy < 0.1, f"the loop polled while a job ran: {busy:.3f}s of CPU"
    assert c.wait(job_id, timeout=20).status == "completed"


# --- the governor (pure) -----------------------------------------------------------------

def test_poller_grows_on_short_gaps_up_to_the_cap():
    p = IdlePoller(200e-6)
    t = 0.0
    windows = []
    for _ in range(5):
        p.idle(t)
        t += 150e-6                                  # short gap, longer than the window
        p.woke(t)
        windows.append(p.window)
    assert windows[0] == GROW_START
    assert windows[1] == 2 * GROW_START
    assert windows[2] == 200e-6                      # 200 µs caps 4 * 50 µs
    assert windows[3:] == [200e-6, 200e-6]           # caught: stays
    assert p.caught == 2 and p.missed == 2


def test_poller_shrinks_to_zero_on_long_gaps():
    p = IdlePoller(200e-6)
    p.window = 200e-6
    t = 0.0
    misses = 0
    while p.window and misses < 40:
        p.idle(t)
        t += 0.001                                   # beyond the cap
        p.woke(t)
        misses += 1
    assert p.window == 0.0
    assert 200e-6 / 2 ** (misses - 1) >= FLOOR > 200e-6 / 2 ** misses
    assert p.missed == misses and p.caught == 0


def test_poller_learns_nothing_from_forgotten_waits():
    p = IdlePoller(200e-6)
    p.woke(1.0)                                      # a wake without an idle
    p.idle(2.0)
    p.forget()                                       # a job started: not a wait to learn from
    p.woke(2.0001)
    assert p.window == 0.0 and p.caught == 0 and p.missed == 0

"""Rate limits through the real daemon: a handler's `rate`/`burst` (GCRA),
exact in any window and across a kill -9, and the handler-side
`RateLimited(after)` and `Snooze(after)` that refund the attempt
(docs/flow-control.md)."""
from __future__ import annotations

from datetime import datetime

from conftest import T, wait_until

RATE, BURST = 5.0, 2        # "5/s", burst 2


def starts_within_limit(stamps: list[float], eps: float) -> tuple[int, float, float]:
    """The worst window: (starts in it, its span, the bound there). Workers
    stamp a start a moment after the daemon records it, so a window is
    widened by `eps` (the stamping jitter)."""
    stamps = sorted(stamps)
    worst = (1, 0.0, BURST + RATE * eps)
    for i in range(len(stamps)):
        for j in range(i, len(stamps)):
            span = stamps[j] - stamps[i]
            count = j - i + 1
            bound = BURST + RATE * (span + eps)
            if count - bound > worst[0] - worst[2]:
                worst = (count, span, bound)
    return worst


def stamps_of(path) -> list[float]:
    return [float(line.split()[2]) for line in path.read_text().splitlines()]


def test_a_rate_limit_holds_in_every_window_across_a_kill_9(make_daemon, tmp_path):
    out = tmp_path / "starts"
    config = f'[handler."{T}append"]\nrate = "5/s"\nburst = {BURST}\n'
    d = make_daemon(workers=3, config=config)
    c = d.client()
    n = 70                                   # about 14 s of work at 5/s: demand stays saturated
    ids = c.submit_many([{"handler": T + "append", "args": [str(out), i]} for i in range(n)])
    wait_until(lambda: (c.call("status", job_id=ids[-1])["job"]["held"] or {}).get("reason")
               == "rate_limited", what="the backlog held by the limit")
    row = next(h for h in c.call("handlers")["handlers"] if h["name"] == T + "append")
    assert row["rate"] == "5/s" and row["held"] > 0
    # Half-way, kill -9 just after a start (its record is written: the status
    # answer comes after the turn that wrote it).
    wait_until(lambda: out.exists() and len(out.read_text().splitlines()) >= 30, 30,
               what="30 starts")
    c.call("status", job_id=ids[0])
    d.kill9()
    before = len(stamps_of(out))
    d.start()
    c = d.client()
    for job_id in ids:
        assert c.wait(job_id, timeout=60).status == "completed"
    stamps = stamps_of(out)
    assert len(stamps) >= n and len(stamps) > before
    count, span, bound = starts_within_limit(stamps, eps=0.03)
    print(f"{len(stamps)} starts over {max(stamps) - min(stamps):.1f} s; worst window: "
          f"{count} starts in {span:.3f} s (bound {bound:.2f})")
    assert count <= bound, (count, span, bound)
    # The limit was the bottleneck, not the workers: 3 workers would run a
    # no-op far faster than 5/s.
    assert max(stamps) - min(stamps) >= (len(stamps) - BURST) / RATE - 1.0


def test_rate_limited_refunds_the_attempt_and_holds_the_handler(make_daemon, tmp_path):
    d = make_daemon(workers=2)
    c = d.client()
    marker = tmp_path / "429"
    first = c.submit(T + "rate_limited_once", [str(marker), 2.0], max_retries=0)
    wait_until(marker.exists, what="the 429")
    limited_at = float(marker.read_text())
    # Its handler's next start is at least 2 s later; the job is pending and held.
    wait_until(lambda: c.call("status", job_id=first)["job"]["status"] == "pending" or
               c.call("status", job_id=first)["job"]["status"] == "completed",
               what="the job back to pending")
    second = c.submit(T + "rate_limited_once", [str(marker), 2.0])
    view = c.call("status", job_id=second)["job"]
    if view["status"] == "pending":
        assert view["held"]["reason"] == "rate_limited" and view["held"]["until"] is not None
    other = c.submit(T + "add", [1, 2])                    # other handlers are not held
    assert c.wait(other, timeout=10).status == "completed"
    job = c.wait(first, timeout=20)
    assert job.status == "completed" and job.attempts == 1      # the 429 was not an attempt
    assert job.result == 1                                      # it ran as attempt 1 again
    started = datetime.fromisoformat(job.started_at.replace("Z", "+00:00")).timestamp()
    assert started >= limited_at + 2.0 - 0.01
    assert c.wait(second, timeout=20).status == "completed"


def test_snooze_refunds_the_attempt_and_waits(make_daemon, tmp_path):
    d = make_daemon(workers=1)
    c = d.client()
    marker = tmp_path / "snooze"
    job_id = c.submit(T + "snooze_once", [str(marker), 1.5], max_retries=0)
    wait_until(marker.exists, what="the snooze")
    snoozed_at = float(marker.read_text())
    wait_until(lambda: c.call("status", job_id=job_id)["job"]["status"] in ("scheduled",
                                                                            "completed"),
               what="the job scheduled")
    view = c.call("status", job_id=job_id)["job"]
    if view["status"] == "scheduled":
        assert view["attempts"] == 0
    # Only that job waits: the handler's other jobs run meanwhile.
    other_marker = tmp_path / "other"
    other_marker.write_text("x")
    other = c.submit(T + "snooze_once", [str(other_marker), 1.5])
    assert c.wait(other, timeout=10).status == "completed"
    job = c.wait(job_id, timeout=20)
    assert job.status == "completed" and job.attempts == 1 and job.result == 1
    started = datetime.fromisoformat(job.started_at.replace("Z", "+00:00")).timestamp()
    assert started >= snoozed_at + 1.5 - 0.01


def test_the_rate_limit_survives_a_kill_9_without_a_burst(make_daemon, tmp_path):
    """A limit of 1 per 5 s: after a start, a kill -9 and a restart, the
    next start still waits for its turn (no fresh burst)."""
    out = tmp_path / "starts"
    config = f'[handler."{T}append"]\nrate = "12/m"\n'
    d = make_daemon(workers=1, config=config)
    c = d.client()
    first = c.submit(T + "append", [str(out), 0])
    assert c.wait(first, timeout=10).status == "completed"
    second = c.submit(T + "append", [str(out), 1])
    assert c.call("status", job_id=second)["job"]["held"]["reason"] == "rate_limited"
    d.kill9()
    d.start()
    c = d.client()
    assert c.call("status", job_id=second)["job"]["held"]["reason"] == "rate_limited"
    assert c.wait(second, timeout=20).status == "completed"
    a, b = stamps_of(out)
    assert b - a >= 5.0 - 0.03, b - a


def test_a_queue_rate_limit_spaces_the_starts_of_all_its_handlers(make_daemon, tmp_path):
    out = tmp_path / "starts"
    config = '[queues.api]\nworkers = 2\nrate = "4/s"\nburst = 2\n'
    d = make_daemon(workers=1, config=config)
    c = d.client()
    ids = [c.call("submit", handler=T + ("append" if i % 2 else "echo"),
                  args=[str(out), i] if i % 2 else [i], queue="api")["job_id"]
           for i in range(12)]
    quick = c.submit(T + "add", [1, 1])                   # the default queue is not limited
    assert c.wait(quick, timeout=10).status == "completed"
    jobs = [c.wait(j, timeout=30) for j in ids]
    assert {j.status for j in jobs} == {"completed"}
    starts = sorted(datetime.fromisoformat(j.started_at.replace("Z", "+00:00")).timestamp()
                    for j in jobs)
    for i in range(len(starts)):
        for k in range(i, len(starts)):
            assert k - i + 1 <= 2 + 4 * (starts[k] - starts[i]) + 0.01, (i, k)
    api = next(q for q in c.call("queues")["queues"] if q["name"] == "api")
    assert (api["rate"], api["burst"]) == ("4/s", 2)

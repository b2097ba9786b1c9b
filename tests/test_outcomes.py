"""How attempts end, as the metrics and the dead-letter queue see them.

Every ended attempt is observed once in `jobd_job_duration_seconds`, however
it ended; the dead-letter queue never holds more than `[dead_letter]
max_size`; results are compressed only above `compress_min_bytes`.
"""
from __future__ import annotations

from pathlib import Path

from conftest import T, wait_until
from prometheus_client.parser import text_string_to_metric_families

FAST = """
[retry]
retry_delay = 0.01
retry_backoff = 1.0
jitter = false
"""


def histogram_counts(c, name: str) -> dict[str, float]:
    text = c.metrics(format="prometheus")
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == name:
            for s in fam.samples:
                if s.name == name + "_count":
                    out[s.labels["handler"]] = s.value
    return out


def test_every_ended_attempt_is_observed_once(make_daemon, tmp_path: Path):
    d = make_daemon(workers=2, config=FAST + "[results]\ninline_max_bytes = 100\n")
    c = d.client(timeout=30)
    started = tmp_path / "started"
    jobs = [
        c.submit(T + "add", args=[1, 2]),                                  # inline result
        c.submit(T + "big_result", args=[5000]),                           # result file
        c.submit(T + "fail_times", args=[str(tmp_path / "f"), 2]),         # 2 failures, then ok
        c.submit(T + "sleep", args=[5], timeout=0.2, max_retries=1),       # 2 timeouts
        c.submit(T + "exit_hard", args=[3], max_retries=1),                # 2 worker deaths
        c.submit(T + "permanent"),                                         # 1 permanent failure
        c.submit(T + "always_fail", max_retries=2),                        # 3 failures, dead letter
    ]
    blocked = c.submit(T + "block", args=[str(started)])                   # force-cancelled
    wait_until(started.exists, 15, what="the blocking job to start")
    assert c.cancel(blocked, force=True) is True
    jobs.append(blocked)
    wait_until(lambda: all(c.status(j).status in ("completed", "failed", "dead_letter", "cancelled")
                           for j in jobs), 30, what="every job to end")
    attempts: dict[str, int] = {}
    for j in jobs:
        job = c.status(j)
        attempts[job.handler] = attempts.get(job.handler, 0) + job.attempts
    assert attempts[T + "sleep"] == 2 and attempts[T + "exit_hard"] == 2
    counts = histogram_counts(c, "jobd_job_duration_seconds")
    assert counts == {h: float(n) for h, n in attempts.items()}, (counts, attempts)


def evicted_total(c) -> float:
    for fam in text_string_to_metric_families(c.metrics(format="prometheus")):
        if fam.name == "jobd_dead_letter_evicted":
            return fam.samples[0].value
    raise AssertionError("no jobd_dead_letter_evicted_total")


def test_the_dead_letter_queue_never_exceeds_max_size(make_daemon):
    d = make_daemon(workers=1, config="[dead_letter]\nmax_size = 3\n")
    c = d.client(timeout=30)
    ids = []
    for i in range(7):
        ids.append(c.submit(T + "always_fail", args=[f"boom {i}"], max_retries=0))
        assert c.wait(ids[-1], timeout=15).status == "dead_letter"
        page = c.dead_letters()
        assert page.total == min(i + 1, 3), page     # at once, not at the next housekeeping
    assert [j.id for j in c.dead_letters().jobs] == ids[-3:]       # the newest are kept
    assert evicted_total(c) == 4
    assert c.metrics()["totals"]["dead_letter_evicted"] == 4
    wait_until(lambda: "dead-letter queue full (max_size 3)" in d.log(), 5, what="the log line")


def test_results_are_compressed_only_above_compress_min_bytes(make_daemon):
    d = make_daemon(workers=1, config="[results]\ninline_max_bytes = 100\ncompress_min_bytes = 2000\n")
    c = d.client(timeout=30)
    results = Path(d.data_dir) / "results"
    names = {}
    for size in (2000, 2001):                       # raw JSON bytes: the string and its quotes
        before = set(results.iterdir())
        job = c.submit(T + "big_result", args=[size - 2])
        assert c.wait(job, timeout=15).status == "completed"
        (new,) = set(results.iterdir()) - before
        names[size] = new.name
        assert c.result(job)["result"] == "x" * (size - 2)
    assert names[2000].endswith(".json") and names[2001].endswith(".json.z"), names


def test_nan_and_infinity_are_not_json_anywhere(make_daemon):
    d = make_daemon(workers=1, config="[retry]\nmax_retries = 0\n")
    c = d.client(timeout=30)
    cases = {("nan", False): "result", ("inf", False): "result", ("-inf", True): "result.a[1]"}
    for (text, nested), where in cases.items():
        job = c.wait(c.submit(T + "float_result", args=[text, nested]), timeout=15)
        assert job.status == "dead_letter" and job.result is None, job
        assert f"NaN or Infinity at {where}" in job.error, job.error
    ok = c.wait(c.submit(T + "float_result", args=["1.5", True]), timeout=15)
    assert ok.status == "completed" and ok.result == {"a": [1, 1.5]}
    for current, total in (("nan", None), ("1", "inf")):
        job = c.wait(c.submit(T + "progress_float", args=[current, total]), timeout=15)
        assert job.status == "dead_letter" and "progress:" in job.error, job.error
        assert job.progress is None
    assert c.wait(c.submit(T + "progress_float", args=["1", "2"]), timeout=15).progress["percentage"] == 50

"""What a job prints and logs is captured per job (the `logs` op), through the real daemon."""
from __future__ import annotations

import os
from pathlib import Path

from conftest import T, wait_until


def logs(c, job_id: str, offset: int = 0) -> dict:
    return c.call("logs", job_id=job_id, offset=offset)


def all_logs(c, job_id: str) -> str:
    text, offset = "", 0
    while True:
        part = logs(c, job_id, offset)
        text += part["text"]
        if part["offset"] == offset:
            return text
        offset = part["offset"]


def test_a_jobs_prints_and_logs_are_its_own_and_never_mixed(make_daemon):
    d = make_daemon(workers=2, config="[workers]\nprefetch = 2\n")
    c = d.client(timeout=60)
    ids = c.submit_many([{"handler": T + "chatty", "args": [f"job{i:04d}", 2]}
                         for i in range(1000)])
    wait_until(lambda: c.metrics()["queue"]["completed"] == 1000, 120, what="1,000 jobs")
    for i, job_id in enumerate(ids):
        tag = f"job{i:04d}"
        text = all_logs(c, job_id)
        got = text.splitlines()
        assert sorted(got[:2] + got[3:5]) == [f"{tag} err 0", f"{tag} err 1",   # print order
                                               f"{tag} out 0", f"{tag} out 1"], (job_id, text)
        # logging keeps the daemon's format (level, logger), as the worker inherited it
        assert got[2].endswith(f"WARNING chatty: {tag} log 0"), got
        assert got[5].endswith(f"WARNING chatty: {tag} log 1"), got
        assert len(got) == 6
        part = logs(c, job_id)
        assert part["complete"] is True and part["truncated"] is False
    assert "job0001 out" not in d.log()          # nothing went to the daemon's stderr


def test_output_before_a_crash_is_kept_and_reading_follows_offsets(make_daemon):
    d = make_daemon(workers=1, config="[retry]\nmax_retries = 0\n")
    c = d.client(timeout=30)
    job = c.submit(T + "print_then_die", args=["tagx"])
    assert c.wait(job, timeout=15).status == "dead_letter"
    first = logs(c, job)
    assert first["text"] == "tagx before the crash\n" and first["complete"] is True
    again = logs(c, job, first["offset"])
    assert again == {"text": "", "offset": first["offset"], "truncated": False,
                     "complete": True}


def test_a_flood_keeps_the_last_log_max_bytes(make_daemon):
    d = make_daemon(workers=1, config="[results]\nlog_max_bytes = 4096\n")
    c = d.client(timeout=30)
    job = c.submit(T + "flood", args=[100_000])
    assert c.wait(job, timeout=30).status == "completed"
    head = logs(c, job)
    assert head["truncated"] is True
    text = all_logs(c, job)
    lines = text.splitlines()
    assert lines[-1].startswith("000000999")            # the end is kept
    assert 4096 <= len(text) <= 3 * 4096                 # bounded
    size = os.path.getsize(next((Path(d.data_dir) / "logs").iterdir()))
    assert size <= 2 * 4096 + 100


def test_output_goes_when_the_job_goes(make_daemon):
    d = make_daemon(workers=1)
    c = d.client(timeout=30)
    job = c.submit(T + "chatty", args=["gone", 1])
    assert c.wait(job, timeout=15).status == "completed"
    assert logs(c, job)["text"]
    logdir = Path(d.data_dir) / "logs"
    assert len(list(logdir.iterdir())) == 1
    assert c.purge(status="completed") == 1
    assert list(logdir.iterdir()) == []


def test_logs_of_an_unknown_job_is_not_found(daemon):
    c = daemon.client()
    from jobd_client import JobdError
    try:
        logs(c, "no-such-job")
    except JobdError as e:
        assert e.code == "not_found"
    else:
        raise AssertionError("expected not_found")

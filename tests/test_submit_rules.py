"""Submit rules that hold through the real daemon: times the job view can
show, and one rule for a dependent of a job that already failed, with or
without a delay."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import T, wait_until

from jobd_client import JobdError


@pytest.mark.parametrize("field, value", [
    ("delay", 253402300799.0),                    # now + that: past year 9999
    ("run_at", "9999-12-31T23:59:59-05:00"),      # a valid local time, year 10000 in UTC
    ("run_at", "0001-01-01T00:00:00+05:00"),      # before year 1 in UTC
])
def test_times_outside_years_1_to_9999_are_refused(daemon, field, value):
    c = daemon.client()
    with pytest.raises(JobdError) as e:
        c.call("submit", handler=T + "noop", **{field: value})
    assert e.value.code == "invalid_argument" and e.value.message.startswith(field + ":"), e.value
    assert c.metrics()["queue"]["scheduled"] == 0       # nothing was queued


def test_the_latest_time_is_accepted_and_shown_in_iso(daemon):
    c = daemon.client()
    job = c.status(c.submit(T + "noop", run_at="9999-12-31T23:59:59Z"))
    assert job.status == "scheduled" and job.scheduled_for == "9999-12-31T23:59:59.000000Z"


def test_a_retry_far_in_the_future_keeps_an_iso_time(daemon, tmp_path: Path):
    c = daemon.client()
    job = c.submit(T + "retry_after", args=[str(tmp_path / "r"), 1e15])
    view = wait_until(lambda: (v := c.status(job)).status == "retrying" and v, 15,
                      what="the job to be retrying")
    assert view.scheduled_for == "9999-12-31T23:59:59.000000Z", view


@pytest.mark.parametrize("delayed", [False, True])
def test_a_dependent_of_a_failed_job_fails_at_once_with_or_without_delay(daemon, delayed):
    c = daemon.client()
    dep = c.submit(T + "permanent")
    assert c.wait(dep, timeout=15).status == "failed"
    extra = {"delay": 3600} if delayed else {}
    reply = c.call("submit", handler=T + "noop", depends_on=[dep], **extra)
    assert reply["status"] == "failed"
    job = c.status(reply["job_id"])
    assert job.status == "failed" and dep in (job.error or "")
    many = c.submit_many([{"handler": T + "noop", "depends_on": [dep], **extra}])
    assert c.status(many[0]).status == "failed"

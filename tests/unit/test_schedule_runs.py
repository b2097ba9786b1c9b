"""jobd/scheduling/runs.py: a run's job id and a schedule's last fire times (pure)."""
from __future__ import annotations

import calendar
import time

from jobd.scheduling.cron import parse
from jobd.scheduling.runs import fire_job_id, past_fires


def ts(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")))


def test_the_last_fires_up_to_now_oldest_first():
    now = ts("2026-12-06T10:07:30")
    assert past_fires(parse("*/5 * * * *"), now, 3) == [ts("2026-12-06T09:55:00"),
                                                       ts("2026-12-06T10:00:00"),
                                                       ts("2026-12-06T10:05:00")]
    assert past_fires(parse("*/5 * * * *"), ts("2026-12-06T10:05:00"), 1) == [ts("2026-12-06T10:05:00")]


def test_a_rare_expression_is_found_further_back_and_a_frequent_one_stays_bounded():
    now = ts("2026-12-06T10:00:00")
    assert past_fires(parse("0 3 1 * *"), now, 2) == [ts("2026-11-01T03:00:00"), ts("2026-12-01T03:00:00")]
    assert past_fires(parse("0 3 1 1 *"), now, 2) == []          # yearly: beyond the widest horizon
    every_second = past_fires(parse("* * * * * *"), now, 20)
    assert len(every_second) == 20 and every_second[-1] == now and every_second[0] == now - 19


def test_a_runs_job_id_is_the_schedulers():
    assert fire_job_id("nightly", ts("2026-12-06T03:00:00")) == "sched:nightly:20261206T030000Z"
    odd = fire_job_id("a name with spaces", 0.0)
    assert odd.startswith("sched+") and odd == fire_job_id("a name with spaces", 0.0)

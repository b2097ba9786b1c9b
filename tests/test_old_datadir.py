"""A data dir written by an older jobd (WAL format 2, kept as a fixture) recovers exactly.

`tests/fixtures/datadir-v2/` was written by the code before the package layout
changed (tests/fixtures/make_old_datadir.py); `expected.json` holds what that
daemon answered. Today's daemon must read it back unchanged: every job view,
every result, every schedule.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from jobd.core.job import parse_iso

FIXTURE = Path(__file__).parent / "fixtures" / "datadir-v2"
# Nothing may expire while the test looks (the fixture ages in the repository).
CONFIG = "[results]\nttl = 3000000000\n[dead_letter]\nretention_days = 30000\n"


def aged(view: dict) -> dict:
    """The view as it must be now: a job that was scheduled for a time since
    past is pending (promoted at startup); nothing else changes with time."""
    if view["status"] == "scheduled" and parse_iso(view["scheduled_for"]) <= time.time():
        return {**view, "status": "pending"}
    return view


NEW_VIEW_FIELDS = ("queue", "held", "unique_key", "replay_of")     # issue 14


def private_copy(dst: Path) -> None:
    """The fixture as a data dir with the modes jobd gives its own (git keeps none)."""
    shutil.copytree(FIXTURE / "data", dst)
    for path in [dst, *dst.rglob("*")]:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)


def test_a_data_dir_written_by_the_previous_layout_recovers_exactly(make_daemon):
    expected = json.loads((FIXTURE / "expected.json").read_text())
    d = make_daemon(start=False, workers=0, config=CONFIG)
    private_copy(Path(d.data_dir))
    d.start()
    c = d.client(timeout=30)
    jobs = {j["id"]: j for j in c.call("list", limit=100_000)["jobs"]}
    for want in expected["jobs"]:
        got = jobs.pop(want["id"])
        # Fields added since the fixture was written hold their defaults.
        added = {k: got.pop(k) for k in NEW_VIEW_FIELDS}
        assert added == {"queue": "default", "held": None, "unique_key": None, "replay_of": None}
        # and a failed or dead-letter job's failure group (issue "jobd web")
        signature = got.pop("signature")
        assert (signature is not None) == (got["status"] in ("failed", "dead_letter"))
        assert got == aged(want)
    # Only runs the schedules made up for while the fixture sat on disk may be new.
    assert all(job_id.startswith("sched:") for job_id in jobs), sorted(jobs)
    for job_id, want in expected["results"].items():
        got = c.call("result", job_id=job_id)
        got.pop("id", None)
        assert got == want
    schedules = {s["name"]: s for s in c.call("schedule_list")["schedules"]}
    assert sorted(schedules) == sorted(s["name"] for s in expected["schedules"])
    for want in expected["schedules"]:
        got = schedules[want["name"]]
        for key in ("cron", "timezone", "handler", "args", "kwargs"):
            assert got[key] == want[key], (want["name"], key)
    assert "recovered" in d.log() and "WAL format" not in d.log()

"""The benchmark suite still runs (it is never timed here: speed is measured in bench/).

`python -m bench.ceiling --quick` starts the bare server (bench/bare.py, with forked
workers) and real daemons, and runs every client loop the targets table is built from;
`python -m bench.flow --quick` pauses 99 of 100 handlers and a queue with a backlog;
`python -m bench.failures --quick` asks for the failure groups of 50,000 dead letters.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_ceiling_scenario_runs_and_prints_its_table(tmp_path):
    res = subprocess.run([sys.executable, "-m", "bench.ceiling", "--quick", "--data-root", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "cpuidle" in res.stdout                         # the machine header
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("| ceiling")]
    assert len(rows) == 15, res.stdout                     # 5 pairs x (bare, jobd, ratio)
    for row in rows:
        median = row.split("|")[4].strip()
        assert median not in ("n/a", "0", "0.000"), row


def test_flow_scenario_runs_and_prints_its_table(tmp_path):
    res = subprocess.run([sys.executable, "-m", "bench.flow", "--quick", "--quiet-wait", "0",
                          "--data-root", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "cpuidle" in res.stdout                         # the machine header
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("| flow")]
    assert len(rows) == 30, res.stdout                     # 3 dispatch variants x 4, 2 backlogs x 9
    for warning in ("flow: ", "drain: "):                 # none of the others' jobs ran, all pending
        assert warning not in res.stderr, res.stderr
    for row in rows:
        metric, median = row.split("|")[3].strip(), row.split("|")[4].strip()
        assert median != "n/a", row
        assert metric.startswith("other processes") or median not in ("0", "0.000"), row


def test_failures_scenario_runs_and_prints_its_table(tmp_path):
    res = subprocess.run([sys.executable, "-m", "bench.failures", "--quick", "--quiet-wait", "0",
                          "--data-root", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("| failures")]
    assert len(rows) == 7, res.stdout            # 6 of dead letters, 1 of completed jobs
    for row in rows:
        assert row.split("|")[4].strip() not in ("n/a", "0", "0.000"), row

"""bench/web.py still runs (it is never timed here: speed is measured in bench/)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_web_scenario_runs_and_prints_its_table(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "bench.web", "--quick", "--data-root", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "cpuidle" in res.stdout                         # the machine header
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("| web")]
    assert len(rows) == 15, res.stdout                     # 4 request rows x 3 metrics, fan-out x 3
    for row in rows:
        assert row.split("|")[4].strip() not in ("n/a", "0", "0.000"), row

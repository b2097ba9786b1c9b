"""contrib/prometheus: the alerting rules pass `promtool check rules` and
their unit tests (`promtool test rules`), and name only metrics jobd serves.

promtool comes from Debian's `prometheus` package (.ci/run installs it):
without it the promtool tests are skipped, except under CI where they fail.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "contrib" / "prometheus"
RULES = RULES_DIR / "jobd-alerts.yml"
RULE_TESTS = RULES_DIR / "jobd-alerts.test.yml"
# Families the rules use that jobd itself does not serve (`up` is Prometheus's),
# or that the breaker work adds beside them.
NOT_OURS = {"up"}
BREAKER_FAMILIES = {"jobd_handler_state", "jobd_breaker_trips_total"}


def is_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def promtool() -> str:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if os.access(found, os.X_OK):
        return found
    if is_ci():
        pytest.fail("promtool is required under CI (Debian package prometheus)")
    pytest.skip("promtool not installed (Debian package prometheus)")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=RULES_DIR, timeout=120,
                          check=False)


def test_promtool_check_rules() -> None:
    done = run(promtool(), "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_test_rules() -> None:
    done = run(promtool(), "test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_name_metrics_jobd_serves() -> None:
    from jobd.runtime import metrics
    served = set(re.findall(r'"(jobd_[a-z_]+)"', Path(metrics.__file__).read_text()))
    used = set(re.findall(r"\b(jobd_[a-z_]+|up)\b(?=[{\[ )]|$)", RULES.read_text(), re.M))
    unknown = used - served - NOT_OURS - BREAKER_FAMILIES
    assert not unknown, f"the rules use metrics jobd does not serve: {sorted(unknown)}"
    assert "jobd_queue_oldest_pending_age_seconds" in used and "jobd_wal_failing" in used

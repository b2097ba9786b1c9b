"""systemd/jobd-web.service: bound to jobd.service, hardened like it, and valid
for `systemd-analyze verify` (the style of test_systemd_unit.py)."""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from test_systemd_unit import UNIT_DIR, parse_unit, verifiable_units, verify

from jobd.constants import EXIT_CONFIG

WEB_UNIT = UNIT_DIR / "jobd-web.service"
HARDENING = ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
             "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups",
             "RestrictAddressFamilies", "RestrictNamespaces", "LockPersonality", "RestrictRealtime",
             "SystemCallArchitectures", "UMask")


def test_web_unit_follows_and_stops_with_jobd() -> None:
    unit = parse_unit(WEB_UNIT)
    assert "jobd.service" in " ".join(unit["Unit"]["After"])
    assert unit["Unit"].get("PartOf") == ["jobd.service"] or unit["Unit"].get("BindsTo") == ["jobd.service"]
    service = unit["Service"]
    assert service["ExecStart"][0].endswith("jobd web")
    assert service["RestartPreventExitStatus"] == [str(EXIT_CONFIG)]
    assert float(service["TimeoutStopSec"][0]) >= 5       # it stops within ~2 s


def test_web_unit_is_hardened_like_jobd() -> None:
    web = parse_unit(WEB_UNIT)["Service"]
    jobd = parse_unit(UNIT_DIR / "jobd.service")["Service"]
    for key in HARDENING:
        assert web.get(key) == jobd.get(key), key


def test_web_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    units = verifiable_units(tmp_path)
    stand_in = shutil.which("true") or sys.executable
    text, count = re.subn(r"(?m)^ExecStart=\S+", f"ExecStart={stand_in}", WEB_UNIT.read_text())
    assert count == 1
    (tmp_path / "jobd-web.service").write_text(text)
    returncode, ours = verify([tmp_path / "jobd-web.service", *units])
    assert ours == []
    assert returncode == 0

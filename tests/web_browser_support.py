"""Helpers of the dashboard's browser tests: a real `jobd web` process, and
Debian's chromium driven by Playwright (never a downloaded browser).

`JOBD_CHROMIUM` names another chromium binary; without one the tests skip.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SUPPORT, wait_until

CHROMIUM = os.environ.get("JOBD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SERVING = re.compile(r"serving (http://\S+)")


def chromium_or_skip() -> str:
    """The browser; without one the browser tests skip, except in CI (`.ci/run`
    installs Debian's chromium there: a missing browser must not pass quietly)."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"chromium is not installed at {CHROMIUM} (CI installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def launch(playwright: Any, **kw: Any) -> Any:
    """Headless chromium; --no-sandbox only where it must (running as root)."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=chromium_or_skip(), args=args, **kw)


class WebProc:
    """`jobd web` on 127.0.0.1, a free port, talking to the daemon at `socket`."""

    def __init__(self, root: Path, socket: str, extra: list[str] | None = None) -> None:
        self.root = root
        self.socket = socket
        self.extra = extra or []
        self.log_path = root / "web.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 20.0) -> WebProc:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), str(ROOT), env.get("PYTHONPATH", "")])
        for key in ("JOBD_SOCKET", "JOBD_CONFIG"):
            env.pop(key, None)
        argv = [sys.executable, "-m", "jobd", "web", "--listen", "127.0.0.1:0", "--socket", self.socket,
                *self.extra]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL)
        self.url = wait_until(self._served_url, timeout, interval=0.05, what="jobd web to serve")
        wait_until(self._answers, timeout, interval=0.05, what="jobd web to answer")
        return self

    def _served_url(self) -> str | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"jobd web exited with {self.proc.returncode}:\n{self.log()}")
        m = SERVING.search(self.log())
        return m.group(1).rstrip("/") if m else None

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/", timeout=2) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(pred: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    return wait_until(pred, timeout, interval=0.02, what=what)


def now() -> float:
    return time.monotonic()

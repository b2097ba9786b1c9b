"""The helper web tests use to run a real `jobd web` process (docs/web.md).

`WebProc` starts `python -m jobd web --listen 127.0.0.1:0` (the OS picks a
free port, read back from the printed URL) or `--uds PATH`, against a
DaemonProc's socket; `http()` is an httpx client for it. Tests wait on
conditions with deadlines, never on sleeps.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from conftest import ROOT, wait_until

URL_RE = re.compile(r"serving (http://\S+?)/?$", re.M)


class WebProc:
    def __init__(self, root: Path, socket: str | None, extra: list[str] | None = None,
                 config: str | None = None, uds: str | None = None) -> None:
        self.root = root
        self.socket = socket
        self.extra = extra or []
        self.uds = uds
        self.out = root / f"web-{os.getpid()}-{id(self)}.log"
        self.config_path: str | None = None
        if config is not None:
            self.config_path = str(root / f"web-{id(self)}.toml")
            Path(self.config_path).write_text(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._clients: list[httpx.Client] = []

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "jobd", "web"]
        if self.socket:
            argv += ["--socket", self.socket]
        if self.uds:
            argv += ["--uds", self.uds]
        elif not any(a.startswith("--listen") for a in self.extra) and not self.config_path:
            argv += ["--listen", "127.0.0.1:0"]
        if self.config_path:
            argv += ["--config", self.config_path]
        return argv + self.extra

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        for key in ("JOBD_SOCKET", "JOBD_CONFIG"):
            env.pop(key, None)
        return env

    def start(self, wait: bool = True) -> WebProc:
        with open(self.out, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, env=self.environ(),
                                         stdin=subprocess.DEVNULL)
        if wait:
            self.wait_serving()
        return self

    def wait_serving(self, timeout: float = 20.0) -> None:
        def serving() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"jobd web exited with {self.proc.returncode}:\n{self.log()}")
            if self.uds:
                return "serving on unix:" in self.log()
            found = URL_RE.search(self.log())
            if found:
                self.url = found.group(1)
            return found is not None
        wait_until(serving, timeout, what="jobd web to serve")

    def run_to_exit(self, timeout: float = 20.0) -> int:
        """Start and wait for the process to exit (a refused configuration)."""
        self.start(wait=False)
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        try:
            return self.out.read_text(errors="replace")
        except OSError:
            return ""

    def http(self, **kw: Any) -> httpx.Client:
        if self.uds:
            kw.setdefault("transport", httpx.HTTPTransport(uds=self.uds))
            kw.setdefault("base_url", "http://localhost")
        else:
            kw.setdefault("base_url", self.url)
        kw.setdefault("timeout", 30.0)
        client = httpx.Client(**kw)
        self._clients.append(client)
        return client

    def async_http(self, **kw: Any) -> httpx.AsyncClient:
        kw.setdefault("base_url", self.url)
        kw.setdefault("timeout", 30.0)
        return httpx.AsyncClient(**kw)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        for c in self._clients:
            c.close()
        self._clients.clear()
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"jobd web did not stop within {timeout}s:\n{self.log()}") from None

    def cleanup(self) -> None:
        for c in self._clients:
            c.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

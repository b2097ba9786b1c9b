"""The one helper integration tests use to run the real daemon.

`DaemonProc` starts `python -m jobd serve` on a temp socket and data dir with
real worker processes and the handler module `jobd_testhandlers`
(tests/support). Tests wait on conditions with deadlines, never on sleeps.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from jobd_client import Client

# CI runs the property tests on a fixed seed (a red build is reproducible);
# local runs explore new examples each time.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
                      else "dev")

SUPPORT = Path(__file__).parent / "support"
ROOT = Path(__file__).parent.parent
TEST_HANDLERS = "jobd_testhandlers"
T = "jobd_testhandlers."          # prefix of the test handlers' names


def wait_until(pred: Callable[[], Any], timeout: float = 15.0, interval: float = 0.01,
               what: str = "condition") -> Any:
    """Poll `pred` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class DaemonProc:
    """A real jobd process."""

    def __init__(self, root: Path, workers: int = 2, handlers: str = TEST_HANDLERS,
                 config: str | None = None, fsync: str | None = None,
                 extra: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.socket = str(root / "jobd.sock")
        self.data_dir = str(root / "data")
        self.log_path = root / "jobd.log"
        self.workers = workers
        self.handlers = handlers
        self.config_path: str | None = None
        if config is not None:
            self.config_path = str(root / "jobd.toml")
            Path(self.config_path).write_text(config)
        self.fsync = fsync
        self.extra = extra or []
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._clients: list[Client] = []

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "jobd", "serve", "--socket", self.socket,
                "--data-dir", self.data_dir, "--log-level", "debug"]
        if self.workers is not None:
            argv += ["--workers", str(self.workers)]
        if self.handlers:
            argv += ["--handlers", self.handlers]
        if self.config_path:
            argv += ["--config", self.config_path]
        if self.fsync:
            argv += ["--fsync", self.fsync]
        return argv + self.extra

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), str(ROOT), env.get("PYTHONPATH", "")])
        for key in ("JOBD_SOCKET", "JOBD_DATA_DIR", "JOBD_CONFIG", "NOTIFY_SOCKET",
                    "LISTEN_FDS", "LISTEN_PID", "WATCHDOG_USEC"):
            env.pop(key, None)
        env.update(self.env)
        return env

    def start(self, wait: bool = True) -> DaemonProc:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, env=self.environ(),
                                     stdin=subprocess.DEVNULL)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"jobd exited with {self.proc.returncode}:\n{self.log()}")
            return self._hello_ok()
        wait_until(ready, timeout, what="jobd to answer hello")

    def _hello_ok(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(2)
            s.connect(self.socket)
            s.sendall(b'{"op":"hello","id":1}\n')
            return b'"ok":true' in s.recv(65536)
        except OSError:
            return False
        finally:
            s.close()

    def client(self, **kw: Any) -> Client:
        c = Client(socket_path=self.socket, **kw)
        self._clients.append(c)
        return c

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        """Every live descendant of the daemon (fork server and workers)."""
        out = []
        for child in _children(self.pid):
            out.append(child)
            out.extend(_children(child))
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"jobd did not stop within {timeout}s:\n{self.log()}") from None
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def close_clients(self) -> None:
        for c in self._clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        self._clients.clear()

    def cleanup(self) -> None:
        self.close_clients()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in _orphans_of(self.socket):
            os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _orphans_of(sock: str) -> list[int]:
    """Leftover processes started for this socket (a failed test's workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if sock.encode() in cmd and int(entry) != os.getpid():
            found.append(int(entry))
    return found


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProc]]:
    """Factory: `make_daemon(workers=2, config=..., ...)` → started DaemonProc."""
    made: list[DaemonProc] = []

    def make(start: bool = True, **kw: Any) -> DaemonProc:
        root = tmp_path / f"d{len(made)}"
        root.mkdir()
        d = DaemonProc(root, **kw)
        made.append(d)
        return d.start() if start else d
    yield make
    for d in made:
        d.cleanup()


@pytest.fixture
def daemon(make_daemon: Callable[..., DaemonProc]) -> DaemonProc:
    """A started daemon with 2 workers and the test handlers."""
    return make_daemon()


@pytest.fixture
def client(daemon: DaemonProc) -> Client:
    return daemon.client()

"""sd_notify and socket activation with the real daemon (docs/operations.md)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SUPPORT, TEST_HANDLERS, wait_until

from jobd_client import Client

IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


class NotifyListener:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return self.messages

    def seen(self, text: str) -> bool:
        return any(text in m.split("\n") for m in self.drain())

    def close(self) -> None:
        self.sock.close()


def test_sd_notify_ready_watchdog_stopping(make_daemon, tmp_path: Path):
    listener = NotifyListener(tmp_path / "notify.sock")
    d = make_daemon(start=False, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
                                      "WATCHDOG_USEC": "200000"})
    # Pre-existing state: READY=1 must come only after it has been recovered.
    first = make_daemon(start=False, workers=0)
    first.data_dir = d.data_dir
    first.socket = d.socket
    first.start()
    c = first.client()
    ids = c.submit_many([{"handler": TEST_HANDLERS + ".noop"} for _ in range(200)])
    c.close()
    assert first.stop() == 0
    d.workers = 0
    d.start(wait=False)
    wait_until(lambda: listener.seen("READY=1"), what="READY=1")
    # The socket already answers and holds the recovered jobs when READY=1 arrives.
    with Client(socket_path=d.socket) as c:
        assert c.status(ids[-1]).status == "pending"
    wait_until(lambda: sum("WATCHDOG=1" in m.split("\n") for m in listener.drain()) >= 3,
               what="three WATCHDOG=1 pings")
    assert any(m.startswith("STATUS=") for m in listener.drain())
    assert d.stop() == 0
    assert listener.seen("STOPPING=1")
    ready_at = next(i for i, m in enumerate(listener.messages) if "READY=1" in m.split("\n"))
    stopping_at = next(i for i, m in enumerate(listener.messages) if "STOPPING=1" in m.split("\n"))
    assert ready_at < stopping_at
    listener.close()


def _accepts(path: str) -> bool:
    """The socket file appears at bind(), before listen(): connect to be sure."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None and not IN_CI,
                    reason="systemd-socket-activate not installed (Debian package systemd)")
def test_socket_activation(tmp_path: Path):
    tool = shutil.which("systemd-socket-activate")
    assert tool, "systemd-socket-activate missing in CI: .ci/run must install systemd"
    sock_path = str(tmp_path / "activated.sock")
    data_dir = tmp_path / "data"
    log = open(tmp_path / "jobd.log", "wb")
    pythonpath = os.pathsep.join([str(SUPPORT), str(ROOT)])
    # --socket names a path jobd must NOT bind: the inherited socket is used.
    unused = str(tmp_path / "unused.sock")
    argv = [tool, "-l", sock_path, "-E", f"PYTHONPATH={pythonpath}", "-E", "PATH",
            sys.executable, "-m", "jobd", "serve", "--socket", unused,
            "--data-dir", str(data_dir), "--workers", "1", "--handlers", TEST_HANDLERS]
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: _accepts(sock_path), what="the activation socket to listen")
        with Client(socket_path=sock_path, timeout=30) as c:
            job_id = c.submit(TEST_HANDLERS + ".add", args=[20, 22])
            assert c.wait(job_id, timeout=20).result == 42
        assert not os.path.exists(unused)
        text = (tmp_path / "jobd.log").read_text()
        assert "socket activation" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    # The daemon does not remove a socket it did not create.
    assert proc.returncode == 0, (tmp_path / "jobd.log").read_text()


def test_sighup_reloads_worker_count(make_daemon):
    d = make_daemon(start=False, config="[workers]\ncount = 1\n")
    d.workers = None        # take the count from the config file
    d.start()
    c = d.client()
    wait_until(lambda: len(c.workers()) == 1, what="one worker")
    Path(d.config_path).write_text("[workers]\ncount = 3\n")
    os.kill(d.pid, signal.SIGHUP)
    wait_until(lambda: len(c.workers()) == 3, what="three workers after SIGHUP")
    Path(d.config_path).write_text("[workers]\ncount = 'bad'\n")
    os.kill(d.pid, signal.SIGHUP)
    wait_until(lambda: "config not reloaded" in d.log(), what="reload refusal logged")
    assert len(c.workers()) == 3 and d.proc.poll() is None


def test_sighup_keeps_the_command_line_flags_over_the_file(make_daemon):
    """Flags beat the config file at start and after a SIGHUP re-reads it."""
    d = make_daemon(workers=0, config="[workers]\ncount = 1\n")     # conftest adds --log-level debug
    c = d.client()
    assert c.metrics()["workers"]["target"] == 0
    Path(d.config_path).write_text('log_level = "warning"\n[workers]\ncount = 2\n')
    reloads = d.log().count("SIGHUP: config reloaded")
    os.kill(d.pid, signal.SIGHUP)
    wait_until(lambda: d.log().count("SIGHUP: config reloaded") > reloads, what="the reload")
    assert c.metrics()["workers"]["target"] == 0          # --workers 0 still wins
    assert c.workers() == []
    assert "SIGHUP: config reloaded (workers=0, log_level=debug)" in d.log()

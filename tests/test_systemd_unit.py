"""jobd.systemd (sd_notify, socket activation) and the unit files (docs/operations.md).

Real sockets and real processes throughout: a bound AF_UNIX datagram socket
plays systemd's notify socket, and a small exec wrapper plays systemd's
socket activation (fds from 3 on, LISTEN_PID set before exec).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobd import systemd
from jobd.constants import EXIT_CONFIG
from jobd.systemd import Notifier, listen_fds, watchdog_interval

ROOT = Path(__file__).resolve().parent.parent
UNIT_DIR = ROOT / "systemd"
SHUTDOWN_TIMEOUT_DEFAULT = 30.0  # [workers] shutdown_timeout (docs/configuration.md)


# --- Notifier ---------------------------------------------------------------

@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket standing in for systemd: (NOTIFY_SOCKET, sock)."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield str(path), sock


@pytest.fixture
def abstract_notify_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"jobd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        yield "@" + name, sock


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_notifier_sends_each_message(
        notify_socket: tuple[str, socket.socket]) -> None:
    address, sock = notify_socket
    with Notifier.from_env({"NOTIFY_SOCKET": address}) as notifier:
        assert notifier.enabled
        assert notifier.ready()
        assert received(sock) == "READY=1"
        assert notifier.status("recovered 12 jobs")
        assert received(sock) == "STATUS=recovered 12 jobs"
        assert notifier.watchdog()
        assert received(sock) == "WATCHDOG=1"
        assert notifier.stopping()
        assert received(sock) == "STOPPING=1"


def test_send_joins_lines_into_one_datagram(
        notify_socket: tuple[str, socket.socket]) -> None:
    address, sock = notify_socket
    with Notifier.from_env({"NOTIFY_SOCKET": address}) as notifier:
        notifier.send("READY=1", "STATUS=serving", "MAINPID=1")
    assert received(sock) == "READY=1\nSTATUS=serving\nMAINPID=1"


def test_status_stays_on_one_line(
        notify_socket: tuple[str, socket.socket]) -> None:
    address, sock = notify_socket
    with Notifier.from_env({"NOTIFY_SOCKET": address}) as notifier:
        notifier.status("draining\nREADY=1")
    assert received(sock) == "STATUS=draining READY=1"


def test_abstract_socket_address(
        abstract_notify_socket: tuple[str, socket.socket]) -> None:
    address, sock = abstract_notify_socket
    with Notifier.from_env({"NOTIFY_SOCKET": address}) as notifier:
        assert notifier.ready()
    assert received(sock) == "READY=1"


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""},
                                     {"NOTIFY_SOCKET": "relative/path"}])
def test_no_op_without_notify_socket(environ: dict[str, str]) -> None:
    with Notifier.from_env(environ) as notifier:
        assert not notifier.enabled
        assert notifier.ready() is False
        assert notifier.status("x") is False
        assert notifier.stopping() is False
        assert notifier.watchdog() is False


def test_from_env_leaves_environ_alone(
        notify_socket: tuple[str, socket.socket]) -> None:
    environ = {"NOTIFY_SOCKET": notify_socket[0], "WATCHDOG_USEC": "1000000"}
    before = dict(environ)
    Notifier.from_env(environ).close()
    assert environ == before


def test_notify_socket_is_close_on_exec(
        notify_socket: tuple[str, socket.socket]) -> None:
    with Notifier.from_env({"NOTIFY_SOCKET": notify_socket[0]}) as notifier:
        assert notifier._sock is not None
        assert not notifier._sock.get_inheritable()
        assert notifier._sock.gettimeout() == 0.0  # non-blocking


def test_send_error_is_logged_not_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="jobd.systemd")
    missing = str(tmp_path / "gone")
    with Notifier.from_env({"NOTIFY_SOCKET": missing}) as notifier:
        assert notifier.ready() is False
    assert any("READY=1" in r.getMessage() for r in caplog.records)


def test_full_receiver_never_blocks(
        notify_socket: tuple[str, socket.socket]) -> None:
    # Nobody reads: once the receive queue is full, sends fail (EAGAIN)
    # instead of blocking the daemon.
    with Notifier.from_env({"NOTIFY_SOCKET": notify_socket[0]}) as notifier:
        results = [notifier.watchdog() for _ in range(5000)]
    assert results[0] is True
    assert False in results


def test_closed_notifier_is_a_no_op(
        notify_socket: tuple[str, socket.socket]) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": notify_socket[0]})
    notifier.close()
    assert notifier.ready() is False
    notifier.close()


# --- watchdog ---------------------------------------------------------------

@pytest.mark.parametrize(("environ", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)},
     None),
    ({"WATCHDOG_USEC": "1000"}, 0.0005),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
])
def test_watchdog_interval(environ: dict[str, str],
                           expected: float | None) -> None:
    assert watchdog_interval(environ) == expected
    with Notifier.from_env(environ) as notifier:
        assert notifier.watchdog_interval() == expected


# --- socket activation ------------------------------------------------------

# Plays systemd: moves the given fds to 3.., sets LISTEN_* for its own pid and
# execs the child (same pid, so LISTEN_PID stays true).
ACTIVATOR = """
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)),
                  LISTEN_FDNAMES=":".join(["jobd.socket"] * len(fds)))
os.execv(sys.executable, [sys.executable, "-c", sys.argv[2]])
"""

# Takes the socket, reports what it sees, then serves one connection.
ACTIVATED = """
import json, os, sys
from jobd.systemd import listen_unix_socket
sock = listen_unix_socket()
report = {
    "fileno": sock.fileno() if sock else None,
    "inheritable": sock.get_inheritable() if sock else None,
    "env": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    "open": sorted(fd for fd in (3, 4, 5) if os.path.exists(f"/proc/self/fd/{fd}")),
}
print(json.dumps(report), flush=True)
if sock:
    conn, _ = sock.accept()
    conn.sendall(b"hello from " + str(os.getpid()).encode())
    conn.close()
"""


def activate(*socks: socket.socket) -> subprocess.Popen[str]:
    fds = [s.fileno() for s in socks]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", ACTIVATOR, ",".join(map(str, fds)), ACTIVATED],
        pass_fds=fds, env=env, stdout=subprocess.PIPE, text=True)


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    path = tmp_path / "jobd.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        sock.listen()
        yield path, sock


def read_report(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    report: dict[str, object] = json.loads(proc.stdout.readline())
    return report


def test_activated_process_serves_the_passed_socket(
        unix_listener: tuple[Path, socket.socket]) -> None:
    path, listener = unix_listener
    proc = activate(listener)
    try:
        report = read_report(proc)
        assert report == {"fileno": 3, "inheritable": False, "env": [],
                          "open": [3]}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(str(path))
            assert client.recv(100) == f"hello from {proc.pid}".encode()
    finally:
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == 0


def test_other_passed_sockets_are_skipped_and_closed(
        unix_listener: tuple[Path, socket.socket]) -> None:
    path, listener = unix_listener
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dgram, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        proc = activate(dgram, idle, listener)
        try:
            report = read_report(proc)
            assert report["fileno"] == 5
            assert report["open"] == [5]
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(10)
                client.connect(str(path))
                assert client.recv(100).startswith(b"hello from ")
        finally:
            proc.wait(timeout=10)
            assert proc.stdout is not None
            proc.stdout.close()


def test_no_listener_among_passed_sockets() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dgram:
        proc = activate(dgram)
        report = read_report(proc)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert report == {"fileno": None, "inheritable": None, "env": [],
                      "open": []}


@pytest.mark.parametrize("environ", [
    {},
    {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"},
    {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"},
    {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "two"},
    {"LISTEN_FDS": "1"},
])
def test_not_activated(environ: dict[str, str]) -> None:
    before = dict(environ)
    assert listen_fds(environ) == []
    assert systemd.listen_unix_socket(environ) is None
    assert environ == before  # another process's variables are left alone


# --- unit files -------------------------------------------------------------

def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections → key → values (keys may repeat in unit files)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_service_settings_match_the_daemon() -> None:
    service = parse_unit(UNIT_DIR / "jobd.service")["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["KillMode"] == ["mixed"]
    assert service["RestartPreventExitStatus"] == [str(EXIT_CONFIG)]
    assert float(service["TimeoutStopSec"][0]) > SHUTDOWN_TIMEOUT_DEFAULT
    assert "MemoryDenyWriteExecute" not in service


def test_socket_path_is_the_runtime_directory_socket() -> None:
    service = parse_unit(UNIT_DIR / "jobd.service")["Service"]
    sock = parse_unit(UNIT_DIR / "jobd.socket")["Socket"]
    runtime_dir = service["RuntimeDirectory"][0]
    assert sock["ListenStream"] == [f"%t/{runtime_dir}/jobd.sock"]
    assert sock["Service"] == ["jobd.service"]


def is_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    if os.access(found, os.X_OK):
        return found
    if is_ci():
        pytest.fail("systemd-analyze is required under CI")
    pytest.skip("systemd-analyze not installed")


def verifiable_units(dest: Path, extra: str = "") -> list[Path]:
    """Copies of the units whose ExecStart names a binary that exists.

    verify refuses a missing ExecStart binary, and /usr/local/bin/jobd is
    not installed on a build machine; nothing else is changed.
    """
    stand_in = shutil.which("true") or sys.executable
    service = (UNIT_DIR / "jobd.service").read_text()
    service, count = re.subn(r"(?m)^ExecStart=\S+", f"ExecStart={stand_in}",
                             service)
    assert count == 1
    (dest / "jobd.service").write_text(service + extra)
    shutil.copy(UNIT_DIR / "jobd.socket", dest / "jobd.socket")
    return [dest / "jobd.service", dest / "jobd.socket"]


def verify(units: list[Path]) -> tuple[int, list[str]]:
    """Exit status and the stderr lines that concern our units."""
    proc = subprocess.run(
        [systemd_analyze(), "verify", *map(str, units)],
        capture_output=True, text=True, timeout=60, check=False)
    ours = [line for line in proc.stderr.splitlines()
            if "jobd" in line or str(units[0].parent) in line]
    return proc.returncode, ours


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # On systemd 252 a missing `jobd` user produces no message, so any
    # message about our units is a real problem.
    returncode, ours = verify(verifiable_units(tmp_path))
    assert ours == []
    assert returncode == 0


def test_verify_reports_mistakes(tmp_path: Path) -> None:
    # Guards the test above: unknown keys only warn (exit 0), so it is the
    # stderr check that catches them, and it must see them.
    units = verifiable_units(tmp_path, "\n[Service]\nProtectSystem=strcit\n")
    _, ours = verify(units)
    assert any("strcit" in line for line in ours)

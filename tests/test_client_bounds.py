"""What one client can make the daemon hold: unread replies, refused peers,
connections to the /metrics listener. Each through the real daemon."""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
from conftest import T, wait_until

MiB = 1024 * 1024
NOBODY = 65534
# docs/operations.md ("The /metrics listener"): 8 connections, 5 s each.
METRICS_SLOTS = 8
METRICS_IDLE_S = 5.0


def _vm_bytes(pid: int, field: str) -> int:
    """A `Vm*` line of /proc/<pid>/status (VmRSS now, VmHWM the peak), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


# --- replies a client does not read ---------------------------------------------------

def test_unread_pipelined_replies_are_bounded_and_all_arrive(make_daemon):
    size, count = 5_000_000, 300
    d = make_daemon(workers=1)
    c = d.client()
    job = c.submit(T + "big_result", args=[size])
    assert c.wait(job, timeout=20).status == "completed"
    expected = "x" * size
    assert c.result(job)["result"] == expected        # the daemon has built this reply once
    baseline = _vm_bytes(d.pid, "VmRSS")

    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(d.socket)
    raw.settimeout(30)
    # ~18 KB of requests asking for ~1.5 GB of replies, none of them read yet.
    raw.sendall(b"".join(b'{"op":"result","id":%d,"job_id":"%s"}\n' % (i, job.encode())
                         for i in range(count)))
    # The requests were in the daemon's socket before this client connected,
    # so by the time it is answered the daemon has read them.
    other = d.client()
    assert other.hello()["protocol"] == 1
    assert other.result(job)["result"] == expected
    peak = _vm_bytes(d.pid, "VmHWM")
    assert peak < baseline + 150 * MiB, f"daemon peaked {(peak - baseline) // MiB} MiB above baseline"

    reader = raw.makefile("rb", buffering=MiB)
    for i in range(count):
        reply = orjson.loads(reader.readline())
        assert reply["id"] == i and reply["ok"] is True, reply.get("error")
        assert reply["status"] == "completed" and reply["result"] == expected
    assert other.hello()["protocol"] == 1
    peak = _vm_bytes(d.pid, "VmHWM")
    assert peak < baseline + 150 * MiB, f"daemon peaked {(peak - baseline) // MiB} MiB above baseline"
    reader.close()
    raw.close()


def test_held_connection_keeps_order_through_durability_waits(make_daemon):
    """A tiny bound holds and resumes the connection many times while some
    replies wait for an fsync: every reply arrives, in request order."""
    d = make_daemon(workers=1, config="[server]\nmax_unsent_bytes = 65536\n")
    rounds = 1000
    lines = []
    for i in range(rounds):
        job_id = f"held-{i}"
        lines.append(b'{"op":"submit","id":%d,"handler":"%snoop","job_id":"%s"}\n'
                     % (3 * i, T.encode(), job_id.encode()))
        lines.append(b'{"op":"status","id":%d,"job_id":"%s"}\n' % (3 * i + 1, job_id.encode()))
        lines.append(b'{"op":"hello","id":%d}\n' % (3 * i + 2))
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(d.socket)
    raw.settimeout(30)
    # Sent from a thread: once held, the daemon stops reading and sendall blocks.
    sender = threading.Thread(target=raw.sendall, args=(b"".join(lines),))
    sender.start()
    reader = raw.makefile("rb")
    for n in range(3 * rounds):
        reply = orjson.loads(reader.readline())
        assert reply["id"] == n and reply["ok"] is True, reply
    sender.join(10)
    assert d.client().status(f"held-{rounds - 1}").id == f"held-{rounds - 1}"
    reader.close()
    raw.close()


def test_max_unsent_bytes_is_validated(make_daemon):
    d = make_daemon(start=False, config="[server]\nmax_unsent_bytes = 1000\n")
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(20) == 78
    assert "config key 'server.max_unsent_bytes': must be >= 65536" in d.log()


# --- peers refused by allowed_uids ------------------------------------------------------

@pytest.fixture
def shared_dir() -> Iterator[str]:
    """A directory other users can traverse (pytest's tmp_path is private)."""
    path = tempfile.mkdtemp(prefix="jobd-open-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _connect_as_nobody(path: str, n: int) -> list[socket.socket]:
    """`n` connections made by a child running as nobody, handed back to us
    (SO_PEERCRED keeps the credentials of the process that connected)."""
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            parent.close()
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            conns = []
            for _ in range(n):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                conns.append(s)
            socket.send_fds(child, [b"ok"], [s.fileno() for s in conns])
        finally:
            os._exit(0)
    child.close()
    parent.settimeout(10)
    msg, fds, _flags, _addr = socket.recv_fds(parent, 16, n)
    parent.close()
    os.waitpid(pid, 0)
    assert msg == b"ok" and len(fds) == n, "the child could not connect as nobody"
    return [socket.socket(fileno=fd) for fd in fds]


class _Peer:
    """A connection we only listen on: what arrived, and whether it was closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""
        self.closed = False
        sock.setblocking(False)

    def poll(self) -> bool:
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            except ConnectionResetError:
                chunk = b""
            self.data += chunk
            self.closed = not chunk
        return self.closed


@pytest.mark.skipif(os.getuid() != 0, reason="switching to another uid needs root")
def test_refused_peers_take_no_connection_slots(make_daemon, shared_dir):
    d = make_daemon(start=False, config="[server]\nsocket_mode = 0o666\nallowed_uids = [4242]\n"
                                         "max_connections = 4\n")
    d.socket = os.path.join(shared_dir, "jobd.sock")
    d.start()
    refused = [_Peer(s) for s in _connect_as_nobody(d.socket, 16)]
    try:
        # Sixteen refused connections are open on our side; root is still served.
        c = d.client()
        assert c.hello()["protocol"] == 1
        held = [d.client() for _ in range(3)]            # and fills the other slots
        for h in held:
            assert h.hello()["protocol"] == 1
        wait_until(lambda: all(p.poll() for p in refused), timeout=5,
                   what="the daemon to close every refused connection")
        for p in refused:
            lines = p.data.splitlines()
            assert len(lines) == 1, p.data
            reply = orjson.loads(lines[0])
            assert reply["ok"] is False and reply["error"]["code"] == "permission_denied"
        # The slots are all root's; one more connection is the fifth.
        extra = _Peer(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        extra.sock.connect(d.socket)
        wait_until(extra.poll, timeout=5, what="the connection over max_connections to be closed")
        assert b'"unavailable"' in extra.data
        extra.sock.close()
        assert c.hello()["protocol"] == 1
    finally:
        for p in refused:
            p.sock.close()


# --- the /metrics HTTP listener ----------------------------------------------------------

def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_metrics_listener_holds_few_connections_and_drops_idle_ones(make_daemon):
    port = _free_port()
    d = make_daemon(config=f'[monitoring]\nmetrics_listen = "127.0.0.1:{port}"\n')
    c = d.client()
    assert c.hello()["protocol"] == 1
    fds_before = _open_fds(d.pid)
    idle = [_Peer(socket.create_connection(("127.0.0.1", port), timeout=5)) for _ in range(200)]
    try:
        # All but a few slots' worth are closed at once, well before the idle timeout.
        wait_until(lambda: sum(p.poll() for p in idle) >= len(idle) - METRICS_SLOTS,
                   timeout=METRICS_IDLE_S / 2, what="connections over the limit to be closed")
        assert _open_fds(d.pid) <= fds_before + METRICS_SLOTS + 2
        answered = sum(p.data.startswith(b"HTTP/1.1 503 ") for p in idle)
        assert answered >= len(idle) - METRICS_SLOTS
        assert c.hello()["protocol"] == 1
        assert c.wait(c.submit(T + "add", args=[1, 2]), timeout=10).status == "completed"
        # Those that got a slot but send nothing are closed by the daemon.
        wait_until(lambda: all(p.poll() for p in idle), timeout=METRICS_IDLE_S + 3,
                   what="idle metrics connections to be closed")
        assert _open_fds(d.pid) <= fds_before + 2
        for _ in range(3 * METRICS_SLOTS):           # answered connections give their slot back
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                assert resp.status == 200
                assert b"jobd_workers_total" in resp.read()
    finally:
        for p in idle:
            p.sock.close()

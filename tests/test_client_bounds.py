"""What one client can make the daemon hold: unread replies, refused peers,
connections to the /metrics listener. Each through the real daemon."""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator

import orjson
import pytest
from conftest import wait_until

NOBODY = 65534


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

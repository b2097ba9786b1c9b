"""Peer credential checks, connection limits, and expiry of finished jobs."""
from __future__ import annotations

import os
import shutil
import socket
import tempfile

import pytest
from conftest import T, wait_until

from jobd_client import JobdError

NOBODY = 65534


def _as_nobody(path: str) -> bytes:
    """Connect and send hello from a child process running as uid/gid nobody."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(path)
            try:
                s.sendall(b'{"op":"hello","id":1}\n')
            except BrokenPipeError:     # a refused peer may be answered and closed first
                pass
            os.write(w, s.recv(65536))
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            os.write(w, repr(e).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def shared_dir():
    """A directory other users can traverse (pytest's tmp_path is private)."""
    path = tempfile.mkdtemp(prefix="jobd-open-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.getuid() != 0, reason="switching to another uid needs root")
def test_allowed_uids_refuse_other_users(make_daemon, shared_dir):
    shared = shared_dir
    os.chmod(shared, 0o755)
    sock = os.path.join(shared, "jobd.sock")
    d = make_daemon(start=False, config="[server]\nsocket_mode = 0o666\nallowed_uids = [4242]\n")
    d.socket = sock
    d.start()
    assert d.client().hello()["protocol"] == 1          # root and the daemon's own uid pass
    reply = _as_nobody(sock)
    assert b'"permission_denied"' in reply, reply
    d2 = make_daemon(start=False, config=f"[server]\nsocket_mode = 0o666\nallowed_uids = [{NOBODY}]\n")
    d2.socket = os.path.join(shared, "jobd2.sock")
    d2.start()
    assert b'"ok":true' in _as_nobody(d2.socket)


def test_max_connections(make_daemon):
    d = make_daemon(config="[server]\nmax_connections = 2\n")
    keep = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for s in keep:
            s.connect(d.socket)
            s.sendall(b'{"op":"hello","id":1}\n')
            assert b'"ok":true' in s.recv(65536)
        extra.connect(d.socket)
        extra.settimeout(10)
        data = extra.recv(65536)
        assert b'"unavailable"' in data and b"too many connections" in data
        keep[0].close()

        def served() -> bool:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(d.socket)
                probe.sendall(b'{"op":"hello","id":1}\n')
                return b'"ok":true' in probe.recv(65536)
            finally:
                probe.close()
        wait_until(served, what="a slot to free up")
    finally:
        for s in [*keep, extra]:
            s.close()


def test_finished_jobs_expire_after_ttl(make_daemon):
    d = make_daemon(config="[results]\nttl = 0.5\n")
    c = d.client()
    done = c.submit(T + "add", args=[1, 2])
    assert c.wait(done, timeout=10).status == "completed"
    pending = c.submit(T + "block", args=[], job_id="still-running")

    def gone() -> bool:
        try:
            c.status(done)
            return False
        except JobdError as e:
            return e.code == "not_found"
    wait_until(gone, 10, what="the finished job to expire")
    assert c.status(pending).status in ("pending", "running")   # only finished jobs expire
    c.cancel(pending, force=True)


def test_dead_letter_queue_is_bounded(make_daemon):
    d = make_daemon(workers=1, config="[dead_letter]\nmax_size = 2\n[results]\nttl = 0.4\n"
                           "[retry]\nmax_retries = 0\n")
    c = d.client()
    ids = [c.submit(T + "always_fail") for _ in range(4)]
    wait_until(lambda: all(_status(c, i) in ("dead_letter", None) for i in ids),
               what="all dead-lettered")
    wait_until(lambda: c.dead_letters().total <= 2, what="the dead-letter queue to trim")
    survivors = {j.id for j in c.dead_letters().jobs}
    assert survivors <= set(ids[2:])                      # the oldest went first
    # retention_days (30) keeps them even though ttl has passed
    assert c.dead_letters().total == 2


def _status(c, job_id: str) -> str | None:
    try:
        return c.status(job_id).status
    except JobdError:
        return None


def test_dead_letters_are_removed_after_retention_days(make_daemon):
    """retention_days, not results.ttl, bounds how long a dead letter is kept."""
    d = make_daemon(workers=1, config="[results]\nttl = 4\n"             # housekeeping every 1 s
                                      "[dead_letter]\nretention_days = 0.00001\n"   # 0.86 s
                                      "[retry]\nmax_retries = 0\n")
    c = d.client()
    dead = c.submit(T + "always_fail")
    done = c.submit(T + "add", args=[1, 1])
    assert c.wait(dead, timeout=10).status == "dead_letter"
    assert c.wait(done, timeout=10).status == "completed"
    wait_until(lambda: _status(c, dead) is None, 40, what="the dead letter to be removed")
    assert c.dead_letters().total == 0
    assert c.status(done).status == "completed"        # ttl (4 s) has not passed for it

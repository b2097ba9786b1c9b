"""How a client finds the daemon: the path given, else `$JOBD_SOCKET`, else the
system service's socket when a daemon answers there, else this user's.

`paths.SYSTEM_SOCKET` is pointed at a temp dir, so no test needs root or
meets a jobd the host may run.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import DaemonProc
from test_client_unit import FakeDaemon

from jobd_client import (
    AsyncClient,
    Client,
    DaemonUnavailable,
    client_socket_candidates,
    default_socket_path,
    find_socket,
    paths,
)

WAIT_S = 10.0


class Places:
    """A system socket path and a per-user runtime dir, both under one temp dir."""

    def __init__(self, root: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.system = os.path.join(root, "sys.sock")
        self.xdg = os.path.join(root, "xdg")
        self.user = os.path.join(self.xdg, "jobd", "jobd.sock")
        os.makedirs(os.path.dirname(self.user))
        monkeypatch.setattr(paths, "SYSTEM_SOCKET", self.system)
        for name in ("JOBD_SOCKET", "RUNTIME_DIRECTORY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("XDG_RUNTIME_DIR", self.xdg)
        self.fakes: list[FakeDaemon] = []

    def serve(self, path: str) -> FakeDaemon:
        fake = FakeDaemon(path)
        self.fakes.append(fake)
        return fake

    def stop(self) -> None:
        for fake in self.fakes:
            if fake.listener.fileno() != -1:    # not stopped by the test itself
                fake.stop()


@pytest.fixture
def places(monkeypatch: pytest.MonkeyPatch) -> Iterator[Places]:
    root = tempfile.mkdtemp(prefix="jl-")  # short: AF_UNIX paths are limited to 107 bytes
    made = Places(root, monkeypatch)
    yield made
    made.stop()
    shutil.rmtree(root, ignore_errors=True)


def stale_socket(path: str) -> None:
    """A socket file nobody listens on, as a daemon killed with -9 leaves."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()


# --- the candidates ---------------------------------------------------------------------------

def test_candidates_put_the_system_socket_before_the_users(places: Places,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert client_socket_candidates() == [places.system, places.user]
    assert default_socket_path() == places.user       # where the daemon creates its own: unchanged
    assert client_socket_candidates("/given.sock") == ["/given.sock"]
    monkeypatch.setenv("JOBD_SOCKET", "/env.sock")
    assert client_socket_candidates() == ["/env.sock"]
    assert client_socket_candidates("/given.sock") == ["/given.sock"]
    monkeypatch.delenv("JOBD_SOCKET")
    monkeypatch.setenv("RUNTIME_DIRECTORY", os.path.dirname(places.system))
    monkeypatch.setattr(paths, "SYSTEM_SOCKET", os.path.join(os.path.dirname(places.system),
                                                             "jobd.sock"))
    assert client_socket_candidates() == [paths.SYSTEM_SOCKET]   # the service itself: once


# --- the blocking client -------------------------------------------------------------------------

def test_the_system_daemon_is_used_when_it_answers_else_the_users(places: Places) -> None:
    system, user = places.serve(places.system), places.serve(places.user)
    with Client(timeout=WAIT_S) as c:
        assert c.hello()["protocol"] == 1
        assert c.socket_path == places.system
    assert len(system.ops("hello")) == 1 and user.accepted == 0
    assert default_socket_path() == places.user
    system.stop()                                   # no system socket: the user's daemon
    with Client(timeout=WAIT_S) as c:
        assert c.hello()["protocol"] == 1 and c.socket_path == places.user
    stale_socket(places.system)                     # a socket file nobody listens on
    with Client(timeout=WAIT_S) as c:
        assert c.hello()["protocol"] == 1 and c.socket_path == places.user
    assert len(user.ops("hello")) == 2


def test_the_socket_found_is_kept_for_reconnects(places: Places) -> None:
    """A restart of the system daemon must not send the client's next request to
    another daemon: the client reconnects to the socket it found, or fails."""
    system, user = places.serve(places.system), places.serve(places.user)
    with Client(timeout=WAIT_S) as c:
        c.hello()
        system.stop()
        with pytest.raises(DaemonUnavailable) as info:
            c.hello()
    assert info.value.tried == [places.system] and user.accepted == 0


def test_no_daemon_anywhere_names_every_path_tried_and_what_to_do(places: Places) -> None:
    stale_socket(places.system)
    with pytest.raises(DaemonUnavailable) as info:
        Client(timeout=WAIT_S).hello()
    exc = info.value
    assert exc.tried == [places.system, places.user]
    assert exc.socket_path == places.user and exc.code == "daemon_unavailable"
    assert exc.message == (f"no jobd at {places.system} (Connection refused) or {places.user} "
                           "(No such file or directory); start one with `jobd serve`, or point "
                           "to one with JOBD_SOCKET (jobd-cli --socket, Client(socket_path=...))")


def test_a_path_given_is_the_only_one_tried(places: Places, monkeypatch: pytest.MonkeyPatch) -> None:
    places.serve(places.system)
    elsewhere = os.path.join(places.xdg, "none.sock")
    with pytest.raises(DaemonUnavailable) as info:
        Client(elsewhere).hello()
    assert info.value.tried == [elsewhere] and info.value.socket_path == elsewhere
    monkeypatch.setenv("JOBD_SOCKET", elsewhere)
    with pytest.raises(DaemonUnavailable) as env_info:
        Client().hello()
    assert env_info.value.tried == [elsewhere]


def test_watch_and_find_socket_look_up_alike(places: Places) -> None:
    with pytest.raises(DaemonUnavailable) as info:
        find_socket()
    assert info.value.tried == [places.system, places.user]
    system = places.serve(places.system)
    assert find_socket() == places.system
    with Client(timeout=WAIT_S).watch() as stream:
        assert stream.socket_path == places.system
    assert len(system.ops("watch")) == 1


# --- the asyncio client ----------------------------------------------------------------------------

async def test_async_lookup(places: Places) -> None:
    with pytest.raises(DaemonUnavailable) as info:
        await AsyncClient.connect()
    assert info.value.tried == [places.system, places.user]
    user = places.serve(places.user)
    async with AsyncClient() as c:
        assert (await c.hello())["protocol"] == 1 and c.socket_path == places.user
        async with c.watch() as stream:
            assert stream.socket_path == places.user
    assert len(user.ops("hello")) == 1
    system = places.serve(places.system)
    async with AsyncClient() as c:
        await c.hello()
        assert c.socket_path == places.system
    assert len(system.ops("hello")) == 1


# --- the real daemon -----------------------------------------------------------------------------

def test_client_finds_the_daemon_in_xdg_runtime_dir(make_daemon: Callable[..., DaemonProc],
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """No path and no JOBD_SOCKET: the client finds a daemon serving on the
    per-user default, after finding nothing at the system path."""
    xdg = tmp_path / "x"
    monkeypatch.setattr(paths, "SYSTEM_SOCKET", str(tmp_path / "system.sock"))
    for name in ("JOBD_SOCKET", "RUNTIME_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    d = make_daemon(start=False)
    d.socket = default_socket_path()
    assert d.socket == str(xdg / "jobd" / "jobd.sock")
    d.start()
    with Client(timeout=WAIT_S) as c:
        assert c.hello()["protocol"] == 1 and c.socket_path == d.socket
    d.stop()
    with pytest.raises(DaemonUnavailable) as info:
        Client(timeout=WAIT_S).hello()
    assert info.value.tried == [str(tmp_path / "system.sock"), d.socket]

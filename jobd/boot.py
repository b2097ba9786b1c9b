"""What happens before the event loop exists: handler modules, the data dir
and its lock, the listening socket, the fork server.

Order matters: handler modules are imported first (config errors that need
them exit 78 before the data dir is touched); the fork server is forked last,
before uvloop starts, with the handler code already imported (workers are
forked from it, never from the running loop). `Boot` is what the running
daemon (jobd/daemon.py) is started with; `abandon` undoes it when startup
fails after the socket was bound.
"""
from __future__ import annotations

import errno
import fcntl
import grp
import logging
import os
import socket
import stat
from dataclasses import dataclass

from jobd import config as config_mod
from jobd import handlers
from jobd.config import Config
from jobd.errors import StartupError
from jobd.pool import child, forkserver
from jobd.scheduling import specs
from jobd.systemd import listen_unix_socket

log = logging.getLogger("jobd")


@dataclass(frozen=True)
class Boot:
    """Everything set up before the loop."""

    handlers: dict[str, handlers.HandlerSpec]
    sock: socket.socket
    activated: bool                 # the socket came from systemd (socket activation)
    forkserver: forkserver.ForkServerClient
    lock_fd: int                    # holds the data dir's lock for the daemon's life


def prepare(cfg: Config) -> Boot:
    """Import handlers, lock the data dir, listen, fork the fork server."""
    try:
        empty = handlers.load_modules(cfg.handlers, cfg.app_dir)
    except handlers.HandlerImportError as e:
        raise StartupError(str(e)) from e
    for name in empty:
        log.warning("handler module %r registers no handler (no @handler function in it)", name)
    registry = handlers.registry()
    # Config errors that need the handlers (exit 78) come before the data dir is touched.
    config_mod.check_handler_names(cfg, registry)
    handlers.apply_overrides(cfg.handler)        # before the fork: workers need them
    specs.check_config(cfg.schedule, registry)
    lock_fd = _lock_data_dir(cfg.data_dir)
    sock, activated = _listening_socket(cfg)
    hb = cfg.workers.heartbeat_interval
    fs = forkserver.start(lambda s, wid: child.main(s, wid, hb), (sock,))
    return Boot(registry, sock, activated, fs, lock_fd)


def abandon(cfg: Config, boot: Boot | None) -> None:
    """Startup failed after the socket was bound: leave no socket file behind."""
    if boot is not None and not boot.activated:
        boot.sock.close()
        unlink_quiet(cfg.server.socket)


def _lock_data_dir(path: str) -> int:
    try:
        config_mod.ensure_dir(path)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable")
        fd = os.open(os.path.join(path, "jobd.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise StartupError(f"data dir {path} is not usable: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(f"data dir {path} is in use by another jobd") from None
    return fd


def _listening_socket(cfg: Config) -> tuple[socket.socket, bool]:
    """(the socket, whether systemd passed it)."""
    inherited = listen_unix_socket()
    if inherited is not None:
        log.info("using the socket passed by systemd (socket activation)")
        return inherited, True
    path = cfg.server.socket
    _make_socket_dir(os.path.dirname(path) or ".", bool(cfg.server.socket_group))
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise StartupError(f"cannot bind socket {path}: {e.strerror}") from e
    finally:
        os.umask(old)
    _set_socket_access(cfg, path)
    sock.listen(1024)
    return sock, False


def _set_socket_access(cfg: Config, path: str) -> None:
    group = cfg.server.socket_group
    if group:
        try:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        except (KeyError, PermissionError) as e:
            raise StartupError(f"cannot give socket to group {group!r}: {e}") from e
    os.chmod(path, cfg.server.socket_mode)


def _make_socket_dir(path: str, group_access: bool) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o750 if group_access else 0o700, exist_ok=True)


def _remove_stale_socket(path: str) -> None:
    """A socket file whose daemon is dead is removed; a live one is an error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        unlink_quiet(path)
        return
    except OSError as e:
        raise StartupError(f"cannot check socket {path}: {e.strerror}") from e
    finally:
        probe.close()
    raise StartupError(f"socket {path} is in use by a live jobd")


def unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

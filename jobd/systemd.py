"""sd_notify and socket activation on the standard library (docs/operations.md).

No libsystemd: the notify protocol is one datagram of ``KEY=value`` lines
sent to the AF_UNIX socket named by ``$NOTIFY_SOCKET``, and socket
activation hands over fds 3.. as described by ``$LISTEN_PID``/``$LISTEN_FDS``
(sd_notify(3), sd_listen_fds(3)).

Invariant: nothing here raises because systemd is absent or unreachable.
Without ``NOTIFY_SOCKET`` every :class:`Notifier` method is a no-op, and a
failed send is logged at debug level and dropped — the daemon must never
stop serving because its supervisor went away.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, MutableMapping
from typing import Final, Self, TypeAlias

log = logging.getLogger("jobd.systemd")

# First fd passed by socket activation (SD_LISTEN_FDS_START).
LISTEN_FDS_START: Final = 3
LISTEN_ENV: Final = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")

READY: Final = "READY=1"
STOPPING: Final = "STOPPING=1"
WATCHDOG: Final = "WATCHDOG=1"

Address: TypeAlias = "str | bytes"


def notify_address(value: str | None) -> Address | None:
    """The socket address named by a NOTIFY_SOCKET value, or None.

    ``@name`` is an abstract socket (leading NUL); other values must be an
    absolute path, as sd_notify requires.
    """
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.debug("unsupported NOTIFY_SOCKET %r, notifications disabled", value)
    return None


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(value) if value is not None else 0
    except ValueError:
        return None
    return number if number > 0 else None


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None.

    None unless WATCHDOG_USEC is set, and WATCHDOG_PID, when set, is us
    (like sd_watchdog_enabled).
    """
    usec = _positive_int(environ.get("WATCHDOG_USEC"))
    if usec is None:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and _positive_int(pid) != os.getpid():
        return None
    return usec / 2_000_000


def _notify_socket() -> socket.socket | None:
    # CLOEXEC so exec'd children never inherit it; non-blocking so a stuck
    # supervisor can never stall the event loop.
    kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
    try:
        return socket.socket(socket.AF_UNIX, kind)
    except OSError as exc:
        log.debug("cannot create the sd_notify socket: %s", exc)
        return None


class Notifier:
    """Sends sd_notify messages; every method is a no-op when disabled."""

    def __init__(self, address: Address | None,
                 watchdog: float | None = None) -> None:
        self.address = address
        self._watchdog = watchdog
        self._sock = _notify_socket() if address is not None else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """Read NOTIFY_SOCKET and the watchdog settings; environ is untouched."""
        address = notify_address(environ.get("NOTIFY_SOCKET"))
        return cls(address, watchdog_interval(environ))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog() calls, or None when not watched."""
        return self._watchdog

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``KEY=value`` lines; True if it went out."""
        if self._sock is None or self.address is None or not lines:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            log.debug("sd_notify %r failed: %s", lines, exc)
            return False
        return True

    def ready(self) -> bool:
        return self.send(READY)

    def status(self, text: str) -> bool:
        # A newline would start a new assignment; keep STATUS to one line.
        return self.send("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> bool:
        return self.send(STOPPING)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG)

    def close(self) -> None:
        """Close the socket; later calls are no-ops."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _listen_count(environ: Mapping[str, str]) -> int:
    """How many fds systemd passed to this very process (0 if none)."""
    if _positive_int(environ.get("LISTEN_PID")) != os.getpid():
        return 0
    return _positive_int(environ.get("LISTEN_FDS")) or 0


def _adopt_fd(fd: int) -> socket.socket | None:
    try:
        os.set_inheritable(fd, False)
        return socket.socket(fileno=fd)
    except OSError as exc:  # a FIFO from the unit, or a closed fd
        log.debug("LISTEN_FDS fd %d is not a socket (%s), skipped", fd, exc)
        return None


def listen_fds(environ: MutableMapping[str, str] = os.environ,
               ) -> list[socket.socket]:
    """Sockets passed by systemd socket activation, or [] when not activated.

    The sockets are made close-on-exec and the LISTEN_* variables are
    removed from environ so that children do not think they were activated.
    """
    count = _listen_count(environ)
    if count == 0:
        return []
    for name in LISTEN_ENV:
        environ.pop(name, None)
    fds = range(LISTEN_FDS_START, LISTEN_FDS_START + count)
    return [sock for sock in map(_adopt_fd, fds) if sock is not None]


def _is_unix_listener(sock: socket.socket) -> bool:
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        return False
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


def listen_unix_socket(environ: MutableMapping[str, str] = os.environ,
                       ) -> socket.socket | None:
    """The first listening AF_UNIX stream socket passed by systemd, or None.

    Other passed sockets are closed: jobd serves one socket, and leaving
    them open would only leak fds into the daemon.
    """
    chosen: socket.socket | None = None
    for sock in listen_fds(environ):
        if chosen is None and _is_unix_listener(sock):
            chosen = sock
        else:
            log.debug("ignoring activated socket %r", sock)
            sock.close()
    return chosen

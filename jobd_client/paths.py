"""Where the daemon's socket lives, and where a client looks for it.

The daemon, the client and jobd-cli must agree on this rule without talking to
each other, so it lives here, dependency-free, and the daemon imports it too.
"""
from __future__ import annotations

import os

SOCKET_NAME = "jobd.sock"
# The system service's socket (systemd/jobd.socket). Clients try it before the
# per-user paths; a module constant so tests can point it at a temp dir.
SYSTEM_SOCKET = "/run/jobd/jobd.sock"


def default_socket_path() -> str:
    """Return the socket path the daemon creates, first match wins.

    `$JOBD_SOCKET`, else `$RUNTIME_DIRECTORY/jobd.sock` (systemd may list
    several directories separated by ':'; the first is ours), else
    `$XDG_RUNTIME_DIR/jobd/jobd.sock`, else `/tmp/jobd-<uid>/jobd.sock`.
    Empty variables count as unset, as shells often export them empty.
    """
    explicit = os.environ.get("JOBD_SOCKET")
    if explicit:
        return explicit
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return os.path.join(runtime, SOCKET_NAME)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "jobd", SOCKET_NAME)
    return os.path.join("/tmp", f"jobd-{os.getuid()}", SOCKET_NAME)


def client_socket_candidates(socket_path: str | None = None) -> list[str]:
    """The sockets a client tries, in order; the first that accepts a connection wins.

    A path given (argument, else `$JOBD_SOCKET`) is the only one: pointing at
    a daemon must never silently reach another. Otherwise the system
    service's socket comes first, so a user talks to the host's jobd when
    one runs, then the path a `jobd serve` of this user would create.
    """
    explicit = socket_path or os.environ.get("JOBD_SOCKET")
    if explicit:
        return [explicit]
    own = default_socket_path()
    return [own] if own == SYSTEM_SOCKET else [SYSTEM_SOCKET, own]


def likely_socket(candidates: list[str]) -> str:
    """Which of `candidates` a client will probably use, without connecting: the
    first that exists, else the last (where this user's `jobd serve` would listen)."""
    return next((path for path in candidates if os.path.exists(path)), candidates[-1])

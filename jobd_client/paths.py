"""Where the daemon's socket lives (SPEC §2).

The daemon, the client and jobd-cli must agree on this rule without talking to
each other, so it lives here, dependency-free, and the daemon imports it too.
"""
from __future__ import annotations

import os

SOCKET_NAME = "jobd.sock"


def default_socket_path() -> str:
    """Return the socket path by the SPEC §2 rule, first match wins.

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

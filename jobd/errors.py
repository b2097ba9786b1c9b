"""The errors jobd raises with a meaning: an op's error (a protocol code and
a message) and a config error (exit status 78)."""
from __future__ import annotations

import difflib

from jobd import constants as C


class ConfigError(Exception):
    """A bad config file, key or value. The message names the key; `jobd
    serve` exits with status 78 (EX_CONFIG)."""


class StartupError(Exception):
    """A clear, one-line reason the daemon cannot start (exit status 1)."""


class OpError(Exception):
    """Raised inside an op; the server turns it into `{"ok": false, "error": ...}`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(field: str, why: str) -> OpError:
    """`invalid_argument` whose message names the field."""
    return OpError(C.E_INVALID_ARGUMENT, f"{field}: {why}")


def not_found(job_id: object) -> OpError:
    return OpError(C.E_NOT_FOUND, f"no job with id {job_id!r}")


def did_you_mean(name: str, known: list[str]) -> str:
    """"; did you mean 'a.b'?" for close names (the same function name, or
    spelt nearly alike), else ""."""
    tail = name.rsplit(".", 1)[-1]
    close = [k for k in known if k.rsplit(".", 1)[-1] == tail and k != name]
    close += [k for k in difflib.get_close_matches(name, known, n=3, cutoff=0.6) if k not in close]
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(k) for k in close[:3]) + "?"

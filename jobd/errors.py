"""The error an op answers with: a protocol code and a message (SPEC §5)."""
from __future__ import annotations

from jobd import constants as C


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

"""Exceptions raised by the client, one class per protocol error code (SPEC §5).

Callers catch the class (`except NotFound:`), scripts read `.code`; both stay
stable because the code strings are the protocol contract.
"""
from __future__ import annotations

from typing import Any

from . import protocol as P


class JobdError(Exception):
    """Base of every error the daemon answers, or the client meets talking to it."""

    code: str = "error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # keeps an unknown code the daemon sent

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadRequest(JobdError):
    """The request was not JSON, not an object, or had no op."""

    code = P.E_BAD_REQUEST


class UnknownOp(JobdError):
    """The op name is not one the daemon knows."""

    code = P.E_UNKNOWN_OP


class InvalidArgument(JobdError):
    """An argument has a wrong value or type; the message names the field."""

    code = P.E_INVALID_ARGUMENT


class UnknownHandler(JobdError):
    """The handler name is not registered; nothing was queued."""

    code = P.E_UNKNOWN_HANDLER


class NotFound(JobdError):
    """No job, worker or schedule with that id or name."""

    code = P.E_NOT_FOUND


class Conflict(JobdError):
    """The op does not apply to the object's current state."""

    code = P.E_CONFLICT


class QueueFull(JobdError):
    """queue.max_size is reached; try again later."""

    code = P.E_QUEUE_FULL


class RequestTooLarge(JobdError):
    """The request line exceeded max_request_bytes; the daemon closes the connection."""

    code = P.E_REQUEST_TOO_LARGE


class Unavailable(JobdError):
    """The daemon is shutting down and takes no new work."""

    code = P.E_UNAVAILABLE


class StorageError(JobdError):
    """The WAL could not be written: nothing was acknowledged."""

    code = P.E_STORAGE_ERROR


class PermissionDenied(JobdError):
    """The peer's uid/gid is not allowed to use the socket."""

    code = P.E_PERMISSION_DENIED


class InternalError(JobdError):
    """A bug in the daemon; the connection stays usable."""

    code = P.E_INTERNAL


class DaemonUnavailable(JobdError):
    """The socket cannot be reached: no daemon, wrong path, or connection lost.

    Not a protocol code: the client raises it itself, naming the path so the
    user can see which socket it looked for.
    """

    code = "daemon_unavailable"

    def __init__(self, socket_path: str, reason: str) -> None:
        super().__init__(f"cannot reach jobd at {socket_path}: {reason}")
        self.socket_path = socket_path


ERRORS: dict[str, type[JobdError]] = {
    cls.code: cls
    for cls in (
        BadRequest, UnknownOp, InvalidArgument, UnknownHandler, NotFound,
        Conflict, QueueFull, RequestTooLarge, Unavailable, StorageError,
        PermissionDenied, InternalError,
    )
}


def error_from_reply(error: Any) -> JobdError:
    """Build the exception for a reply's `error` object; unknown codes stay JobdError."""
    if not isinstance(error, dict):
        return JobdError(str(error), P.E_INTERNAL)
    code = str(error.get("code", P.E_INTERNAL))
    message = str(error.get("message", ""))
    cls = ERRORS.get(code)
    return cls(message) if cls else JobdError(message, code)

"""Exceptions raised by the client, one class per protocol error code (docs/protocol.md).

Callers catch the class (`except NotFound:`), scripts read `.code`; both stay
stable because the code strings are the protocol contract. `DaemonUnavailable`
and `WaitTimeout` are the client's own: no daemon sends them.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import protocol as P
from .models import Job

# What to do when no daemon answers: the three ways to get one.
START_HINT = ("start one with `jobd serve`, or point to one with JOBD_SOCKET "
              "(jobd-cli --socket, Client(socket_path=...))")


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

    Not a protocol code: the client raises it itself. `socket_path` is the
    socket it looked for (the last one tried), `tried` every path it tried.
    """

    code = "daemon_unavailable"

    def __init__(self, socket_path: str, reason: str, tried: Sequence[str] = (),
                 message: str | None = None) -> None:
        super().__init__(message or f"cannot reach jobd at {socket_path}: {reason}")
        self.socket_path = socket_path
        self.reason = reason
        self.tried = list(tried) or [socket_path]


def no_daemon(failures: Sequence[tuple[str, str]]) -> DaemonUnavailable:
    """The error for a lookup no socket answered: each path with why, and what to do.

    `failures`: (path, reason) in the order tried; at least one.
    """
    where = " or ".join(f"{path} ({why})" for path, why in failures)
    path, why = failures[-1]
    return DaemonUnavailable(path, why, [p for p, _ in failures],
                             f"no jobd at {where}; {START_HINT}")


class WaitTimeout(JobdError, TimeoutError):
    """`wait`/`wait_many` ran out of time before every job was terminal.

    A TimeoutError too, so code that treats any timeout alike catches it.
    `job` is the (first) unfinished job's last view, `jobs` the last view of
    every job waited for, in the order asked.
    """

    code = "wait_timeout"

    def __init__(self, job: Job, jobs: Sequence[Job], timeout: float | None) -> None:
        super().__init__(_still_running(job, jobs, timeout))
        self.job = job
        self.jobs = list(jobs)
        self.timeout = timeout


def _still_running(job: Job, jobs: Sequence[Job], timeout: float | None) -> str:
    after = "" if timeout is None else f" after {timeout:g} s"
    late = sum(1 for j in jobs if not j.done)
    if len(jobs) <= 1:
        return f"job {job.id} is still {job.status}{after}"
    return f"{late} of {len(jobs)} jobs not finished{after}; the first, {job.id}, is {job.status}"


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

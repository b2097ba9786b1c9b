"""HTTP errors of `jobd web`: every one is `{"error": {"code", "message"}}`.

The daemon's error codes keep their names; each maps to one HTTP status.
A daemon that cannot be reached is 502 (the web process is a gateway to it).
"""
from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from jobd_client import protocol as P
from jobd_client.errors import DaemonUnavailable, JobdError

# The web process's own codes, beside the daemon's.
E_UNAUTHORIZED = "unauthorized"
E_FORBIDDEN = "forbidden"
E_READ_ONLY = "read_only"
E_BAD_HOST = "bad_host"
E_TOO_LARGE = "request_too_large"
E_ROUTE = "not_found"
E_METHOD = "method_not_allowed"
E_DAEMON_UNREACHABLE = P.E_UNAVAILABLE       # with 502: no daemon answers the socket

STATUS_BY_CODE = {
    P.E_NOT_FOUND: 404,
    P.E_CONFLICT: 409,
    P.E_INVALID_ARGUMENT: 422,
    P.E_UNKNOWN_HANDLER: 422,
    P.E_BAD_REQUEST: 422,
    P.E_UNKNOWN_OP: 422,              # a daemon too old for this op
    P.E_REQUEST_TOO_LARGE: 413,
    P.E_QUEUE_FULL: 429,
    P.E_UNAVAILABLE: 503,
    P.E_STORAGE_ERROR: 503,
    P.E_PERMISSION_DENIED: 403,
    P.E_INTERNAL: 500,
}
RETRY_AFTER_S = 1               # queue_full, unavailable: worth trying again this soon


class HTTPError(Exception):
    """Raised by an endpoint to answer an error: status, code, message."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers,
                    media_type="application/json")


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def from_jobd_error(exc: JobdError) -> HTTPError:
    """The HTTP answer for an error the client raised."""
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    if isinstance(exc, DaemonUnavailable):
        return HTTPError(502, E_DAEMON_UNREACHABLE, f"jobd is not running or not reachable: {exc.message}",
                         retry)
    status = STATUS_BY_CODE.get(exc.code, 500)
    return HTTPError(status, exc.code, exc.message, retry if status in (429, 503) else None)


def bad_request(message: str) -> HTTPError:
    return HTTPError(422, P.E_BAD_REQUEST, message)


def invalid(field: str, message: str) -> HTTPError:
    return HTTPError(422, P.E_INVALID_ARGUMENT, f"{field}: {message}")

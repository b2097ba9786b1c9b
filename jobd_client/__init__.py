"""Thin client for the jobd job-queue daemon: standard library only (orjson when importable).

    from jobd_client import Client
    with Client() as c:
        job = c.wait(c.submit("myapp.tasks.resize", args=["a.png"]), timeout=30)

docs/client.md describes the client; docs/protocol.md the wire protocol.
"""
from __future__ import annotations

from .aio import AsyncClient, AsyncWatchStream
from .client import Client, WatchStream, find_socket
from .errors import (
    BadRequest,
    Conflict,
    DaemonUnavailable,
    InternalError,
    InvalidArgument,
    JobdError,
    NotFound,
    PermissionDenied,
    QueueFull,
    RequestTooLarge,
    StorageError,
    Unavailable,
    UnknownHandler,
    UnknownOp,
    WaitTimeout,
    error_from_reply,
)
from .models import Event, Job, Page
from .paths import client_socket_candidates, default_socket_path

__all__ = [
    "AsyncClient", "AsyncWatchStream", "BadRequest", "Client", "Conflict",
    "DaemonUnavailable", "Event", "InternalError", "InvalidArgument", "Job",
    "JobdError", "NotFound", "Page", "PermissionDenied", "QueueFull",
    "RequestTooLarge", "StorageError", "Unavailable", "UnknownHandler",
    "UnknownOp", "WaitTimeout", "WatchStream", "client_socket_candidates",
    "default_socket_path", "error_from_reply", "find_socket",
]

"""Thin client for the jobd job-queue daemon (SPEC §7): standard library only.

    from jobd_client import Client
    with Client() as c:
        job = c.wait(c.submit("myapp.tasks.resize", args=["a.png"]), timeout=30)
"""
from __future__ import annotations

from .aio import AsyncClient, AsyncWatchStream
from .client import Client, WatchStream
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
    error_from_reply,
)
from .models import Event, Job, Page
from .paths import default_socket_path

__all__ = [
    "AsyncClient", "AsyncWatchStream", "BadRequest", "Client", "Conflict",
    "DaemonUnavailable", "Event", "InternalError", "InvalidArgument", "Job",
    "JobdError", "NotFound", "Page", "PermissionDenied", "QueueFull",
    "RequestTooLarge", "StorageError", "Unavailable", "UnknownHandler",
    "UnknownOp", "WatchStream", "default_socket_path", "error_from_reply",
]

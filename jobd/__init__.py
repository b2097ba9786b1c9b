"""jobd: a fast, durable job queue daemon for one host.

Handler code imports from here::

    from jobd import handler, current_job, PermanentError, Retry
"""
from __future__ import annotations

from jobd.handlers import PermanentError, Retry, current_job, handler

__version__ = "0.1.0"

__all__ = ["PermanentError", "Retry", "__version__", "current_job", "handler"]

"""jobd: a fast, durable job queue daemon for one host.

Handler code imports from here::

    from jobd import handler, current_job, PermanentError, Retry, RateLimited, Snooze
"""
from __future__ import annotations

from jobd.handlers import PermanentError, RateLimited, Retry, Snooze, current_job, handler

__version__ = "0.1.0"

__all__ = ["PermanentError", "RateLimited", "Retry", "Snooze", "__version__", "current_job",
           "handler"]

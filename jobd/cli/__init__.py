"""jobd-cli: the operator's command line over the daemon's socket (SPEC §8).

`app` parses and maps errors to exit statuses, `commands` holds one function
per command, `progress` follows a job with a live bar, `top` is the
dashboard, `tables` formats text. Talks to the daemon only through
`jobd_client.Client`.
"""
from __future__ import annotations

from .app import main

__all__ = ["main"]

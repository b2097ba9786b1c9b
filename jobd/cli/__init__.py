"""jobd-cli: the operator's command line over the daemon's socket (docs/cli.md).

`app` parses and maps errors to exit statuses, `commands` holds one function
per command (`schedules`, `logs` and `handlers` the commands of their own
topic), `progress` follows a job with a live bar, `waiting` waits for jobs
through the event stream, `top` is the dashboard, `tables` formats text and
`cronwords` says a cron expression in words. Talks to the daemon only
through `jobd_client.Client`.
"""
from __future__ import annotations

from .app import main

__all__ = ["main"]

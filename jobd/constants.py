"""Every name jobd uses with a fixed meaning, in one place.

The wire names (ops, statuses, priorities, error codes, event names, the
protocol version) are defined once, in `jobd_client.protocol`, and re-exported
here so daemon code reads them as `C.PENDING`; the daemon's own names (exit
codes, the worker state no client sees, schedule id prefixes) follow.
"""
from __future__ import annotations

from typing import Final

from jobd_client.protocol import (  # noqa: F401 - re-exported: the daemon reads them as C.*
    CANCELLED,
    COMPLETED,
    DEAD_LETTER,
    DEFAULT_PRIORITY,
    E_BAD_REQUEST,
    E_CONFLICT,
    E_INTERNAL,
    E_INVALID_ARGUMENT,
    E_NOT_FOUND,
    E_PERMISSION_DENIED,
    E_QUEUE_FULL,
    E_REQUEST_TOO_LARGE,
    E_STORAGE_ERROR,
    E_UNAVAILABLE,
    E_UNKNOWN_HANDLER,
    E_UNKNOWN_OP,
    ERROR_CODES,
    EV_CANCELLED,
    EV_COMPLETED,
    EV_DEAD_LETTER,
    EV_FAILED,
    EV_PROGRESS,
    EV_STARTED,
    EV_SUBMITTED,
    EV_WATCH_LAGGED,
    EV_WORKER_EXITED,
    EV_WORKER_STARTED,
    EVENTS,
    FAILED,
    OPS,
    PENDING,
    PRIORITY_MAX,
    PRIORITY_MIN,
    PRIORITY_NAMES,
    PROTOCOL_VERSION,
    QUEUED,
    RETRYING,
    RUNNING,
    SCHEDULED,
    STATUSES,
    TERMINAL,
    UNSUCCESSFUL,
    W_BUSY,
    W_IDLE,
    W_STOPPING,
    WAITING,
)

# --- worker states the daemon keeps to itself (shown as idle) ------------------------
W_STARTING: Final = "starting"

# --- process exit codes ----------------------------------------------------------
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 78          # EX_CONFIG from sysexits.h

# CLI exit codes (SPEC §8).
CLI_OK: Final = 0
CLI_OP_ERROR: Final = 1
CLI_USAGE: Final = 2
CLI_UNREACHABLE: Final = 3

# Error text used when a job is stopped for running past its timeout.
ERROR_TIMEOUT: Final = "timeout"

# --- cron schedules (docs/schedules.md) ------------------------------------------
# Where a schedule came from: config entries are reconciled on startup and SIGHUP;
# schedules added over the socket are left alone by both.
SCHEDULE_SOURCE_API: Final = "api"
SCHEDULE_SOURCE_CONFIG: Final = "config"
# Job ids of fired runs: `sched:<name>:<UTC fire time>` (deterministic, so a
# fire that is repeated after a crash returns the job it already made).
SCHEDULE_JOB_PREFIX: Final = "sched:"
# Names that are not job-id safe use a hash of the name instead.
SCHEDULE_HASHED_PREFIX: Final = "sched+"
# The schedule timer wakes at least this often (s), so a wall-clock jump
# (NTP, suspend) delays a fire by at most this much.
SCHEDULE_MAX_SLEEP: Final = 60.0

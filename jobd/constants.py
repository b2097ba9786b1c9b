"""Every name jobd uses with a fixed meaning, in one place.

The wire names (ops, statuses, priorities, error codes, event names, the
protocol version) are defined once, in `jobd_client.protocol`, and re-exported
here so daemon code reads them as `C.PENDING`; the daemon's own names (exit
codes, the worker state no client sees, schedule id prefixes) follow.
"""
from __future__ import annotations

from typing import Final

from jobd_client.protocol import (  # re-exported: the daemon reads them as C.*
    CANCELLED as CANCELLED,
)
from jobd_client.protocol import (
    COMPLETED as COMPLETED,
)
from jobd_client.protocol import (
    DEAD_LETTER as DEAD_LETTER,
)
from jobd_client.protocol import (
    DEFAULT_PRIORITY as DEFAULT_PRIORITY,
)
from jobd_client.protocol import DEFAULT_QUEUE as DEFAULT_QUEUE
from jobd_client.protocol import (
    E_BAD_REQUEST as E_BAD_REQUEST,
)
from jobd_client.protocol import (
    E_CONFLICT as E_CONFLICT,
)
from jobd_client.protocol import (
    E_INTERNAL as E_INTERNAL,
)
from jobd_client.protocol import (
    E_INVALID_ARGUMENT as E_INVALID_ARGUMENT,
)
from jobd_client.protocol import (
    E_NOT_FOUND as E_NOT_FOUND,
)
from jobd_client.protocol import (
    E_PERMISSION_DENIED as E_PERMISSION_DENIED,
)
from jobd_client.protocol import (
    E_QUEUE_FULL as E_QUEUE_FULL,
)
from jobd_client.protocol import (
    E_REQUEST_TOO_LARGE as E_REQUEST_TOO_LARGE,
)
from jobd_client.protocol import (
    E_STORAGE_ERROR as E_STORAGE_ERROR,
)
from jobd_client.protocol import (
    E_UNAVAILABLE as E_UNAVAILABLE,
)
from jobd_client.protocol import (
    E_UNKNOWN_HANDLER as E_UNKNOWN_HANDLER,
)
from jobd_client.protocol import (
    E_UNKNOWN_OP as E_UNKNOWN_OP,
)
from jobd_client.protocol import (
    ERROR_CODES as ERROR_CODES,
)
from jobd_client.protocol import EV_ALERT_FIRING as EV_ALERT_FIRING
from jobd_client.protocol import EV_ALERT_RESOLVED as EV_ALERT_RESOLVED
from jobd_client.protocol import (
    EV_BREAKER_CLOSED as EV_BREAKER_CLOSED,
)
from jobd_client.protocol import (
    EV_BREAKER_HALF_OPEN as EV_BREAKER_HALF_OPEN,
)
from jobd_client.protocol import (
    EV_BREAKER_OPENED as EV_BREAKER_OPENED,
)
from jobd_client.protocol import (
    EV_CANCELLED as EV_CANCELLED,
)
from jobd_client.protocol import (
    EV_COMPLETED as EV_COMPLETED,
)
from jobd_client.protocol import (
    EV_DEAD_LETTER as EV_DEAD_LETTER,
)
from jobd_client.protocol import (
    EV_FAILED as EV_FAILED,
)
from jobd_client.protocol import (
    EV_PROGRESS as EV_PROGRESS,
)
from jobd_client.protocol import (
    EV_QUARANTINED as EV_QUARANTINED,
)
from jobd_client.protocol import (
    EV_RELEASED as EV_RELEASED,
)
from jobd_client.protocol import (
    EV_REPLAYED as EV_REPLAYED,
)
from jobd_client.protocol import (
    EV_STARTED as EV_STARTED,
)
from jobd_client.protocol import (
    EV_SUBMITTED as EV_SUBMITTED,
)
from jobd_client.protocol import (
    EV_WATCH_LAGGED as EV_WATCH_LAGGED,
)
from jobd_client.protocol import (
    EV_WORKER_EXITED as EV_WORKER_EXITED,
)
from jobd_client.protocol import (
    EV_WORKER_STARTED as EV_WORKER_STARTED,
)
from jobd_client.protocol import (
    EVENTS as EVENTS,
)
from jobd_client.protocol import (
    FAILED as FAILED,
)
from jobd_client.protocol import FAILURE_DEPENDENCY as FAILURE_DEPENDENCY
from jobd_client.protocol import FAILURE_GROUP_STATUSES as FAILURE_GROUP_STATUSES
from jobd_client.protocol import FAILURE_NOT_SERIALISABLE as FAILURE_NOT_SERIALISABLE
from jobd_client.protocol import FAILURE_POISON as FAILURE_POISON
from jobd_client.protocol import FAILURE_RETRY as FAILURE_RETRY
from jobd_client.protocol import FAILURE_TIMEOUT as FAILURE_TIMEOUT
from jobd_client.protocol import FAILURE_UNKNOWN as FAILURE_UNKNOWN
from jobd_client.protocol import FAILURE_WORKER_DIED as FAILURE_WORKER_DIED
from jobd_client.protocol import FAILURE_WORKER_HUNG as FAILURE_WORKER_HUNG
from jobd_client.protocol import H_BREAKER_OPEN as H_BREAKER_OPEN
from jobd_client.protocol import H_HANDLER_PAUSED as H_HANDLER_PAUSED
from jobd_client.protocol import H_QUARANTINED as H_QUARANTINED
from jobd_client.protocol import H_QUEUE_PAUSED as H_QUEUE_PAUSED
from jobd_client.protocol import H_RATE_LIMITED as H_RATE_LIMITED
from jobd_client.protocol import HOLD_REASONS as HOLD_REASONS
from jobd_client.protocol import (
    OPS as OPS,
)
from jobd_client.protocol import (
    PENDING as PENDING,
)
from jobd_client.protocol import (
    PRIORITY_MAX as PRIORITY_MAX,
)
from jobd_client.protocol import (
    PRIORITY_MIN as PRIORITY_MIN,
)
from jobd_client.protocol import (
    PRIORITY_NAMES as PRIORITY_NAMES,
)
from jobd_client.protocol import (
    PROTOCOL_VERSION as PROTOCOL_VERSION,
)
from jobd_client.protocol import (
    QUEUED as QUEUED,
)
from jobd_client.protocol import (
    RETRYING as RETRYING,
)
from jobd_client.protocol import (
    RUNNING as RUNNING,
)
from jobd_client.protocol import (
    SCHEDULED as SCHEDULED,
)
from jobd_client.protocol import (
    STATUSES as STATUSES,
)
from jobd_client.protocol import (
    TERMINAL as TERMINAL,
)
from jobd_client.protocol import (
    UNSUCCESSFUL as UNSUCCESSFUL,
)
from jobd_client.protocol import (
    W_BUSY as W_BUSY,
)
from jobd_client.protocol import (
    W_IDLE as W_IDLE,
)
from jobd_client.protocol import (
    W_STOPPING as W_STOPPING,
)
from jobd_client.protocol import (
    WAITING as WAITING,
)

# --- worker states the daemon keeps to itself (shown as idle) ------------------------
W_STARTING: Final = "starting"

# --- process exit codes ----------------------------------------------------------
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 78          # EX_CONFIG from sysexits.h

# CLI exit codes (docs/cli.md).
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

# --- unique jobs (docs/flow-control.md) -------------------------------------------
# What a submit does when a live job already holds its unique_key.
ON_CONFLICT_RETURN: Final = "return"     # answer the holder (duplicate: true)
ON_CONFLICT_ERROR: Final = "error"       # `conflict`
ON_CONFLICT_REPLACE: Final = "replace"   # cancel a holder that is not running; queue this one
ON_CONFLICT: Final = (ON_CONFLICT_RETURN, ON_CONFLICT_ERROR, ON_CONFLICT_REPLACE)

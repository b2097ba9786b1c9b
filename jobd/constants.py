"""Every name jobd shares with the outside world, in one place.

Statuses, error codes, event names, priorities, exit codes and protocol
constants are defined here and nowhere else (SPEC §4, §5).
"""
from __future__ import annotations

from typing import Final

PROTOCOL_VERSION: Final = 1

# --- job statuses (SPEC §4) ---------------------------------------------
SCHEDULED: Final = "scheduled"
WAITING: Final = "waiting"
PENDING: Final = "pending"
RUNNING: Final = "running"
RETRYING: Final = "retrying"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
DEAD_LETTER: Final = "dead_letter"

STATUSES: Final = (
    SCHEDULED, WAITING, PENDING, RUNNING, RETRYING,
    COMPLETED, FAILED, CANCELLED, DEAD_LETTER,
)
TERMINAL: Final = frozenset((COMPLETED, FAILED, CANCELLED, DEAD_LETTER))
# Statuses that count against queue.max_size (everything not running or done).
QUEUED: Final = frozenset((SCHEDULED, WAITING, PENDING, RETRYING))
# A dependency that ends in one of these fails its dependents.
UNSUCCESSFUL: Final = frozenset((FAILED, CANCELLED, DEAD_LETTER))

# --- priorities ------------------------------------------------------------
PRIORITY_NAMES: Final = {"low": 0, "normal": 10, "high": 20, "critical": 30}
PRIORITY_MIN: Final = 0
PRIORITY_MAX: Final = 1000
DEFAULT_PRIORITY: Final = PRIORITY_NAMES["normal"]

# --- protocol error codes (SPEC §5) -----------------------------------------
E_BAD_REQUEST: Final = "bad_request"
E_UNKNOWN_OP: Final = "unknown_op"
E_INVALID_ARGUMENT: Final = "invalid_argument"
E_UNKNOWN_HANDLER: Final = "unknown_handler"
E_NOT_FOUND: Final = "not_found"
E_CONFLICT: Final = "conflict"
E_QUEUE_FULL: Final = "queue_full"
E_REQUEST_TOO_LARGE: Final = "request_too_large"
E_UNAVAILABLE: Final = "unavailable"
E_STORAGE_ERROR: Final = "storage_error"
E_PERMISSION_DENIED: Final = "permission_denied"
E_INTERNAL: Final = "internal"

# --- events (SPEC §5) ---------------------------------------------------------
EV_SUBMITTED: Final = "job.submitted"
EV_STARTED: Final = "job.started"
EV_PROGRESS: Final = "job.progress"
EV_COMPLETED: Final = "job.completed"
EV_FAILED: Final = "job.failed"
EV_DEAD_LETTER: Final = "job.dead_letter"
EV_CANCELLED: Final = "job.cancelled"
EV_WORKER_STARTED: Final = "worker.started"
EV_WORKER_EXITED: Final = "worker.exited"
# Sent to a watcher that fell too far behind, just before it is disconnected.
EV_WATCH_LAGGED: Final = "watch.lagged"
EVENTS: Final = frozenset((
    EV_SUBMITTED, EV_STARTED, EV_PROGRESS, EV_COMPLETED, EV_FAILED,
    EV_DEAD_LETTER, EV_CANCELLED, EV_WORKER_STARTED, EV_WORKER_EXITED,
))

# --- worker states -------------------------------------------------------------
W_IDLE: Final = "idle"
W_BUSY: Final = "busy"
W_STOPPING: Final = "stopping"
W_STARTING: Final = "starting"

# --- process exit codes ----------------------------------------------------------
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 78          # EX_CONFIG from sysexits.h
# A worker whose handler modules fail to import exits with this; the pool
# stops respawning instead of fork-looping.
EXIT_WORKER_BOOT_ERROR: Final = 70

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

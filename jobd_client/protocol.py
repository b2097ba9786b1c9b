"""The wire names of jobd's protocol, in one place (docs/protocol.md).

Op names, job statuses, priorities, error codes, event names and the protocol
version are defined here and nowhere else: the client uses them, and the
daemon imports them (`jobd.constants` re-exports them beside its own). Pure
data; the client package never imports `jobd`.
"""
from __future__ import annotations

from typing import Final

PROTOCOL_VERSION: Final = 1

# --- ops ------------------------------------------------------------------------------
OP_HELLO: Final = "hello"
OP_SUBMIT: Final = "submit"
OP_SUBMIT_MANY: Final = "submit_many"
OP_STATUS: Final = "status"
OP_PROGRESS: Final = "progress"
OP_RESULT: Final = "result"
OP_WAIT: Final = "wait"
OP_CANCEL: Final = "cancel"
OP_LIST: Final = "list"
OP_DEAD_LETTERS: Final = "dead_letters"
OP_RETRY: Final = "retry"
OP_PURGE: Final = "purge"
OP_METRICS: Final = "metrics"
OP_WORKERS: Final = "workers"
OP_SCALE: Final = "scale"
OP_RESTART_WORKER: Final = "restart_worker"
OP_WATCH: Final = "watch"
OP_SCHEDULE_ADD: Final = "schedule_add"
OP_SCHEDULE_LIST: Final = "schedule_list"
OP_SCHEDULE_REMOVE: Final = "schedule_remove"
OP_LOGS: Final = "logs"
OP_RELOAD: Final = "reload"
OP_HANDLERS: Final = "handlers"
OP_PAUSE: Final = "pause"
OP_RESUME: Final = "resume"
OP_QUEUES: Final = "queues"
OP_CANCEL_MANY: Final = "cancel_many"
OP_RETRY_MANY: Final = "retry_many"
OP_REPLAY: Final = "replay"
OP_BREAKER_RESET: Final = "breaker_reset"
OP_QUARANTINE: Final = "quarantine"
OP_RELEASE: Final = "release"
OP_ALERTS: Final = "alerts"
OP_ALERT_TEST: Final = "alert_test"
OP_FAILURE_GROUPS: Final = "failure_groups"
OPS: Final = frozenset((
    OP_HELLO, OP_SUBMIT, OP_SUBMIT_MANY, OP_STATUS, OP_PROGRESS, OP_RESULT, OP_WAIT,
    OP_CANCEL, OP_LIST, OP_DEAD_LETTERS, OP_RETRY, OP_PURGE, OP_METRICS, OP_WORKERS,
    OP_SCALE, OP_RESTART_WORKER, OP_WATCH, OP_SCHEDULE_ADD, OP_SCHEDULE_LIST,
    OP_SCHEDULE_REMOVE, OP_LOGS, OP_RELOAD, OP_HANDLERS, OP_PAUSE, OP_RESUME, OP_QUEUES,
    OP_CANCEL_MANY, OP_RETRY_MANY, OP_REPLAY, OP_BREAKER_RESET, OP_QUARANTINE, OP_RELEASE,
    OP_ALERTS, OP_ALERT_TEST, OP_FAILURE_GROUPS,
))

# --- job statuses -----------------------------------------------------------------------
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

# --- priorities ---------------------------------------------------------------------------
PRIORITY_NAMES: Final = {"low": 0, "normal": 10, "high": 20, "critical": 30}
PRIORITY_MIN: Final = 0
PRIORITY_MAX: Final = 1000
DEFAULT_PRIORITY: Final = PRIORITY_NAMES["normal"]

# --- error codes ---------------------------------------------------------------------------
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
ERROR_CODES: Final = frozenset((
    E_BAD_REQUEST, E_UNKNOWN_OP, E_INVALID_ARGUMENT, E_UNKNOWN_HANDLER, E_NOT_FOUND,
    E_CONFLICT, E_QUEUE_FULL, E_REQUEST_TOO_LARGE, E_UNAVAILABLE, E_STORAGE_ERROR,
    E_PERMISSION_DENIED, E_INTERNAL,
))

# --- events ----------------------------------------------------------------------------------
EV_SUBMITTED: Final = "job.submitted"
EV_STARTED: Final = "job.started"
EV_PROGRESS: Final = "job.progress"
EV_COMPLETED: Final = "job.completed"
EV_FAILED: Final = "job.failed"
EV_DEAD_LETTER: Final = "job.dead_letter"
EV_CANCELLED: Final = "job.cancelled"
EV_WORKER_STARTED: Final = "worker.started"
EV_WORKER_EXITED: Final = "worker.exited"
EV_REPLAYED: Final = "job.replayed"
EV_QUEUE_PAUSED: Final = "queue.paused"
EV_QUEUE_RESUMED: Final = "queue.resumed"
EV_HANDLER_PAUSED: Final = "handler.paused"
EV_HANDLER_RESUMED: Final = "handler.resumed"
EV_BREAKER_OPENED: Final = "handler.breaker_opened"
EV_BREAKER_HALF_OPEN: Final = "handler.breaker_half_open"
EV_BREAKER_CLOSED: Final = "handler.breaker_closed"
EV_QUARANTINED: Final = "handler.quarantined"
EV_RELEASED: Final = "handler.released"
EV_ALERT_FIRING: Final = "alert.firing"
EV_ALERT_RESOLVED: Final = "alert.resolved"
# Sent to a watcher that fell too far behind, just before it is disconnected.
EV_WATCH_LAGGED: Final = "watch.lagged"
EVENTS: Final = frozenset((
    EV_SUBMITTED, EV_STARTED, EV_PROGRESS, EV_COMPLETED, EV_FAILED,
    EV_DEAD_LETTER, EV_CANCELLED, EV_WORKER_STARTED, EV_WORKER_EXITED, EV_REPLAYED,
    EV_QUEUE_PAUSED, EV_QUEUE_RESUMED, EV_HANDLER_PAUSED, EV_HANDLER_RESUMED,
    EV_BREAKER_OPENED, EV_BREAKER_HALF_OPEN, EV_BREAKER_CLOSED, EV_QUARANTINED, EV_RELEASED,
    EV_ALERT_FIRING, EV_ALERT_RESOLVED,
))

# --- queues and holds ------------------------------------------------------------------------
DEFAULT_QUEUE: Final = "default"          # always exists; its pool is [workers] count
# Why a pending job may not start (`held.reason`), most important first.
H_QUARANTINED: Final = "quarantined"
H_HANDLER_PAUSED: Final = "handler_paused"
H_QUEUE_PAUSED: Final = "queue_paused"
H_BREAKER_OPEN: Final = "breaker_open"
H_RATE_LIMITED: Final = "rate_limited"
HOLD_REASONS: Final = (H_QUARANTINED, H_HANDLER_PAUSED, H_QUEUE_PAUSED, H_BREAKER_OPEN,
                       H_RATE_LIMITED)

# --- unique jobs: what a submit does when a live job holds its unique_key -------------------
ON_CONFLICT_RETURN: Final = "return"      # answer the holder's job_id with duplicate: true
ON_CONFLICT_ERROR: Final = "error"        # answer conflict
ON_CONFLICT_REPLACE: Final = "replace"    # cancel a holder that has not started; queue the new job
ON_CONFLICT: Final = (ON_CONFLICT_RETURN, ON_CONFLICT_ERROR, ON_CONFLICT_REPLACE)

# --- failure groups: `error_type` of the failures jobd writes itself --------------------------
# (an exception's failure has its class name, e.g. "ValueError")
FAILURE_TIMEOUT: Final = "Timeout"                  # the attempt ran past its timeout
FAILURE_WORKER_DIED: Final = "WorkerDied"           # its worker died (a signal, an exit)
FAILURE_WORKER_HUNG: Final = "WorkerHung"           # its worker stopped sending heartbeats
FAILURE_POISON: Final = "Poison"                    # it killed its worker poison_after times
FAILURE_DEPENDENCY: Final = "DependencyFailed"      # a job it depends on ended unsuccessfully
FAILURE_NOT_SERIALISABLE: Final = "NotSerialisable"  # its result is not JSON
FAILURE_RETRY: Final = "Retry"                      # Retry(after) with no retries left
FAILURE_UNKNOWN: Final = "Error"                    # any other error text
# The statuses whose jobs `failure_groups` groups (the first is its default).
FAILURE_GROUP_STATUSES: Final = (DEAD_LETTER, FAILED)

# --- worker states (the `workers` view) ------------------------------------------------------
W_IDLE: Final = "idle"
W_BUSY: Final = "busy"
W_STOPPING: Final = "stopping"

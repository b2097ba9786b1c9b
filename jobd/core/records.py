"""State records: every change a restart must know, as a JSON array whose
first item is its tag (pure).

One function per state change builds its record; `Lifecycle.apply`
(jobd/core/lifecycle.py) is the only place that interprets them, for live
changes and replay alike, so a restart rebuilds exactly the state the live
daemon had. The log's own framing records (a file's format, a snapshot's
end) belong to the log (jobd/storage/wal.py). See docs/wal.md.
"""
from __future__ import annotations

from typing import Any, Final

SUBMIT: Final = "S"        # ["S", job_record]          also used by snapshots
START: Final = "B"         # ["B", id, ts, worker_id]
PROGRESS: Final = "P"      # ["P", id, progress]
COMPLETE: Final = "C"      # ["C", id, ts, result, result_ref]
FAIL: Final = "F"          # ["F", id, ts, error, next_status, due, crashed?]  (crashed: 1 when
                           #   the job killed its worker; left off otherwise)
CANCEL: Final = "X"        # ["X", id, ts]
CANCEL_REQUEST: Final = "K"  # ["K", id]
REQUEUE: Final = "Q"       # ["Q", id, uncount_attempt]
RETRY: Final = "R"         # ["R", id, ts]
DELETE: Final = "D"        # ["D", [ids]]
SCHEDULE_ADD: Final = "SA"   # ["SA", schedule]
SCHEDULE_REMOVE: Final = "SR"  # ["SR", name]
SCHEDULE_FIRED: Final = "ST"   # ["ST", name, due, job_id, ran_at]  (older: no ran_at)
PAUSE: Final = "PA"         # ["PA", "queue"|"handler", name, since, until, reason, by_uid]
RESUME: Final = "PR"        # ["PR", "queue"|"handler", name, ts]
RATE_HOLD: Final = "RH"     # ["RH", handler, since, until]   RateLimited(after) from a job
LIMITER: Final = "RL"       # ["RL", "queue"|"handler", name, tat]   snapshot: a rate limiter's state
SNOOZE: Final = "Z"         # ["Z", id, ts, due]   Snooze(after): scheduled again, attempt not counted
BREAKER_OPEN: Final = "BO"   # ["BO", handler, ts, cooldown, failures, rate, last_error]
BREAKER_CLOSE: Final = "BC"  # ["BC", handler, ts, why]   (a trial succeeded, breaker_reset, release)
BREAKER_STATE: Final = "BS"  # ["BS", handler, state, opened_at, until, cooldown, [trips], streak]  snapshot
QUARANTINE: Final = "QU"     # ["QU", handler, ts, reason, by_uid]
RELEASE: Final = "QR"        # ["QR", handler, ts]
CRASHES: Final = "XC"        # ["XC", id, n]   snapshot: times a live job killed its worker
SEQ: Final = "N"           # ["N", next_seq]   snapshot header
JOBS: Final = "J"          # ["J", [job_record, ...]]   snapshot body, in chunks
SNAPSHOT_CHUNK: Final = 1000


def start(job_id: str, ts: float, worker_id: int) -> list[Any]:
    return [START, job_id, ts, worker_id]


def complete(job_id: str, ts: float, result: Any, ref: Any) -> list[Any]:
    return [COMPLETE, job_id, ts, result, ref]


def fail(job_id: str, ts: float, error: str, next_status: str, due: float | None,
         crashed: bool = False) -> list[Any]:
    if crashed:
        return [FAIL, job_id, ts, error, next_status, due, 1]
    return [FAIL, job_id, ts, error, next_status, due]



def pause(kind: str, name: str, since: float, until: float | None, reason: str | None,
          by_uid: int | None) -> list[Any]:
    return [PAUSE, kind, name, since, until, reason, by_uid]


def resume(kind: str, name: str, ts: float) -> list[Any]:
    return [RESUME, kind, name, ts]

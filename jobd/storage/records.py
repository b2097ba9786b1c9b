"""WAL record types. Each record is a JSON array whose first item is its tag.

One function per state change builds its record; `State.apply` is the only
place that interprets them, for live changes and replay alike, so a restart
rebuilds exactly the state the live daemon had. See docs/wal.md.
"""
from __future__ import annotations

from typing import Any, Final

from jobd.storage.codec import CorruptLog

SUBMIT: Final = "S"        # ["S", job_record]          also used by snapshots
START: Final = "B"         # ["B", id, ts, worker_id]
PROGRESS: Final = "P"      # ["P", id, progress]
COMPLETE: Final = "C"      # ["C", id, ts, result, result_ref]
FAIL: Final = "F"          # ["F", id, ts, error, next_status, due]
CANCEL: Final = "X"        # ["X", id, ts]
CANCEL_REQUEST: Final = "K"  # ["K", id]
REQUEUE: Final = "Q"       # ["Q", id, uncount_attempt]
RETRY: Final = "R"         # ["R", id, ts]
DELETE: Final = "D"        # ["D", [ids]]
SCHEDULE_ADD: Final = "SA"   # ["SA", schedule]
SCHEDULE_REMOVE: Final = "SR"  # ["SR", name]
SCHEDULE_FIRED: Final = "ST"   # ["ST", name, due, job_id, ran_at]  (older: no ran_at)
SEQ: Final = "N"           # ["N", next_seq]   snapshot header
JOBS: Final = "J"          # ["J", [job_record, ...]]   snapshot body, in chunks
FORMAT: Final = "V"        # ["V", format]   first record of every segment and snapshot
SNAPSHOT_END: Final = "E"  # ["E", records_before]   a snapshot's last record: it is whole
WAL_FORMAT: Final = 2      # 2: files begin with V, snapshots end with E; 1: neither
SNAPSHOT_CHUNK: Final = 1000


def start(job_id: str, ts: float, worker_id: int) -> list[Any]:
    return [START, job_id, ts, worker_id]


def complete(job_id: str, ts: float, result: Any, ref: Any) -> list[Any]:
    return [COMPLETE, job_id, ts, result, ref]


def fail(job_id: str, ts: float, error: str, next_status: str, due: float | None) -> list[Any]:
    return [FAIL, job_id, ts, error, next_status, due]


def check_format(version: Any, where: str) -> None:
    """A file written by a newer jobd is not read (it may hold records this
    one would misread); older formats are."""
    if not isinstance(version, int) or version > WAL_FORMAT:
        raise CorruptLog(f"{where} has WAL format {version!r}; this jobd reads formats "
                         f"up to {WAL_FORMAT} (written by a newer jobd?)")

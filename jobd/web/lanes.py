"""Recent jobs per worker, for the dashboard's lane view, kept from the shared
event stream (no call to the daemon): `job.started` says which worker took
a job; its outcome event closes the entry. Bounded: the last `per_worker`
jobs of each worker, and at most `max_running` jobs seen started and not ended.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from jobd_client import protocol as P

PER_WORKER = 20
MAX_RUNNING = 10_000
MAX_WORKERS = 1024
OUTCOMES = {P.EV_COMPLETED: P.COMPLETED, P.EV_FAILED: P.FAILED,
            P.EV_CANCELLED: P.CANCELLED, P.EV_DEAD_LETTER: P.DEAD_LETTER}


class Lanes:
    def __init__(self, per_worker: int = PER_WORKER, max_running: int = MAX_RUNNING) -> None:
        self.per_worker = per_worker
        self.max_running = max_running
        self.running: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.done: dict[str, deque[dict[str, Any]]] = {}

    def on_event(self, name: str, data: dict[str, Any]) -> None:
        job_id = data.get("job_id")
        if not isinstance(job_id, str):
            return
        if name == P.EV_STARTED:
            self.started(job_id, data)
        elif name in OUTCOMES:
            self.ended(job_id, OUTCOMES[name], data)

    def started(self, job_id: str, data: dict[str, Any]) -> None:
        self.running[job_id] = {"job_id": job_id, "worker_id": data.get("worker_id"),
                                "attempt": data.get("attempt"), "started_at": data.get("timestamp"),
                                "status": P.RUNNING}
        self.running.move_to_end(job_id)
        while len(self.running) > self.max_running:
            self.running.popitem(last=False)

    def ended(self, job_id: str, status: str, data: dict[str, Any]) -> None:
        entry = self.running.pop(job_id, None)
        if entry is None:           # never started (cancelled while pending), or seen before
            return
        if status == P.FAILED and data.get("will_retry"):
            status = P.RETRYING
        entry.update(status=status, ended_at=data.get("timestamp"), duration=data.get("duration"),
                     error=data.get("error"))
        lane = self.done.get(str(entry["worker_id"]))
        if lane is None:
            if len(self.done) >= MAX_WORKERS:
                self.done.pop(next(iter(self.done)))
            lane = self.done[str(entry["worker_id"])] = deque(maxlen=self.per_worker)
        lane.append(entry)

    def view(self) -> dict[str, list[dict[str, Any]]]:
        """Per worker id: its recent jobs, oldest first, then the one it runs now."""
        out: dict[str, list[dict[str, Any]]] = {w: list(lane) for w, lane in self.done.items()}
        for entry in self.running.values():
            out.setdefault(str(entry["worker_id"]), []).append(dict(entry))
        for worker, entries in out.items():
            out[worker] = entries[-self.per_worker:]
        return out

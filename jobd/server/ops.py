"""The op table: one small function per protocol op (docs/protocol.md).

Each op takes (connection, request id, request) and returns
`(reply dict, journal seq)`; the server sends the reply once that seq is
durable (0: at once). Ops that answer later return `DEFERRED`.

The edge of the daemon: ops hold a bag of services (`Services`), like
gunicorn's control handlers, and translate requests into calls on them.
"""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from jobd import __version__
from jobd import constants as C
from jobd.alerts.service import AlertService
from jobd.bulk import CANCEL, PURGE, RETRY, Bulk
from jobd.control import HANDLER, QUEUE, Control
from jobd.core.failures import signature_of
from jobd.core.filters import Filter
from jobd.core.job import Job, iso
from jobd.core.values import get_bool, get_int, get_number, get_str
from jobd.errors import OpError, invalid
from jobd.jobs import Jobs
from jobd.pool.arbiter import Arbiter
from jobd.runtime import metrics
from jobd.runtime.classify import Classifier
from jobd.runtime.metrics import Recorder, Sources
from jobd.scheduling.scheduler import Scheduler
from jobd.scheduling.specs import get_name, parse_schedule, require_handler
from jobd.server.args import (
    get_job_id,
    is_plain,
    parse_failure_groups,
    parse_filter,
    parse_list_filter,
    parse_plain,
    parse_replay,
    parse_submit,
)
from jobd.server.connection import DEFERRED, NL, Connection
from jobd.server.events import EventHub
from jobd.storage.logs import MAX_READ
from jobd.storage.results import ResultStore
from jobd.storage.store import Store

Reply = tuple[Any, int]
T = TypeVar("T")
MAX_BATCH = 100_000
MAX_WAIT = 24 * 3600.0


@dataclass(frozen=True)
class Services:
    """What the ops work with (built by the daemon once every part exists)."""

    jobs: Jobs
    control: Control
    bulk: Bulk
    store: Store
    arbiter: Arbiter
    scheduler: Scheduler
    events: EventHub
    recorder: Recorder
    sources: Sources
    results: ResultStore
    reload: Callable[[], Awaitable[dict[str, Any]]]    # new handler code (jobd/daemon.py)
    loop: asyncio.AbstractEventLoop
    clock: Callable[[], float]
    alerts: AlertService
    classifier: Classifier       # failed jobs replay left ungrouped (jobd/runtime/classify.py)


class Ops:
    def __init__(self, services: Services) -> None:
        self.s = services
        self.table: dict[str, Callable[[Connection, Any, dict[str, Any]], Reply]] = {
            name[3:]: getattr(self, name) for name in dir(self) if name.startswith("op_")
        }

    # --- basics -------------------------------------------------------------------------
    def op_hello(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        return {"version": __version__, "protocol": C.PROTOCOL_VERSION,
                "handlers": sorted(self.s.jobs.handlers)}, 0

    def op_submit(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        if is_plain(req):
            job, seq = self.s.jobs.submit_plain(*parse_plain(req))
        else:
            spec = parse_submit(req, self.s.clock())
            job, seq = self.s.jobs.submit(spec)
            if spec.duplicate:
                return {"job_id": job.id, "status": job.status, "duplicate": True}, seq
        return {"job_id": job.id, "status": job.status}, seq

    def op_submit_many(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        jobs = req.get("jobs")
        if not isinstance(jobs, list) or not jobs or len(jobs) > MAX_BATCH:
            raise invalid("jobs", f"must be a non-empty list of at most {MAX_BATCH} submits")
        if all(type(item) is dict and is_plain(item) for item in jobs):
            plain = [_item(i, parse_plain, item) for i, item in enumerate(jobs)]
            ids, seq = self.s.jobs.submit_many_plain(plain)
        else:
            now = self.s.clock()
            specs = [_item(i, parse_submit, item, now) for i, item in enumerate(jobs)]
            ids, seq = self.s.jobs.submit_many(specs)
        return {"job_ids": ids}, seq

    # Replies about a job wait until its submit is durable (`wal_seq`): no
    # client learns of a job, or of its outcome, that a crash could still erase.
    def op_status(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        job = self.s.jobs.get(get_job_id(req))
        return {"job": self.view(job)}, job.wal_seq

    def view(self, job: Job) -> dict[str, Any]:
        return job.view(self.s.control.held(job) if job.status == C.PENDING else None,
                        signature_of(job))

    def op_progress(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        job = self.s.jobs.get(get_job_id(req))
        return {"progress": job.progress}, job.wal_seq

    # --- results --------------------------------------------------------------------------
    def result_fields(self, job: Job) -> dict[str, Any]:
        done = job.status == C.COMPLETED
        return {"job_id": job.id, "status": job.status,
                "result": self.s.results.load(job) if done else None,
                "error": job.error, "attempts": job.attempts,
                "duration": job.duration() if job.terminal else None,
                "completed_at": iso(job.completed_at) if job.terminal else None}

    def op_result(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        job = self.s.jobs.get(get_job_id(req))
        wait = get_number(req, "wait", None)
        if job.terminal or not wait:
            return self.result_fields(job), job.wal_seq
        self._wait_for(conn, rid, job, min(wait, MAX_WAIT))
        return DEFERRED, 0

    op_wait = op_result

    def _wait_for(self, conn: Connection, rid: Any, job: Job, wait: float) -> None:
        """Answer when the job ends or the wait runs out, whichever is first."""
        jobs, loop = self.s.jobs, self.s.loop
        state: dict[str, Any] = {}

        def answer(j: Job) -> None:
            state["timer"].cancel()
            jobs.remove_waiter(j.id, answer)
            conn.cleanup.remove(drop)
            reply = self.result_fields(j)
            reply["id"], reply["ok"] = rid, True
            # The outcome is written to the WAL before this reply leaves (the
            # turn writes the WAL first) and fsynced lazily; the job's submit
            # must be durable (docs/durability.md).
            conn.send_late(orjson.dumps(reply) + NL, j.wal_seq)

        def drop() -> None:
            state["timer"].cancel()
            jobs.remove_waiter(job.id, answer)

        state["timer"] = loop.call_later(wait, answer, job)
        jobs.add_waiter(job.id, answer)
        conn.cleanup.append(drop)

    def op_logs(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        """A job's captured output from `offset` (docs/handlers.md, "Output")."""
        job = self.s.jobs.get(get_job_id(req))
        offset = get_int(req, "offset", 0, 0)
        logs = self.s.jobs.logs
        logs.flush()
        chunk = logs.read(job.id, offset)
        rest = logs.read(job.id, chunk.offset).text if chunk.text else ""
        return {"text": chunk.text, "offset": chunk.offset, "truncated": chunk.truncated,
                "complete": job.terminal and not rest and not (chunk.text and
                                                               len(chunk.text) >= MAX_READ)}, job.wal_seq

    def op_reload(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        """New handler code without downtime; answered once the new code is
        imported (or failed to import: the old code keeps serving)."""
        async def run() -> None:
            reply = await self.s.reload()
            conn.send_late(orjson.dumps({"id": rid, "ok": True, **reply}) + NL)
        asyncio.ensure_future(run())
        return DEFERRED, 0

    def op_handlers(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        """Every registered handler: its queue and state, its options, and how
        many of its jobs wait, run and are held."""
        out = []
        for name in sorted(self.s.jobs.handlers):
            out.append({"name": name, **self.s.control.handler_fields(name),
                        "options": self.s.jobs.handler_options(name)})
        return {"handlers": out}, 0

    # --- flow control (docs/flow-control.md) -------------------------------------------------
    def _target(self, req: dict[str, Any]) -> tuple[str, str]:
        """(kind, name) of a pause/resume: exactly one of `queue` and `handler`."""
        queue, handler = get_str(req, QUEUE), get_str(req, HANDLER)
        if (queue is None) == (handler is None):
            raise invalid("queue", "give exactly one of queue and handler")
        return (QUEUE, queue) if queue is not None else (HANDLER, handler)

    def op_pause(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        kind, name = self._target(req)
        for_s = get_number(req, "for", None, positive=True)
        reason = get_str(req, "reason", limit=1024)
        paused, seq = self.s.control.pause(kind, name, for_s, reason, conn.peer_uid())
        return {"paused": paused}, seq

    def op_resume(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        kind, name = self._target(req)
        resumed, seq = self.s.control.resume(kind, name)
        return {"resumed": resumed}, seq

    def op_breaker_reset(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        reset, seq = self.s.control.breaker_reset(_handler_name(req))
        return {"reset": reset}, seq

    def op_quarantine(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        name = _handler_name(req)
        if name not in self.s.jobs.handlers:
            raise OpError(C.E_NOT_FOUND, f"no handler registered as {name!r}")
        view, seq = self.s.control.quarantine(name, get_str(req, "reason", limit=1024),
                                              conn.peer_uid())
        return {"quarantined": True, "quarantine": view}, seq

    def op_release(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        released, seq = self.s.control.release(_handler_name(req))
        return {"released": released}, seq

    def op_queues(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        return {"queues": self.s.control.queue_views()}, 0

    # --- changes --------------------------------------------------------------------------
    def op_cancel(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        job = self.s.jobs.get(get_job_id(req))
        cancelled, seq = self.s.jobs.cancel(job, get_bool(req, "force", False), self.s.arbiter)
        return {"cancelled": cancelled, "status": job.status}, seq

    def op_retry(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        job = self.s.jobs.get(get_job_id(req))
        seq = self.s.jobs.retry(job)
        return {"job_id": job.id, "status": job.status}, seq

    # --- bulk (docs/flow-control.md) ------------------------------------------------------
    # A bulk op answers once its walk is done (many loop turns later, other
    # clients answered meanwhile), in its place in this connection's replies.
    def _bulk(self, conn: Connection, rid: Any, kind: str, flt: Filter | None,
              force: bool = False, dry_run: bool = False) -> Reply:
        place = conn.hold_place()

        def done(reply: dict[str, Any], seq: int) -> None:
            reply["id"], reply["ok"] = rid, True
            conn.fill_place(place, orjson.dumps(reply) + NL, seq)

        groups = self.s.store.table.failures
        self.s.bulk.start(kind, (flt or Filter()).with_groups(groups), done, force=force,
                          dry_run=dry_run)
        return DEFERRED, 0

    def op_cancel_many(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        flt = parse_filter(req)
        return self._bulk(conn, rid, CANCEL, flt, get_bool(req, "force", False),
                          get_bool(req, "dry_run", False))

    def op_retry_many(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        flt = parse_filter(req)
        return self._bulk(conn, rid, RETRY, flt, dry_run=get_bool(req, "dry_run", False))

    def op_purge(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        """`purge` with the bulk filter; with none, every finished job (as before)."""
        flt = parse_filter(req, purge=True)
        return self._bulk(conn, rid, PURGE, flt, dry_run=get_bool(req, "dry_run", False))

    def op_replay(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        job = self.s.jobs.get(get_job_id(req))
        new, seq = self.s.bulk.replay(job, parse_replay(req, self.s.clock()))
        self.s.events.publish(C.EV_REPLAYED, new.id, {"replay_of": job.id,
                                                      "handler": new.handler})
        return {"job_id": new.id, "status": new.status}, seq

    # --- listing --------------------------------------------------------------------------
    # `list` and `dead_letters` take every field of the bulk filter, and
    # answer a page of the matches in submit order with their `total`.
    def op_list(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        return self._page(parse_list_filter(req), req), 0

    def op_dead_letters(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        flt = parse_list_filter(req)
        statuses = flt.statuses
        only = frozenset((C.DEAD_LETTER,)) if statuses is None else statuses & {C.DEAD_LETTER}
        return self._page(dataclasses.replace(flt, statuses=only), req), 0

    def _page(self, flt: Filter, req: dict[str, Any]) -> dict[str, Any]:
        limit = get_int(req, "limit", 100, 0, 100_000)
        offset = get_int(req, "offset", 0, 0)
        flt = flt.with_groups(self.s.store.table.failures)
        jobs = self.s.store.scan()
        narrowed = flt.candidates(self.s.store.table.jobs)
        keep: Callable[[Job], bool] = flt.match
        if narrowed is not None:        # walk the table (submit order), testing a set first
            ids = {j.id for j in narrowed}
            if not ids:
                return {"jobs": [], "total": 0}

            def keep(j: Job) -> bool:
                return j.id in ids and flt.match(j)
        total = 0
        out = []
        for job in jobs:
            if keep(job):
                if offset <= total < offset + limit:
                    out.append(self.view(job))
                total += 1
        return {"jobs": out, "total": total}

    def op_failure_groups(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        """Failed or dead-letter jobs grouped by what went wrong, largest first:
        O(groups), kept by the job table (jobd/core/failures.py). Just after
        a restart, while the failed jobs replay left are still being grouped,
        it answers (in its place) once they are."""
        args = parse_failure_groups(req)
        failures = self.s.store.table.failures

        def answer() -> dict[str, Any]:
            groups, total = failures.summary(*args)
            return {"groups": groups, "total": total}
        if not failures.pending:
            return answer(), 0
        place = conn.hold_place()

        def done() -> None:
            conn.fill_place(place, orjson.dumps({**answer(), "id": rid, "ok": True}) + NL, 0)
        self.s.classifier.when_done(done)
        return DEFERRED, 0

    # --- operations -----------------------------------------------------------------------
    def op_metrics(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        fmt = req.get("format", "json")
        if fmt == "json":
            return {"metrics": metrics.snapshot(self.s.recorder, self.s.sources)}, 0
        if fmt == "prometheus":
            return {"text": metrics.prometheus(self.s.recorder, self.s.sources)}, 0
        raise invalid("format", "must be json or prometheus")

    def op_workers(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        return {"workers": self.s.arbiter.describe()}, 0

    def op_scale(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        count = req.get("count")
        if count is None:
            raise invalid("count", "required")
        count = get_int(req, "count", 0, 0, 1024)
        queue = get_str(req, "queue", C.DEFAULT_QUEUE)
        if queue not in self.s.store.ready.queues:
            raise OpError(C.E_NOT_FOUND, f"no queue named {queue!r}")
        previous = self.s.arbiter.scale(count, queue)
        return {"previous": previous, "target": count}, 0

    def op_restart_worker(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        wid = req.get("worker_id")
        if wid is None:
            raise invalid("worker_id", "required")
        return {"restarted": self.s.arbiter.restart(get_int(req, "worker_id", 0, 0))}, 0

    def op_watch(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        job_id = get_job_id(req, required=False)
        if job_id is not None and self.s.store.get(job_id) is None:
            raise OpError(C.E_NOT_FOUND, f"no job with id {job_id!r}")
        events = req.get("events")
        if events is not None:
            if not isinstance(events, list) or not all(e in C.EVENTS for e in events):
                raise invalid("events", f"must be a list of event names: {', '.join(sorted(C.EVENTS))}")
        self.s.events.subscribe(conn, rid, job_id, frozenset(events) if events else None)
        return {}, 0

    # --- cron schedules (docs/schedules.md) -------------------------------------------------
    # Adding and removing answer once the SA/SR record is durable, like a submit.
    def op_schedule_add(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        spec = parse_schedule(req, self.s.clock())
        require_handler(spec, self.s.jobs.handlers)
        schedule, seq = self.s.scheduler.add(spec, C.SCHEDULE_SOURCE_API)
        return {"schedule": schedule}, seq

    def op_schedule_list(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        return {"schedules": self.s.scheduler.views()}, 0

    def op_schedule_remove(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        removed, seq = self.s.scheduler.remove(get_name(req))
        return {"removed": removed}, seq

    # --- alerts (docs/alerts.md) -------------------------------------------------------------
    def op_alerts(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        """The firing alerts (rule, labels, annotations, since, last_sent) and
        when the rules were last evaluated."""
        return self.s.alerts.views(), 0

    def op_alert_test(self, conn: Connection, rid: Any, req: dict[str, Any]) -> Reply:
        """Send the `JobdTest` alert to every target; `queued` false when none is set."""
        return self.s.alerts.send_test(), 0


def _item(i: int, parse: Callable[..., T], *args: Any) -> T:
    """One job of a batch, parsed; an error names it (`jobs[3].handler: ...`)."""
    try:
        return parse(*args)
    except OpError as e:
        raise OpError(e.code, f"jobs[{i}].{e.message}") from None


def _handler_name(req: dict[str, Any]) -> str:
    name = get_str(req, HANDLER, limit=1024)
    if name is None:
        raise invalid(HANDLER, "required: a registered handler's name")
    return str(name)

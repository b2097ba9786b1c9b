"""The operator's endpoints: metrics, workers, queues, handlers, schedules,
alerts, dead letters and failure groups, and the dashboard's views kept by
this process (worker lanes, the overview's history)."""
from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from jobd.scheduling.cron import CronError, parse
from jobd.scheduling.runs import fire_job_id, past_fires
from jobd.web.errors import HTTPError, invalid, json_response
from jobd.web.jobs_api import DEFAULT_LIMIT, LIST_FILTERS, MAX_LIMIT, job_page, many_status
from jobd.web.params import int_param, json_body, page_params, str_params
from jobd.web.services import services
from jobd_client import protocol as P

NEXT_RUNS_S = 24 * 3600.0
MAX_NEXT_RUNS = 288              # a schedule firing every minute shows its next 288 runs
RECENT_RUNS = 20                 # the runs `last_runs` looks for: the last 20 fire times
OP_FAILURE_GROUPS = "failure_groups"


# --- metrics and workers -----------------------------------------------------------------

async def metrics(request: Request) -> Response:
    """`GET /api/jobs/metrics`: the daemon's metrics, with the queue's depth and size."""
    svc = services(request)
    m: dict[str, Any] = await svc.client.metrics()
    queue = dict(m.get("queue", {}))
    queue["size"] = svc.settings.max_size
    queue["depth"] = sum(queue.get(s, 0) for s in P.QUEUED)
    return json_response({**m, "queue": queue})


async def workers(request: Request) -> Response:
    return json_response({"workers": await services(request).client.workers()})


async def scale(request: Request) -> Response:
    """`POST /api/workers/scale` `{count, queue?}`."""
    body = await json_body(request)
    count = body.get("count")
    if not isinstance(count, int) or isinstance(count, bool):
        raise invalid("count", "must be an integer")
    reply = await services(request).client.scale(count, body.get("queue"))
    return json_response({"previous": reply.get("previous"), "target": reply.get("target"),
                          "queue": body.get("queue") or "default", "status": "scaling"})


async def restart_worker(request: Request) -> Response:
    text = request.path_params["id"]
    worker_id: Any = int(text) if text.isdigit() else text
    restarted = await services(request).client.restart_worker(worker_id)
    if not restarted:
        raise HTTPError(404, P.E_NOT_FOUND, f"no worker {text} to restart")
    return json_response({"restarted": True, "worker_id": worker_id})


async def lanes(request: Request) -> Response:
    """`GET /api/workers/lanes`: recent jobs per worker, from the shared event stream."""
    svc = services(request)
    svc.hub.start()
    svc.hub.lease_flow()            # the lanes are built from job events: follow them for a while
    return json_response({"lanes": svc.lanes.view(), "live": svc.hub.connected and svc.hub.flow_connected})


async def history(request: Request) -> Response:
    """`GET /api/overview/history`: a sample every 5 s over the last hour."""
    sampler = services(request).sampler
    return json_response({"interval_s": sampler.history_every, "samples": list(sampler.history),
                          "latest": sampler.latest})


# --- dead letters and failure groups ----------------------------------------------------------

async def dead_letters(request: Request) -> Response:
    """`GET /api/dead_letters`: dead-lettered jobs, filtered and paged like `/api/jobs`."""
    page, limit = page_params(request, DEFAULT_LIMIT, MAX_LIMIT)
    where = str_params(request, LIST_FILTERS)
    where["status"] = P.DEAD_LETTER
    return json_response(await job_page(services(request).client, where, page, limit))


async def failures(request: Request) -> Response:
    """`GET /api/failures`: failure groups (the daemon's `failure_groups`)."""
    where = str_params(request, ("status", "queue", "handler"))
    limit = int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    reply = await services(request).client.call(OP_FAILURE_GROUPS, **where, limit=limit)
    return json_response({"groups": reply.get("groups", [])})


# --- schedules ----------------------------------------------------------------------------------

async def schedules(request: Request) -> Response:
    """`GET /api/schedules`: each with its runs in the next 24 h, its last run's
    outcome and its recent runs (`last_runs`, oldest first, and `outcomes`)."""
    client = services(request).client
    items = await client.schedule_list()
    now = time.time()
    recent = {s["name"]: recent_run_ids(s, now) for s in items}
    wanted = [i for ids in recent.values() for i in ids]
    page = await client.list(ids=wanted, limit=len(wanted)) if wanted else None
    found = {str(j.id): str(j.status) for j in page.jobs} if page is not None else {}
    last_ids = [s.get("last_job_id") for s in items]
    views = await many_status(client, [i for i in last_ids if i])
    by_id = {v["id"]: v for v in views if v is not None}
    out = [with_runs(s, by_id.get(s.get("last_job_id") or ""), recent[s["name"]], found, now)
           for s in items]
    return json_response({"schedules": out})


def recent_run_ids(schedule: dict[str, Any], now: float) -> list[str]:
    """The job ids its last RECENT_RUNS fire times gave their runs (oldest first);
    a time it did not run at (jobd was down, the schedule is newer) finds no job."""
    try:
        cron = parse(schedule.get("cron", ""), schedule.get("timezone", "UTC"))
    except CronError:
        return []
    return [fire_job_id(schedule["name"], t) for t in past_fires(cron, now, RECENT_RUNS)]


def with_runs(schedule: dict[str, Any], last_job: dict[str, Any] | None, recent: list[str],
              found: dict[str, str], now: float) -> dict[str, Any]:
    out = dict(schedule)
    out["next_runs"] = next_runs(schedule.get("cron", ""), schedule.get("timezone", "UTC"), now)
    out["last_status"] = last_job.get("status") if last_job else None
    runs = [{"job_id": i, "status": found[i]} for i in recent if i in found]
    out["last_runs"] = runs
    outcomes: dict[str, int] = {}
    for run in runs:
        outcomes[run["status"]] = outcomes.get(run["status"], 0) + 1
    out["outcomes"] = outcomes
    return out


def next_runs(expr: str, timezone: str, now: float, span: float = NEXT_RUNS_S) -> list[str]:
    """ISO times of the fires in (now, now + span], at most MAX_NEXT_RUNS."""
    try:
        cron = parse(expr, timezone)
    except CronError:
        return []
    out: list[str] = []
    t = cron.next_fire(now)
    while t <= now + span and len(out) < MAX_NEXT_RUNS:
        out.append(iso(t))
        t = cron.next_fire(t)
    return out


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


async def add_schedule(request: Request) -> Response:
    """`POST /api/schedules`: the `schedule_add` fields (`name`, `cron`, `handler`, ...)."""
    body = await json_body(request)
    reply = await services(request).client.call(P.OP_SCHEDULE_ADD, **body)
    return json_response({"schedule": reply.get("schedule")})


async def remove_schedule(request: Request) -> Response:
    name = request.path_params["name"]
    if not await services(request).client.schedule_remove(name):
        raise HTTPError(404, P.E_NOT_FOUND, f"no schedule named {name!r}")
    return json_response({"removed": True, "name": name})


# --- queues, handlers, alerts ---------------------------------------------------------------------

async def queues(request: Request) -> Response:
    return json_response({"queues": await services(request).client.queues()})


async def handlers(request: Request) -> Response:
    return json_response({"handlers": await services(request).client.handlers()})


async def alerts(request: Request) -> Response:
    return json_response({"alerts": await services(request).client.alerts()})


async def pause_args(request: Request) -> dict[str, Any]:
    """The body of a pause: `for` (seconds, optional) and `reason` (optional)."""
    body = await json_body(request)
    extra = sorted(body.keys() - {"for", "reason"})
    if extra:
        raise invalid(extra[0], "a pause takes only `for` and `reason`")
    return body


async def pause_queue(request: Request) -> Response:
    return await _pause(request, "queue")


async def resume_queue(request: Request) -> Response:
    return await _resume(request, "queue")


async def pause_handler(request: Request) -> Response:
    return await _pause(request, "handler")


async def resume_handler(request: Request) -> Response:
    return await _resume(request, "handler")


async def _pause(request: Request, kind: str) -> Response:
    """`kind`: "queue" or "handler", the path's name is the one paused."""
    body = await pause_args(request)
    reply = await services(request).client.call(P.OP_PAUSE, **{kind: request.path_params["name"]}, **body)
    return json_response({"paused": reply.get("paused")})


async def _resume(request: Request, kind: str) -> Response:
    resumed = await services(request).client.resume(**{kind: request.path_params["name"]})
    return json_response({"resumed": resumed})


async def release_handler(request: Request) -> Response:
    released = await services(request).client.release(request.path_params["name"])
    return json_response({"released": released})


async def reset_handler(request: Request) -> Response:
    reset = await services(request).client.breaker_reset(request.path_params["name"])
    return json_response({"reset": reset})

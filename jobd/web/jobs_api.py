"""`/api/jobs...`: submit, look at, list, cancel, retry and replay jobs, and the
bulk ops over a filter. Each endpoint is one or two client calls."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from jobd.web.errors import invalid, json_response
from jobd.web.params import (
    FILTER_FIELDS,
    bool_param,
    float_param,
    json_body,
    page_params,
    str_params,
)
from jobd.web.services import Services, services
from jobd_client import protocol as P
from jobd_client.aio import AsyncClient
from jobd_client.errors import InvalidArgument, NotFound

MAX_WAIT_S = 60.0                 # the longest a `?wait=` long-poll is held
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
RESULT_FIELDS = ("job_id", "status", "result", "error", "attempts", "duration", "completed_at")
LIST_FILTERS = ("status", "queue", "handler", "tag", "error_match", "signature",
                "created_before", "created_after")


async def submit(request: Request) -> Response:
    """`POST /api/jobs/submit`: the submit fields; `Idempotency-Key` is the job id,
    so a repeated request returns the same job instead of a second one."""
    body = await json_body(request)
    key = request.headers.get("idempotency-key")
    body["job_id"] = key or body.get("job_id") or uuid.uuid4().hex
    reply = await services(request).client.call(P.OP_SUBMIT, **body)
    return json_response({k: v for k, v in reply.items() if k in ("job_id", "status", "duration",
                                                                    "duplicate")})


async def status(request: Request) -> Response:
    """`GET /api/jobs/{id}/status`: the job view; a completed job's result too."""
    return json_response(await job_view(services(request).client, request.path_params["id"]))


async def job_view(client: AsyncClient, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = (await client.call(P.OP_STATUS, job_id=job_id))["job"]
    if job.get("status") == P.COMPLETED and "result" not in job:
        job["result"] = (await client.result(job_id)).get("result")
    return job


async def result(request: Request) -> Response:
    """`GET /api/jobs/{id}/result[?wait=S]`: long-polls up to `wait` s (at most 60)."""
    wait = float_param(request, "wait", MAX_WAIT_S)
    reply = await services(request).client.result(request.path_params["id"], wait=wait)
    return json_response({k: reply.get(k) for k in RESULT_FIELDS})


async def list_jobs(request: Request) -> Response:
    """`GET /api/jobs`: one page of jobs matching the filters, `q` a search."""
    svc = services(request)
    page, limit = page_params(request, DEFAULT_LIMIT, MAX_LIMIT)
    where = str_params(request, LIST_FILTERS)
    search = request.query_params.get("q", "").strip()
    if search:
        found = await exact_job(svc.client, search)
        if found is not None:
            return json_response({"jobs": [found], "total": 1, "page": 1, "limit": limit})
        where.update(await search_filter(svc, search))
    return json_response(await job_page(svc.client, where, page, limit))


async def job_page(client: AsyncClient, where: dict[str, Any], page: int, limit: int) -> dict[str, Any]:
    reply = await client.call(P.OP_LIST, **where, limit=limit, offset=(page - 1) * limit)
    return {"jobs": reply.get("jobs", []), "total": reply.get("total", 0), "page": page,
            "limit": limit}


async def exact_job(client: AsyncClient, text: str) -> dict[str, Any] | None:
    """The job whose id is `text`, if there is one."""
    try:
        return await job_view(client, text)
    except (NotFound, InvalidArgument):       # no such job, or not even a job id
        return None


async def search_filter(svc: Services, text: str) -> dict[str, Any]:
    """What a search means when it is not a job id: `k=v` a tag, a registered
    handler's name that handler, anything else a substring of the error."""
    if "=" in text:
        return {"tag": text}
    names = (await svc.client.hello()).get("handlers", [])
    if text in names:
        return {"handler": text}
    return {"error_match": text}


async def cancel(request: Request) -> Response:
    """`POST /api/jobs/{id}/cancel[?force=1]`."""
    force = bool_param(request, "force") or bool((await json_body(request)).get("force"))
    reply = await services(request).client.call(P.OP_CANCEL, job_id=request.path_params["id"],
                                                force=force)
    return json_response({"cancelled": bool(reply.get("cancelled")), "status": reply.get("status")})


async def retry(request: Request) -> Response:
    """`POST /api/jobs/{id}/retry`: a dead-lettered, failed or cancelled job runs again."""
    job_id = request.path_params["id"]
    new_status = await services(request).client.retry(job_id)
    return json_response({"job_id": job_id, "status": new_status})


async def replay(request: Request) -> Response:
    """`POST /api/jobs/{id}/replay`: a new job from a terminal one (body: changes)."""
    body = await json_body(request)
    allowed = {"args", "kwargs", "priority", "queue", "delay"}
    extra = sorted(body.keys() - allowed)
    if extra:
        raise invalid(extra[0], f"replay takes only {', '.join(sorted(allowed))}")
    reply = await services(request).client.call(P.OP_REPLAY, job_id=request.path_params["id"], **body)
    return json_response({"job_id": reply.get("job_id"), "status": reply.get("status"),
                          "replay_of": request.path_params["id"]})


async def cancel_many(request: Request) -> Response:
    return await bulk(request, P.OP_CANCEL_MANY, ("force", "dry_run"))


async def retry_many(request: Request) -> Response:
    return await bulk(request, P.OP_RETRY_MANY, ("dry_run",))


async def purge(request: Request) -> Response:
    return await bulk(request, P.OP_PURGE, ("dry_run", "older_than"))


async def bulk(request: Request, op: str, options: tuple[str, ...]) -> Response:
    """A bulk op: the filter fields and `options` at the top level of the body."""
    body = await json_body(request)
    extra = sorted(body.keys() - set(FILTER_FIELDS) - set(options))
    if extra:
        raise invalid(extra[0], f"not a filter field ({', '.join(FILTER_FIELDS)}) "
                                f"nor an option ({', '.join(options)})")
    reply = await services(request).client.call(op, **body)
    return json_response(reply)


async def many_status(client: AsyncClient, job_ids: list[str]) -> list[dict[str, Any] | None]:
    """Job views for several ids, pipelined; None for a job that is gone."""
    async def one(job_id: str) -> dict[str, Any] | None:
        try:
            view: dict[str, Any] = (await client.call(P.OP_STATUS, job_id=job_id))["job"]
            return view
        except NotFound:
            return None
    return list(await asyncio.gather(*(one(i) for i in job_ids)))

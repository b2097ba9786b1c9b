"""The Starlette application of `jobd web`: routes, error answers, start and stop.

Every route is in ROUTES (method, path, endpoint); `openapi.json` describes
the same set, which a test keeps true both ways.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from jobd.web import admin_api as admin
from jobd.web import jobs_api as jobs
from jobd.web.errors import E_METHOD, E_ROUTE, E_TOO_LARGE, HTTPError, error_response, from_jobd_error
from jobd.web.guard import BodyTooLarge, Guard
from jobd.web.hub import FLOW, ROUTINE, EventHub
from jobd.web.lanes import Lanes
from jobd.web.sampler import Sampler
from jobd.web.services import Services, services
from jobd.web.settings import WebSettings
from jobd.web.sse import EventsEndpoint
from jobd_client import protocol as P
from jobd_client.aio import AsyncClient
from jobd_client.errors import JobdError

STATIC = Path(str(resources.files("jobd.web") / "static"))
OPENAPI = Path(str(resources.files("jobd.web") / "openapi.json"))

GET, POST, DELETE = "GET", "POST", "DELETE"
# (method, path, endpoint). Job ids may hold "/": `{id:path}` takes the id whole,
# and the action after it is a fixed suffix, so /api/jobs/a/b/status is job "a/b".
ROUTES: list[tuple[str, str, Any]] = [
    (POST, "/api/jobs/submit", jobs.submit),
    (GET, "/api/jobs/metrics", admin.metrics),
    (POST, "/api/jobs/cancel_many", jobs.cancel_many),
    (POST, "/api/jobs/retry_many", jobs.retry_many),
    (POST, "/api/jobs/purge", jobs.purge),
    (GET, "/api/jobs", jobs.list_jobs),
    (GET, "/api/jobs/{id:path}/status", jobs.status),
    (GET, "/api/jobs/{id:path}/result", jobs.result),
    (POST, "/api/jobs/{id:path}/cancel", jobs.cancel),
    (POST, "/api/jobs/{id:path}/retry", jobs.retry),
    (POST, "/api/jobs/{id:path}/replay", jobs.replay),
    (GET, "/api/dead_letters", admin.dead_letters),
    (GET, "/api/failures", admin.failures),
    (GET, "/api/workers", admin.workers),
    (POST, "/api/workers/scale", admin.scale),
    (GET, "/api/workers/lanes", admin.lanes),
    (POST, "/api/workers/{id}/restart", admin.restart_worker),
    (GET, "/api/overview/history", admin.history),
    (GET, "/api/schedules", admin.schedules),
    (POST, "/api/schedules", admin.add_schedule),
    (DELETE, "/api/schedules/{name}", admin.remove_schedule),
    (GET, "/api/queues", admin.queues),
    (POST, "/api/queues/{name}/pause", admin.pause_queue),
    (POST, "/api/queues/{name}/resume", admin.resume_queue),
    (GET, "/api/handlers", admin.handlers),
    (POST, "/api/handlers/{name}/pause", admin.pause_handler),
    (POST, "/api/handlers/{name}/resume", admin.resume_handler),
    (POST, "/api/handlers/{name}/release", admin.release_handler),
    (POST, "/api/handlers/{name}/reset", admin.reset_handler),
    (GET, "/api/alerts", admin.alerts),
    (GET, "/api/events", EventsEndpoint()),
]


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


async def openapi(request: Request) -> Response:
    return FileResponse(OPENAPI, media_type="application/json")


def api_routes() -> list[BaseRoute]:
    """ROUTES as Starlette routes; one route per path, with all its methods."""
    by_path: dict[str, dict[str, Any]] = {}
    for method, path, endpoint in ROUTES:
        by_path.setdefault(path, {})[method] = endpoint
    return [Route(path, dispatch(methods), methods=list(methods)) if len(methods) > 1
            else Route(path, next(iter(methods.values())), methods=list(methods))
            for path, methods in by_path.items()]


def dispatch(methods: dict[str, Any]) -> Any:
    async def endpoint(request: Request) -> Response:
        response: Response = await methods[request.method if request.method != "HEAD" else GET](request)
        return response
    return endpoint


def all_routes() -> list[BaseRoute]:
    return [Route("/", index, methods=[GET]),
            Route("/api/openapi.json", openapi, methods=[GET]),
            *api_routes(),
            Mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")]


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def on_jobd_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JobdError)
    return await on_http_error(request, from_jobd_error(exc))


async def on_starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: E_ROUTE, 405: E_METHOD}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def on_crash(request: Request, exc: Exception) -> Response:
    """A bug here, not the client's doing: JSON like every other answer (uvicorn logs it)."""
    return error_response(500, P.E_INTERNAL, f"jobd web failed: {type(exc).__name__}")


async def on_too_large(request: Request, exc: Exception) -> Response:
    limit = services(request).settings.max_body_bytes
    return error_response(413, E_TOO_LARGE, f"request body above {limit} bytes")


def build_services(settings: WebSettings) -> Services:
    client = AsyncClient(settings.socket)
    hub = EventHub(lambda: client.watch(events=sorted(ROUTINE)),
                   open_flow=lambda: client.watch(events=sorted(FLOW)))
    lanes = Lanes()
    hub.listeners.append(lanes.on_event)
    sampler = Sampler(client.metrics, lambda sample: hub.broadcast("stats", sample))
    return Services(settings=settings, client=client, hub=hub, sampler=sampler, lanes=lanes)


def build_app(settings: WebSettings, svc: Services | None = None) -> Guard:
    """The ASGI app: the Guard in front of Starlette."""
    svc = svc or build_services(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc.sampler.start()
        try:
            yield
        finally:
            await svc.hub.close()
            await svc.sampler.stop()
            await svc.client.close()

    app = Starlette(routes=all_routes(), lifespan=lifespan, exception_handlers={
        HTTPError: on_http_error, JobdError: on_jobd_error, HTTPException: on_starlette_error,
        BodyTooLarge: on_too_large, Exception: on_crash})
    app.state.services = svc
    return Guard(app, settings)


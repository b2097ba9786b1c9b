"""What the endpoints share, built once per web process (the edge's bag of
services): the settings, the daemon client, the event hub, the metrics
sampler and the worker lanes."""
from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from jobd.web.hub import EventHub
from jobd.web.lanes import Lanes
from jobd.web.sampler import Sampler
from jobd.web.settings import WebSettings
from jobd_client.aio import AsyncClient


@dataclass
class Services:
    settings: WebSettings
    client: AsyncClient
    hub: EventHub
    sampler: Sampler
    lanes: Lanes


def services(conn: HTTPConnection) -> Services:
    svc: Services = conn.app.state.services
    return svc

"""The JSON routes return their response model (FastAPI validates it), not a hand-built body: each one's return
annotation is the model it documents."""

from __future__ import annotations

import typing

import pytest
from fastapi.routing import APIRoute

from service.routes import batches, health, jobs, legacy, waiting, webhooks

# Routes whose answer is not one model: the export streams NDJSON or CSV (its JSON page is validated), the HTML
# is the page itself, a batch's events are a server-sent event stream.
NOT_ONE_MODEL = {"export_batch", "get_job_html", "batch_event_stream"}

ROUTES = [
    route
    for module in (jobs, batches, legacy, webhooks, health, waiting)
    for route in module.router.routes
    if isinstance(route, APIRoute) and route.name not in NOT_ONE_MODEL
]


def test_the_routes_are_found() -> None:
    names = {route.name for route in ROUTES}
    assert {"submit_job", "get_batch", "submit_crawl_job", "list_deliveries", "readyz", "wait_job"} <= names


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_route_returns_its_response_model(route: APIRoute) -> None:
    assert route.response_model is not None
    assert typing.get_type_hints(route.endpoint)["return"] is route.response_model

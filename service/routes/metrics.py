"""/metrics: the Prometheus text exposition of the whole system, read by any API process.

It names no tenant, URL or key, but it does name worker hosts and pids, queue depths and byte counts: it wants
``Authorization: Bearer <CRAWLJOBS_METRICS_TOKEN>``. With no token set it is closed (a 403 naming the settings)
unless ``CRAWLJOBS_METRICS_OPEN=true`` opens it, for a network where anyone who reaches the API may read it.
A source that cannot be read (PostgreSQL, Redis) is reported by ``crawljobs_metrics_source_up`` and its
metrics are left out: a scrape never fails because of one.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from crawljobs.exceptions import Unauthorized
from crawljobs.exposition import MetricsClosed, Snapshot, exposition, read_shared
from crawljobs.manager import JobManager
from crawljobs.metrics import MetricKeys
from service.deps import ManagerDep
from service.metering import MeterDep
from service.routes.common import ERRORS
from service.schemas import ErrorOut

logger = logging.getLogger(__name__)

router = APIRouter(tags=["metrics"])

metrics_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="MetricsToken",
    description="`CRAWLJOBS_METRICS_TOKEN` (not needed when `CRAWLJOBS_METRICS_OPEN=true` and no token is set).",
)

# Longest a scrape waits for one source.
SOURCE_TIMEOUT_SECONDS = 5.0


class LiveJobCounts:
    """The PostgreSQL job counts of one API process, reused for ``CRAWLJOBS_METRICS_CACHE_SECONDS``; concurrent
    scrapes share one query."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self.value: dict[str, int] | None = None
        self.read_at = -float("inf")
        self._lock = asyncio.Lock()

    async def get(self, manager: JobManager) -> dict[str, int]:
        async with self._lock:
            if self.value is None or time.monotonic() - self.read_at >= self.max_age:
                self.value = await manager.live_job_counts()
                self.read_at = time.monotonic()
            return self.value


def live_job_counts(request: Request) -> LiveJobCounts:
    state = request.app.state
    counts: LiveJobCounts | None = getattr(state, "live_job_counts", None)
    if counts is None:
        counts = state.live_job_counts = LiveJobCounts(state.settings.metrics_cache_seconds)
    return counts


def check_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(metrics_bearer)]
) -> None:
    settings = request.app.state.settings
    token: str | None = settings.metrics_token or None  # an empty token is no token: it would match none sent
    if token is None:
        if settings.metrics_open:
            return
        raise MetricsClosed()
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("/metrics needs `Authorization: Bearer <CRAWLJOBS_METRICS_TOKEN>`")


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(check_token)],
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}},
        401: ERRORS[401],
        403: {
            "model": ErrorOut,
            "description": "No `CRAWLJOBS_METRICS_TOKEN` is set and `CRAWLJOBS_METRICS_OPEN` is not true: "
            "/metrics is closed.",
        },
    },
    # The token, or nothing when CRAWLJOBS_METRICS_OPEN opens the route: FastAPI adds this empty requirement
    # to the token's.
    openapi_extra={"security": [{}]},
)
async def metrics(
    manager: ManagerDep,
    meter: MeterDep,
    counts: Annotated[LiveJobCounts, Depends(live_job_counts)],
) -> Response:
    """Jobs pending and processing, submissions, fetch attempts and times, queue depth, reclaimed leases,
    webhook deliveries, and every worker's heartbeat and Scrapy stats, in Prometheus's text format."""
    snapshot = Snapshot()
    try:
        async with asyncio.timeout(SOURCE_TIMEOUT_SECONDS):
            snapshot.live_jobs = await counts.get(manager)
        snapshot.up["postgres"] = True
    except Exception as exc:  # any failure leaves its metrics out; the scrape still answers
        logger.warning("/metrics cannot count jobs in PostgreSQL: %s", exc)
        snapshot.up["postgres"] = False
    try:
        if manager.redis is None:
            raise ConnectionError("no Redis configured")
        async with asyncio.timeout(SOURCE_TIMEOUT_SECONDS):
            await meter.flush()  # this process's own counts first
            keys = MetricKeys.for_prefix(manager.settings.queue_prefix)
            await read_shared(manager.redis, manager.keys, keys, snapshot)
        snapshot.up["redis"] = True
    except Exception as exc:
        logger.warning("/metrics cannot read Redis: %s", exc)
        snapshot.up["redis"] = False
    return Response(exposition(snapshot), media_type=CONTENT_TYPE_LATEST)

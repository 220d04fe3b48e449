"""The FastAPI application: REST /v1, the legacy /functions/v1 routes, health, docs, and the dashboard."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from crawljobs import __version__
from crawljobs.config import Settings
from crawljobs.hub import CompletionHub
from crawljobs.manager import JobManager
from crawljobs.metrics import MetricsBuffer
from crawljobs.queue import redis_client
from crawljobs.reader import JobReader
from crawljobs.store.pool import open_pool
from crawljobs.urls import Resolver, system_resolver
from service.cors import install_cors
from service.dashboard import install_dashboard
from service.docs import DocsPolicyMiddleware
from service.errors import install_error_handlers
from service.limits import BodyLimitMiddleware
from service.routes import batches, health, home, jobs, legacy, metrics, waiting, webhooks
from service.timing import ServerTimingMiddleware

logger = logging.getLogger(__name__)

DESCRIPTION = """
Submit one URL or up to 50,000, get job ids back at once, and let the crawl workers fetch them.

Every route but `/healthz`, `/readyz`, `/metrics` and these docs needs an API key:
`Authorization: Bearer <key>` (or the legacy `apikey: <key>` header). `/metrics` wants the metrics token
(`Authorization: Bearer <CRAWLJOBS_METRICS_TOKEN>`) and is closed without one, unless `CRAWLJOBS_METRICS_OPEN=true`.
Errors are JSON: `{"success": false, "code": ..., "error": ...}`.

`/v1` is the REST API; `/functions/v1` keeps the request and response bodies of the system crawljobs replaces.
"""


def create_app(settings: Settings | None = None, *, resolver: Resolver = system_resolver) -> FastAPI:
    settings = settings or Settings()
    if settings.database_url is None:
        raise RuntimeError(
            "CRAWLJOBS_DATABASE_URL is not set (`crawljobs up` sets it for the embedded database)"
        )

    # One LISTEN connection for the whole app, while it runs (the lifespan); made with the app, so that the
    # server running the app can drain it when it stops (service.server).
    hub = CompletionHub(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert settings.database_url is not None
        # Opened in the background: /readyz says 503 until PostgreSQL answers, /healthz answers at once.
        pool = await open_pool(
            settings.database_url, max_size=settings.db_pool_size, wait_seconds=10, background=True
        )
        redis = redis_client(settings.redis_url) if settings.redis_url else None
        # This process's counts for /metrics, added to Redis a second after the first of them.
        app.state.meter = meter = MetricsBuffer(redis, settings.queue_prefix, delay=1.0)
        app.state.manager = JobManager(
            pool=pool, redis=redis, settings=settings, resolver=resolver, meter=meter
        )
        # Waiters share the pool for their re-reads.
        app.state.job_reader = JobReader(app.state.manager)
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()
            await meter.close()
            if redis is not None:
                await redis.aclose()
            await pool.close()

    # FastAPI's own docs pages, with Swagger UI's and ReDoc's assets served by this app (no CDN).
    app = FastAPIOffline(
        title="crawljobs",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "jobs", "description": "Single crawl jobs."},
            {"name": "batches", "description": "Batches of up to 50,000 URLs."},
            {
                "name": "legacy",
                "description": "The `/functions/v1` contract of the system crawljobs replaces.",
            },
            {"name": "waiting", "description": "Wait for a job or a batch, or follow a batch's progress."},
            {"name": "webhooks", "description": "Webhook deliveries and the signing secret."},
            {"name": "health", "description": "Liveness and readiness, open without a key."},
            {
                "name": "metrics",
                "description": "Prometheus metrics, behind the metrics token (`CRAWLJOBS_METRICS_TOKEN`); "
                "open to anyone only with `CRAWLJOBS_METRICS_OPEN=true`.",
            },
        ],
    )
    app.state.settings = settings
    app.state.hub = hub
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        max_in_flight=settings.max_body_bytes_in_flight,
        read_timeout=settings.body_read_timeout_seconds,
    )
    app.add_middleware(ServerTimingMiddleware)
    app.add_middleware(DocsPolicyMiddleware)
    install_cors(app, settings.cors_origins)  # last: the outermost, so preflights are answered first
    for module in (home, health, metrics, jobs, batches, legacy, waiting, webhooks):
        app.include_router(module.router)
    install_dashboard(app)  # `/` and the dashboard's pages (service/dashboard)
    return app

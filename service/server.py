"""The API's HTTP server: uvicorn's, which ends the open waits first when it stops.

uvicorn stops gracefully by waiting for every open request to end; a wait (up to
``CRAWLJOBS_MAX_WAIT_SECONDS``) or an event stream (as long as its batch runs) would hold a restart for that
long. This server drains the waiting hubs as its shutdown begins: waits answer at once with the job or batch
as it stands (``timed_out``), streams end, and their clients ask the next process. Whatever request still runs
after ``CRAWLJOBS_SHUTDOWN_GRACE_SECONDS`` is cut.
"""

from __future__ import annotations

import socket

import uvicorn

from crawljobs.config import Settings
from crawljobs.logs import uvicorn_log_config
from service.waiting import drain_all

APP_FACTORY = "service.app:create_app"


class ApiServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        drain_all()
        await super().shutdown(sockets=sockets)


def serve(settings: Settings, *, host: str, port: int) -> None:
    """Run the API on ``host:port`` until it is stopped (``crawljobs api`` and ``crawljobs up``)."""
    config = uvicorn.Config(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        log_level="info",
        log_config=uvicorn_log_config(settings),
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    ApiServer(config).run()

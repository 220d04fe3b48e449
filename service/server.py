"""The API's HTTP server: uvicorn's, which ends the open waits first when it stops.

uvicorn stops gracefully by waiting for every open request to end; a wait (up to
``CRAWLJOBS_MAX_WAIT_SECONDS``) or an event stream (as long as its batch runs) would hold a restart for that
long. This server builds the app itself and drains the app's waiting hub as its shutdown begins: waits answer
at once with the job or batch as it stands (``timed_out``), streams end, and their clients ask the next
process. Whatever request still runs after ``CRAWLJOBS_SHUTDOWN_GRACE_SECONDS`` is cut.
"""

from __future__ import annotations

import socket

import uvicorn

from crawljobs.config import Settings
from crawljobs.hub import CompletionHub
from crawljobs.logs import uvicorn_log_config
from service.app import create_app


class ApiServer(uvicorn.Server):
    """uvicorn's server, draining ``hub`` (its app's) before it waits for the open requests to end."""

    def __init__(self, config: uvicorn.Config, *, hub: CompletionHub) -> None:
        super().__init__(config)
        self.hub = hub

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.hub.drain()
        await super().shutdown(sockets=sockets)


def serve(settings: Settings, *, host: str, port: int) -> None:
    """Run the API on ``host:port`` until it is stopped (``crawljobs api`` and ``crawljobs up``)."""
    # The app reads its settings from the environment again: `crawljobs up` has put its embedded services'
    # addresses there since ``settings`` was read.
    app = create_app()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        log_config=uvicorn_log_config(settings),
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    ApiServer(config, hub=app.state.hub).run()

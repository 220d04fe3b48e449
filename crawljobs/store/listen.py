"""The hub's own connection to PostgreSQL, LISTENing to the job changes that the store announces.

The store's side of waiting: the store NOTIFYs (``store.events.notify``, the ``notify_jobs`` block) and this module
LISTENs (``listen_jobs``), both on ``store.NOTIFY_CHANNEL``. The connection is a dedicated one, never a pooled
one: a LISTEN lasts as long as its session, and a pooled connection goes back to serve others.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql

from crawljobs.exceptions import DatabaseUnavailable
from crawljobs.queries import query
from crawljobs.store.events import NOTIFY_CHANNEL


class JobListener:
    """An open connection listening to job changes (see `listen_jobs`)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    @property
    def backend_pid(self) -> int | None:
        """The server process of the connection, while it is open."""
        return None if self._conn.closed else self._conn.info.backend_pid

    async def payloads(self, *, health_check: float) -> AsyncIterator[str]:
        """The payloads of the notifications, as they arrive, until the connection fails; a connection quiet
        for ``health_check`` seconds is checked with a query (a quiet connection may be a dead one)."""
        while True:
            async for notify in self._conn.notifies(timeout=health_check):
                yield notify.payload
            await self._conn.execute("SELECT 1")


@asynccontextmanager
async def listen_jobs(database_url: str) -> AsyncIterator[JobListener]:
    """A new connection listening to job changes, for the block.

    Raises DatabaseUnavailable when it cannot connect, and when the connection fails inside the block.
    """
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute(sql.SQL(query("listen_jobs")).format(channel=sql.Identifier(NOTIFY_CHANNEL)))
            yield JobListener(conn)
    except (psycopg.Error, OSError) as exc:
        raise DatabaseUnavailable(str(exc)) from exc

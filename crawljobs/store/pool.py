"""The connection pools of the store: every process that talks to PostgreSQL opens one here.

A pool hands out autocommit connections: a store function that needs a transaction opens it itself. ``Pool`` is
the type the manager, the lifecycle, the waiting reader and the apps hold; none of them imports the driver.
``UNAVAILABLE`` names the driver's errors that mean "the database cannot be reached now" (the API answers
them with a 503).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

Pool = AsyncConnectionPool[Any]

# The server is down or restarting, or no connection came free in time.
UNAVAILABLE: tuple[type[Exception], ...] = (psycopg.OperationalError, PoolTimeout)


async def open_pool(
    conninfo: str, *, min_size: int = 1, max_size: int, wait_seconds: float = 30, background: bool = False
) -> Pool:
    """An open pool of autocommit connections to `conninfo`. A caller waits at most `wait_seconds` for a
    connection; the pool opens once `min_size` connections are up (a process that cannot work without the
    database fails at start), or, with `background`, at once, connecting meanwhile."""
    pool: Pool = AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True},
        timeout=wait_seconds,
        open=False,
    )
    await pool.open(wait=not background, timeout=wait_seconds)
    return pool

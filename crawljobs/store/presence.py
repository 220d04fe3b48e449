"""A worker's liveness session: a connection of its own holding a session-level advisory lock (migration 0006).

PostgreSQL releases the lock the moment the session ends, so the lock dies with the worker process (killed,
crashed) or its connection, at once and without any timeout of ours; the sweeper's liveness check
(``reclaim_dead_workers``) reads ``pg_locks`` to find the registered workers whose lock is gone. The connection
is not one of the pool's: a pool recycles its connections, and a lock must live exactly as long as its worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Any

import psycopg

from crawljobs.store.pool import Pool
from crawljobs.store.rows import fetch_one

logger = logging.getLogger(__name__)

# The first key of every liveness lock: "crjw", so that no other user of advisory locks in the same database
# (the migrations use a bigint key of their own) can collide with a worker's (namespace, lock_key).
WORKER_LOCK_NAMESPACE = 0x63726A77
# A taken key (a sequence that cycled, a lock some other client holds): try the next one, this many times.
LOCK_TRIES = 5
CONNECT_TIMEOUT_SECONDS = 5


class LivenessSession:
    """The lock and registration of one worker; `keep` opens them, keeps them and opens them again."""

    def __init__(self, pool: Pool, worker_id: str) -> None:
        self.conninfo = pool.conninfo
        self.worker_id = worker_id
        self.lock_key: int | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None

    @property
    def held(self) -> bool:
        """True while the session that holds the lock is open (as far as this process knows)."""
        return self._conn is not None and not self._conn.closed and not self._conn.broken

    async def keep(self) -> bool:
        """Make sure the lock is held and the worker registered: open a new session when there is none (first
        call, after a restart of the server, a broken connection), else say the worker was seen. True when
        held; False when the database cannot be reached now (the caller tries again; leases are the backstop)."""
        try:
            if self.held:
                assert self._conn is not None and self.lock_key is not None
                try:
                    seen = await fetch_one(
                        self._conn, "worker_seen", {"worker": self.worker_id, "lock_key": self.lock_key}
                    )
                    if seen is None:  # the registration is gone (a check dropped it): register again
                        await self._register(self._conn, self.lock_key)
                    return True
                except psycopg.OperationalError:
                    pass  # the session is gone (the server restarted, the connection was cut): a new one
            await self._open()
            return True
        except psycopg.Error as exc:
            logger.warning("cannot hold the liveness lock: %s", exc, extra={"action": "liveness"})
            await self._drop()
            return False

    async def _open(self) -> None:
        await self._drop()
        conninfo = self.conninfo() if callable(self.conninfo) else self.conninfo
        if not isinstance(conninfo, str):  # the pool's conninfo may be an async callable
            conninfo = await conninfo
        conn = await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
        )
        try:
            for _ in range(LOCK_TRIES):
                key_row = await fetch_one(conn, "next_worker_lock_key", {})
                assert key_row is not None
                key = int(key_row["lock_key"])
                locked = await fetch_one(
                    conn, "try_worker_lock", {"namespace": WORKER_LOCK_NAMESPACE, "lock_key": key}
                )
                if locked is not None and locked["locked"]:
                    break
            else:
                raise psycopg.OperationalError(f"no free liveness lock key after {LOCK_TRIES} tries")
            await self._register(conn, key)
        except BaseException:
            await conn.close()
            raise
        self._conn, self.lock_key = conn, key

    async def _register(self, conn: psycopg.AsyncConnection[Any], key: int) -> None:
        params = {"worker": self.worker_id, "lock_key": key, "host": socket.gethostname(), "pid": os.getpid()}
        await fetch_one(conn, "register_worker", params)

    async def close(self) -> None:
        """A worker stopping cleanly: unregister, and end the session (which releases the lock)."""
        if self.held:
            assert self._conn is not None
            try:
                await fetch_one(self._conn, "unregister_worker", {"worker": self.worker_id})
            except psycopg.Error as exc:
                logger.info("could not unregister the worker: %s", exc, extra={"action": "liveness"})
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


async def workers_alive_on_host(conninfo: str, *, host: str, seconds: float) -> int:
    """How many workers registered from `host` hold their liveness lock and were seen within `seconds`: what
    the sweeper's liveness check counts as alive (``crawljobs health worker``). Raises on no database."""
    async with await psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
    ) as conn:
        row = await fetch_one(
            conn,
            "workers_alive_on_host",
            {"host": host, "seconds": seconds, "namespace": WORKER_LOCK_NAMESPACE},
        )
    return int(row["alive"]) if row else 0

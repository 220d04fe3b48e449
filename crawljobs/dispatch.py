"""Dispatch: committed job ids pushed to Redis (a hint); a push that fails marks them for the sweeper, which
dispatches again what was never dispatched and what Redis lost (DESIGN rule 1)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import redis.asyncio as aioredis

from crawljobs import store
from crawljobs.queue import QueueKeys, chunks

logger = logging.getLogger(__name__)

# The priority of a single submission's job, pushed to the priority list (a batch's jobs have 0: the bulk list).
PRIORITY_SINGLE = 1


class Dispatcher:
    def __init__(self, *, pool: store.Pool, redis: aioredis.Redis | None, keys: QueueKeys) -> None:
        self.pool = pool
        self.redis = redis
        self.keys = keys
        # The run id of the Redis server last seen: a new one means Redis restarted (every message lost).
        self._redis_run_id: str | None = None

    async def dispatch(self, ids: Sequence[uuid.UUID | str], *, priority: bool, front: bool = False) -> bool:
        """Push job ids to Redis; on failure mark them undispatched. True when the push succeeded.

        With `front`, to the head of their list (jobs taken back from a lost worker: they were due already and
        must not wait behind a whole batch), else to its tail."""
        if not ids:
            return True
        key = self.keys.priority if priority else self.keys.bulk
        try:
            if self.redis is None:
                raise ConnectionError("no Redis configured")
            async with self.redis.pipeline(transaction=False) as pipe:
                if (
                    front
                ):  # LPUSH reverses what it is given: the last chunk first, each reversed, keeps the order
                    for chunk in reversed(chunks(ids)):
                        pipe.lpush(key, *reversed(chunk))
                else:
                    for chunk in chunks(ids):
                        pipe.rpush(key, *chunk)
                await pipe.execute()
        except (aioredis.RedisError, OSError) as exc:
            logger.warning(
                "could not dispatch %d jobs to Redis, the sweeper will: %s",
                len(ids),
                exc,
                extra={"action": "dispatch_failed"},
            )
            async with self.pool.connection() as conn:
                await store.mark_undispatched(conn, ids=ids)
            return False
        return True

    async def _push(self, rows: list[store.Row]) -> bool:
        """Push claimed rows to their lists (single jobs to the priority list); True when both pushes held."""
        urgent = [row["id"] for row in rows if row["priority"] >= PRIORITY_SINGLE]
        bulk = [row["id"] for row in rows if row["priority"] < PRIORITY_SINGLE]
        return await self.dispatch_both(urgent, bulk)

    async def dispatch_both(
        self, urgent: Sequence[uuid.UUID | str], bulk: Sequence[uuid.UUID | str], *, front: bool = False
    ) -> bool:
        """Push single jobs' ids to the priority list and batch jobs' to the bulk list (with `front`, to their
        heads); True when both pushes held."""
        pushed = await self.dispatch(urgent, priority=True, front=front)
        return await self.dispatch(bulk, priority=False, front=front) and pushed

    async def dispatch_undispatched(self, *, limit: int) -> int | None:
        """Dispatch up to `limit` pending jobs never dispatched; how many, or None when Redis refused them (they
        are marked undispatched again)."""
        async with self.pool.connection() as conn:
            rows = await store.claim_undispatched(conn, limit=limit)
        if rows and not await self._push(rows):
            return None
        return len(rows)

    async def dispatch_lost(self, *, limit: int, stale_seconds: int) -> int:
        """Dispatch again up to `limit` pending jobs dispatched more than `stale_seconds` ago whose messages
        Redis no longer holds (it holds fewer messages than there are such jobs); how many.

        After a restart of Redis (its run id changed) no message of before survived: every pending dispatched
        job is dispatched again at once, however recently it was dispatched (a message pushed since the
        restart is then there twice, which is harmless: the second claim fails)."""
        if await self._redis_restarted():
            stale_seconds = 0
        missing = await self._missing_messages()
        if missing <= 0:
            return 0
        async with self.pool.connection() as conn:
            rows = await store.claim_stale_dispatched(
                conn, limit=min(missing, limit), stale_seconds=stale_seconds
            )
        if rows and await self._push(rows):
            return len(rows)
        return 0

    async def _redis_restarted(self) -> bool:
        """True when the Redis server answering now is not the one that answered last time."""
        if self.redis is None:
            return False
        try:
            info = await self.redis.info("server")
        except Exception:  # Redis down: nothing to tell yet
            return False
        run_id = str(info.get("run_id", "")) or None
        restarted = self._redis_run_id is not None and run_id != self._redis_run_id
        self._redis_run_id = run_id
        if restarted:
            logger.warning("Redis restarted: its queue is empty, every pending job is dispatched again")
        return restarted

    async def _missing_messages(self) -> int:
        """How many pending, dispatched jobs have no message in Redis (0 when Redis cannot say)."""
        if self.redis is None:
            return 0
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.llen(self.keys.priority)
                pipe.llen(self.keys.bulk)
                lengths = await pipe.execute()
        except Exception as exc:  # Redis down: nothing can be dispatched now anyway
            logger.info("sweeper cannot read the queue length: %s", exc)
            return 0
        async with self.pool.connection() as conn:
            pending = await store.count_pending_dispatched(conn)
        return pending - sum(int(n) for n in lengths)

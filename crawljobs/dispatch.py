"""Dispatch: committed job ids pushed to Redis (a hint); a push that fails marks them for the sweeper."""

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

    async def dispatch(self, ids: Sequence[uuid.UUID | str], *, priority: bool) -> bool:
        """Push job ids to Redis; on failure mark them undispatched. True when the push succeeded."""
        if not ids:
            return True
        key = self.keys.priority if priority else self.keys.bulk
        try:
            if self.redis is None:
                raise ConnectionError("no Redis configured")
            async with self.redis.pipeline(transaction=False) as pipe:
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

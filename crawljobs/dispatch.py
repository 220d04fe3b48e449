"""Dispatch: committed job ids pushed to Redis (a hint); a push that fails marks them for the sweeper, which
dispatches again what was never dispatched and what Redis lost (DESIGN rule 1).

Single jobs go to the priority list; batch jobs to the fair scheduler (``crawljobs.queue.Scheduler``: a list
per batch, taken in turns by tenant and by batch), or with ``CRAWLJOBS_FAIR_SHARES=false`` to the one FIFO bulk
list. Every push knows each job's tenant and batch: the submission's, or the row's (the sweeper's and the
reclaims' statements return them).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from crawljobs import store
from crawljobs.queue import Queued, QueueKeys, Scheduler, chunks

logger = logging.getLogger(__name__)

# The priority of a single submission's job, pushed to the priority list (a batch's jobs have 0).
PRIORITY_SINGLE = 1


def queued_rows(rows: Sequence[dict[str, Any]]) -> list[Queued]:
    """Rows with id, tenant, batch_id and priority as queue entries (single jobs urgent)."""
    return [
        Queued(row["id"], row["tenant"], row["batch_id"], urgent=row["priority"] >= PRIORITY_SINGLE)
        for row in rows
    ]


class Dispatcher:
    def __init__(
        self, *, pool: store.Pool, redis: aioredis.Redis | None, keys: QueueKeys, fair: bool = True
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.keys = keys
        self.fair = fair
        self.scheduler = Scheduler(redis, keys) if redis is not None else None
        # The run id of the Redis server last seen: a new one means Redis restarted (every message lost).
        self._redis_run_id: str | None = None

    async def dispatch(self, ids: Sequence[uuid.UUID | str], *, priority: bool, front: bool = False) -> bool:
        """Push job ids to a plain list (the priority list, or the bulk list); on failure mark them undispatched.
        True when the push succeeded. With `front`, to the head of the list, else to its tail.

        Batch jobs go through `dispatch_jobs` (they need their tenant and batch for fair shares)."""
        key = self.keys.priority if priority else self.keys.bulk

        async def queue(pipe: aioredis.client.Pipeline) -> None:
            self._plain(pipe, key, ids, front=front)

        return await self._pushed(ids, queue)

    async def dispatch_batch(self, tenant: str, batch_id: str, ids: Sequence[uuid.UUID | str]) -> bool:
        """Push one batch's job ids (to its list in the fair scheduler, or the bulk list); True when held."""
        return await self.dispatch_jobs([Queued(job_id, tenant, batch_id) for job_id in ids])

    async def dispatch_jobs(self, jobs: Sequence[Queued], *, front: bool = False) -> bool:
        """Push jobs of any kind: urgent ones to the priority list, the others to their batches' lists (fair
        shares) or the bulk list, in one pipeline; with `front` to the heads (jobs taken back from a lost
        worker: due already, they must not wait behind a whole batch). On failure all are marked
        undispatched; True when the push succeeded."""
        urgent = [job.id for job in jobs if job.urgent]
        rest = [job for job in jobs if not job.urgent]

        async def queue(pipe: aioredis.client.Pipeline) -> None:
            self._plain(pipe, self.keys.priority, urgent, front=front)
            if not self.fair:
                self._plain(pipe, self.keys.bulk, [job.id for job in rest], front=front)
                return
            assert self.scheduler is not None
            by_batch: dict[tuple[str, str | None], list[uuid.UUID | str]] = {}
            for job in rest:
                by_batch.setdefault((job.tenant, job.batch_id), []).append(job.id)
            for (tenant, batch_id), ids in by_batch.items():
                await self.scheduler.push(pipe, tenant, batch_id, ids, front=front)

        return await self._pushed([job.id for job in jobs], queue)

    @staticmethod
    def _plain(
        pipe: aioredis.client.Pipeline, key: str, ids: Sequence[uuid.UUID | str], *, front: bool
    ) -> None:
        if front:  # LPUSH reverses what it is given: the last chunk first, each reversed, keeps the order
            for chunk in reversed(chunks(ids)):
                pipe.lpush(key, *reversed(chunk))
        else:
            for chunk in chunks(ids):
                pipe.rpush(key, *chunk)

    async def _pushed(
        self,
        ids: Sequence[uuid.UUID | str],
        queue: Callable[[aioredis.client.Pipeline], Awaitable[None]],
    ) -> bool:
        if not ids:
            return True
        try:
            if self.redis is None:
                raise ConnectionError("no Redis configured")
            async with self.redis.pipeline(transaction=False) as pipe:
                await queue(pipe)
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

    async def dispatch_undispatched(self, *, limit: int) -> int | None:
        """Dispatch up to `limit` pending jobs never dispatched; how many, or None when Redis refused them (they
        are marked undispatched again)."""
        async with self.pool.connection() as conn:
            rows = await store.claim_undispatched(conn, limit=limit)
        if rows and not await self.dispatch_jobs(queued_rows(rows)):
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
        if rows and await self.dispatch_jobs(queued_rows(rows)):
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
        """How many pending, dispatched jobs have no message in Redis (0 when Redis cannot say): the lists of
        `QueueKeys.depth` hold one element per queued message."""
        if self.redis is None:
            return 0
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in self.keys.depth:
                    pipe.llen(key)
                lengths = await pipe.execute()
        except Exception as exc:  # Redis down: nothing can be dispatched now anyway
            logger.info("sweeper cannot read the queue length: %s", exc)
            return 0
        async with self.pool.connection() as conn:
            pending = await store.count_pending_dispatched(conn)
        return pending - sum(int(n) for n in lengths)

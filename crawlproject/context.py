"""What every component of one worker process shares: the database pool, Redis, its leases.

Built once per crawler (``WorkerContext.of(crawler)``, from the crawler's ``WorkerConfig``) and opened from
the running asyncio loop. It owns the jobs this worker holds: claims them (DESIGN rule 2), renews all their
leases in one statement (rule 4), starts fenced follow-up attempts (rule 3), and gives back what it still
holds when it stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool
from scrapy.crawler import Crawler

from crawljobs import store
from crawljobs.config import Settings
from crawljobs.manager import JobManager
from crawljobs.queue import redis_client
from crawljobs.urls import NetworkPolicy
from crawlproject.config import WorkerConfig
from crawlproject.egress import EgressGuard
from crawlproject.ladder import FetchPlan

logger = logging.getLogger(__name__)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class ClaimedJob:
    """A job this worker holds, with the attempt that fences its writes."""

    id: uuid.UUID
    tenant: str
    batch_id: str | None
    url: str
    render: bool
    premium: bool
    ultra_premium: bool
    obey_robots: bool
    attempt: int
    max_attempts: int
    max_retries: int
    started: float = field(default_factory=time.monotonic)
    escalations: int = 0
    cost: float = 0.0
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ClaimedJob:
        return cls(
            id=row["id"],
            tenant=row["tenant"],
            batch_id=row["batch_id"],
            url=row["url"],
            render=row["render"],
            premium=row["premium"],
            ultra_premium=row["ultra_premium"],
            obey_robots=row["obey_robots"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            max_retries=row["max_retries"],
        )


class WorkerContext:
    _KEY = "_crawljobs_worker_context"

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.settings: Settings = config.settings
        self.worker_id = new_worker_id()
        self.held: dict[uuid.UUID, ClaimedJob] = {}
        self._pool: AsyncConnectionPool[Any] | None = None
        self._redis: aioredis.Redis | None = None
        self._manager: JobManager | None = None
        self._open_lock = asyncio.Lock()
        self._heartbeat: asyncio.Task[None] | None = None
        # One plan per worker: the proxies' failure counts must be those the picking reads.
        self.plan = FetchPlan.from_config(config)
        self._egress: EgressGuard | None = None

    @classmethod
    def of(cls, crawler: Crawler) -> WorkerContext:
        context: WorkerContext | None = getattr(crawler, cls._KEY, None)
        if context is None:
            context = cls(WorkerConfig.of(crawler))
            setattr(crawler, cls._KEY, context)
        return context

    async def manager(self) -> JobManager:
        """The job manager of this worker, opening the pool and Redis on first use."""
        async with self._open_lock:
            if self._manager is None:
                if not self.settings.database_url:
                    raise RuntimeError("CRAWLJOBS_DATABASE_URL is not set")
                pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                    self.settings.database_url,
                    min_size=1,
                    max_size=4,
                    kwargs={"autocommit": True},
                    timeout=30,
                    open=False,
                )
                await pool.open(wait=True, timeout=30)
                self._pool = pool
                self._redis = redis_client(self.settings.redis_url) if self.settings.redis_url else None
                self._manager = JobManager(pool=pool, redis=self._redis, settings=self.settings)
                # The browser's direct tier connects through this proxy, which checks every address.
                self._egress = await EgressGuard(NetworkPolicy.from_settings(self.settings)).start()
                self._heartbeat = asyncio.get_running_loop().create_task(
                    self._renew_forever(), name="crawljobs-heartbeat"
                )
            return self._manager

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        assert self._pool is not None, "WorkerContext.manager() opens the pool first"
        return self._pool

    @property
    def egress(self) -> EgressGuard | None:
        """The egress guard of the browser (opened by ``manager()``), or None before that."""
        return self._egress

    @property
    def redis(self) -> aioredis.Redis | None:
        return self._redis

    # -- leases ----------------------------------------------------------------------------------

    async def claim(self, ids: list[uuid.UUID]) -> list[ClaimedJob]:
        await self.manager()
        async with self.pool.connection() as conn:
            rows = await store.claim_jobs(
                conn, ids=ids, worker=self.worker_id, lease_seconds=self.settings.lease_seconds
            )
        return self._hold(rows)

    async def claim_pending(
        self, limit: int, *, tenant: str | None = None, batch_id: str | None = None
    ) -> list[ClaimedJob]:
        await self.manager()
        async with self.pool.connection() as conn:
            rows = await store.claim_pending_jobs(
                conn,
                worker=self.worker_id,
                lease_seconds=self.settings.lease_seconds,
                limit=limit,
                tenant=tenant,
                batch_id=batch_id,
            )
        return self._hold(rows)

    def _hold(self, rows: list[dict[str, Any]]) -> list[ClaimedJob]:
        jobs = [ClaimedJob.from_row(row) for row in rows]
        for job in jobs:
            self.held[job.id] = job
        return jobs

    async def next_attempt(self, job: ClaimedJob) -> bool:
        """Move the job to its next attempt; False when this worker lost it (lease reclaimed, cancelled)."""
        async with self.pool.connection() as conn:
            attempt = await store.next_attempt(
                conn,
                job_id=job.id,
                attempt=job.attempt,
                worker=self.worker_id,
                lease_seconds=self.settings.lease_seconds,
            )
        if attempt is None:
            self.held.pop(job.id, None)
            return False
        job.attempt = attempt
        return True

    def let_go(self, job_ids: list[uuid.UUID]) -> None:
        for job_id in job_ids:
            self.held.pop(job_id, None)

    async def renew(self) -> int:
        async with self.pool.connection() as conn:
            rows = await store.renew_leases(
                conn, worker=self.worker_id, ids=list(self.held), lease_seconds=self.settings.lease_seconds
            )
        return len(rows)

    async def _renew_forever(self) -> None:
        interval = max(1.0, self.settings.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            if not self.held:
                continue
            try:
                await self.renew()
            except Exception as exc:
                logger.warning("heartbeat failed: %s", exc, extra={"action": "heartbeat"})

    async def release_all(self) -> int:
        """Give back every job still held (pending again, to be dispatched again by the sweeper)."""
        if not self.held or self._pool is None:
            return 0
        ids = list(self.held)
        async with self.pool.connection() as conn:
            rows = await store.release_jobs(conn, worker=self.worker_id, ids=ids)
        self.held.clear()
        if rows:
            logger.info("released %d jobs on shutdown", len(rows), extra={"action": "release"})
        return len(rows)

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        try:
            await self.release_all()
        finally:
            if self._egress is not None:
                await self._egress.close()
            if self._redis is not None:
                await self._redis.aclose()
            if self._pool is not None:
                await self._pool.close()

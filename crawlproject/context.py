"""What every component of one worker process shares: the database pool, Redis, its leases.

Built once per crawler (``WorkerContext.of(crawler)``, from the crawler's ``WorkerConfig``) and opened from the
running asyncio loop. The jobs this worker holds are its ``leases`` (``crawljobs.lifecycle.Leases``: announce,
claim, heartbeat, next attempt, finish, release); the context opens them with the pool, announces the worker
(its liveness lock), runs their heartbeat, and gives back what they still hold when the worker stops.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import redis.asyncio as aioredis
from scrapy.crawler import Crawler

from crawljobs.config import Settings
from crawljobs.lifecycle import ClaimedJob, Leases, new_worker_id
from crawljobs.manager import JobManager
from crawljobs.queue import Queued, redis_client
from crawljobs.store.pool import open_pool
from crawlproject.config import WorkerConfig
from crawlproject.egress import EgressGuard
from crawlproject.ladder import FetchPlan

logger = logging.getLogger(__name__)


class WorkerContext:
    _KEY = "_crawljobs_worker_context"

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.settings: Settings = config.settings
        self.worker_id = new_worker_id()
        self._leases: Leases | None = None
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
                assert self.settings.database_url is not None  # WorkerConfig refuses to start without it
                pool = await open_pool(self.settings.database_url, max_size=4)
                self._redis = redis_client(self.settings.redis_url) if self.settings.redis_url else None
                self._manager = JobManager(pool=pool, redis=self._redis, settings=self.settings)
                self._leases = self._manager.leases(worker_id=self.worker_id)
                # Before the first claim: the liveness lock that dies with this process (crawljobs.lifecycle).
                await self._leases.announce()
                # The browser's direct tier connects through this proxy, which checks every address.
                self._egress = await EgressGuard(self.config.network).start()
                self._heartbeat = asyncio.get_running_loop().create_task(
                    self._leases.heartbeat(), name="crawljobs-heartbeat"
                )
            return self._manager

    @property
    def egress(self) -> EgressGuard | None:
        """The egress guard of the browser (opened by ``manager()``), or None before that."""
        return self._egress

    @property
    def redis(self) -> aioredis.Redis | None:
        return self._redis

    # -- leases ----------------------------------------------------------------------------------

    @property
    def leases(self) -> Leases:
        assert self._leases is not None, "WorkerContext.manager() opens the leases first"
        return self._leases

    @property
    def held(self) -> dict[uuid.UUID, ClaimedJob]:
        """The jobs this worker holds now (none before it opened)."""
        return self._leases.held if self._leases is not None else {}

    async def claim(self, ids: list[uuid.UUID]) -> tuple[list[ClaimedJob], list[Queued]]:
        """Claim popped jobs: (those claimed, those left pending because their tenant is at
        CRAWLJOBS_TENANT_MAX_IN_FLIGHT, to queue again)."""
        await self.manager()
        return await self.leases.claim_within(ids)

    async def claim_pending(
        self, limit: int, *, tenant: str | None = None, batch_id: str | None = None
    ) -> list[ClaimedJob]:
        await self.manager()
        return await self.leases.claim_pending(limit, tenant=tenant, batch_id=batch_id)

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        try:
            if self._leases is not None:
                await self._leases.release_all()
                await self._leases.withdraw()
        finally:
            if self._egress is not None:
                await self._egress.close()
            if self._redis is not None:
                await self._redis.aclose()
            if self._manager is not None:
                await self._manager.pool.close()

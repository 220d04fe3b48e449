"""The cheapest method that worked per domain, for each tenant, in Redis hashes shared by every worker.

One hash per tenant (``<prefix>:domain-method:<tenant>``, fields the domains): what one tenant's jobs found out
about a host says nothing to another tenant's, neither where its jobs start (and what they pay) nor that
someone else crawled that host. The hash of the configured prefix without a tenant (``<prefix>:domain-method``,
shared by all tenants before) is no longer read or written: its entries stay until it is deleted by hand, and
every tenant's memory starts empty.

One per crawler (``DomainMemory.of(crawler)``), on the worker context's Redis client (opened with the context);
off (it recalls and keeps nothing) with ``CRAWLJOBS_DOMAIN_MEMORY=false``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import ClassVar

import redis.asyncio as aioredis
from scrapy.crawler import Crawler

from crawljobs.lifecycle import ClaimedJob
from crawlproject.config import WorkerConfig
from crawlproject.context import WorkerContext
from crawlproject.methods import Method, domain_of

logger = logging.getLogger(__name__)


class DomainMemory:
    _KEY: ClassVar[str] = "_crawljobs_domain_memory"

    def __init__(self, redis: Callable[[], aioredis.Redis | None], key: str) -> None:
        self._redis = redis
        self.key = key  # the prefix of every tenant's hash

    @classmethod
    def of(cls, crawler: Crawler) -> DomainMemory:
        memory: DomainMemory | None = getattr(crawler, cls._KEY, None)
        if memory is None:
            config = WorkerConfig.of(crawler)
            context = WorkerContext.of(crawler)
            enabled = config.settings.domain_memory
            memory = cls(lambda: context.redis if enabled else None, config.domain_method_key)
            setattr(crawler, cls._KEY, memory)
        return memory

    def key_of(self, tenant: str) -> str:
        """The hash of ``tenant``'s domains."""
        return f"{self.key}:{tenant}"

    async def recall(self, jobs: Sequence[ClaimedJob]) -> list[Method | None]:
        """The method remembered for each job's domain by its tenant (None: nothing remembered)."""
        redis = self._redis()
        if redis is None or not jobs:
            return [None] * len(jobs)
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for job in jobs:
                    pipe.hget(self.key_of(job.tenant), domain_of(job.url))
                values = await pipe.execute()
        except Exception as exc:
            logger.info("domain memory unavailable: %s", exc)
            return [None] * len(jobs)
        out: list[Method | None] = []
        for value in values:
            try:
                text = value.decode() if isinstance(value, bytes) else value
                out.append(Method.parse(text) if text else None)
            except ValueError:
                out.append(None)
        return out

    async def remember(self, job: ClaimedJob, method: Method) -> None:
        """Keep the method that just worked for the job's domain, for its tenant: the tenant's next job of that
        domain starts there.

        A block moves a domain up; a cheaper method found by exploring moves it down again. Jobs whose flags
        set a floor (render, premium...) say nothing about the domain and are not remembered (by the caller).
        """
        redis = self._redis()
        if redis is None:
            return
        try:
            await redis.hset(self.key_of(job.tenant), domain_of(job.url), method.name)
        except Exception as exc:
            logger.info("domain memory unavailable: %s", exc)

"""The cheapest method that worked per domain, in a Redis hash shared by every worker.

One per crawler (``DomainMemory.of(crawler)``), on the worker context's Redis client (opened with the
context) and the key of the configured prefix; off (it recalls and keeps nothing) with
``CRAWLJOBS_DOMAIN_MEMORY=false``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ClassVar

import redis.asyncio as aioredis
from scrapy.crawler import Crawler

from crawlproject.config import WorkerConfig
from crawlproject.context import WorkerContext
from crawlproject.methods import Method, domain_of

logger = logging.getLogger(__name__)


class DomainMemory:
    _KEY: ClassVar[str] = "_crawljobs_domain_memory"

    def __init__(self, redis: Callable[[], aioredis.Redis | None], key: str) -> None:
        self._redis = redis
        self.key = key

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

    async def recall(self, urls: list[str]) -> list[Method | None]:
        redis = self._redis()
        if redis is None or not urls:
            return [None] * len(urls)
        try:
            values = await redis.hmget(self.key, [domain_of(u) for u in urls])
        except Exception as exc:
            logger.info("domain memory unavailable: %s", exc)
            return [None] * len(urls)
        out: list[Method | None] = []
        for value in values:
            try:
                text = value.decode() if isinstance(value, bytes) else value
                out.append(Method.parse(text) if text else None)
            except ValueError:
                out.append(None)
        return out

    async def remember(self, url: str, method: Method) -> None:
        """Keep the method that just worked for the URL's domain: the next job of that domain starts there.

        A block moves a domain up; a cheaper method found by exploring moves it down again. Jobs whose flags
        set a floor (render, premium...) say nothing about the domain and are not remembered (by the caller).
        """
        redis = self._redis()
        if redis is None:
            return
        try:
            await redis.hset(self.key, domain_of(url), method.name)
        except Exception as exc:
            logger.info("domain memory unavailable: %s", exc)

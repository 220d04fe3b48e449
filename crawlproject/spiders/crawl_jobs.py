"""The spider ``crawl_jobs``: takes jobs, fetches them through the ladder, hands results to the pipeline.

Three ways to run it:

- ``scrapy crawl crawl_jobs`` (``crawljobs worker``): a daemon reading the Redis lists forever, the priority
  list first. It reads Redis from its own ``start()`` (current Scrapy no longer calls ``start_requests()``, which
  is all scrapy-redis's ``RedisSpider`` defines) and blocks on BLPOP for at most a second while idle, so a job
  pushed to an idle worker is picked up at once without polling Redis hard.
- ``-a max_jobs=N``: claims up to N pending jobs straight from PostgreSQL, processes them, prints a summary.
- ``-a url=URL`` or ``-a urls=FILE``: makes a batch of those URLs (checked like the API's) and crawls it to the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import DontCloseSpider
from scrapy.http import Response
from scrapy_redis.spiders import RedisSpider
from twisted.python.failure import Failure

from crawljobs.exceptions import CrawlJobsError
from crawljobs.queue import decode_message
from crawlproject.context import ClaimedJob, WorkerContext
from crawlproject.items import JobResult, failure_result
from crawlproject.ladder import DomainMemory
from crawlproject.methods import NoMethodAvailable

logger = logging.getLogger(__name__)

POP_CHUNK = 100
IDLE_BLOCK_SECONDS = 1


class CrawlJobsSpider(RedisSpider):
    name = "crawl_jobs"

    def __init__(
        self,
        *args: Any,
        max_jobs: str | None = None,
        url: str | None = None,
        urls: str | None = None,
        tenant: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_jobs = int(max_jobs) if max_jobs is not None else None
        if self.max_jobs is not None and self.max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        self.one_url = url
        self.urls_file = urls
        self.tenant = tenant
        self.batch_id: str | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> CrawlJobsSpider:
        spider: CrawlJobsSpider = super().from_crawler(crawler, *args, **kwargs)
        context = WorkerContext.of(crawler)
        spider.context = context
        spider.redis_key = context.settings.queue_prefix + ":queue:bulk"
        spider.max_in_flight = crawler.settings.getint("CRAWLJOBS_MAX_IN_FLIGHT", 64)
        spider.plan = context.plan
        return spider

    # scrapy-redis's own feeding (spider_idle -> next_requests) is replaced by start(): its message parsing
    # turns leftover JSON keys into form data and raises on bad messages, losing the rest of a popped batch.
    def next_requests(self) -> list[Request]:
        return []

    def make_request_from_data(self, data: bytes | str) -> Request | None:
        return None

    def spider_idle(self) -> None:
        """scrapy-redis keeps every spider open when idle; only the daemon should stay (its start() never ends)."""
        if self.mode == "daemon":
            raise DontCloseSpider

    @property
    def mode(self) -> str:
        if self.one_url is not None or self.urls_file is not None:
            return "urls"
        return "max_jobs" if self.max_jobs is not None else "daemon"

    async def start(self) -> AsyncIterator[Any]:
        manager = await self.context.manager()
        self.memory = DomainMemory(
            self.context.redis, manager.keys, self.plan, enabled=self.context.settings.domain_memory
        )
        if self.mode == "daemon":
            source = self._from_queue()
        elif self.mode == "max_jobs":
            source = self._from_table()
        else:
            source = self._from_urls()
        async for jobs in source:
            for out in await self._requests_for(jobs):
                yield out

    async def _room(self) -> None:
        """Wait until this worker may take another job."""
        engine = self.crawler.engine
        while len(self.context.held) >= self.max_in_flight or (engine is not None and engine.needs_backout()):  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def _from_queue(self) -> AsyncIterator[list[ClaimedJob]]:
        keys = (await self.context.manager()).keys
        redis = self.context.redis
        if redis is None:
            raise CrawlJobsError("the daemon needs CRAWLJOBS_REDIS_URL")
        while True:
            await self._room()
            want = max(1, min(POP_CHUNK, self.max_in_flight - len(self.context.held)))
            try:
                raw: list[bytes] = []
                for key in keys.in_order:
                    raw = await redis.lpop(key, want) or []
                    if raw:
                        break
                if not raw:
                    popped = await redis.blpop(list(keys.in_order), timeout=IDLE_BLOCK_SECONDS)
                    key, raw = (popped[0], [popped[1]]) if popped else (key, [])
            except Exception as exc:
                logger.warning("cannot read the queue: %s; retrying", exc, extra={"action": "pop"})
                await asyncio.sleep(2)
                continue
            ids = [job_id for job_id in map(decode_message, raw) if job_id is not None]
            if len(ids) < len(raw):
                logger.warning("dropped %d messages that are not job ids", len(raw) - len(ids))
            if not ids:
                continue
            try:
                jobs = await self.context.claim(ids)
            except Exception as exc:  # the database restarting: never let it end the feeding of this worker
                logger.warning("cannot claim %d jobs: %s; retrying", len(ids), exc, extra={"action": "claim"})
                await self._give_back(key, raw)
                await asyncio.sleep(2)
                continue
            if jobs:
                yield jobs

    async def _give_back(self, key: str | bytes, raw: list[bytes]) -> None:
        """Put popped messages back at the head of their list (when Redis is down too, the sweeper dispatches
        their jobs again: they stay pending)."""
        redis = self.context.redis
        try:
            if redis is not None:
                await redis.lpush(key, *reversed(raw))
        except Exception as exc:
            logger.warning("cannot give back %d messages: %s", len(raw), exc, extra={"action": "pop"})

    async def _from_table(self, *, batch_id: str | None = None) -> AsyncIterator[list[ClaimedJob]]:
        assert self.max_jobs is not None or batch_id is not None
        remaining = self.max_jobs if batch_id is None else None
        while remaining is None or remaining > 0:
            await self._room()
            want = POP_CHUNK if remaining is None else min(POP_CHUNK, remaining)
            jobs = await self.context.claim_pending(want, tenant=self.tenant, batch_id=batch_id)
            if not jobs:
                return
            if remaining is not None:
                remaining -= len(jobs)
            yield jobs

    async def _from_urls(self) -> AsyncIterator[list[ClaimedJob]]:
        manager = await self.context.manager()
        if self.one_url is not None:
            urls: list[object] = [self.one_url]
        else:
            assert self.urls_file is not None
            text = await asyncio.to_thread(Path(self.urls_file).read_text, encoding="utf-8")
            urls = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        self.tenant = self.tenant or "cli"
        submission = await manager.submit_batch(tenant=self.tenant, urls=urls)
        self.batch_id = submission.batch_id
        for failure in submission.failures:
            logger.warning("refused %s: %s", failure.url, failure.reason)
        logger.info("batch %s: %d jobs", submission.batch_id, submission.success_count)
        while True:
            async for jobs in self._from_table(batch_id=submission.batch_id):
                yield jobs
            batch = await manager.get_batch(tenant=self.tenant, batch_id=submission.batch_id)
            if batch.counts.finished == batch.counts.total:
                return
            await asyncio.sleep(0.5)  # others hold some of its jobs, or they wait for a retry

    async def _requests_for(self, jobs: list[ClaimedJob]) -> list[Request | JobResult]:
        remembered = await self.memory.recall([job.url for job in jobs])
        out: list[Request | JobResult] = []
        for job, method in zip(jobs, remembered, strict=True):
            try:
                ladder, index = self.plan.start(
                    job, remembered=method, explore=random.random() < self.plan.explore_rate
                )
            except NoMethodAvailable as exc:
                out.append(failure_result(job, str(exc)))
                continue
            out.append(self.request_for(job, ladder, index))
        return out

    def request_for(self, job: ClaimedJob, ladder: list[Any], index: int) -> Request:
        return Request(
            job.url,
            callback=self.parse_page,
            errback=self.on_error,
            dont_filter=True,
            meta={
                "job": job,
                "ladder": ladder,
                "method_index": index,
                "dont_retry": True,
                "dont_obey_robotstxt": not job.obey_robots,
            },
        )

    def parse_page(self, response: Response) -> list[JobResult]:
        return [response.meta["crawljobs_result"]]

    async def on_error(self, failure: Failure) -> AsyncIterator[JobResult]:
        request = failure.request  # type: ignore[attr-defined]
        result = request.meta.get("crawljobs_result")
        if result is None:
            result = failure_result(request.meta["job"], f"{type(failure.value).__name__}: {failure.value}")
        yield result

    def closed(self, reason: str) -> None:
        stats = self.crawler.stats
        assert stats is not None
        completed = int(stats.get_value("crawljobs/completed", 0) or 0)
        failed = int(stats.get_value("crawljobs/failed", 0) or 0)
        summary = {
            "mode": self.mode,
            "processed": completed + failed,
            "completed": completed,
            "failed": failed,
            "batch_id": self.batch_id,
            "reason": reason,
        }
        message = f"Processed {completed + failed} jobs ({completed} completed, {failed} failed)"
        logger.info(message)
        if self.mode != "daemon":
            print(message)
            print("CRAWLJOBS_SUMMARY " + json.dumps(summary))

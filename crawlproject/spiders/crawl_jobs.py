"""The spider ``crawl_jobs``: takes jobs, fetches them through the ladder, hands results to the pipeline.

Three ways to run it:

- ``scrapy crawl crawl_jobs`` (``crawljobs worker``): a daemon reading the Redis lists forever, the priority
  list first (``feed.QueueReader``), from its own ``start()``, which never ends. It claims what it pops in
  PostgreSQL before making a request (DESIGN rule 2) and gives the messages back when the claim fails.
  (A plain Spider: scrapy-redis's ``RedisSpider`` feeds only from ``spider_idle``, synchronously, one list, a
  whole batch at a time; it cannot await the claim.)
- ``-a max_jobs=N``: claims up to N pending jobs straight from PostgreSQL, processes them, prints a summary.
- ``-a url=URL`` or ``-a urls=FILE``: makes a batch of those URLs (checked like the API's) and crawls it to the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.http import Response
from twisted.python.failure import Failure

from crawljobs.lifecycle import ClaimedJob
from crawlproject.capacity import ClaimGauge, browser_pages
from crawlproject.config import WorkerConfig, WorkerConfigError
from crawlproject.context import WorkerContext
from crawlproject.errors import RenderAbandoned
from crawlproject.feed import QueueReader
from crawlproject.items import JobResult, failure_result
from crawlproject.ladder import FetchPlan
from crawlproject.memory import DomainMemory
from crawlproject.methods import NoMethodAvailable
from crawlproject.sessions import Sessions, cheaper_start

logger = logging.getLogger(__name__)

POP_CHUNK = 100


class CrawlJobsSpider(Spider):
    name = "crawl_jobs"
    # Set by from_crawler.
    config: WorkerConfig
    context: WorkerContext
    memory: DomainMemory
    sessions: Sessions
    plan: FetchPlan
    max_in_flight: int
    gauge: ClaimGauge

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
        # The held jobs whose first fetch was a render (crawlproject.capacity bounds claims by them).
        self.browser_jobs: set[uuid.UUID] = set()

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> CrawlJobsSpider:
        spider: CrawlJobsSpider = super().from_crawler(crawler, *args, **kwargs)
        config = WorkerConfig.of(crawler)
        if spider.mode == "daemon" and not config.settings.redis_url:
            raise WorkerConfigError("the daemon reads the queue: set CRAWLJOBS_REDIS_URL")
        spider.config = config
        spider.context = WorkerContext.of(crawler)
        spider.memory = DomainMemory.of(crawler)
        spider.sessions = Sessions.of(crawler)
        spider.max_in_flight = config.max_in_flight
        spider.plan = spider.context.plan
        spider.gauge = ClaimGauge(pages=browser_pages(config.settings))
        return spider

    @property
    def mode(self) -> str:
        if self.one_url is not None or self.urls_file is not None:
            return "urls"
        return "max_jobs" if self.max_jobs is not None else "daemon"

    async def start(self) -> AsyncIterator[Any]:
        await self.context.manager()
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
        """Wait until this worker may take another job (and its browser another render, when renders are
        expected: crawlproject.capacity)."""
        engine = self.crawler.engine
        while self._want() == 0 or (engine is not None and engine.needs_backout()):  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    def _browser_held(self) -> int:
        held = self.context.held
        self.browser_jobs.intersection_update(held)
        return len(self.browser_jobs)

    def _want(self, limit: int = POP_CHUNK) -> int:
        """How many jobs to claim now: the worker's room, bounded by what its browser can start soon."""
        room = min(limit, self.max_in_flight - len(self.context.held))
        return self.gauge.want(room, self._browser_held())

    async def _from_queue(self) -> AsyncIterator[list[ClaimedJob]]:
        redis = self.context.redis
        assert redis is not None, "from_crawler refuses a daemon without CRAWLJOBS_REDIS_URL"
        reader = QueueReader(redis, self.config.keys)
        while True:
            await self._room()
            want = max(1, self._want())
            try:
                popped = await reader.pop(want)
            except Exception as exc:
                logger.warning("cannot read the queue: %s; retrying", exc, extra={"action": "pop"})
                await asyncio.sleep(2)
                continue
            if popped is None or not popped.ids:
                continue
            try:
                # Shielded, here and below: Scrapy cancels start() when it stops, and a claim the database
                # has made must still reach `held`, or this worker could not give those jobs back.
                jobs, waiting = await asyncio.shield(self.context.claim(popped.ids))
            except Exception as exc:  # the database restarting: never let it end the feeding of this worker
                logger.warning(
                    "cannot claim %d jobs: %s; retrying", len(popped.ids), exc, extra={"action": "claim"}
                )
                await reader.give_back(popped)
                await asyncio.sleep(2)
                continue
            if waiting:  # their tenant is at its limit: queued again, the tenant passed over for a moment
                await reader.wait_again(waiting)
            if jobs:
                yield jobs

    async def _from_table(self, *, batch_id: str | None = None) -> AsyncIterator[list[ClaimedJob]]:
        assert self.max_jobs is not None or batch_id is not None
        remaining = self.max_jobs if batch_id is None else None
        while remaining is None or remaining > 0:
            await self._room()
            want = max(1, self._want(POP_CHUNK if remaining is None else min(POP_CHUNK, remaining)))
            jobs = await asyncio.shield(
                self.context.claim_pending(want, tenant=self.tenant, batch_id=batch_id)
            )
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
        remembered = await self.memory.recall(jobs)
        with_sessions = await self.sessions.tiers(jobs)
        out: list[Request | JobResult] = []
        for job, method, tiers in zip(jobs, remembered, with_sessions, strict=True):
            try:
                ladder, index = self.plan.start(
                    job, remembered=method, explore=random.random() < self.plan.explore_rate
                )
            except NoMethodAvailable as exc:
                out.append(failure_result(job, str(exc)))
                continue
            index = cheaper_start(ladder, index, tiers)
            if ladder[index].engine == "browser":
                self.browser_jobs.add(job.id)
            out.append(self.request_for(job, ladder, index))
        self.gauge.claimed(len(jobs), sum(1 for job in jobs if job.id in self.browser_jobs))
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
        if failure.check(RenderAbandoned):
            return  # no attempt and no result: the job is cancelled, taken over, or given back on shutdown
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

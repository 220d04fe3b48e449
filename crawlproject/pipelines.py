"""The item pipeline: job results to PostgreSQL, in batches, fenced by attempt, with one NOTIFY per batch.

Results wait at most ``FLUSH_SECONDS`` (or until ``FLUSH_SIZE`` are queued) and are written in one
transaction with their attempts; a result whose fence fails (the lease was reclaimed, the job cancelled)
changes nothing. NOTIFY takes a global lock at commit, so there is one per batch, not one per row.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from scrapy.crawler import Crawler

from crawlproject.context import WorkerContext
from crawlproject.items import JobResult
from crawlproject.telemetry import WorkerMetrics

logger = logging.getLogger(__name__)

FLUSH_SIZE = 200
FLUSH_SECONDS = 0.05


class ResultPipeline:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.context = WorkerContext.of(crawler)
        self.metrics = WorkerMetrics.of(crawler)
        self.pending: list[JobResult] = []
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ResultPipeline:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, JobResult):
            return item
        self.pending.append(item)
        if len(self.pending) >= FLUSH_SIZE:
            await self.flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())
        return item

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_SECONDS)
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            while self.pending:
                batch, self.pending = self.pending[:FLUSH_SIZE], self.pending[FLUSH_SIZE:]
                await self._write(batch)

    async def _write(self, batch: list[JobResult]) -> None:
        leases = self.context.leases
        results = [r.record() for r in batch]
        attempts = [attempt for r in batch for attempt in r.attempts]
        for delay in (0.5, 1, 2, 4, 8):
            try:
                written = await leases.finish(results, attempts)
                break
            except Exception as exc:  # the database restarting: keep the results and try again
                logger.warning("could not write %d results (%s); retrying", len(batch), exc)
                await asyncio.sleep(delay)
        else:
            # Let go of them unwritten: no longer renewed, their leases expire and they run again.
            leases.let_go([r.job.id for r in batch])
            logger.error(
                "gave up writing %d results; their leases will expire and they run again", len(batch)
            )
            return
        self.metrics.record_results(batch, written)  # counted in memory; sent to Redis by a task of its own
        stats = self.crawler.stats
        written_ids = set(written)
        for r in batch:
            if r.job.id not in written_ids:
                if stats is not None:
                    stats.inc_value("crawljobs/fenced_out")
                continue
            if stats is not None:
                stats.inc_value("crawljobs/completed" if r.status == "completed" else "crawljobs/failed")

    async def close_spider(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            await self._flusher
        await self.flush()

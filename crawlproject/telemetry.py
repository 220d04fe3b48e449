"""What a worker tells operators: shared counters, its heartbeat and Scrapy stats in Redis, job log records.

- `WorkerMetrics` (one per crawler, ``WorkerMetrics.of(crawler)``) counts each written result batch's attempts
  (by method and outcome), fetch times and finished jobs, and logs the jobs that failed; the result pipeline calls
  `WorkerMetrics.record_results` once per batch and the counts go to Redis in one pipelined MULTI, in a task of
  their own (the pipeline never waits on Redis; no round trip per page).
- `WorkerTelemetry` (an extension) publishes the worker's heartbeat (time, jobs in flight) and its numeric
  Scrapy stats every ``CRAWLJOBS_METRICS_INTERVAL_SECONDS`` and once more at close, with a TTL, so /metrics on
  any API process shows them by worker id (``crawljobs.metrics``).

It uses a Redis client of its own, so that it can still write after the worker context has closed its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

from crawljobs.logs import job_fields, tag_logs
from crawljobs.metrics import MetricKeys, MetricsBuffer, numeric_stats, publish_worker
from crawljobs.queue import redis_client
from crawlproject.context import WorkerContext
from crawlproject.items import JobResult

logger = logging.getLogger(__name__)


class WorkerMetrics:
    _KEY = "_crawljobs_worker_metrics"

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.context = WorkerContext.of(crawler)
        settings = self.context.settings
        self.keys = MetricKeys.for_prefix(settings.queue_prefix)
        self.redis: aioredis.Redis | None = redis_client(settings.redis_url) if settings.redis_url else None
        self.buffer = MetricsBuffer(self.redis, settings.queue_prefix)
        tag_logs(worker=self.context.worker_id)

    @classmethod
    def of(cls, crawler: Crawler) -> WorkerMetrics:
        metrics: WorkerMetrics | None = getattr(crawler, cls._KEY, None)
        if metrics is None:
            metrics = cls(crawler)
            setattr(crawler, cls._KEY, metrics)
        return metrics

    def record_results(self, batch: Sequence[JobResult], written: Sequence[Any]) -> None:
        """Count a result batch the pipeline wrote (``written``: the ids whose fence held) and send the counts."""
        buffer = self.buffer
        written_ids = set(written)
        for result in batch:
            for attempt in result.attempts:
                buffer.count("attempts", attempt.method, attempt.outcome)
                if attempt.duration_ms is not None:
                    buffer.observe_fetch(attempt.method, attempt.duration_ms / 1000)
            job = result.job
            if job.id not in written_ids:
                logger.info(
                    "job %s: result not written, this worker no longer holds it (lease reclaimed or cancelled)",
                    job.id,
                    extra={"action": "fenced_out", **job_fields(job.id, job.batch_id)},
                )
                continue
            buffer.count("jobs_finished", result.status)
            if result.status != "completed":
                logger.warning(
                    "job %s failed: %s",
                    job.id,
                    result.error_message,
                    extra={
                        "action": "job_failed",
                        "attempts": len(result.attempts),
                        **job_fields(job.id, job.batch_id),
                    },
                )
        buffer.flush_soon()

    async def publish(self) -> None:
        """This worker's heartbeat and numeric Scrapy stats, replaced in Redis."""
        if self.redis is None:
            return
        stats = self.crawler.stats.get_stats() if self.crawler.stats is not None else {}
        await publish_worker(
            self.redis,
            self.keys,
            self.context.worker_id,
            in_flight=len(self.context.held),
            stats=numeric_stats(stats),
            interval=self.context.settings.metrics_interval_seconds,
        )

    async def close(self) -> None:
        await self.buffer.close()
        if self.redis is not None:
            await self.redis.aclose()


class WorkerTelemetry:
    """Publishes the worker's heartbeat and Scrapy stats now and then, and at close (after the pipeline's last
    write: Scrapy closes the item pipelines before it sends ``spider_closed``)."""

    def __init__(self, crawler: Crawler) -> None:
        self.metrics = WorkerMetrics.of(crawler)
        if self.metrics.redis is None:
            raise NotConfigured("no CRAWLJOBS_REDIS_URL: nothing to publish to")
        self.interval = self.metrics.context.settings.metrics_interval_seconds
        self._task: asyncio.Task[None] | None = None
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> WorkerTelemetry:
        return cls(crawler)

    async def spider_opened(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._publish_forever(), name="crawljobs-telemetry"
        )

    async def _publish_forever(self) -> None:
        while True:
            try:
                await self.metrics.publish()
                await self.metrics.buffer.flush()
            except Exception as exc:  # Redis down: try again next time, never stop the worker
                logger.warning(
                    "could not publish the worker's metrics: %s", exc, extra={"action": "telemetry"}
                )
            await asyncio.sleep(self.interval)

    async def spider_closed(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.metrics.publish()
        except Exception as exc:
            logger.warning(
                "could not publish the worker's last metrics: %s", exc, extra={"action": "telemetry"}
            )
        await self.metrics.close()

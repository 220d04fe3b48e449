"""The worker's lifecycle: open its context when the spider opens, give back what it holds when it closes."""

from __future__ import annotations

import logging

from scrapy import signals
from scrapy.crawler import Crawler

from crawlproject.context import WorkerContext


class WorkerLifecycle:
    def __init__(self, crawler: Crawler) -> None:
        self.context = WorkerContext.of(crawler)
        # Scrapy leaves the root logger at NOTSET, so every per-page DEBUG record is built and then dropped.
        logging.getLogger("scrapy").setLevel(crawler.settings.get("LOG_LEVEL", "INFO"))
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> WorkerLifecycle:
        return cls(crawler)

    async def spider_opened(self) -> None:
        await self.context.manager()

    async def spider_closed(self) -> None:
        await self.context.close()

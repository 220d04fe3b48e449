"""The worker's components share one fetch plan: proxy failures reported after an attempt steer the next pick."""

from __future__ import annotations

import pytest
from scrapy.utils.test import get_crawler

from crawlproject.context import WorkerContext
from crawlproject.ladder import PROXY_MAX_FAILURES
from crawlproject.middlewares import FetchMethodMiddleware, JobRetryMiddleware
from crawlproject.spiders.crawl_jobs import CrawlJobsSpider

BAD = "http://u:p@127.0.0.1:1"
GOOD = "http://u:p@127.0.0.1:2"


def test_one_plan_for_picking_and_reporting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLJOBS_PREMIUM_PROXIES", f"{BAD},{GOOD}")
    crawler = get_crawler(CrawlJobsSpider)
    fetch = FetchMethodMiddleware.from_crawler(crawler)
    retry = JobRetryMiddleware.from_crawler(crawler)
    spider = CrawlJobsSpider.from_crawler(crawler)
    plan = WorkerContext.of(crawler).plan
    assert fetch.plan is plan and retry.plan is plan and spider.plan is plan

    for _ in range(PROXY_MAX_FAILURES):
        retry.plan.pools["premium"].report(BAD, ok=False)
    assert {fetch.plan.pools["premium"].pick() for _ in range(4)} == {GOOD}

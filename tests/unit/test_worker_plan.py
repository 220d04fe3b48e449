"""The worker's components share one configuration and one fetch plan per crawler, read from the crawler's
settings: proxy failures reported after an attempt steer the next pick; contradictions stop it at start."""

from __future__ import annotations

from typing import Any

import pytest
from scrapy.crawler import Crawler
from scrapy.settings import Settings as ScrapySettings
from scrapy.utils.test import get_crawler
from twisted.internet.error import DNSLookupError
from twisted.python.failure import Failure

from crawljobs.config import Settings
from crawljobs.queue import QueueKeys
from crawlproject.blocks import Block
from crawlproject.browser import BrowserGuard, BrowserRequestCheck
from crawlproject.config import SETTINGS_KEY, WorkerConfig, WorkerConfigError
from crawlproject.context import WorkerContext
from crawlproject.errors import AddressRefused
from crawlproject.ladder import PROXY_MAX_FAILURES
from crawlproject.memory import DomainMemory
from crawlproject.methods import Method
from crawlproject.middlewares import FetchMethodMiddleware, JobRetryMiddleware, NetworkGuardMiddleware
from crawlproject.resolver import GuardedResolver
from crawlproject.spiders.crawl_jobs import CrawlJobsSpider

BAD = "http://u:p@127.0.0.1:1"
GOOD = "http://u:p@127.0.0.2:2"


def crawler_for(settings: Settings | None = None, **scrapy: Any) -> Crawler:
    """A crawler whose settings carry ``settings`` as crawlproject.settings hands them over."""
    settings = settings or Settings(database_url="postgresql://unused", redis_url="redis://unused")
    return get_crawler(
        CrawlJobsSpider,
        {SETTINGS_KEY: settings, "DOWNLOAD_MAXSIZE": settings.max_body_bytes, **scrapy},
    )


def test_one_plan_for_picking_and_reporting() -> None:
    crawler = crawler_for(
        Settings(database_url="postgresql://unused", redis_url="redis://unused", premium_proxies=[BAD, GOOD])
    )
    fetch = FetchMethodMiddleware.from_crawler(crawler)
    retry = JobRetryMiddleware.from_crawler(crawler)
    spider = CrawlJobsSpider.from_crawler(crawler)
    plan = WorkerContext.of(crawler).plan
    assert fetch.plan is plan and retry.plan is plan and spider.plan is plan

    for _ in range(PROXY_MAX_FAILURES):
        retry.plan.pools["premium"].report(BAD, ok=False)
    assert {fetch.plan.pools["premium"].pick() for _ in range(4)} == {GOOD}


def test_one_configuration_per_crawler_from_its_settings() -> None:
    settings = Settings(
        database_url="postgresql://unused",
        redis_url="redis://unused",
        queue_prefix="tenant-7",
        allowed_networks=["10.1.0.0/16"],
        ultra_premium_proxies=[GOOD],
    )
    crawler = crawler_for(settings, CRAWLJOBS_MAX_IN_FLIGHT=9)
    config = WorkerConfig.of(crawler)
    assert WorkerConfig.of(crawler) is config
    assert config.settings == settings
    assert config.keys == QueueKeys.for_prefix("tenant-7")
    assert config.max_in_flight == 9

    assert WorkerContext.of(crawler).config is config
    assert NetworkGuardMiddleware.from_crawler(crawler).policy is config.network
    assert JobRetryMiddleware.from_crawler(crawler).max_body_bytes == settings.max_body_bytes
    spider = CrawlJobsSpider.from_crawler(crawler)
    assert spider.config is config and spider.max_in_flight == 9

    # One domain memory, on the key of the prefix.
    memory = DomainMemory.of(crawler)
    assert DomainMemory.of(crawler) is memory and spider.memory is memory
    assert memory.key == "tenant-7:domain-method"
    assert memory.key_of("acme") == "tenant-7:domain-method:acme"  # one hash per tenant

    resolver = GuardedResolver.from_crawler(crawler, object())  # a reactor it only keeps
    assert resolver.policy is config.network
    assert resolver.exempt == {"127.0.0.2"}
    assert resolver.policy.refusal("10.1.2.3") is None
    assert resolver.policy.refusal("10.2.0.1") is not None

    # The browser add-on hands scrapy-playwright this crawler's check.
    installed = ScrapySettings()
    BrowserGuard.from_crawler(crawler).update_settings(installed)
    assert installed["PLAYWRIGHT_ABORT_REQUEST"] == BrowserRequestCheck(config.network)


def test_a_daemon_does_not_open_a_redis_client_before_it_runs() -> None:
    crawler = crawler_for()
    spider = CrawlJobsSpider.from_crawler(crawler)
    assert spider.mode == "daemon"
    assert WorkerContext.of(crawler).redis is None


@pytest.mark.parametrize(
    ("scrapy", "settings", "message"),
    [
        ({SETTINGS_KEY: None}, {}, "SCRAPY_SETTINGS_MODULE=crawlproject.settings"),
        ({}, {"database_url": None}, "CRAWLJOBS_DATABASE_URL is not set"),
        ({}, {"ladder": "http:direct,http:premium", "ladder_ceiling": "browser:direct"}, "fetch ceiling"),
        ({}, {"ladder": "http:premium"}, "CRAWLJOBS_PREMIUM_PROXIES is empty"),
        ({"DOWNLOAD_MAXSIZE": 0}, {}, "set the size limit with CRAWLJOBS_MAX_BODY_BYTES"),
        ({"CRAWLJOBS_MAX_IN_FLIGHT": 0}, {}, "CRAWLJOBS_MAX_IN_FLIGHT must be at least 1"),
    ],
)
def test_contradictions_stop_the_worker_at_start(
    scrapy: dict[str, Any], settings: dict[str, Any], message: str
) -> None:
    values: dict[str, Any] = {
        "database_url": "postgresql://unused",
        "redis_url": "redis://unused",
        **settings,
    }
    crawler = crawler_for(Settings(**values), **scrapy)
    with pytest.raises(WorkerConfigError, match=message):
        FetchMethodMiddleware.from_crawler(crawler)


def test_a_daemon_without_redis_stops_at_start() -> None:
    crawler = crawler_for(Settings(database_url="postgresql://unused", redis_url=None))
    with pytest.raises(WorkerConfigError, match="CRAWLJOBS_REDIS_URL"):
        CrawlJobsSpider.from_crawler(crawler)
    assert CrawlJobsSpider.from_crawler(crawler, max_jobs="3").mode == "max_jobs"


@pytest.mark.parametrize(
    ("block", "target"),
    [
        (Block("needs_javascript", "needs javascript"), 3),  # the next browser method
        (Block("challenge", "cloudflare challenge"), 1),  # the next method
        (Block("status", "status 403"), 1),
        (None, 1),
    ],
)
def test_a_page_that_needs_javascript_climbs_to_the_next_browser_method(
    block: Block | None, target: int
) -> None:
    ladder = [
        Method.parse(m)
        for m in ("http:direct", "http:premium", "http:ultra_premium", "browser:ultra_premium")
    ]
    assert JobRetryMiddleware._escalation_target(ladder, 0, block) == target
    assert JobRetryMiddleware._escalation_target(ladder, 3, block) is None  # at the ceiling


def test_the_resolver_keeps_each_names_last_refusal_for_the_retry_middleware() -> None:
    """Twisted reports a refused answer as a name with no results: the resolver says why it refused."""
    resolver = GuardedResolver.from_crawler(crawler_for(), object())
    with pytest.raises(AddressRefused) as refused:
        resolver._check("10.2.0.1", "Shop.Example")
    assert str(refused.value) == "host Shop.Example resolves to 10.2.0.1, which is private"
    assert resolver.refusal("shop.example") == str(refused.value)
    assert resolver._check("93.184.215.14", "shop.example") == "93.184.215.14"  # answered otherwise now
    assert resolver.refusal("shop.example") is None
    with pytest.raises(AddressRefused):
        resolver._check("127.0.0.1", "shop.example")
    resolver._failed(Failure(DNSLookupError("gone")), "SHOP.example")  # no answer at all now
    assert resolver.refusal("shop.example") is None

"""The worker's configuration, the Scrapy way: read once per crawler from its settings, typed, checked at start.

``crawlproject.settings`` reads the crawljobs settings object once and hands it to Scrapy as
``CRAWLJOBS_SETTINGS``, next to the Scrapy settings derived from it. ``WorkerConfig.of(crawler)`` builds the
typed configuration from ``crawler.settings`` the first time a component asks, and shares it with every other
component of that crawler (the spider, the middlewares, the resolver, the browser guard, the context). A
contradiction (no database, a ladder that cannot be climbed, a Scrapy size limit that is not
CRAWLJOBS_MAX_BODY_BYTES) stops the worker at start with ``WorkerConfigError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

from scrapy.crawler import Crawler
from scrapy.settings import BaseSettings

from crawljobs.config import Settings
from crawljobs.exceptions import CrawlJobsError
from crawljobs.queue import DOMAIN_METHOD_KEY, QueueKeys
from crawljobs.urls import NetworkPolicy
from crawlproject.methods import LadderConfig
from crawlproject.profiles import Identities

# The Scrapy setting that carries the crawljobs settings object.
SETTINGS_KEY = "CRAWLJOBS_SETTINGS"


class WorkerConfigError(CrawlJobsError):
    """The worker's configuration contradicts itself."""

    code = "worker_config"


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker component reads from configuration, parsed once."""

    settings: Settings
    keys: QueueKeys
    domain_method_key: str
    network: NetworkPolicy
    # Proxy hosts are exempt from the resolver's network rules: the operator chose them.
    proxy_hosts: frozenset[str]
    ladder: LadderConfig
    # How many jobs this worker holds at once (claimed and not yet finished).
    max_in_flight: int
    max_body_bytes: int
    # The browser's profiles (crawlproject.profiles): its version, regions and brand.
    identities: Identities

    _KEY: ClassVar[str] = "_crawljobs_worker_config"

    @classmethod
    def of(cls, crawler: Crawler) -> WorkerConfig:
        """The configuration of this crawler, built from its settings on first use."""
        config: WorkerConfig | None = getattr(crawler, cls._KEY, None)
        if config is None:
            config = cls.from_settings(crawler.settings)
            setattr(crawler, cls._KEY, config)
        return config

    @classmethod
    def from_settings(cls, scrapy_settings: BaseSettings) -> WorkerConfig:
        settings = scrapy_settings.get(SETTINGS_KEY)
        if not isinstance(settings, Settings):
            raise WorkerConfigError(
                f"the Scrapy setting {SETTINGS_KEY} holds no crawljobs settings: run the worker with "
                "SCRAPY_SETTINGS_MODULE=crawlproject.settings (crawljobs worker does)"
            )
        if not settings.database_url:
            raise WorkerConfigError("CRAWLJOBS_DATABASE_URL is not set")
        try:
            ladder = LadderConfig.from_values(
                settings.ladder,
                settings.ladder_ceiling,
                settings.method_costs,
                settings.premium_proxies,
                settings.ultra_premium_proxies,
            )
        except ValueError as exc:
            raise WorkerConfigError(str(exc)) from None
        max_in_flight = scrapy_settings.getint(
            "CRAWLJOBS_MAX_IN_FLIGHT", 2 * scrapy_settings.getint("CONCURRENT_REQUESTS")
        )
        if max_in_flight < 1:
            raise WorkerConfigError(f"CRAWLJOBS_MAX_IN_FLIGHT must be at least 1, not {max_in_flight}")
        maxsize = scrapy_settings.getint("DOWNLOAD_MAXSIZE")
        if maxsize != settings.max_body_bytes:
            raise WorkerConfigError(
                f"DOWNLOAD_MAXSIZE ({maxsize}) is not CRAWLJOBS_MAX_BODY_BYTES ({settings.max_body_bytes}): "
                "set the size limit with CRAWLJOBS_MAX_BODY_BYTES"
            )
        launch = scrapy_settings.getdict("PLAYWRIGHT_LAUNCH_OPTIONS")
        try:
            identities = Identities.from_values(
                launch.get("executable_path"),
                settings.browser_region,
                settings.browser_tier_regions,
                settings.browser_brand,
            )
        except ValueError as exc:
            raise WorkerConfigError(str(exc)) from None
        return cls(
            settings=settings,
            keys=QueueKeys.for_prefix(settings.queue_prefix),
            domain_method_key=DOMAIN_METHOD_KEY.format(prefix=settings.queue_prefix),
            network=NetworkPolicy.from_settings(settings),
            proxy_hosts=frozenset(
                host
                for proxy in (*settings.premium_proxies, *settings.ultra_premium_proxies)
                if (host := urlsplit(proxy).hostname)
            ),
            ladder=ladder,
            max_in_flight=max_in_flight,
            max_body_bytes=settings.max_body_bytes,
            identities=identities,
        )

"""Network rules inside the browser: every request Chromium makes (page scripts included) is checked.

``BrowserGuard`` is a Scrapy add-on: built with the crawler, it installs its ``BrowserRequestCheck`` (the
crawler's network rules) as scrapy-playwright's ``PLAYWRIGHT_ABORT_REQUEST``, which takes a callable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from scrapy.crawler import Crawler
from scrapy.settings import BaseSettings

from crawljobs.exceptions import UrlRejected
from crawljobs.urls import NetworkPolicy, parse_ip_literal, resolve_and_check
from crawlproject.config import WorkerConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrowserRequestCheck:
    """PLAYWRIGHT_ABORT_REQUEST: True (abort) for a request to an address the network rules refuse."""

    policy: NetworkPolicy

    async def __call__(self, request: object) -> bool:
        url: str = getattr(request, "url", "")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return parts.scheme not in ("data", "blob", "about")
        host = parts.hostname or ""
        literal = parse_ip_literal(host)
        if literal is not None:
            refused = self.policy.refusal(literal) is not None
        else:
            try:
                await resolve_and_check(host, self.policy)
                refused = False
            except UrlRejected:
                refused = True
        if refused:
            logger.warning(
                "browser request to %s refused by the network rules", url[:200], extra={"action": "ssrf"}
            )
        return refused


class BrowserGuard:
    """The add-on that gives scrapy-playwright this crawler's check."""

    def __init__(self, check: BrowserRequestCheck) -> None:
        self.check = check

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BrowserGuard:
        return cls(BrowserRequestCheck(WorkerConfig.of(crawler).network))

    def update_settings(self, settings: BaseSettings) -> None:
        settings.set("PLAYWRIGHT_ABORT_REQUEST", self.check, priority="addon")

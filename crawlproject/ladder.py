"""The fetch plan of a worker: the ladder of methods and the proxy pools of each tier.

The pure rules (which methods a job may use, where it starts, block and retry decisions) live in
``methods``, ``blocks`` and ``retrying``; this module adds the state: proxies rotated with failure tracking.
The cheapest method that worked for each domain is kept by ``memory.DomainMemory``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from crawlproject.methods import LadderConfig, Method, ladder_for, start_index

if TYPE_CHECKING:
    from crawljobs.lifecycle import ClaimedJob
    from crawlproject.config import WorkerConfig

logger = logging.getLogger(__name__)

# A proxy that failed this many times in a row rests for PROXY_REST_SECONDS.
PROXY_MAX_FAILURES = 3
PROXY_REST_SECONDS = 60.0


@dataclass
class ProxyPool:
    """The proxies of one tier, taken in turn; one that keeps failing rests for a while."""

    tier: str
    urls: list[str]
    _next: int = 0
    _failures: dict[str, int] = field(default_factory=dict)
    _resting_until: dict[str, float] = field(default_factory=dict)

    def pick(self) -> str:
        now = time.monotonic()
        for _ in range(len(self.urls)):
            url = self.urls[self._next % len(self.urls)]
            self._next += 1
            if self._resting_until.get(url, 0) <= now:
                return url
        url = self.urls[self._next % len(self.urls)]  # all resting: use them anyway, in turn
        self._next += 1
        return url

    def report(self, url: str, *, ok: bool) -> None:
        if ok:
            self._failures.pop(url, None)
            return
        count = self._failures.get(url, 0) + 1
        self._failures[url] = count
        if count >= PROXY_MAX_FAILURES:
            self._resting_until[url] = time.monotonic() + PROXY_REST_SECONDS
            self._failures[url] = 0
            logger.warning("proxy %s of tier %s failed %d times: resting", _safe(url), self.tier, count)


def _safe(proxy_url: str) -> str:
    """A proxy URL without its credentials, for logs."""
    parts = urlsplit(proxy_url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}"


@dataclass
class FetchPlan:
    config: LadderConfig
    pools: dict[str, ProxyPool]
    explore_rate: float

    @classmethod
    def from_config(cls, config: WorkerConfig) -> FetchPlan:
        settings = config.settings
        pools = {
            "premium": ProxyPool("premium", list(settings.premium_proxies)),
            "ultra_premium": ProxyPool("ultra_premium", list(settings.ultra_premium_proxies)),
        }
        return cls(config=config.ladder, pools=pools, explore_rate=settings.explore_rate)

    def start(self, job: ClaimedJob, *, remembered: Method | None, explore: bool) -> tuple[list[Method], int]:
        """The job's ladder and the index it starts at (NoMethodAvailable if it has none)."""
        ladder = ladder_for(
            self.config, render=job.render, premium=job.premium, ultra_premium=job.ultra_premium
        )
        return ladder, start_index(ladder, remembered, explore=explore, order=self.config.order)

    def cost(self, method: Method) -> float:
        return float(self.config.costs.get(method.name, 0.0))

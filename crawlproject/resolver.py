"""Scrapy's DNS resolver with the network rules (DESIGN rule 7) applied to every answer.

Scrapy's downloader connects to the address this resolver returns, so the address checked is the address
used: a second lookup (DNS rebinding) cannot slip a private address in. Redirects are resolved here too.
Proxy hosts from the configuration are exempt: the operator chose them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from scrapy.crawler import Crawler
from scrapy.resolver import CachingThreadedResolver
from twisted.internet.defer import Deferred

from crawljobs.urls import NetworkPolicy
from crawlproject.config import WorkerConfig
from crawlproject.errors import AddressRefused


class GuardedResolver(CachingThreadedResolver):
    policy: NetworkPolicy = NetworkPolicy()
    exempt: frozenset[str] = frozenset()

    @classmethod
    def from_crawler(cls, crawler: Crawler, reactor: Any) -> GuardedResolver:
        resolver: GuardedResolver = super().from_crawler(crawler, reactor)
        config = WorkerConfig.of(crawler)
        resolver.policy = config.network
        resolver.exempt = config.proxy_hosts
        return resolver

    def getHostByName(self, name: str, timeout: Sequence[int] = ()) -> Deferred[str]:
        deferred = super().getHostByName(name, timeout)
        if name in self.exempt:
            return deferred
        deferred.addCallback(self._check, name)
        return deferred

    def _check(self, address: str, name: str) -> str:
        reason = self.policy.refusal(ipaddress.ip_address(address))
        if reason is not None:
            raise AddressRefused(f"host {name} resolves to a refused address: {reason}")
        return address

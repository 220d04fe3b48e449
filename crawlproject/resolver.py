"""Scrapy's DNS resolver with the network rules (DESIGN rule 7) applied to every answer.

Scrapy's downloader connects to the address this resolver returns, so the address checked is the address
used: a second lookup (DNS rebinding) cannot slip a private address in. Redirects are resolved here too.
Proxy hosts from the configuration are exempt: the operator chose them.

A refused answer fails the look-up with ``AddressRefused`` ("host h resolves to 127.0.0.2, which is
loopback"), but Twisted's connecting endpoint reports any failed look-up as a name with no results. So the
resolver also keeps the last refusal of each name (``refusal``), which the retry middleware reads when a
fetch fails that way: the job says it was refused by the network rules, not that its name does not resolve.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from scrapy.crawler import Crawler
from scrapy.resolver import CachingThreadedResolver
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from crawljobs.urls import NetworkPolicy
from crawljobs.urls.policy import resolved_refusal
from crawlproject.config import WorkerConfig
from crawlproject.errors import AddressRefused

# How many names' refusals are kept (the names in flight are what matters: a few per concurrent fetch).
REFUSALS_KEPT = 4096


class GuardedResolver(CachingThreadedResolver):
    policy: NetworkPolicy = NetworkPolicy()
    exempt: frozenset[str] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refusals: OrderedDict[str, str] = OrderedDict()

    @classmethod
    def from_crawler(cls, crawler: Crawler, reactor: Any) -> GuardedResolver:
        resolver: GuardedResolver = super().from_crawler(crawler, reactor)
        config = WorkerConfig.of(crawler)
        resolver.policy = config.network
        resolver.exempt = config.proxy_hosts
        return resolver

    @staticmethod
    def installed() -> GuardedResolver | None:
        """The resolver Scrapy installed on the reactor (one a process), if it is one of ours."""
        from twisted.internet import reactor

        resolver = getattr(reactor, "resolver", None)
        return resolver if isinstance(resolver, GuardedResolver) else None

    def getHostByName(self, name: str, timeout: Sequence[int] = ()) -> Deferred[str]:
        deferred = super().getHostByName(name, timeout)
        if name in self.exempt:
            return deferred
        deferred.addCallbacks(self._check, self._failed, callbackArgs=(name,), errbackArgs=(name,))
        return deferred

    def refusal(self, name: str) -> str | None:
        """Why the last answer for ``name`` was refused; None when it was allowed or never asked."""
        return self._refusals.get(name.lower())

    def _failed(self, failure: Failure, name: str) -> Failure:
        self._refusals.pop(name.lower(), None)  # no answer at all now: not a refusal
        return failure

    def _check(self, address: str, name: str) -> str:
        reason = resolved_refusal(name, [address], self.policy)
        key = name.lower()
        if reason is None:
            self._refusals.pop(key, None)
            return address
        self._refusals[key] = reason
        self._refusals.move_to_end(key)
        while len(self._refusals) > REFUSALS_KEPT:
            self._refusals.popitem(last=False)
        raise AddressRefused(reason)

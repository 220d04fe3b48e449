"""Fixed DNS answers for worker processes of the acceptance tests: no name ever reaches a real DNS server.

Start a worker with ``-s TWISTED_DNS_RESOLVER=tests.acceptance.names.MappedResolver``: the names of :data:`NAMES`
answer their loopback address, an IP literal answers itself, any other name does not resolve. The answers go
through ``crawlproject.resolver.GuardedResolver``'s network rules exactly as a real resolver's would.
"""

from __future__ import annotations

from collections.abc import Sequence

from scrapy.resolver import CachingThreadedResolver
from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.error import DNSLookupError

from crawlproject.resolver import GuardedResolver

NAMES = {
    "allowed.test": "127.0.0.1",
    "refused.test": "127.0.0.2",  # a loopback address the test configuration (127.0.0.1/32) does not allow
}


class _FixedAnswers(CachingThreadedResolver):
    """The look-up itself, in place of the system resolver's (and of its cache)."""

    def getHostByName(self, name: str, timeout: Sequence[int] = ()) -> defer.Deferred[str]:
        if isIPAddress(name) or isIPv6Address(name):
            return defer.succeed(name)
        address = NAMES.get(name.lower().rstrip("."))
        if address is None:
            return defer.fail(DNSLookupError(f"{name} is not a name of tests.acceptance.names"))
        return defer.succeed(address)


class MappedResolver(GuardedResolver, _FixedAnswers):
    """The worker's resolver (its network rules) over the fixed answers."""

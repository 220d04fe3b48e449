"""The worker's own exceptions, typed so that the retry decision (``retrying``) knows them by class."""

from __future__ import annotations

from scrapy.exceptions import IgnoreRequest
from twisted.internet.error import DNSLookupError


class AddressRefused(DNSLookupError):
    """The host resolves to an address the network rules refuse (raised by ``resolver.GuardedResolver``)."""


class AddressForbidden(IgnoreRequest):
    """The target address is refused by the network rules (raised before anything is sent)."""


class ForbiddenByRobots(IgnoreRequest):
    """The site's robots.txt forbids the page (raised by ``robots.RobotsMiddleware``)."""

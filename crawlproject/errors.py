"""The worker's own exceptions, typed so that the retry decision (``retrying``) knows them by class.

The http engine's limits each raise their own class (a response head over the egress guard's bounds, a body
over CRAWLJOBS_MAX_BODY_BYTES once decompressed, a redirect chain over REDIRECT_MAX_TIMES): each is a fact of
the page, so none is retried, and each message names the limit.
"""

from __future__ import annotations

from scrapy.exceptions import IgnoreRequest
from twisted.internet.error import DNSLookupError


class AddressRefused(DNSLookupError):
    """The host resolves to an address the network rules refuse (raised by ``resolver.GuardedResolver``)."""

    def __str__(self) -> str:  # the reason alone, without Twisted's "DNS lookup failed: ….".
        return " ".join(str(arg) for arg in self.args)


class AddressForbidden(IgnoreRequest):
    """The target address is refused by the network rules (raised before anything is sent)."""


class ForbiddenByRobots(IgnoreRequest):
    """The site's robots.txt forbids the page (raised by ``robots.RobotsMiddleware``)."""


class ResponseHeadersTooLarge(Exception):
    """The response head is over the bounds of ``egress.framing`` (raised by ``http``'s parser)."""


class DecompressedBodyTooLarge(IgnoreRequest):
    """The body inflates past CRAWLJOBS_MAX_BODY_BYTES (a decompression bomb, or just a big page)."""


class TooManyRedirects(IgnoreRequest):
    """The redirect chain is longer than REDIRECT_MAX_TIMES."""

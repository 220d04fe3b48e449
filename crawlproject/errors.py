"""The worker's own exceptions, typed so that the retry decision (``retrying``) knows them by class.

The http engine's limits each raise their own class (a response head over the egress guard's bounds, a body
over CRAWLJOBS_MAX_BODY_BYTES once decompressed, a redirect chain over REDIRECT_MAX_TIMES): each is a fact of
the page, so none is retried, and each message names the limit.
"""

from __future__ import annotations

from scrapy.exceptions import DownloadCancelledError, IgnoreRequest
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


class FetchedBodyTooLarge(DownloadCancelledError):
    """The impersonate engine's body (or its Content-Length) is over CRAWLJOBS_MAX_BODY_BYTES: a
    DownloadCancelledError, what Scrapy's handlers raise for it, so it ends the job the same way."""


# -- The browser engine's own ends of a render (raised by ``crawlproject.rendering``) -------------------------


class RenderTimeout(TimeoutError):
    """A render passed its deadline (CRAWLJOBS_RENDER_TIMEOUT) before its page had loaded; the page was closed.

    A timeout like any other (transient): the network or the browser was slow."""


class PageBusyTimeout(RenderTimeout):
    """The page had loaded but its scripts still held the browser at the deadline; the page was closed.

    Permanent: Playwright's navigation timeout (shorter) had not fired, so the page itself keeps the renderer
    busy, and another try would hold a page of the browser for as long again."""


class PageCrashed(Exception):
    """The page's renderer died (over CRAWLJOBS_BROWSER_MEMORY_MB, or a fault of Chromium's). Permanent: a page
    that eats the memory cap does it again."""


class NavigationFailed(Exception):
    """The page navigated somewhere else after it loaded, and that navigation failed: what is left is Chromium's
    error page, never stored. Classified by its message (``net::ERR_...``: transient)."""


class InvalidSelector(ValueError):
    """The job's wait_for is not a CSS selector Chromium accepts (permanent: it never will be)."""


class RenderedPageTooLarge(DownloadCancelledError):
    """The rendered page is larger than CRAWLJOBS_MAX_BODY_BYTES (a DownloadCancelledError, what Scrapy raises
    for a body over the limit, so it ends the job the same way)."""


class RenderAbandoned(IgnoreRequest):
    """The worker closed a render that is no longer its to finish: the job was cancelled or taken over, or the
    worker is stopping (the job is given back). No attempt: nothing is recorded or written for it."""


class FetchAbandoned(RenderAbandoned):
    """The impersonate engine's transfer for a job that is no longer this worker's (cancelled, taken over) was
    stopped: handled as an abandoned render (nothing recorded or written)."""

"""The http engine's download handler: Scrapy's HTTP/1.1 handler with the response head bounded.

Twisted's response parser bounds one line (16 KiB) but neither the number of header lines nor their total:
a server answering a status line and then header lines forever made the worker keep every one of them (3 GiB
in a minute, never given back). Here the head (status line and header lines) is bounded as the egress guard
bounds it for the browser (``egress.framing``: ``MAX_HEAD_BYTES`` in all, ``MAX_HEADERS`` fields): past
either, the parser raises ``ResponseHeadersTooLarge`` and Twisted drops the connection and all it parsed, so
the fetch fails at once with that error, which is permanent (``retrying``).

Hooked where Scrapy hooks its own lenient parser: the connection pool's factory builds a protocol whose
parser is ours. ``DownloadHandler`` is scrapy-playwright's handler (which hands every request that is not a
browser one to Scrapy's), with every render bounded (``rendering.RenderHandler``), and with that pool; before
both, requests of the impersonate engine go to curl (``impersonate.ImpersonateHandler``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy import Request
from scrapy.core.downloader.handlers.http11 import (
    HTTP11DownloadHandler,
    _LenientHTTP11ClientFactory,
    _LenientHTTP11ClientProtocol,
    _LenientHTTPClientParser,
)
from scrapy.crawler import Crawler
from scrapy.http import Response
from twisted.web._newclient import HEADER, STATUS, HTTP11ClientProtocol

from crawlproject.capacity import fetch_starting
from crawlproject.egress.framing import MAX_HEAD_BYTES, MAX_HEADERS
from crawlproject.errors import ResponseHeadersTooLarge
from crawlproject.impersonate import ImpersonateHandler
from crawlproject.rendering import RenderHandler

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IAddress
    from twisted.web._newclient import Request as TxRequest
    from twisted.web.iweb import IResponse


class BoundedHeadParser(_LenientHTTPClientParser):
    """Scrapy's lenient response parser, counting the head's bytes and lines as they come."""

    # One line may be as long as the whole head; past it the head is over its bound anyway.
    MAX_LENGTH = MAX_HEAD_BYTES
    # The protocol swaps the class of a parser it made (as Scrapy does), so __init__ does not run: the
    # counts start from these and become the instance's own at the first line.
    _head_bytes = 0
    _head_lines = 0

    def lineReceived(self, line: bytes) -> None:
        if self.state in (STATUS, HEADER):  # only the head comes in lines: the body is read raw
            self._head_bytes += len(line) + 1  # and the LF
            self._head_lines += 1
            if self._head_bytes > MAX_HEAD_BYTES:
                raise ResponseHeadersTooLarge(f"response headers too large (over {MAX_HEAD_BYTES} bytes)")
            if self._head_lines > MAX_HEADERS + 2:  # the fields, the status line, the empty line
                raise ResponseHeadersTooLarge(f"response headers too large (over {MAX_HEADERS} fields)")
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        raise ResponseHeadersTooLarge(f"response headers too large (a line over {MAX_HEAD_BYTES} bytes)")


class BoundedHeadProtocol(_LenientHTTP11ClientProtocol):
    def request(self, request: TxRequest) -> Deferred[IResponse]:
        deferred: Deferred[IResponse] = super().request(request)
        # Like Scrapy's lenient protocol (whose request() sets its parser class, which adds no state): the
        # parser of the request just made, before any byte of its response is read.
        assert self._parser is not None
        self._parser.__class__ = BoundedHeadParser
        return deferred


class BoundedHeadClientFactory(_LenientHTTP11ClientFactory):
    def buildProtocol(self, addr: IAddress | None) -> HTTP11ClientProtocol:
        return BoundedHeadProtocol(self._quiescentCallback)


class BoundedHeads(HTTP11DownloadHandler):
    """Scrapy's HTTP/1.1 handler (or a subclass: this goes first among the bases) with bounded heads."""

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        self._pool._factory = BoundedHeadClientFactory


class DownloadHandler(ImpersonateHandler, BoundedHeads, RenderHandler):
    """The worker's handler of http and https: the browser engine scrapy-playwright's with every render bounded
    (``crawlproject.rendering``), the http engine Scrapy's with bounded response heads, the impersonate engine
    curl's with Chrome's handshake (``crawlproject.impersonate``)."""

    async def download_request(self, request: Request) -> Response:
        if not request.meta.get("playwright"):  # (a render's fetch starts with its page's turn)
            fetch_starting(request.meta)
        response: Response = await super().download_request(request)
        return response

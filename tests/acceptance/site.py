"""A local test site that imitates what real sites do, for the acceptance tests of the crawl workers.

A small HTTP/1.1 server of our own on asyncio streams (keep-alive, pipelining-safe, chunked request bodies),
reading requests with the egress guard's framing (``crawlproject.egress.framing``), run in a daemon thread on
a free port of a loopback address (127.0.0.1 unless asked otherwise; only 127.0.0.0/8 is accepted). Nothing
on any page refers to another host: a browser rendering these pages makes requests only to the site itself
(and to whatever a test passes in ``target=`` / ``url=``).

    with start_site() as site:
        httpx.get(site.url("/ok/1"))
        site.hits("/ok/1")          # [Hit(method="GET", target="/ok/1", headers=..., proxy=None, ...)]

Pages (any method; HEAD answers the headers without the body; an unknown path is a 404):

``/ok/<n>``                 200, a ~2 KB HTML page titled "Test page <n>" with links; contains ``ok-page:<n>``.
``/fast/<n>``               200, a small (~0.7 KB) HTML page for benchmarks; contains ``fast-page:<n>``.
``/ua-block``               403 "Access Denied" (Akamai-like) unless the User-Agent contains "Mozilla/5.0" and
                            not "Scrapy"; then 200 with ``ua-ok``.
``/needs-proxy``            403 Cloudflare-like challenge ("Just a moment...", ``cf-chl``, header
                            ``cf-mitigated: challenge``) unless the request came through a test proxy.
``/needs-premium-proxy``    the same unless it came through a premium-or-better proxy (a proxy whose name
                            starts with "premium" or "ultra": the tiers are ordered, as in the fetch ladder).
``/needs-ultra-proxy``      the same unless it came through an ultra proxy (name starting with "ultra").
                            Each of the three answers 200 with ``proxy-ok:<proxy name>`` when let through.
``/js-only``                200; the initial body says "Please enable JavaScript to view this page"; an inline
                            script replaces ``<div id="content">`` with :data:`JS_RENDERED_TEXT` and the marker
                            :data:`JS_MARKER` (neither string occurs in the raw HTML).
``/js-subrequest?target=U`` 200; a script fetches U (``mode: "no-cors"``) and then sets ``<div id="result">`` to
                            :data:`SUBREQUEST_DONE` or :data:`SUBREQUEST_FAILED`. 400 without ``target``.
``/flaky/<key>?fail=N``     429 with ``Retry-After: 1`` the first N requests for that key, then 200 (default N=1).
``/flaky500/<key>?fail=N``  503 the first N requests for that key, then 200 (default N=1).
``/always500/<key>``        always 500 (``site.hits("/always500/<key>")`` counts the attempts).
``/notfound``               404.
``/slow?delay=S``           sleeps S seconds (float, at most 600) without blocking other requests, then 200.
``/redirect/<n>``           302 to ``/redirect/<n-1>``; ``/redirect/1`` 302s to ``/ok/final`` (n >= 1; n redirects).
``/redirect-to?url=U``      302 (or ``&status=301|303|307|308``) with ``Location: U``, any U.
``/huge?mb=N``              200 text/html of exactly N MiB (float allowed), streamed with a Content-Length;
                            ``&chunked=1`` streams it chunked with no Content-Length.
``/binary``                 200 image/png, a real 1x1 PNG (:data:`PNG_BYTES`).
``/pdf``                    200 application/pdf, a real one-page PDF (:data:`PDF_BYTES`).
``/empty``                  200 text/html with an empty body.
``/robots.txt``             disallows ``/private/`` to every agent
``/settle/...``             the settle gauntlet: late markers, a JavaScript challenge that sets a clearance
                            cookie and reloads (``tests/acceptance/site_settle.py``).
``/dashboard/...``          the dashboard's hostile page and its beacons (``tests/acceptance/dashboard_pages.py``).
``/gauntlet/...``           the browser's gauntlet: headless, header coherence and botd pages that report their
                            verdict back (:mod:`tests.acceptance.gauntlet`).
``/captcha``                200 with a reCAPTCHA widget (``class="g-recaptcha"``, script ``/recaptcha/api.js``,
                            served by the site itself as a stub).

TLS pages (``/tls``: the JA3 and JA4 of the client's handshake; ``/tls-gate``: 403 unless the handshake is
Chrome's) are served by ``tests/acceptance/tls_site.py``, a TLS server of their own (``start_tls_site()``).

Every request is recorded as a :class:`Hit` before it is answered (its ``status`` is filled in just before the
response is written): method, target (path and query), headers (lower-cased names), body, client address and
the proxy it came through. Proxy identification: a test proxy (``tests/acceptance/proxies.py``) adds
``X-Test-Proxy: <name>`` to every plain-HTTP request it forwards (replacing any the client sent); for CONNECT
tunnels, where it cannot touch the bytes, it registers the local address of its upstream socket in this
module's :func:`register_proxy_connection` map, which the site looks up by the peer address of the connection
(this second way needs the site and the proxy in one process, as the fixtures have them). A request sent to the
site directly with a hand-made ``X-Test-Proxy`` header would be believed: only tests talk to the site.

API: ``site.url(path)``, ``site.base_url``, ``site.port``, ``site.hits(path=None)`` (query ignored unless ``path``
has one), ``site.wait_for_hits(path, count, timeout)``, ``site.reset()`` (hits and counters), ``site.close()``.
Counters of ``/flaky`` and ``/flaky500`` are per key and survive until :meth:`TestSite.reset`; tests sharing the
session site should use keys of their own (say a uuid). ``start_site(record_hits=False)`` keeps no hits, for
long benchmarks (each hit keeps its headers and body).

``python -m tests.acceptance.site [--host 127.0.0.1] [--port 0] [--no-record]`` runs the site in the foreground
(for benchmarks from another process); it prints its base URL. It serves /fast at about 4,700 requests/s to one
keep-alive connection and about 25,000-30,000/s to eight (one core).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import html
import ipaddress
import json
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from crawlproject.egress.framing import (
    Head,
    ProtocolError,
    body_framing,
    iter_body,
    read_head,
    serialize_head,
)
from tests.acceptance import dashboard_pages, site_settle

__all__ = [
    "JS_MARKER",
    "JS_RENDERED_TEXT",
    "PDF_BYTES",
    "PNG_BYTES",
    "SUBREQUEST_DONE",
    "SUBREQUEST_FAILED",
    "BackgroundLoop",
    "Hit",
    "TestSite",
    "register_proxy_connection",
    "start_site",
    "unregister_proxy_connection",
]

JS_RENDERED_TEXT = "Rendered by JavaScript"
JS_MARKER = "js-rendered-marker"
SUBREQUEST_DONE = "subrequest-done"
SUBREQUEST_FAILED = "subrequest-failed"
PROXY_HEADER = "X-Test-Proxy"

MIB = 1024 * 1024
_STREAM_CHUNK = 64 * 1024
_STREAM_LIMIT = 1024 * 1024  # longest request head / chunk-size line we accept

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------------------------
# Proxy identification for CONNECT tunnels: upstream socket address (as the site sees the peer) -> proxy name.

_proxy_connections: dict[tuple[str, int], str] = {}
_proxy_connections_lock = threading.Lock()


def register_proxy_connection(address: tuple[str, int], proxy_name: str) -> None:
    """Record that connections from ``address`` (a proxy's upstream socket) come through ``proxy_name``."""
    with _proxy_connections_lock:
        _proxy_connections[address] = proxy_name


def unregister_proxy_connection(address: tuple[str, int]) -> None:
    with _proxy_connections_lock:
        _proxy_connections.pop(address, None)


def _proxy_for_address(address: tuple[str, int]) -> str | None:
    with _proxy_connections_lock:
        return _proxy_connections.get(address)


# --------------------------------------------------------------------------------------------------------------
# HTTP/1.1 on top of the egress guard's framing (crawlproject.egress.framing), shared with proxies.py.


async def read_body(reader: asyncio.StreamReader, head: Head) -> bytes:
    """The whole decoded body of a request ``head`` (Content-Length or chunked; neither means none)."""
    framing, length = body_framing(head, request=True)
    return b"".join([piece async for piece in iter_body(reader, framing, length)])


def wants_keep_alive(version: str, head: Head, *extra: str) -> bool:
    """Whether the sender of ``head`` keeps the connection open (``extra``: more Connection-like headers)."""
    tokens = {token for name in ("connection", *extra) for token in head.tokens(name)}
    if "close" in tokens:
        return False
    return version != "1.0" or "keep-alive" in tokens


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


# --------------------------------------------------------------------------------------------------------------
# An event loop in a daemon thread, shared with proxies.py.


class BackgroundLoop:
    """An asyncio event loop running in a daemon thread, with its connection tasks tracked for shutdown."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 10.0) -> _T:
        """Run ``coroutine`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def track(self) -> Callable[[], None]:
        """Track the current task (a connection handler) until the returned function is called."""
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        return lambda: self.tasks.discard(task)

    async def _cancel_tasks(self) -> None:
        tasks = [task for task in self.tasks if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self, server: asyncio.Server | None) -> None:
        if not self.loop.is_closed() and self._thread.is_alive():

            async def shutdown() -> None:
                if server is not None:
                    server.close()
                await self._cancel_tasks()
                if server is not None:
                    await server.wait_closed()

            with contextlib.suppress(Exception):
                self.call(shutdown(), timeout=10.0)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10.0)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()


def _check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback or ipaddress.ip_address(host).version != 4:
        raise ValueError(f"test servers bind only IPv4 loopback addresses, not {host!r}")


# --------------------------------------------------------------------------------------------------------------
# Static content.


def _make_png() -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xcc\x33\x00")  # filter byte + one orange pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _make_pdf() -> bytes:
    stream = b"BT /F1 18 Tf 20 100 Td (Test PDF) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


PNG_BYTES = _make_png()
PDF_BYTES = _make_pdf()

_FILLER = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex "
    "ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat "
    "nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit "
    "anim id est laborum."
)


def _page(title: str, body: str, *, filler: int = 1, head: str = "") -> bytes:
    paragraphs = "\n".join(f"<p>{_FILLER}</p>" for _ in range(filler))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n{head}</head>\n<body>\n{body}\n{paragraphs}\n</body>\n</html>\n"
    ).encode()


def _ok_page(n: str) -> bytes:
    name = html.escape(n)
    links = "\n".join(f'<li><a href="/ok/{name}-{i}">Related page {name}-{i}</a></li>' for i in range(1, 6))
    body = (
        f'<header><nav><a href="/ok/home">Home</a> | <a href="/ok/about">About</a></nav></header>\n'
        f'<main>\n<h1>Test page {name}</h1>\n<p id="page-id">ok-page:{name}</p>\n<ul>\n{links}\n'
        f'<li><a href="/ok/final">The final page</a></li>\n</ul>\n</main>'
    )
    return _page(f"Test page {n}", body, filler=3)


_FAST_SUFFIX = (
    "<p>A small page served as fast as the test site can, for benchmarks of the whole crawl pipeline. "
    "It has a title, a heading, a link and a little text, like the smallest real pages do.</p>\n"
    '<p><a href="/fast/0">First page</a></p>\n</body>\n</html>\n'
)


def _fast_page(n: str) -> bytes:
    name = html.escape(n)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Fast page {name}</title>\n</head>\n<body>\n<h1>Fast page {name}</h1>\n"
        f'<p id="page-id">fast-page:{name}</p>\n{_FAST_SUFFIX}'
    ).encode()


_ACCESS_DENIED = (
    b"<HTML><HEAD>\n<TITLE>Access Denied</TITLE>\n</HEAD><BODY>\n<H1>Access Denied</H1>\n \n"
    b'You don\'t have permission to access "http&#58;&#47;&#47;127&#46;0&#46;0&#46;1&#47;ua&#45;block" on this '
    b"server.<P>\nReference&#32;&#35;18&#46;5e3c1002&#46;1700000000&#46;2a1b3c4d\n</BODY>\n</HTML>\n"
)


def _challenge_page() -> bytes:
    return (
        b'<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>'
        b'<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">'
        b'<meta name="robots" content="noindex,nofollow">'
        b'<meta name="viewport" content="width=device-width,initial-scale=1">'
        b"<style>*{box-sizing:border-box;margin:0;padding:0}html{line-height:1.15}</style></head>"
        b'<body><div class="main-wrapper" role="main"><div class="main-content">'
        b'<h1 class="zone-name-title h1">127.0.0.1</h1>'
        b'<h2 class="h2" id="challenge-running">Checking if the site connection is secure</h2>'
        b'<noscript><div class="h2"><span id="challenge-error-text">Enable JavaScript and cookies to continue'
        b"</span></div></noscript>"
        b'<div id="challenge-body-text" class="core-msg spacer">127.0.0.1 needs to review the security of your '
        b"connection before proceeding.</div>"
        b'<div id="challenge-stage"><div id="cf-chl-widget-a1b2c" class="cf-chl-widget"></div></div>'
        b"</div></div>"
        b"<script>(function(){window._cf_chl_opt={cvId: '3',cZone: \"127.0.0.1\",cType: 'managed',"
        b"cRay: '8a1b2c3d4e5f6a7b',cH: 'test',cUPMDTk: \"\\/needs-proxy?__cf_chl_tk=test\","
        b"cFPWv: 'b',cITimeS: '1700000000'};var cpo = document.createElement('script');"
        b"cpo.src = '/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1?ray=8a1b2c3d4e5f6a7b';"
        b"document.getElementsByTagName('head')[0].appendChild(cpo);}());</script>"
        b'<div class="footer" role="contentinfo"><div class="footer-inner"><div class="clearfix diagnostic-wrapper">'
        b'<div class="ray-id">Ray ID: <code>8a1b2c3d4e5f6a7b</code></div></div>'
        b'<div class="text-center" id="footer-text">Performance &amp; security by Cloudflare</div></div></div>'
        b"</body></html>"
    )


_CHALLENGE = _challenge_page()

_JS_ONLY = _page(
    "Loading...",
    '<div id="root"><div id="content">Please enable JavaScript to view this page.</div></div>\n'
    "<noscript>You need to enable JavaScript to run this app.</noscript>\n"
    "<script>\n(function () {\n"
    "  var text = 'Rendered ' + 'by ' + 'JavaScript';\n"
    "  var marker = 'js-' + 'rendered-' + 'marker';\n"
    "  var filler = new Array(6).join('<p>This content was produced by a script in the browser, as single-page '\n"
    "    + 'applications do; a plain HTTP client sees only the placeholder.</p>');\n"
    "  document.getElementById('content').innerHTML =\n"
    "    '<h1>' + text + '</h1><p id=\"' + marker + '\">' + marker + '</p>' + filler;\n"
    "  document.title = 'Rendered ' + 'app';\n"
    "})();\n</script>",
    filler=0,
)

_CAPTCHA = _page(
    "Please verify you are a human",
    "<h1>One more step</h1>\n<p>Please complete the security check to access this site.</p>\n"
    '<form action="/captcha" method="POST">\n'
    '<div class="g-recaptcha" data-sitekey="6LeIxAcTAAAAAJcZVRqyHh71UMIEGNQ_MXjiZKhI"></div>\n'
    '<input type="submit" value="Submit">\n</form>',
    head='<script src="/recaptcha/api.js" async defer></script>\n',
    filler=0,
)


def _huge_prefix_suffix() -> tuple[bytes, bytes, bytes]:
    prefix = b'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Huge page</title></head>\n<body>\n'
    suffix = b"</body>\n</html>\n"
    line = f"<p>{_FILLER}</p>\n".encode()
    return prefix, line, suffix


_HUGE_PREFIX, _HUGE_LINE, _HUGE_SUFFIX = _huge_prefix_suffix()


async def _huge_body(size: int) -> AsyncIterator[bytes]:
    """Exactly ``size`` bytes of HTML: a head, paragraphs (the last one cut where the size says), the end tags."""
    if size <= len(_HUGE_PREFIX) + len(_HUGE_SUFFIX):
        yield (_HUGE_PREFIX + _HUGE_SUFFIX)[:size]
        return
    yield _HUGE_PREFIX
    block = _HUGE_LINE * (_STREAM_CHUNK // len(_HUGE_LINE) + 1)
    remaining = size - len(_HUGE_PREFIX) - len(_HUGE_SUFFIX)
    while remaining:
        piece = block[: min(len(block), remaining)]
        remaining -= len(piece)
        yield piece
    yield _HUGE_SUFFIX


@functools.lru_cache(maxsize=4)
def _gzip_bomb(size: int) -> bytes:
    """A gzip member that inflates to ``size`` bytes of HTML (mostly spaces: about 1,000 to 1 compressed)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(_HUGE_PREFIX)]
    block = b" " * MIB
    remaining = max(0, size - len(_HUGE_PREFIX) - len(_HUGE_SUFFIX))
    while remaining:
        piece = block[: min(len(block), remaining)]
        remaining -= len(piece)
        parts.append(compressor.compress(piece))
    parts.append(compressor.compress(_HUGE_SUFFIX))
    parts.append(compressor.flush())
    return b"".join(parts)


# --------------------------------------------------------------------------------------------------------------
# Requests, hits and responses.


@dataclass
class Hit:
    """One request the site received."""

    method: str
    target: str  # path and query, as sent (an absolute-form target is reduced to its path and query)
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes
    client: tuple[str, int]
    proxy: str | None  # name of the test proxy the request came through, if any
    time: float = field(default_factory=time.monotonic)
    status: int | None = None  # what the site answered; set just before the response is written

    @property
    def user_agent(self) -> str | None:
        return self.headers.get("user-agent")


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: Callable[[], AsyncIterator[bytes]] | None = None  # a streamed body instead of ``body``
    length: int | None = None  # the streamed body's length; None streams it chunked


def _html(status: int, body: bytes, *headers: tuple[str, str]) -> Response:
    return Response(status, body, headers=list(headers))


def _error_page(status: int, detail: str = "") -> Response:
    phrase = reason_phrase(status)
    return _html(
        status, _page(f"{status} {phrase}", f"<h1>{phrase}</h1>\n<p>{html.escape(detail)}</p>", filler=0)
    )


def _proxy_tier(proxy: str | None) -> int:
    if proxy is None:
        return 0
    name = proxy.lower()
    if name.startswith("ultra"):
        return 3
    if name.startswith("premium"):
        return 2
    return 1


def _int_param(query: dict[str, str], name: str, default: int) -> int:
    try:
        return int(query.get(name, default))
    except ValueError:
        return default


class TestSite:
    """The running site. Use :func:`start_site` to make one; close it (or leave its ``with``) to stop it."""

    __test__ = False  # not a pytest test class

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, record_hits: bool = True) -> None:
        _check_loopback(host)
        self.host = host
        self.record_hits = record_hits
        self._hits: list[Hit] = []
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], int] = {}
        self._background = BackgroundLoop(f"test-site-{host}")
        self._server: asyncio.Server | None = None
        try:
            self._server = self._background.call(self._start(port))
        except BaseException:
            self._background.stop(None)
            raise
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _start(self, port: int) -> asyncio.Server:
        return await asyncio.start_server(
            self._serve_connection, self.host, port, limit=_STREAM_LIMIT, reuse_address=True, backlog=1024
        )

    # ---- public API ----------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        """The absolute URL of ``path`` (with query) on this site."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def hits(self, path: str | None = None) -> list[Hit]:
        """The requests received so far, oldest first: all of them, those for ``path`` (query ignored), or, when
        ``path`` contains "?", those whose target is exactly ``path``."""
        with self._lock:
            hits = list(self._hits)
        if path is None:
            return hits
        if "?" in path:
            return [hit for hit in hits if hit.target == path]
        return [hit for hit in hits if hit.path == path]

    def wait_for_hits(self, path: str | None, count: int, timeout: float = 10.0) -> list[Hit]:
        """Wait until at least ``count`` hits match ``path`` (see :meth:`hits`); TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            hits = self.hits(path)
            if len(hits) >= count:
                return hits
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(hits)} hits on {path!r} after {timeout} s, wanted {count}")
            time.sleep(0.02)

    def reset(self) -> None:
        """Forget all hits and the /flaky counters."""
        with self._lock:
            self._hits.clear()
            self._counters.clear()

    def close(self) -> None:
        self._background.stop(self._server)

    def __enter__(self) -> TestSite:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TestSite({self.base_url})"

    # ---- serving -------------------------------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        untrack = self._background.track()
        peer = writer.get_extra_info("peername")
        client: tuple[str, int] = (peer[0], peer[1]) if peer else ("", 0)
        try:
            while True:
                try:
                    head = await read_head(reader, None, request=True)
                    if head is None:
                        break
                    method, target, version = head.start
                    body = await read_body(reader, head)
                except ProtocolError as error:
                    await self._write(writer, "GET", _error_page(error.status, str(error)), keep_alive=False)
                    break
                keep_alive = wants_keep_alive(version, head)
                hit = self._record(method, target, head, body, client)
                try:
                    response = await self._route(hit)
                except Exception as error:  # a bug in a page must show, not hang the client
                    response = _error_page(500, f"test site error: {error!r}")
                hit.status = response.status
                await self._write(writer, method, response, keep_alive=keep_alive)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # shutdown; ending normally keeps asyncio's stream callback from logging it
        finally:
            untrack()
            writer.close()

    def _record(self, method: str, target: str, head: Head, body: bytes, client: tuple[str, int]) -> Hit:
        if not target.startswith("/"):
            parts = urlsplit(target)  # absolute-form, which a server must accept
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        path, _, query_string = target.partition("?")
        query = {name: values[0] for name, values in parse_qs(query_string, keep_blank_values=True).items()}
        headers: dict[str, str] = {}
        for name, value in head.headers:
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        proxy = headers.get(PROXY_HEADER.lower()) or _proxy_for_address(client)
        hit = Hit(method, target, path, query, headers, body, client, proxy)
        if self.record_hits:
            with self._lock:
                self._hits.append(hit)
        return hit

    def _count(self, kind: str, key: str) -> int:
        """How many requests for (kind, key) came before this one."""
        with self._lock:
            seen = self._counters.get((kind, key), 0)
            self._counters[(kind, key)] = seen + 1
        return seen

    async def _route(self, hit: Hit) -> Response:
        path, query = hit.path, hit.query
        parts = path.strip("/").split("/")
        first, rest = parts[0], "/".join(parts[1:])
        if first == "fast" and rest:
            return Response(200, _fast_page(rest))
        if first == "ok" and rest:
            return Response(200, _ok_page(rest))
        if path == "/ua-block":
            agent = hit.user_agent or ""
            if "Mozilla/5.0" in agent and "scrapy" not in agent.lower():
                return _html(200, _page("Welcome", '<h1>Welcome</h1>\n<p id="page-id">ua-ok</p>', filler=2))
            return _html(403, _ACCESS_DENIED, ("Server", "AkamaiGHost"), ("Cache-Control", "max-age=0"))
        if path in ("/needs-proxy", "/needs-premium-proxy", "/needs-ultra-proxy"):
            needed = {"/needs-proxy": 1, "/needs-premium-proxy": 2, "/needs-ultra-proxy": 3}[path]
            if _proxy_tier(hit.proxy) >= needed:
                body = f'<h1>Welcome</h1>\n<p id="page-id">proxy-ok:{html.escape(hit.proxy or "")}</p>'
                return _html(200, _page("Protected page", body, filler=2))
            return _html(
                403,
                _CHALLENGE,
                ("Server", "cloudflare"),
                ("cf-mitigated", "challenge"),
                ("Cache-Control", "private, max-age=0, no-store, no-cache, must-revalidate"),
                ("Cross-Origin-Opener-Policy", "same-origin"),
            )
        if path == "/js-only":
            return Response(200, _JS_ONLY)
        if path == "/js-subrequest":
            return self._js_subrequest(query)
        if first == "flaky" and rest:
            if self._count("flaky", rest) < _int_param(query, "fail", 1):
                return _html(429, _error_page(429, "Slow down.").body, ("Retry-After", "1"))
            return _html(
                200,
                _page("Recovered", f'<h1>Recovered</h1>\n<p id="page-id">flaky-ok:{html.escape(rest)}</p>'),
            )
        if first == "flaky500" and rest:
            if self._count("flaky500", rest) < _int_param(query, "fail", 1):
                return _error_page(503, "Try again later.")
            body = f'<h1>Recovered</h1>\n<p id="page-id">flaky500-ok:{html.escape(rest)}</p>'
            return _html(200, _page("Recovered", body))
        if first == "always500" and rest:
            return _error_page(500, "Something broke.")
        if path == "/slow":
            try:
                delay = min(max(float(query.get("delay", "1")), 0.0), 600.0)
            except ValueError:
                return _error_page(400, "delay must be a number")
            await asyncio.sleep(delay)
            return _html(
                200, _page("Slow page", f'<h1>Slow page</h1>\n<p id="page-id">slow-ok:{delay:g}</p>')
            )
        if first == "redirect" and rest:
            try:
                remaining = int(rest)
            except ValueError:
                return _error_page(400, "/redirect/<n> takes a number")
            if remaining < 1:
                return _error_page(400, "/redirect/<n> takes n >= 1")
            location = "/ok/final" if remaining == 1 else f"/redirect/{remaining - 1}"
            return _html(302, b"", ("Location", location))
        if path == "/redirect-to":
            url = query.get("url")
            status = _int_param(query, "status", 302)
            if not url or status not in (301, 302, 303, 307, 308):
                return _error_page(400, "/redirect-to takes url= and an optional 3xx status=")
            return _html(status, b"", ("Location", url))
        if path == "/huge":
            return self._huge(query)
        if path == "/binary":
            return Response(200, PNG_BYTES, content_type="image/png")
        if path == "/pdf":
            return Response(200, PDF_BYTES, content_type="application/pdf")
        if path == "/empty":
            return Response(200, b"")
        if path == "/captcha":
            return Response(200, _CAPTCHA)
        if path == "/robots.txt":
            return Response(200, b"User-agent: *\nDisallow: /private/\n", content_type="text/plain")
        if path == "/recaptcha/api.js":
            return Response(200, b"/* reCAPTCHA stub of the test site */\n", content_type="text/javascript")
        # Hostile pages of the http engine's tests (tests/acceptance/test_http_hostile.py):
        # ``/gzip-bomb?mb=N``  200 text/html, ``Content-Encoding: gzip``: a body of a few KiB that inflates to N MiB
        #                      (float allowed, at most 1024) of HTML.
        if path == "/gzip-bomb":
            try:
                inflated = int(float(query.get("mb", "64")) * MIB)
            except ValueError:
                return _error_page(400, "mb must be a number")
            if not 0 <= inflated <= 1024 * MIB:
                return _error_page(400, "mb must be between 0 and 1024")
            return _html(200, _gzip_bomb(inflated), ("Content-Encoding", "gzip"))
        if (
            first == "dashboard"
        ):  # the dashboard's hostile page and its beacons (tests/acceptance/dashboard_pages.py)
            page = dashboard_pages.route(rest, query, hit.headers.get("host", ""))
            if page is not None:
                return Response(page[0], page[1], content_type=page[2])
        if first == "gauntlet":  # the browser's gauntlet (tests/acceptance/gauntlet.py)
            from tests.acceptance import gauntlet

            return await gauntlet.route(self, hit, rest)
        if first == "render" and rest in _RENDER_PAGES:  # hostile pages for the browser engine (block below)
            return _RENDER_PAGES[rest](query)
        if first == "settle":  # rendering until settled, sessions (tests/acceptance/site_settle.py)
            answer = await site_settle.route(path, query, hit.headers)
            if answer is not None:
                return _html(answer[0], answer[1], *answer[2])
        return _error_page(404, "There is nothing here.")

    @staticmethod
    def _js_subrequest(query: dict[str, str]) -> Response:
        target = query.get("target")
        if not target:
            return _error_page(400, "/js-subrequest takes target=")
        literal = json.dumps(target).replace("</", "<\\/")
        script = (
            "<script>\n(function () {\n  var result = document.getElementById('result');\n"
            f"  fetch({literal}, {{mode: 'no-cors', cache: 'no-store'}}).then(\n"
            f"    function () {{ result.textContent = '{SUBREQUEST_DONE}'; }},\n"
            f"    function () {{ result.textContent = '{SUBREQUEST_FAILED}'; }});\n"
            "})();\n</script>"
        )
        body = f'<h1>A page with a sub-request</h1>\n<div id="result">subrequest-pending</div>\n{script}'
        return Response(200, _page("Sub-request page", body))

    @staticmethod
    def _huge(query: dict[str, str]) -> Response:
        try:
            size = int(float(query.get("mb", "1")) * MIB)
        except ValueError:
            return _error_page(400, "mb must be a number")
        if not 0 <= size <= 4096 * MIB:
            return _error_page(400, "mb must be between 0 and 4096")
        chunked = query.get("chunked", "") not in ("", "0", "false")
        return Response(200, stream=lambda: _huge_body(size), length=None if chunked else size)

    async def _write(
        self, writer: asyncio.StreamWriter, method: str, response: Response, keep_alive: bool
    ) -> None:
        headers = [("Server", "crawljobs-testsite")]
        if response.content_type:
            headers.append(("Content-Type", response.content_type))
        headers.extend(response.headers)
        chunked = response.stream is not None and response.length is None
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            length = response.length if response.stream is not None else len(response.body)
            headers.append(("Content-Length", str(length)))
        if not keep_alive:
            headers.append(("Connection", "close"))
        start = f"HTTP/1.1 {response.status} {reason_phrase(response.status)}"
        head = serialize_head(start, headers)
        if method == "HEAD":
            writer.write(head)
        elif response.stream is None:
            writer.write(head + response.body)
        else:
            writer.write(head)
            async for piece in response.stream():
                if not piece:
                    continue
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                await writer.drain()
            if chunked:
                writer.write(b"0\r\n\r\n")
        await writer.drain()


# --------------------------------------------------------------------------------------------------------------
# Hostile pages for the browser engine (issue 10: tests/acceptance/test_render_hostile.py), under /render/:
#
# ``/render/loop-after-load``            an ordinary page whose script spins forever (``while (true) {}``) once
#                                         it has loaded: the renderer never answers again.
# ``/render/webrtc?server=H:P[&via=iframe]`` a page that gathers ICE candidates through an RTCPeerConnection with
#                                         H:P as its STUN and TURN (UDP) server (``via=iframe``: the constructor
#                                         taken from a fresh about:blank iframe); ``<p id="webrtc">`` says
#                                         ``webrtc-absent``, ``webrtc-gathered:<state>`` or ``webrtc-error:...``.
# ``/render/big-dom?mb=N``               a small page whose script appends N MiB of text to the DOM on load.
# ``/render/navigate-later?url=U``       a page that sends itself to U (``location.href``) once it has loaded
#                                         (``&when=parse``: at once, from an inline script, before it loaded).


def _render_page(title: str, body: str) -> Response:
    return Response(200, _page(title, body))


def _render_loop_after_load(query: dict[str, str]) -> Response:
    script = "<script>addEventListener('load', function () { setTimeout(function () { while (true) {} }, 0); });</script>"
    return _render_page("Loops after load", f'<p id="page-id">loop-after-load</p>\n{script}')


def _render_webrtc(query: dict[str, str]) -> Response:
    server = query.get("server", "")
    via_iframe = query.get("via") == "iframe"
    servers = json.dumps(
        [
            {"urls": f"stun:{server}"},
            {"urls": f"turn:{server}?transport=udp", "username": "u", "credential": "p"},
        ]
    )
    constructor = (
        "(function () { var f = document.createElement('iframe'); document.body.appendChild(f);"
        " return f.contentWindow.RTCPeerConnection; })()"
        if via_iframe
        else "window.RTCPeerConnection"
    )
    script = f"""<script>
(async function () {{
  var out = document.getElementById('webrtc');
  try {{
    var RTC = {constructor};
    if (typeof RTC !== 'function') {{ out.textContent = 'webrtc-absent'; return; }}
    var pc = new RTC({{iceServers: {servers}}});
    pc.createDataChannel('probe');
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise(function (done) {{ setTimeout(done, 1500); }});
    out.textContent = 'webrtc-gathered:' + pc.iceGatheringState;
  }} catch (error) {{ out.textContent = 'webrtc-error:' + error; }}
}})();
</script>"""
    return _render_page("WebRTC", f'<p id="webrtc">webrtc-pending</p>\n{script}')


def _render_big_dom(query: dict[str, str]) -> Response:
    try:
        mib = min(max(float(query.get("mb", "1")), 0.0), 512.0)
    except ValueError:
        return _error_page(400, "mb must be a number")
    script = (
        "<script>addEventListener('load', function () { var d = document.createElement('div');"
        f" d.textContent = 'x'.repeat({int(mib * MIB)}); document.body.appendChild(d); }});</script>"
    )
    return _render_page("Big DOM", f'<p id="page-id">big-dom</p>\n{script}')


def _render_navigate_later(query: dict[str, str]) -> Response:
    target = json.dumps(query.get("url", "/")).replace("</", "<\\/")
    if query.get("when") == "parse":  # at once, while the page is still loading
        script = f"<script>location.href = {target};</script>"
    else:
        script = f"<script>addEventListener('load', function () {{ location.href = {target}; }});</script>"
    return _render_page("Navigates later", f'<p id="page-id">navigate-later</p>\n{script}')


_RENDER_PAGES: dict[str, Callable[[dict[str, str]], Response]] = {
    "loop-after-load": _render_loop_after_load,
    "webrtc": _render_webrtc,
    "big-dom": _render_big_dom,
    "navigate-later": _render_navigate_later,
}


def start_site(host: str = "127.0.0.1", port: int = 0, *, record_hits: bool = True) -> TestSite:
    """Start a test site on ``host`` (an IPv4 loopback address) and ``port`` (0: a free one). The returned site
    is running and is its own context manager. ``record_hits=False`` keeps no :class:`Hit` (for long benchmarks)."""
    return TestSite(host, port, record_hits=record_hits)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the crawljobs acceptance-test site in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="keep no record of hits (for benchmarks)")
    args = parser.parse_args()
    with start_site(args.host, args.port, record_hits=not args.no_record) as site:
        print(site.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()

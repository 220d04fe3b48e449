"""The impersonate engine: pages fetched with Chrome's TLS handshake, HTTP/2 and navigation headers (curl_cffi).

The http engine's handshake is Python's (JA4 ``t13i300900_…``: no GREASE, no ALPN, HTTP/1.1), which sites
behind TLS-fingerprinting CDNs refuse before a header is read. This engine sends the handshake and HTTP/2
settings of the Chrome release nearest to the worker's own Chromium (curl-impersonate's target, through
curl_cffi), and the navigation headers of that Chromium — its real major version, found once from the
configured browser executable (``chromium --version``) — in Chrome's order (``chrome_navigation_headers``).

It keeps every guarantee of the http engine, because curl is given nothing to decide on its own:

- **the address connected to is the address checked**: the target's name is resolved by the worker's resolver
  (``resolver.GuardedResolver``, the network rules applied to the answer) and handed to curl as
  ``CURLOPT_RESOLVE`` (curl would look the name up again otherwise: DNS rebinding). Through a proxy the proxy
  connects, as with the http engine (``NetworkGuardMiddleware`` checks the name first);
- **redirects** are not followed by curl: the response goes back to Scrapy's redirect middleware, which makes a
  new request for the next hop, checked again like the first;
- **the body limit** (``CRAWLJOBS_MAX_BODY_BYTES``) is counted on the decoded bytes as curl writes them: a
  Content-Length over it fails before the body, a body that grows past it (a gzip bomb included: curl decodes
  in 16 KiB pieces) fails at once with the http engine's errors; the **response head** is bounded as the http
  engine bounds it (``egress.framing``);
- **the download timeout** is curl's whole-transfer timeout, with a deadline of the worker's own behind it;
- **cancellation**: the jobs the lease heartbeat could not renew (cancelled, taken over) have their transfers
  removed from curl at once (``FetchAbandoned``: nothing is recorded for them);
- **failures** are raised as the classes the retry decision knows (timeouts, refused connections, TLS
  errors, lost connections, proxy tunnels), so an impersonate attempt is named like an http one.

Certificates are not verified, as Scrapy's http engine does not verify them: the two engines fetch the same
pages, and a site's certificate does not change the handshake a site sees.

Headers the request carries override Chrome's (a kept session's ``Cookie``, a profile's ``User-Agent`` or
``Accept-Language``), in Chrome's place for them; the values Scrapy's default-header middlewares add
(``USER_AGENT``, ``DEFAULT_REQUEST_HEADERS``, the compression middleware's ``Accept-Encoding``) are not the
request's own and give way to Chrome's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import ssl
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from curl_cffi import Curl, CurlError
from curl_cffi.aio import AsyncCurl
from curl_cffi.const import CurlECode, CurlHttpVersion, CurlInfo, CurlOpt
from curl_cffi.requests import BrowserType
from scrapy import Request, signals
from scrapy.core.downloader.handlers.http11 import TunnelError
from scrapy.crawler import Crawler
from scrapy.exceptions import DownloadFailedError, DownloadTimeoutError
from scrapy.http import Headers, Response
from scrapy.responsetypes import responsetypes
from twisted.internet import error as tx

from crawljobs.exceptions import UrlRejected
from crawljobs.urls import resolve_and_check
from crawlproject.config import WorkerConfig
from crawlproject.context import WorkerContext
from crawlproject.egress.framing import MAX_HEAD_BYTES, MAX_HEADERS
from crawlproject.errors import (
    AddressRefused,
    DecompressedBodyTooLarge,
    FetchAbandoned,
    FetchedBodyTooLarge,
    ResponseHeadersTooLarge,
)
from crawlproject.profiles import ACCEPT_ENCODING, Profile, browser_version, navigation_headers
from crawlproject.resolver import GuardedResolver

logger = logging.getLogger(__name__)

# The request meta key that sends a request to this engine (set by FetchMethodMiddleware).
META_KEY = "impersonate"

# When no browser version can be read (no Chromium installed): the newest Chrome curl_cffi knows.
_CHROME_TARGET = re.compile(r"^chrome(\d+)$")


# -- Chrome: its version, its curl target, its navigation headers -----------------------------------------


def curl_targets() -> dict[int, str]:
    """curl_cffi's desktop Chrome targets by major version (``{152: "chrome152", ...}``)."""
    found = {}
    for browser in BrowserType:
        match = _CHROME_TARGET.match(browser.value)
        if match:
            found[int(match.group(1))] = browser.value
    return found


def curl_target(major: int) -> str:
    """The curl_cffi target nearest to Chrome ``major``: the newest not newer than it, else the oldest.

    Chrome's handshake changes rarely (its extension order is randomised since 110, and JA4 sorts it), so the
    newest older target has the handshake of a later release too."""
    targets = curl_targets()
    older = [version for version in targets if version <= major]
    return targets[max(older)] if older else targets[min(targets)]


def _major(version: str) -> int:
    return int(version.split(".")[0])


def _tier_of(request: Request) -> str:
    """The proxy tier of the request's fetch method (its profile's region follows the tier)."""
    ladder = request.meta.get("ladder")
    index = request.meta.get("method_index")
    if ladder and isinstance(index, int) and 0 <= index < len(ladder):
        return str(getattr(ladder[index], "tier", "direct"))
    return "direct"


# Chrome's spelling of the navigation headers on HTTP/1.1 (HTTP/2 lower-cases every name): the set, its order
# and its values are the browser profile's (crawlproject.profiles), so the engines cannot disagree.
_CHROME_CASE = {
    "upgrade-insecure-requests": "Upgrade-Insecure-Requests",
    "user-agent": "User-Agent",
    "accept": "Accept",
    "sec-fetch-site": "Sec-Fetch-Site",
    "sec-fetch-mode": "Sec-Fetch-Mode",
    "sec-fetch-user": "Sec-Fetch-User",
    "sec-fetch-dest": "Sec-Fetch-Dest",
    "accept-encoding": "Accept-Encoding",
    "accept-language": "Accept-Language",
}


def chrome_navigation_headers(profile: Profile, *, http2: bool = False) -> list[tuple[str, str]]:
    """The headers of a top-level navigation typed into the browser of ``profile``, in Chrome's order and
    spelling (``profiles.navigation_headers``; ``http2`` adds Chrome's ``priority``). A request's own headers
    replace these in place (``merged_headers``); Chrome sends ``Cookie`` after ``Accept-Language`` and
    ``Referer`` before ``Accept-Encoding``."""
    return [(_CHROME_CASE.get(name, name), value) for name, value in navigation_headers(profile, http2=http2)]


# Request headers curl must not be handed: hop-by-hop ones, the proxy's, and those curl writes itself.
_NOT_SENT = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "accept-encoding",  # curl decodes what it announces: the engine's own value, always
    }
)
_BEFORE_ENCODING = frozenset({"referer"})


def merged_headers(
    defaults: Sequence[tuple[str, str]],
    request_headers: Iterable[tuple[str, str]],
    scrapy_defaults: dict[str, str],
) -> list[tuple[str, str]]:
    """Chrome's headers with the request's own in their place: a header the request has replaces Chrome's of
    that name where Chrome sends it; ``Referer`` goes before ``Accept-Encoding``, any other one after
    ``Accept-Language`` (``Cookie`` first), in the request's order. A request value equal to what Scrapy's
    default middlewares set (``scrapy_defaults``, lower-case names) is not the request's own."""
    own: dict[str, list[tuple[str, str]]] = {}
    for name, value in request_headers:
        key = name.lower()
        if key in _NOT_SENT or scrapy_defaults.get(key) == value:
            continue
        own.setdefault(key, []).append((name, value))
    out: list[tuple[str, str]] = []
    for name, value in defaults:
        key = name.lower()
        if key == "accept-encoding":
            out.extend(pair for k in _BEFORE_ENCODING for pair in own.pop(k, []))
        out.extend(own.pop(key, []) or [(name, value)])
    out.extend(own.pop("cookie", []))
    for pairs in own.values():
        out.extend(pairs)
    return out


# -- one transfer ------------------------------------------------------------------------------------------


@dataclass
class Transfer:
    """The head and body of one curl transfer, held to the worker's limits as curl writes them."""

    maxsize: int
    status_line: bytes = b""
    header_lines: list[bytes] = field(default_factory=list)
    head_bytes: int = 0
    head_lines: int = 0
    encoded: bool = False
    body: list[bytes] = field(default_factory=list)
    size: int = 0
    ended: str | None = None  # "gone": the worker dropped it (its job cancelled or taken over)

    def on_header(self, line: bytes) -> int:
        # Raised here, an exception ends the transfer (curl_cffi stores it, aborts, and raises it).
        self.head_bytes += len(line)
        self.head_lines += 1
        if self.head_bytes > MAX_HEAD_BYTES:
            raise ResponseHeadersTooLarge(f"response headers too large (over {MAX_HEAD_BYTES} bytes)")
        if self.head_lines > MAX_HEADERS + 2:
            raise ResponseHeadersTooLarge(f"response headers too large (over {MAX_HEADERS} fields)")
        if line.startswith(b"HTTP/"):  # a new response (after a 1xx): its head alone is kept
            self.status_line, self.header_lines = line, []
        elif line.strip():
            self.header_lines.append(line)
        else:
            self._head_done()
        return len(line)

    def _head_done(self) -> None:
        headers = self.headers()
        self.encoded = any(
            v.strip().lower() not in (b"", b"identity") for v in headers.getlist("Content-Encoding")
        )
        length = headers.get(b"Content-Length")
        if length is not None and not self.encoded and self.maxsize:
            with contextlib.suppress(ValueError):
                if int(length) > self.maxsize:
                    raise FetchedBodyTooLarge(
                        f"the page's Content-Length ({int(length)}) is over {self.maxsize} bytes"
                    )

    def on_body(self, chunk: bytes) -> int:
        self.size += len(chunk)
        if self.maxsize and self.size > self.maxsize:
            if self.encoded:
                raise DecompressedBodyTooLarge(
                    "body too large (decompressed): the page inflates past CRAWLJOBS_MAX_BODY_BYTES "
                    f"({self.maxsize} bytes)"
                )
            raise FetchedBodyTooLarge(f"the page is over {self.maxsize} bytes")
        self.body.append(chunk)
        return len(chunk)

    def headers(self) -> Headers:
        headers = Headers()
        for line in self.header_lines:
            name, sep, value = line.partition(b":")
            if sep and name.strip():
                headers.appendlist(name.strip(), value.strip())
        return headers


def _curl_failure(exc: CurlError, url: str, timeout: float) -> Exception:
    """A curl error as the exception class the retry decision knows for it."""
    code = exc.code
    text = str(exc)
    if code == CurlECode.OPERATION_TIMEDOUT:
        return DownloadTimeoutError(f"Getting {url} took longer than {timeout:g} seconds. ({text})")
    if "CONNECT tunnel failed" in text or code in (CurlECode.PROXY, CurlECode.COULDNT_RESOLVE_PROXY):
        return TunnelError(text)
    if code == CurlECode.COULDNT_CONNECT:
        if "refused" in text.lower():
            return tx.ConnectionRefusedError(text)
        return tx.ConnectError(string=text)
    if code in (
        CurlECode.SSL_CONNECT_ERROR,
        CurlECode.PEER_FAILED_VERIFICATION,
        CurlECode.SSL_CERTPROBLEM,
        CurlECode.SSL_CIPHER,
        CurlECode.SSL_CACERT_BADFILE,
    ):
        return ssl.SSLError(text)
    if code in (CurlECode.GOT_NOTHING, CurlECode.RECV_ERROR, CurlECode.SEND_ERROR, CurlECode.PARTIAL_FILE):
        return tx.ConnectionLost(text)
    if code in (CurlECode.HTTP2, CurlECode.HTTP2_STREAM):
        return tx.ConnectionLost(text)
    return DownloadFailedError(text)


# -- the engine of one crawler -----------------------------------------------------------------------------


class ImpersonateEngine:
    """curl's multi handle (its connection cache: kept-alive and HTTP/2 connections are reused), a pool of easy
    handles, and the transfers in flight of one crawler (its http and https handlers share it)."""

    _KEY = "_crawljobs_impersonate"

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        config = WorkerConfig.of(crawler)
        self.policy = config.network
        self.maxsize = crawler.settings.getint("DOWNLOAD_MAXSIZE")
        self.timeout = crawler.settings.getfloat("DOWNLOAD_TIMEOUT")
        launch = crawler.settings.getdict("PLAYWRIGHT_LAUNCH_OPTIONS")
        self.executable: str | None = launch.get("executable_path") or config.settings.browser_executable
        self.scrapy_defaults = {
            name.lower(): str(value)
            for name, value in crawler.settings.getdict("DEFAULT_REQUEST_HEADERS").items()
        }
        self.scrapy_defaults["user-agent"] = crawler.settings.get("USER_AGENT") or ""
        self._multi: AsyncCurl | None = None
        self._handles: list[Curl] = []
        self.identities = config.identities
        self._version: str | None = None
        self._version_lock = asyncio.Lock()
        self.in_flight: dict[Curl, tuple[uuid.UUID | None, Transfer]] = {}
        self._chained = False

    @classmethod
    def of(cls, crawler: Crawler) -> ImpersonateEngine:
        engine: ImpersonateEngine | None = getattr(crawler, cls._KEY, None)
        if engine is None:
            engine = cls(crawler)
            setattr(crawler, cls._KEY, engine)
            crawler.signals.connect(engine.close, signal=signals.engine_stopped)
        return engine

    async def version(self) -> str:
        """The browser's full version (``156.0.8078.114``), read once, off the event loop."""
        async with self._version_lock:
            if self._version is None:
                self._version = await asyncio.to_thread(browser_version, self.identities.executable)
                logger.info(
                    "impersonate engine: browser %s, curl target %s",
                    self._version,
                    curl_target(_major(self._version)),
                )
            return self._version

    def _listen_for_gone(self) -> None:
        """Hear from the lease heartbeat which jobs are gone, after whoever listens already (the renders)."""
        if self._chained:
            return
        self._chained = True
        leases = WorkerContext.of(self.crawler).leases
        before: Callable[[set[uuid.UUID]], None] | None = leases.on_gone

        def gone(ids: set[uuid.UUID]) -> None:
            if before is not None:
                before(ids)
            self.jobs_gone(ids)

        leases.on_gone = gone

    def jobs_gone(self, ids: set[uuid.UUID]) -> None:
        multi = self._multi
        for curl, (job_id, transfer) in list(self.in_flight.items()):
            if job_id in ids and multi is not None:
                logger.info("job %s is no longer held: its transfer is stopped", job_id)
                transfer.ended = "gone"
                multi.remove_handle(curl)  # cancels the transfer's future

    async def _resolve(self, host: str) -> str:
        """The checked address of ``host`` (the network rules applied by the worker's resolver)."""
        resolver = GuardedResolver.installed()
        if resolver is None:  # (a crawler without the worker's settings): the same rules, looked up here
            try:
                return (await resolve_and_check(host, self.policy))[0]
            except UrlRejected as exc:
                raise AddressRefused(exc.message) from None
        try:
            address: str = await resolver.getHostByName(host).asFuture(asyncio.get_running_loop())
        except AddressRefused:
            raise
        except Exception as exc:  # as Twisted's endpoint reports any failed look-up
            raise tx.DNSLookupError(f"no results for hostname lookup: {host}") from exc
        return address

    def _handle(self) -> Curl:
        return self._handles.pop() if self._handles else Curl()

    def _give_back(self, curl: Curl) -> None:
        curl.clean_handles_and_buffers()
        curl.reset()
        if len(self._handles) < 256:
            self._handles.append(curl)
        else:
            curl.close()

    async def download(self, request: Request) -> Response:
        if self._multi is None:
            self._multi = AsyncCurl()
        self._listen_for_gone()
        version = await self.version()
        parts = urlsplit(request.url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        proxy = request.meta.get("crawljobs_proxy") or request.meta.get("proxy")
        resolve: list[str] = []
        if not proxy:
            try:
                literal = ipaddress.ip_address(host)
            except ValueError:
                literal = None
            if literal is None:
                address = await self._resolve(host)
                shown = f"[{address}]" if ":" in address else address
                resolve = [f"{host}:{port}:{shown}"]
        timeout = float(request.meta.get("download_timeout") or self.timeout)
        maxsize = int(request.meta.get("download_maxsize", self.maxsize))
        transfer = Transfer(maxsize=maxsize)
        curl = self._handle()
        try:
            self._configure(curl, request, version, transfer, resolve=resolve, proxy=proxy, timeout=timeout)
            job = request.meta.get("job")
            self.in_flight[curl] = (getattr(job, "id", None), transfer)
            started = time.monotonic()
            try:
                future = self._multi.add_handle(curl)
                await asyncio.wait_for(future, timeout + 5)
            except CurlError as exc:
                raise _curl_failure(exc, request.url, timeout) from None
            except asyncio.CancelledError:
                if transfer.ended == "gone":
                    raise FetchAbandoned(
                        "the job was cancelled or taken over: its transfer was stopped"
                    ) from None
                raise
            except TimeoutError:
                raise DownloadTimeoutError(
                    f"Getting {request.url} took longer than {timeout:g} seconds."
                ) from None
            status = int(curl.getinfo(CurlInfo.RESPONSE_CODE))  # type: ignore[arg-type]
            http_version = int(curl.getinfo(CurlInfo.HTTP_VERSION))  # type: ignore[arg-type]
            ip = curl.getinfo(CurlInfo.PRIMARY_IP)
        finally:
            self.in_flight.pop(curl, None)
            if self._multi is not None and curl in self._multi._curl2future:
                with contextlib.suppress(CurlError):
                    self._multi.remove_handle(curl)  # a cancelled download: curl lets the transfer go
            self._give_back(curl)
        headers = transfer.headers()
        if transfer.encoded:  # decoded by curl: Scrapy's decompression must not decode it again
            headers.pop(b"Content-Encoding", None)
            headers.pop(b"Content-Length", None)
        body = b"".join(transfer.body)
        respcls = responsetypes.from_args(headers=headers, url=request.url, body=body)
        protocol = "HTTP/2" if http_version == CurlHttpVersion.V2_0 else "HTTP/1.1"
        address_text = ip.decode() if isinstance(ip, bytes) else str(ip)
        try:
            ip_address: Any = ipaddress.ip_address(address_text)
        except ValueError:
            ip_address = None
        response: Response = respcls(
            url=request.url,
            status=status,
            headers=headers,
            body=body,
            flags=["impersonate"],
            request=request,
            protocol=protocol,
            ip_address=ip_address,
        )
        response.meta["download_latency"] = time.monotonic() - started
        return response

    def _configure(
        self,
        curl: Curl,
        request: Request,
        version: str,
        transfer: Transfer,
        *,
        resolve: list[str],
        proxy: str | None,
        timeout: float,
    ) -> None:
        https = request.url.lower().startswith("https:")
        curl.impersonate(curl_target(_major(version)), default_headers=False)
        curl.setopt(CurlOpt.URL, request.url)
        # HTTP/2 where Chrome has it (ALPN on TLS); plain http is HTTP/1.1 (curl would offer h2c, Chrome never).
        curl.setopt(CurlOpt.HTTP_VERSION, CurlHttpVersion.V2TLS if https else CurlHttpVersion.V1_1)
        curl.setopt(CurlOpt.FOLLOWLOCATION, 0)
        curl.setopt(CurlOpt.NOSIGNAL, 1)
        curl.setopt(CurlOpt.TIMEOUT_MS, max(1, int(timeout * 1000)))
        curl.setopt(CurlOpt.ACCEPT_ENCODING, ACCEPT_ENCODING)  # curl decodes (the header is ours, below)
        curl.setopt(CurlOpt.SSL_VERIFYPEER, 0)
        curl.setopt(CurlOpt.SSL_VERIFYHOST, 0)
        curl.setopt(CurlOpt.HEADERFUNCTION, transfer.on_header)
        curl.setopt(CurlOpt.WRITEFUNCTION, transfer.on_body)
        if resolve:
            curl.setopt(CurlOpt.RESOLVE, resolve)
        if proxy:
            parts = urlsplit(proxy)
            curl.setopt(CurlOpt.PROXY, f"{parts.scheme}://{parts.hostname}:{parts.port}")
            if parts.username is not None:
                curl.setopt(CurlOpt.PROXYUSERNAME, unquote(parts.username))
                curl.setopt(CurlOpt.PROXYPASSWORD, unquote(parts.password or ""))
            curl.setopt(CurlOpt.SUPPRESS_CONNECT_HEADERS, 1)
        method = request.method.upper()
        if method == "HEAD":
            curl.setopt(CurlOpt.NOBODY, 1)
        elif method != "GET" or request.body:
            curl.setopt(CurlOpt.CUSTOMREQUEST, method)
            curl.setopt(CurlOpt.POSTFIELDS, request.body)
        own = (
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, values in request.headers.items()
            for value in values
        )
        profile = self.identities.for_tier(_tier_of(request))
        headers = merged_headers(chrome_navigation_headers(profile, http2=https), own, self.scrapy_defaults)
        lines = [f"{name}: {value}".encode("latin-1") for name, value in headers]
        if not https:
            # HTTP/1.1 carries Host and Connection as Chrome sends them; curl writes them after the others (the
            # one difference of order left, on plain http: HTTP/2 has curl-impersonate's Chrome pseudo-headers).
            lines[:0] = [f"Host: {urlsplit(request.url).netloc}".encode(), b"Connection: keep-alive"]
        curl.setopt(CurlOpt.HTTPHEADER, lines)

    async def close(self) -> None:
        multi, self._multi = self._multi, None
        if multi is not None:
            await multi.close()
        for curl in self._handles:
            curl.close()
        self._handles.clear()


class ImpersonateHandler:
    """The download handler's part for this engine: a request marked ``impersonate`` goes to the crawler's
    ``ImpersonateEngine``, any other one to the handlers after this class (http, browser)."""

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)  # type: ignore[call-arg]
        self.impersonate = ImpersonateEngine.of(crawler)

    async def download_request(self, request: Request) -> Response:
        if request.meta.get(META_KEY):
            return await self.impersonate.download(request)
        response: Response = await super().download_request(request)  # type: ignore[misc]
        return response

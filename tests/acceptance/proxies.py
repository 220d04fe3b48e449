"""Test HTTP forward proxies for the acceptance tests: they reach 127.0.0.1 and nothing else.

    with start_proxy("premium", username="u", password="p") as proxy:
        httpx.get(site.url("/needs-premium-proxy"), proxy=proxy.url)   # http://u:p@127.0.0.1:PORT
        proxy.requests                                                  # [ProxyRequest(...), ...]

Each proxy is an asyncio server in a daemon thread on a free port of 127.0.0.1. It speaks HTTP/1.1 with
keep-alive towards its clients, reading messages with the egress guard's framing
(``crawlproject.egress.framing``), and handles

- absolute-form requests (``GET http://127.0.0.1:PORT/path HTTP/1.1``, any method, with or without a body,
  Content-Length or chunked): the request is forwarded with ``X-Test-Proxy: <name>`` added (replacing any the
  client sent) and hop-by-hop headers removed, over an upstream connection kept alive for that client
  connection; the response is streamed back as it comes (Content-Length, chunked, or read to the end);
- ``CONNECT 127.0.0.1:PORT``: a byte tunnel. The proxy cannot add a header inside a tunnel, so it registers the
  local address of its upstream socket with the test site (``site.register_proxy_connection``), which looks it
  up by the peer address; the site therefore identifies tunnelled requests too.

Every request must carry ``Proxy-Authorization: Basic`` with the proxy's credentials, or it is answered
``407`` with ``Proxy-Authenticate: Basic realm="test"`` (the connection stays usable, so a client that answers
the challenge, as Chromium does, can retry on it). A target other than the literal address 127.0.0.1 (another
loopback address, ``localhost``, any name, IPv6, a scheme other than http) is answered ``403`` before any
connection is opened: the proxy never resolves a name and never reaches another address. A refused upstream
connection is a ``502``.

``proxy.requests`` lists what the proxy was asked (:class:`ProxyRequest`, with the status it answered, or the
upstream's status for a forwarded request, and ``200`` for an established tunnel); ``proxy.reset()`` clears it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import threading
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

from crawlproject.egress.framing import (
    Head,
    ProtocolError,
    UpstreamError,
    body_framing,
    iter_body,
    read_head,
    serialize_head,
    without_hop_by_hop,
)
from tests.acceptance.site import (
    PROXY_HEADER,
    BackgroundLoop,
    read_body,
    reason_phrase,
    register_proxy_connection,
    unregister_proxy_connection,
    wants_keep_alive,
)

__all__ = ["ALLOWED_UPSTREAM_HOST", "ProxyRequest", "TestProxy", "start_proxy"]

ALLOWED_UPSTREAM_HOST = "127.0.0.1"

_CHUNK = 64 * 1024
_STREAM_LIMIT = 1024 * 1024


@dataclass
class ProxyRequest:
    """One request a proxy received."""

    method: str
    target: str  # absolute URI, or host:port for CONNECT
    authorized: bool
    client: tuple[str, int]
    status: int | None = None  # what the proxy answered (the upstream's status when forwarded)


class _Upstream:
    """A connection to the upstream server, registered with the test site while open."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proxy_name: str) -> None:
        self.reader = reader
        self.writer = writer
        sockname = writer.get_extra_info("sockname")
        self.address: tuple[str, int] = (sockname[0], sockname[1])
        register_proxy_connection(self.address, proxy_name)

    @classmethod
    async def open(cls, host: str, port: int, proxy_name: str) -> _Upstream:
        if host != ALLOWED_UPSTREAM_HOST:  # the last line of defence; callers check first
            raise PermissionError(f"test proxy refuses upstream {host}")
        reader, writer = await asyncio.open_connection(host, port, limit=_STREAM_LIMIT)
        return cls(reader, writer, proxy_name)

    def close(self) -> None:
        unregister_proxy_connection(self.address)
        self.writer.close()


async def _relay_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framing: str, length: int
) -> None:
    """Copy a response body from ``reader`` to ``writer`` as it arrives (a chunked one chunked again)."""
    async for piece in iter_body(reader, framing, length):
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece)
        await writer.drain()
    if framing == "chunked":
        writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until end of stream, then half-close ``writer``; on an error close it."""
    try:
        while piece := await reader.read(_CHUNK):
            writer.write(piece)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


class TestProxy:
    """A running test proxy. Use :func:`start_proxy` to make one; close it (or leave its ``with``) to stop it."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str, *, username: str, password: str, port: int = 0) -> None:
        self.name = name
        self.username = username
        self.password = password
        self.host = "127.0.0.1"
        self._expected = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._requests: list[ProxyRequest] = []
        self._lock = threading.Lock()
        self._background = BackgroundLoop(f"test-proxy-{name}")
        self._server: asyncio.Server | None = None
        try:
            self._server = self._background.call(
                asyncio.start_server(self._serve_client, self.host, port, limit=_STREAM_LIMIT, backlog=1024)
            )
        except BaseException:
            self._background.stop(None)
            raise
        self.port: int = self._server.sockets[0].getsockname()[1]

    # ---- public API ----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://user:pass@127.0.0.1:PORT`` (credentials as given; use simple ones or quote them)."""
        return f"http://{self.username}:{self.password}@{self.host}:{self.port}"

    @property
    def server(self) -> str:
        """``http://127.0.0.1:PORT``, without credentials."""
        return f"http://{self.host}:{self.port}"

    @property
    def playwright_proxy(self) -> dict[str, str]:
        """The ``proxy`` argument of a Playwright browser context."""
        return {"server": self.server, "username": self.username, "password": self.password}

    @property
    def requests(self) -> list[ProxyRequest]:
        with self._lock:
            return list(self._requests)

    def forwarded(self) -> list[ProxyRequest]:
        """The authorized requests that were forwarded or tunnelled (not refused)."""
        return [
            request for request in self.requests if request.authorized and request.status not in (403, 502)
        ]

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()

    def close(self) -> None:
        self._background.stop(self._server)

    def __enter__(self) -> TestProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TestProxy({self.name!r}, {self.server})"

    # ---- serving -------------------------------------------------------------------------------------------

    def _authorized(self, head: Head) -> bool:
        value = head.get("proxy-authorization") or ""
        scheme, _, credentials = value.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = f"{self.username}:{self.password}"
        return secrets.compare_digest(decoded.encode(), expected.encode())

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        record: ProxyRequest,
        status: int,
        detail: str,
        *,
        keep_alive: bool,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        body = f"{status} {reason_phrase(status)}: {detail}\n".encode()
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *extra]
        if not keep_alive:
            headers.append(("Connection", "close"))
        record.status = status
        writer.write(serialize_head(f"HTTP/1.1 {status} {reason_phrase(status)}", headers) + body)
        await writer.drain()

    def _record(self, method: str, target: str, authorized: bool, client: tuple[str, int]) -> ProxyRequest:
        record = ProxyRequest(method, target, authorized, client)
        with self._lock:
            self._requests.append(record)
        return record

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        untrack = self._background.track()
        peer = writer.get_extra_info("peername")
        client: tuple[str, int] = (peer[0], peer[1]) if peer else ("", 0)
        upstreams: dict[int, _Upstream] = {}
        try:
            while True:
                try:
                    head = await read_head(reader, None, request=True)
                    if head is None:
                        break
                    method, target, version = head.start
                    body = b"" if method == "CONNECT" else await read_body(reader, head)
                except ProtocolError as error:
                    record = self._record("?", "?", False, client)
                    await self._answer(writer, record, error.status, str(error), keep_alive=False)
                    break
                keep_alive = wants_keep_alive(version, head, "proxy-connection")
                record = self._record(method, target, self._authorized(head), client)
                if not record.authorized:
                    challenge = (("Proxy-Authenticate", 'Basic realm="test"'),)
                    await self._answer(
                        writer,
                        record,
                        407,
                        "proxy credentials needed",
                        keep_alive=keep_alive,
                        extra=challenge,
                    )
                elif method == "CONNECT":
                    await self._tunnel(reader, writer, record, target, keep_alive=keep_alive)
                    if record.status == 200:
                        break  # the connection was the tunnel
                else:
                    keep_alive = await self._forward(
                        writer, record, method, target, head, body, upstreams, keep_alive=keep_alive
                    )
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError):
            pass
        except asyncio.CancelledError:
            pass  # shutdown; ending normally keeps asyncio's stream callback from logging it
        finally:
            untrack()
            for upstream in upstreams.values():
                upstream.close()
            writer.close()

    async def _tunnel(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        record: ProxyRequest,
        target: str,
        *,
        keep_alive: bool,
    ) -> None:
        host, colon, port_text = target.rpartition(":")
        if not colon or not port_text.isdigit():
            await self._answer(writer, record, 400, "CONNECT takes host:port", keep_alive=keep_alive)
            return
        if host != ALLOWED_UPSTREAM_HOST:
            await self._answer(writer, record, 403, f"test proxy refuses {target}", keep_alive=keep_alive)
            return
        try:
            upstream = await _Upstream.open(host, int(port_text), self.name)
        except OSError as error:
            await self._answer(writer, record, 502, f"cannot reach {target}: {error}", keep_alive=keep_alive)
            return
        try:
            record.status = 200
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, upstream.writer), _pipe(upstream.reader, writer))
        finally:
            upstream.close()

    async def _forward(
        self,
        writer: asyncio.StreamWriter,
        record: ProxyRequest,
        method: str,
        target: str,
        head: Head,
        body: bytes,
        upstreams: dict[int, _Upstream],
        *,
        keep_alive: bool,
    ) -> bool:
        """Forward one absolute-form request; returns whether the client connection stays open."""
        try:
            parts = urlsplit(target)
            host, port = parts.hostname, parts.port or 80
        except ValueError:
            host, port = None, 0
        if not target.lower().startswith("http://") or not host:
            await self._answer(
                writer, record, 400, "an absolute http:// URI is needed", keep_alive=keep_alive
            )
            return keep_alive
        if host != ALLOWED_UPSTREAM_HOST:
            await self._answer(writer, record, 403, f"test proxy refuses {host}", keep_alive=keep_alive)
            return keep_alive

        headers = [
            (name, value)
            for name, value in without_hop_by_hop(head.headers)
            if name.lower() != PROXY_HEADER.lower()
        ]
        if body or method in ("POST", "PUT", "PATCH") or head.get("content-length") is not None:
            headers.append(("Content-Length", str(len(body))))
        headers.append((PROXY_HEADER, self.name))
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = serialize_head(f"{method} {path} HTTP/1.1", headers) + body

        response: Head | None = None
        upstream: _Upstream | None = None
        for attempt in range(
            2
        ):  # a kept-alive upstream connection may have been closed meanwhile: retry once
            upstream = upstreams.pop(port, None)
            reused = upstream is not None
            try:
                if upstream is None:
                    upstream = await _Upstream.open(host, port, self.name)
                upstream.writer.write(request)
                await upstream.writer.drain()
                response = await read_head(upstream.reader, None, request=False)
                while response is not None and response.start[1] in ("100", "102", "103"):
                    # interim responses are not relayed
                    response = await read_head(upstream.reader, None, request=False)
            except (OSError, asyncio.IncompleteReadError, UpstreamError) as error:
                if upstream is not None:
                    upstream.close()
                if reused and attempt == 0:
                    continue
                await self._answer(writer, record, 502, f"upstream failed: {error}", keep_alive=keep_alive)
                return keep_alive
            if response is None and reused and attempt == 0:
                upstream.close()
                continue
            break
        if response is None or upstream is None:
            if upstream is not None:
                upstream.close()
            await self._answer(writer, record, 502, "upstream closed the connection", keep_alive=keep_alive)
            return keep_alive

        response_version, status_text, phrase = response.start
        status = int(status_text)
        length = 0
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            mode = "none"
        else:
            try:
                mode, length = body_framing(response, request=False)
            except UpstreamError as error:
                upstream.close()
                await self._answer(writer, record, 502, str(error), keep_alive=keep_alive)
                return keep_alive
        upstream_keep_alive = mode != "eof" and wants_keep_alive(response_version, response)
        keep_alive = keep_alive and mode != "eof"

        out = without_hop_by_hop(response.headers)
        declared = response.get("content-length")
        if mode == "chunked":
            out.append(("Transfer-Encoding", "chunked"))
        elif mode == "length" or (mode == "none" and declared is not None):
            out.append(("Content-Length", str(length) if mode == "length" else str(declared)))
        if not keep_alive:
            out.append(("Connection", "close"))
        record.status = status
        writer.write(serialize_head(f"HTTP/1.1 {status} {phrase}", out))
        try:
            await _relay_body(upstream.reader, writer, mode, length)
        except BaseException:
            upstream.close()
            raise
        if upstream_keep_alive:
            upstreams[port] = upstream
        else:
            upstream.close()
        return keep_alive


def start_proxy(name: str, *, username: str, password: str, port: int = 0) -> TestProxy:
    """Start a test proxy called ``name`` on 127.0.0.1 (``port`` 0: a free one). The returned proxy is running
    and is its own context manager. The site grades proxies by name: "premium…" and "ultra…" are those tiers."""
    return TestProxy(name, username=username, password=password, port=port)

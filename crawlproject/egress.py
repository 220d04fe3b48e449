"""The browser's egress guard: a local HTTP forward proxy that applies the network rules (DESIGN rule 7).

Chromium makes its own connections, and Playwright's request interception (``PLAYWRIGHT_ABORT_REQUEST``)
never sees the hops of a redirect: a page on an allowed host answering ``302 Location: http://10.0.0.1/``
would be followed by the browser unchecked. So the browser's direct tier goes through this proxy instead,
which sees every connection Chromium opens — navigations, redirect hops, page scripts, WebSockets (tunnelled
with CONNECT) — and checks the address it is about to connect to:

- the target host is resolved once (``resolve_and_check``: an IP literal in any spelling is parsed, a name is
  looked up and every answer checked) and the proxy connects to one of the checked addresses, never to a
  second lookup's answer (DNS rebinding);
- a refused target is answered ``403`` with ``refused by the network rules: <reason>`` and the header
  ``X-Crawljobs-Egress: network-rules`` (stripped from what upstreams send, so only the guard can say it),
  and nothing is sent to it; an upstream that cannot be reached is a ``502``. A refused ``CONNECT`` (https)
  reaches Playwright as ``net::ERR_TUNNEL_CONNECTION_FAILED``: Chromium shows no proxy answer to a tunnel.

It runs in the worker's own asyncio loop, on 127.0.0.1 with a random port, and asks for a random per-process
user name and password (``Proxy-Authorization: Basic``) so that nothing else on the machine can use it.
It speaks HTTP/1.1 with keep-alive towards the browser: absolute-form requests (``GET http://host/path``,
any method, bodies with Content-Length or chunked) are forwarded with hop-by-hop and ``Proxy-*`` headers
removed over an upstream connection kept for that client connection; ``CONNECT host:port`` is a byte tunnel
(TLS stays end to end). Heads are bounded in size, bodies are streamed through fixed-size buffers, the
upstream connect has a timeout, and a connection on which nothing moves for ``idle_timeout`` is closed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from crawljobs.exceptions import UrlRejected
from crawljobs.urls import NetworkPolicy, Resolver, host_of, normalize_url, resolve_and_check, system_resolver

logger = logging.getLogger(__name__)

__all__ = ["EgressGuard"]

MAX_HEAD_BYTES = 64 * 1024  # a request or response head (request line or status line plus headers)
MAX_HEADERS = 200
CONNECT_TIMEOUT = 10.0  # resolving the target and opening the upstream connection
IDLE_TIMEOUT = 120.0  # nothing read or written on a connection for this long: it is closed
MAX_CONNECTIONS = 1024  # client connections served at once
LINGER_SECONDS = 10.0  # how long a closed connection may take to send what is left in its buffer
REFUSED_HEADER = "X-Crawljobs-Egress"  # on the guard's own 403: "network-rules"
_CHUNK = 64 * 1024

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_REQUEST_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/(1\.[01])")
_STATUS_LINE = re.compile(r"HTTP/(1\.[01]) ([1-9][0-9][0-9])(?: ([^\r\n]*))?")
_REASONS = {
    200: "Connection established",
    400: "Bad Request",
    403: "Forbidden",
    407: "Proxy Authentication Required",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class _ProtocolError(Exception):
    """A malformed message; ``status`` is what the client is answered when nothing was sent to it yet."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _UpstreamError(Exception):
    """The upstream server failed (refused, reset, timed out, answered garbage)."""


@dataclass
class _Head:
    """A parsed request or response head."""

    start: tuple[str, str, str]  # (method, target, version) or (version, status, reason)
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        """The values of header ``name`` joined with commas, or None when it is absent."""
        values = [v for n, v in self.headers if n.lower() == name]
        return ", ".join(values) if values else None

    def tokens(self, name: str) -> list[str]:
        value = self.get(name) or ""
        return [t.strip().lower() for t in value.split(",") if t.strip()]


@dataclass
class _Activity:
    """When a connection last moved a byte (either direction): the clock of the idle timeout."""

    idle: float
    last: float = field(default_factory=time.monotonic)

    def touch(self) -> None:
        self.last = time.monotonic()


@dataclass
class _Upstream:
    key: tuple[str, int]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        _finish(self.writer)


def _finish(writer: asyncio.StreamWriter) -> None:
    """Close a connection once what was written is sent; one whose peer does not read is dropped soon."""
    transport = writer.transport
    if transport.is_closing():
        return
    writer.close()
    if transport.get_write_buffer_size():
        asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.abort)


def _parse_head(raw: bytes, *, request: bool) -> _Head:
    """A head read up to its empty line; _ProtocolError (request) or _UpstreamError (response) if malformed."""

    def malformed(what: str, status: int = 400) -> Exception:
        return _ProtocolError(what, status) if request else _UpstreamError(f"{what} from upstream")

    lines = raw[:-4].decode("latin-1").split("\r\n")
    match = (_REQUEST_LINE if request else _STATUS_LINE).fullmatch(lines[0])
    if match is None:
        raise malformed("malformed request line" if request else "malformed status line")
    start = (match.group(1), match.group(2), match.group(3) or "")
    if len(lines) - 1 > MAX_HEADERS:
        raise malformed("too many header fields", 431)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):  # also refuses obsolete line folding
            raise malformed("malformed header field")
        value = value.strip(" \t")
        if _BAD_VALUE.search(value):
            raise malformed("control character in a header field")
        headers.append((name, value))
    return _Head(start, headers)


async def _read_head(reader: asyncio.StreamReader, activity: _Activity, *, request: bool) -> _Head | None:
    """The next head on ``reader``; None at a clean end of stream before any byte of it."""
    try:
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), activity.idle)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise (_ProtocolError("incomplete head") if request else _UpstreamError("incomplete head")) from None
    except asyncio.LimitOverrunError:
        if request:
            raise _ProtocolError("request head too large", 431) from None
        raise _UpstreamError("response head too large") from None
    activity.touch()
    return _parse_head(raw, request=request)


def _body_framing(head: _Head, *, request: bool) -> tuple[str, int]:
    """("chunked", 0), ("length", n) or ("none", 0) for a request; a response may also be ("eof", 0)."""
    encodings = head.tokens("transfer-encoding")
    lengths = head.get("content-length")
    if encodings:
        if encodings != ["chunked"]:
            if request:
                raise _ProtocolError("unsupported transfer coding", 501)
            if encodings[-1] != "chunked":
                return "eof", 0
            raise _UpstreamError("unsupported transfer coding from upstream")
        if lengths is not None and request:  # both: a request smuggling attempt
            raise _ProtocolError("both Transfer-Encoding and Content-Length")
        return "chunked", 0
    if lengths is not None:
        values = {v.strip() for v in lengths.split(",")}
        if len(values) != 1 or not (value := values.pop()).isdigit() or len(value) > 18:
            if request:
                raise _ProtocolError("invalid Content-Length")
            raise _UpstreamError("invalid Content-Length from upstream")
        return "length", int(value)
    return ("none", 0) if request else ("eof", 0)


def _without_hop_by_hop(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    named = set(_HOP_BY_HOP)
    for name, value in headers:
        if name.lower() == "connection":
            named.update(t.strip().lower() for t in value.split(","))
    return [
        (n, v)
        for n, v in headers
        if (low := n.lower()) not in named and not low.startswith("proxy-") and low != "content-length"
    ]


def _serialize(start: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [start, *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Stream:
    """One direction of bytes with the idle clock: reads and drains time out when nothing moves."""

    def __init__(self, activity: _Activity) -> None:
        self.activity = activity

    async def _wait(self, awaitable: Awaitable[Any]) -> Any:
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                left = self.activity.idle - (time.monotonic() - self.activity.last)
                if left <= 0:
                    raise TimeoutError("nothing moved on the connection")
                # Not wait_for: the other direction of a tunnel may have moved meanwhile (the clock is shared).
                done, _ = await asyncio.wait({task}, timeout=left)
                if done:
                    result = task.result()
                    self.activity.touch()
                    return result
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def read(self, reader: asyncio.StreamReader, n: int) -> bytes:
        data: bytes = await self._wait(reader.read(n))
        return data

    async def readexactly(self, reader: asyncio.StreamReader, n: int) -> bytes:
        data: bytes = await self._wait(reader.readexactly(n))
        return data

    async def readline(self, reader: asyncio.StreamReader) -> bytes:
        data: bytes = await self._wait(reader.readuntil(b"\r\n"))
        return data

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await self._wait(writer.drain())


async def _copy_length(
    stream: _Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int
) -> None:
    remaining = length
    while remaining:
        piece = await stream.read(reader, min(remaining, _CHUNK))
        if not piece:
            raise asyncio.IncompleteReadError(b"", remaining)
        remaining -= len(piece)
        await stream.write(writer, piece)


async def _copy_chunked(
    stream: _Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, encode: bool
) -> None:
    """Relay a chunked body, re-framed (chunk extensions and trailers dropped); ``encode=False`` de-chunks."""
    while True:
        line = await stream.readline(reader)
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or len(size_text) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
            raise _ProtocolError("invalid chunk size")
        size = int(size_text, 16)
        if size == 0:
            for _ in range(MAX_HEADERS + 1):  # trailer fields, then the empty line
                if await stream.readline(reader) == b"\r\n":
                    break
            else:
                raise _ProtocolError("too many trailer fields")
            if encode:
                await stream.write(writer, b"0\r\n\r\n")
            return
        if encode:
            await stream.write(writer, b"%x\r\n" % size)
        await _copy_length(stream, reader, writer, size)
        if await stream.readexactly(reader, 2) != b"\r\n":
            raise _ProtocolError("chunk not followed by CRLF")
        if encode:
            await stream.write(writer, b"\r\n")


async def _copy_to_eof(stream: _Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while piece := await stream.read(reader, _CHUNK):
        await stream.write(writer, piece)


async def _pipe(stream: _Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One direction of a tunnel: copy to end of stream, then half-close the other side."""
    await _copy_to_eof(stream, reader, writer)
    if writer.can_write_eof() and not writer.is_closing():
        writer.write_eof()


class EgressGuard:
    """The egress proxy of one worker process. ``await start()`` it in the running loop, ``await close()``.

    ``resolver`` replaces the system resolver (tests); ``host`` is where it listens (loopback only).
    """

    def __init__(
        self,
        policy: NetworkPolicy,
        *,
        resolver: Resolver = system_resolver,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = CONNECT_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.host = host
        self.username = f"egress-{secrets.token_hex(6)}"
        self.password = secrets.token_urlsafe(24)
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._requested_port = port
        self._credentials = f"{self.username}:{self.password}".encode()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0
        self.connects = 0  # upstream connections opened
        self.refused = 0  # targets refused by the network rules

    # ---- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> EgressGuard:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, self.host, self._requested_port, limit=MAX_HEAD_BYTES, backlog=512
            )
            self.port = self._server.sockets[0].getsockname()[1]
            logger.info("egress guard listening on %s:%d", self.host, self.port, extra={"action": "egress"})
        return self

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)

    async def __aenter__(self) -> EgressGuard:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def server_url(self) -> str:
        """``http://127.0.0.1:PORT``, without credentials."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://user:password@127.0.0.1:PORT`` (the credentials need no quoting)."""
        return f"http://{self.username}:{self.password}@{self.host}:{self.port}"

    @property
    def playwright_proxy(self) -> dict[str, str]:
        """The ``proxy`` argument of a Playwright browser context.

        ``bypass: <-loopback>`` undoes Chromium's implicit bypass of loopback targets, so that 127.0.0.0/8,
        ``localhost`` and ``[::1]`` go through the guard too. Playwright adds it on its own for a context
        proxy, but not when ``PLAYWRIGHT_DISABLE_FORCED_CHROMIUM_PROXIED_LOOPBACK`` is set: said here, it holds
        either way.
        """
        return {
            "server": self.server_url,
            "username": self.username,
            "password": self.password,
            "bypass": "<-loopback>",
        }

    # ---- serving -------------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: list[_Upstream] = []  # at most one, kept alive for this client connection
        try:
            if len(self._tasks) > self.max_connections:
                await self._answer(writer, 503, "too many connections", keep_alive=False)
                return
            await self._serve_requests(reader, writer, upstream)
        except asyncio.CancelledError:
            pass  # closing: the connections go with the server
        except Exception:  # never let one connection take anything else down
            logger.exception("egress guard: connection failed", extra={"action": "egress"})
        finally:
            self._tasks.discard(task)
            for kept in upstream:
                kept.close()
            _finish(writer)

    async def _serve_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: list[_Upstream]
    ) -> None:
        activity = _Activity(self.idle_timeout)
        while True:
            try:
                head = await _read_head(reader, activity, request=True)
            except TimeoutError:
                return
            except _ProtocolError as exc:
                await self._answer(writer, exc.status, str(exc), keep_alive=False)
                return
            except (ConnectionError, OSError):
                return
            if head is None:
                return
            try:
                keep_alive = await self._handle(head, reader, writer, upstream, activity)
            except (
                ConnectionError,
                OSError,
                TimeoutError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                _ProtocolError,
                _UpstreamError,
            ):
                return  # the response had begun (or the client went away): closing says it failed
            if not keep_alive:
                return

    def _authorized(self, head: _Head) -> bool:
        scheme, _, credentials = (head.get("proxy-authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return secrets.compare_digest(decoded, self._credentials)

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        detail: str,
        *,
        keep_alive: bool,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        body = f"{detail}\n".encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *extra,
        ]
        if not keep_alive:
            headers.append(("Connection", "close"))
        writer.write(_serialize(f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", headers) + body)
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await asyncio.wait_for(writer.drain(), self.idle_timeout)

    async def _handle(
        self,
        head: _Head,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: list[_Upstream],
        activity: _Activity,
    ) -> bool:
        """Serve one request; True when the client connection stays open for the next one."""
        method, target, version = head.start
        keep_alive = version == "1.1" and "close" not in head.tokens("connection")
        try:
            framing, length = ("none", 0) if method == "CONNECT" else _body_framing(head, request=True)
        except _ProtocolError as exc:
            await self._answer(writer, exc.status, str(exc), keep_alive=False)
            return False
        # An answer given without reading the request's body must close the connection.
        keep_unread = keep_alive and (framing == "none" or (framing == "length" and length == 0))

        if not self._authorized(head):
            await self._answer(
                writer,
                407,
                "proxy credentials needed",
                keep_alive=keep_unread,
                extra=(("Proxy-Authenticate", 'Basic realm="crawljobs egress"'),),
            )
            return keep_unread
        try:
            if method == "CONNECT":
                host, port, path = (*_connect_target(target), "")
            else:
                host, port, path = _absolute_target(target)
        except _ProtocolError as exc:
            await self._answer(writer, exc.status, str(exc), keep_alive=False)
            return False

        if method == "CONNECT":
            for kept in upstream:
                kept.close()
            upstream.clear()
            opened = await self._open(writer, host, port, target, keep_alive=False)
            if opened is not None:
                await self._tunnel(reader, writer, _Upstream((host, port), *opened), activity)
            return False
        return await self._proxy(
            head, host, port, path, framing, length, reader, writer, upstream, activity, keep_alive
        )

    async def _open(
        self, writer: asyncio.StreamWriter, host: str, port: int, target: str, *, keep_alive: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Check the target and connect to a checked address; None after answering 403 or 502."""
        shown = target[:200]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        try:
            addresses = await asyncio.wait_for(
                resolve_and_check(host, self.policy, self.resolver), self.connect_timeout
            )
        except UrlRejected as exc:
            self.refused += 1
            logger.warning(
                "browser request to %s refused by the network rules: %s",
                shown,
                exc.message,
                extra={"action": "ssrf"},
            )
            await self._answer(
                writer,
                403,
                f"refused by the network rules: {exc.message}",
                keep_alive=keep_alive,
                extra=((REFUSED_HEADER, "network-rules"),),
            )
            return None
        except TimeoutError:
            await self._answer(writer, 502, f"cannot resolve {host}: timed out", keep_alive=keep_alive)
            return None
        error: BaseException | None = None
        for address in addresses:  # the checked addresses only: never a second look-up (DNS rebinding)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                opened = await asyncio.wait_for(
                    asyncio.open_connection(address, port, limit=MAX_HEAD_BYTES), remaining
                )
            except (OSError, TimeoutError) as exc:
                error = exc
            else:
                self.connects += 1
                return opened
        reason = "timed out" if error is None or isinstance(error, TimeoutError) else str(error)
        logger.info("egress to %s failed: %s", shown, reason, extra={"action": "egress"})
        await self._answer(writer, 502, f"cannot connect to {host}:{port}: {reason}", keep_alive=keep_alive)
        return None

    async def _tunnel(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: _Upstream,
        activity: _Activity,
    ) -> None:
        stream = _Stream(activity)
        tasks: list[asyncio.Future[None]] = []
        try:
            await stream.write(writer, b"HTTP/1.1 200 Connection established\r\n\r\n")
            tasks = [
                asyncio.ensure_future(_pipe(stream, reader, upstream.writer)),
                asyncio.ensure_future(_pipe(stream, upstream.reader, writer)),
            ]
            await asyncio.gather(*tasks)
        except (ConnectionError, OSError, TimeoutError):
            pass  # one side failed or nothing moved: both go
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            upstream.close()

    async def _proxy(
        self,
        head: _Head,
        host: str,
        port: int,
        path: str,
        framing: str,
        length: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: list[_Upstream],
        activity: _Activity,
        keep_alive: bool,
    ) -> bool:
        """Forward one absolute-form request and relay its response; True when the client stays."""
        method, target, version = head.start
        key = (host, port)
        stream = _Stream(activity)
        headers = _without_hop_by_hop(head.headers)
        headers = [(n, v) for n, v in headers if n.lower() != "host"]
        headers.insert(0, ("Host", _authority(host, port, default=80)))
        if framing == "chunked":
            headers.append(("Transfer-Encoding", "chunked"))
        elif framing == "length":
            headers.append(("Content-Length", str(length)))
        request_head = _serialize(f"{method} {path} HTTP/1.1", headers)
        bodiless = framing == "none" or length == 0
        keep_unread = keep_alive and bodiless
        expect_continue = not bodiless and "100-continue" in head.tokens("expect")

        kept = upstream.pop() if upstream else None
        if kept is not None and (kept.key != key or not kept.usable()):
            kept.close()
            kept = None
        progress = _Progress()
        for attempt in range(2):
            reused = kept is not None
            if kept is None:
                opened = await self._open(writer, host, port, target, keep_alive=keep_unread)
                if opened is None:
                    return keep_unread
                kept = _Upstream(key, *opened)
            try:
                response = await self._send(
                    request_head, framing, length, reader, writer, kept, stream, progress, expect_continue
                )
                break
            except (
                ConnectionError,
                OSError,
                TimeoutError,
                asyncio.IncompleteReadError,
                _UpstreamError,
            ) as exc:
                kept.close()
                kept = None
                if isinstance(exc, _ClientError):
                    await self._answer(writer, 400, str(exc), keep_alive=False)
                    return False
                if not progress.body_sent and not bodiless and _gone(reader):
                    raise  # the client went away in the middle of its body
                if reused and bodiless and attempt == 0 and not isinstance(exc, TimeoutError):
                    continue  # a kept upstream connection closed meanwhile: once more on a new one
                reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
                stays = keep_alive and (bodiless or progress.body_sent)
                await self._answer(writer, 502, f"upstream {host}:{port} failed: {reason}", keep_alive=stays)
                return stays
        else:  # pragma: no cover - the loop always breaks or returns
            return False
        assert kept is not None

        status = int(response.start[1])
        if method == "HEAD" or status in (204, 304):
            mode, size = "none", 0
        else:
            try:
                mode, size = _body_framing(response, request=False)
            except _UpstreamError as exc:
                kept.close()
                await self._answer(
                    writer, 502, f"upstream {host}:{port} failed: {exc}", keep_alive=keep_alive
                )
                return keep_alive
        if mode == "chunked" and version != "1.1":
            mode = "dechunk"  # an HTTP/1.0 client cannot read chunks: send the data, then close
        client_stays = keep_alive and mode in ("none", "length", "chunked")
        reusable = mode != "eof" and "close" not in response.tokens("connection")
        if response.start[0] == "1.0" and "keep-alive" not in response.tokens("connection"):
            reusable = False

        # The refusal marker is the guard's own: a site cannot send it.
        out = [
            (n, v) for n, v in _without_hop_by_hop(response.headers) if n.lower() != REFUSED_HEADER.lower()
        ]
        if mode == "length":
            out.append(("Content-Length", str(size)))
        elif mode == "chunked":
            out.append(("Transfer-Encoding", "chunked"))
        elif method == "HEAD" and (declared := response.get("content-length")) is not None:
            out.append(("Content-Length", declared.split(",")[0].strip()))
        if not client_stays:
            out.append(("Connection", "close"))
        phrase = response.start[2] or _REASONS.get(status, "")
        try:
            await stream.write(writer, _serialize(f"HTTP/1.1 {status} {phrase}".rstrip(), out))
            if mode == "length":
                await _copy_length(stream, kept.reader, writer, size)
            elif mode in ("chunked", "dechunk"):
                await _copy_chunked(stream, kept.reader, writer, encode=mode == "chunked")
            elif mode == "eof":
                await _copy_to_eof(stream, kept.reader, writer)
        except BaseException:
            kept.close()
            raise
        if reusable and client_stays:
            upstream.append(kept)
        else:
            kept.close()
        if not client_stays and writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
        return client_stays

    @staticmethod
    async def _send(
        request_head: bytes,
        framing: str,
        length: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: _Upstream,
        stream: _Stream,
        progress: _Progress,
        expect_continue: bool,
    ) -> _Head:
        """Send the request (head, then its body from the client) and read the final response head."""
        await stream.write(upstream.writer, request_head)
        if expect_continue:  # answered here: the upstream is not asked to (Expect is hop-by-hop here)
            await stream.write(writer, b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            if framing == "chunked":
                await _copy_chunked(stream, reader, upstream.writer, encode=True)
            elif framing == "length":
                await _copy_length(stream, reader, upstream.writer, length)
        except _ProtocolError as exc:  # the client's chunked body is malformed
            raise _ClientError(str(exc)) from None
        progress.body_sent = True
        while True:
            response = await _read_head(upstream.reader, stream.activity, request=False)
            if response is None:
                raise _UpstreamError("the upstream closed the connection")
            status = int(response.start[1])
            if status == 101:
                raise _UpstreamError("the upstream switched protocols")
            if status >= 200:
                return response  # 1xx interim responses (100, 103) are not relayed


@dataclass
class _Progress:
    body_sent: bool = False


class _ClientError(ConnectionError):
    """The client's request body is malformed: the connection is dropped."""


def _gone(reader: asyncio.StreamReader) -> bool:
    return reader.at_eof() or reader.exception() is not None


def _authority(host: str, port: int, *, default: int | None = None) -> str:
    bracketed = f"[{host}]" if ":" in host else host
    return bracketed if port == default else f"{bracketed}:{port}"


def _canonical_host(authority: str) -> tuple[str, int | None]:
    """(host, port or None) of ``host[:port]`` as a browser reads it; _ProtocolError when it is not one."""
    if not authority or "@" in authority or any(c in authority for c in "/?#\\ "):
        raise _ProtocolError("invalid target host")
    if authority.startswith("["):
        _, bracket, after = authority.partition("]")
        if not bracket:
            raise _ProtocolError("invalid target host")
    else:
        _, colon, after = authority.partition(":")
        after = colon + after
    if after and not after.startswith(":"):
        raise _ProtocolError("invalid target host")
    port_text = after[1:]
    port: int | None = None
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
            raise _ProtocolError("invalid target port")
        port = int(port_text)
        if not 0 < port <= 65535:
            raise _ProtocolError("invalid target port")
    host_part = authority[: len(authority) - len(after)]
    try:
        normalized = normalize_url(f"http://{host_part}/")
    except UrlRejected as exc:
        raise _ProtocolError(f"invalid target: {exc.message}") from None
    return host_of(normalized), port


def _connect_target(target: str) -> tuple[str, int]:
    host, port = _canonical_host(target)
    if port is None:
        raise _ProtocolError("CONNECT takes host:port")
    return host, port


def _absolute_target(target: str) -> tuple[str, int, str]:
    """(host, port, origin-form path and query) of an absolute-form ``http://`` request target."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() != "http":
        raise _ProtocolError("an absolute http:// URI is needed (https goes through CONNECT)")
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:].partition("#")[0]
    if not path.startswith("/"):
        path = "/" + path
    host, port = _canonical_host(authority)
    return host, port or 80, path

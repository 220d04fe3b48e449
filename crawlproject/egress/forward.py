"""Absolute-form proxying: forward one ``GET http://host/path`` request upstream and relay the response.

The request goes out with hop-by-hop and ``Proxy-*`` headers removed and its body framed again; the upstream
connection is kept for the client connection it served (one at a time) and used again for the next request
to the same host and port. A kept connection that the upstream closed meanwhile is replaced once, for a
request without a body. Interim responses (100, 103) are not relayed; ``Expect: 100-continue`` is answered by
the guard itself. An HTTP/1.0 client gets a chunked response as bare data, and the connection then closes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from crawlproject.egress.answers import REASONS, REFUSED_HEADER, answer
from crawlproject.egress.framing import (
    Head,
    ProtocolError,
    UpstreamError,
    body_framing,
    serialize_head,
    without_hop_by_hop,
)
from crawlproject.egress.streams import Activity, Stream, copy_body, finish, read_timed_head
from crawlproject.egress.targets import authority


@dataclass
class Upstream:
    """A connection to an upstream server, to ``key`` (host, port)."""

    key: tuple[str, int]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        finish(self.writer)


@dataclass
class Client:
    """A client connection of the guard: its streams, its idle clock, the upstream connection kept for it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    activity: Activity
    kept: list[Upstream] = field(default_factory=list)  # at most one

    def drop_kept(self) -> None:
        for upstream in self.kept:
            upstream.close()
        self.kept.clear()


class Connect(Protocol):
    """The guard's checked connect: a connection to ``host``, or None once it has answered why not."""

    async def __call__(
        self, writer: asyncio.StreamWriter, host: str, port: int, target: str, *, keep_alive: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None: ...


@dataclass
class Request:
    """A request to forward: its head, where it goes and how its body is framed."""

    head: Head
    host: str
    port: int
    path: str  # origin-form: path and query
    framing: str  # as framing.body_framing gives it
    length: int


async def forward(
    client: Client, request: Request, *, keep_alive: bool, connect: Connect, drain_timeout: float
) -> bool:
    """Forward one absolute-form request and relay its response; True when the client stays."""
    head, host, port, framing, length = (
        request.head,
        request.host,
        request.port,
        request.framing,
        request.length,
    )
    method, target, version = head.start
    reader, writer = client.reader, client.writer
    key = (host, port)
    stream = Stream(client.activity)
    headers = without_hop_by_hop(head.headers)
    headers = [(n, v) for n, v in headers if n.lower() != "host"]
    headers.insert(0, ("Host", authority(host, port, default=80)))
    if framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
    elif framing == "length":
        headers.append(("Content-Length", str(length)))
    request_head = serialize_head(f"{method} {request.path} HTTP/1.1", headers)
    bodiless = framing == "none" or (framing == "length" and length == 0)  # a chunked body has no length
    keep_unread = keep_alive and bodiless
    expect_continue = not bodiless and "100-continue" in head.tokens("expect")

    kept = client.kept.pop() if client.kept else None
    if kept is not None and (kept.key != key or not kept.usable()):
        kept.close()
        kept = None
    progress = _Progress()
    for attempt in range(2):
        reused = kept is not None
        if kept is None:
            opened = await connect(writer, host, port, target, keep_alive=keep_unread)
            if opened is None:
                return keep_unread
            kept = Upstream(key, *opened)
        try:
            response = await _send(request_head, request, client, kept, stream, progress, expect_continue)
            break
        except (
            ConnectionError,
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
            UpstreamError,
        ) as exc:
            kept.close()
            kept = None
            if isinstance(exc, _ClientError):
                await answer(writer, 400, str(exc), keep_alive=False, drain_timeout=drain_timeout)
                return False
            if not progress.body_sent and not bodiless and _gone(reader):
                raise  # the client went away in the middle of its body
            if reused and bodiless and attempt == 0 and not isinstance(exc, TimeoutError):
                continue  # a kept upstream connection closed meanwhile: once more on a new one
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            stays = keep_alive and (bodiless or progress.body_sent)
            detail = f"upstream {host}:{port} failed: {reason}"
            await answer(writer, 502, detail, keep_alive=stays, drain_timeout=drain_timeout)
            return stays
    else:  # pragma: no cover - the loop always breaks or returns
        return False
    assert kept is not None

    status = int(response.start[1])
    if method == "HEAD" or status in (204, 304):
        mode, size = "none", 0
    else:
        try:
            mode, size = body_framing(response, request=False)
        except UpstreamError as exc:
            kept.close()
            detail = f"upstream {host}:{port} failed: {exc}"
            await answer(writer, 502, detail, keep_alive=keep_alive, drain_timeout=drain_timeout)
            return keep_alive
    if mode == "chunked" and version != "1.1":
        mode = "dechunk"  # an HTTP/1.0 client cannot read chunks: send the data, then close
    client_stays = keep_alive and mode in ("none", "length", "chunked")
    reusable = mode != "eof" and "close" not in response.tokens("connection")
    if response.start[0] == "1.0" and "keep-alive" not in response.tokens("connection"):
        reusable = False

    # The refusal marker is the guard's own: a site cannot send it.
    out = [(n, v) for n, v in without_hop_by_hop(response.headers) if n.lower() != REFUSED_HEADER.lower()]
    if mode == "length":
        out.append(("Content-Length", str(size)))
    elif mode == "chunked":
        out.append(("Transfer-Encoding", "chunked"))
    elif method == "HEAD" and (declared := response.get("content-length")) is not None:
        out.append(("Content-Length", declared.split(",")[0].strip()))
    if not client_stays:
        out.append(("Connection", "close"))
    phrase = response.start[2] or REASONS.get(status, "")
    try:
        await stream.write(writer, serialize_head(f"HTTP/1.1 {status} {phrase}".rstrip(), out))
        await copy_body(stream, kept.reader, writer, mode, size)
    except BaseException:
        kept.close()
        raise
    if reusable and client_stays:
        client.kept.append(kept)
    else:
        kept.close()
    if not client_stays and writer.can_write_eof() and not writer.is_closing():
        writer.write_eof()
    return client_stays


async def _send(
    request_head: bytes,
    request: Request,
    client: Client,
    upstream: Upstream,
    stream: Stream,
    progress: _Progress,
    expect_continue: bool,
) -> Head:
    """Send the request (head, then its body from the client) and read the final response head."""
    await stream.write(upstream.writer, request_head)
    if expect_continue:  # answered here: the upstream is not asked to (Expect is hop-by-hop here)
        await stream.write(client.writer, b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        await copy_body(stream, client.reader, upstream.writer, request.framing, request.length)
    except ProtocolError as exc:  # the client's chunked body is malformed
        raise _ClientError(str(exc)) from None
    progress.body_sent = True
    while True:
        response = await read_timed_head(upstream.reader, stream.activity, request=False)
        if response is None:
            raise UpstreamError("the upstream closed the connection")
        status = int(response.start[1])
        if status == 101:
            raise UpstreamError("the upstream switched protocols")
        if status >= 200:
            return response  # 1xx interim responses (100, 103) are not relayed


@dataclass
class _Progress:
    body_sent: bool = False


class _ClientError(ConnectionError):
    """The client's request body is malformed: the connection is dropped."""


def _gone(reader: asyncio.StreamReader) -> bool:
    return reader.at_eof() or reader.exception() is not None

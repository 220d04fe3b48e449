"""HTTP/1.1 message framing (RFC 9112) on asyncio streams: heads, bodies, hop-by-hop headers.

Read strictly, as a security boundary must: a request line is ``token SP target SP HTTP/1.x``, header names
are tokens (so obsolete line folding is refused), values carry no control characters, heads are bounded in
number of fields (and in bytes by the stream's limit), a body is framed by exactly one of Transfer-Encoding:
chunked and Content-Length (both at once is request smuggling), and chunk sizes are hex of bounded length.

The egress guard reads with it, and so do the test site and the test proxies (``tests/acceptance``): it
imports nothing but the standard library.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

MAX_HEAD_BYTES = 64 * 1024  # a request or response head (request line or status line plus headers)
MAX_HEADERS = 200
BUFFER = 64 * 1024  # the largest piece of a body read at once

HOP_BY_HOP = frozenset(
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
_HEX = frozenset(b"0123456789abcdefABCDEF")


class ProtocolError(Exception):
    """A malformed message; ``status`` is what the client is answered when nothing was sent to it yet."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class UpstreamError(Exception):
    """The upstream server failed (refused, reset, timed out, answered garbage)."""


@dataclass
class Head:
    """A parsed request or response head."""

    start: tuple[str, str, str]  # (method, target, version) or (version, status, reason); version "1.1"
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        """The values of header ``name`` (any case) joined with commas, or None when it is absent."""
        name = name.lower()
        values = [v for n, v in self.headers if n.lower() == name]
        return ", ".join(values) if values else None

    def tokens(self, name: str) -> list[str]:
        """The comma-separated tokens of header ``name``, lower-cased (``Connection: close``: ["close"])."""
        value = self.get(name) or ""
        return [t.strip().lower() for t in value.split(",") if t.strip()]


def parse_head(raw: bytes, *, request: bool) -> Head:
    """A head read up to its empty line; ProtocolError (request) or UpstreamError (response) if malformed."""

    def malformed(what: str, status: int = 400) -> Exception:
        return ProtocolError(what, status) if request else UpstreamError(f"{what} from upstream")

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
    return Head(start, headers)


async def read_head(
    reader: asyncio.StreamReader, idle_timeout: float | None, *, request: bool
) -> Head | None:
    """The next head on ``reader``; None at a clean end of stream before any byte of it.

    TimeoutError when no whole head came within ``idle_timeout`` seconds; a head longer than the reader's
    limit is a ProtocolError 431 (request) or an UpstreamError (response).
    """
    try:
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), idle_timeout)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise (ProtocolError("incomplete head") if request else UpstreamError("incomplete head")) from None
    except asyncio.LimitOverrunError:
        if request:
            raise ProtocolError("request head too large", 431) from None
        raise UpstreamError("response head too large") from None
    return parse_head(raw, request=request)


def body_framing(head: Head, *, request: bool) -> tuple[str, int]:
    """("chunked", 0), ("length", n) or ("none", 0) for a request; a response may also be ("eof", 0).

    The status of a response is not looked at: the answer to a HEAD and a 204 or 304 have no body whatever
    their head says (the caller knows).
    """
    encodings = head.tokens("transfer-encoding")
    lengths = head.get("content-length")
    if encodings:
        if encodings != ["chunked"]:
            if request:
                raise ProtocolError("unsupported transfer coding", 501)
            if encodings[-1] != "chunked":
                return "eof", 0
            raise UpstreamError("unsupported transfer coding from upstream")
        if lengths is not None and request:  # both: a request smuggling attempt
            raise ProtocolError("both Transfer-Encoding and Content-Length")
        return "chunked", 0
    if lengths is not None:
        values = {v.strip() for v in lengths.split(",")}
        if len(values) != 1 or not (value := values.pop()).isdigit() or len(value) > 18:
            if request:
                raise ProtocolError("invalid Content-Length")
            raise UpstreamError("invalid Content-Length from upstream")
        return "length", int(value)
    return ("none", 0) if request else ("eof", 0)


def without_hop_by_hop(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The end-to-end headers: no hop-by-hop ones (nor those ``Connection`` names), no ``Proxy-*``, and no
    ``Content-Length`` (the one who sends the message frames it again)."""
    named = set(HOP_BY_HOP)
    for name, value in headers:
        if name.lower() == "connection":
            named.update(t.strip().lower() for t in value.split(","))
    return [
        (n, v)
        for n, v in headers
        if (low := n.lower()) not in named and not low.startswith("proxy-") and low != "content-length"
    ]


def serialize_head(start: str, headers: list[tuple[str, str]]) -> bytes:
    """The bytes of a head: its start line, its header fields, the empty line."""
    lines = [start, *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk_size(line: bytes) -> int:
    """The size a chunk-size line gives (its extensions ignored); ProtocolError when it gives none."""
    size_text = line.split(b";", 1)[0].strip()
    if not size_text or len(size_text) > 16 or not _HEX.issuperset(size_text):
        raise ProtocolError("invalid chunk size")
    return int(size_text, 16)


class Source(Protocol):
    """What a body is read from: an ``asyncio.StreamReader``, or one whose reads time out (the guard's)."""

    async def read(self, n: int = -1) -> bytes: ...

    async def readexactly(self, n: int) -> bytes: ...

    async def readuntil(self, separator: bytes = b"\n") -> bytes: ...


async def iter_body(source: Source, framing: str, length: int = 0) -> AsyncGenerator[bytes, None]:
    """The body framed as ``framing`` says (what `body_framing` gives), decoded, in pieces of at most BUFFER.

    ``"length"``: ``length`` bytes (IncompleteReadError when the stream ends first); ``"chunked"``: the data
    of the chunks (extensions and trailer fields dropped; ProtocolError when the framing is malformed);
    ``"eof"``: everything up to the end of the stream; ``"none"``: nothing.
    """
    if framing == "length":
        remaining = length
        while remaining:
            piece = await source.read(min(remaining, BUFFER))
            if not piece:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(piece)
            yield piece
    elif framing == "chunked":
        while remaining := chunk_size(await source.readuntil(b"\r\n")):
            while remaining:
                piece = await source.read(min(remaining, BUFFER))
                if not piece:
                    raise asyncio.IncompleteReadError(b"", remaining)
                remaining -= len(piece)
                yield piece
            if await source.readexactly(2) != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
        for _ in range(MAX_HEADERS + 1):  # trailer fields, then the empty line
            if await source.readuntil(b"\r\n") == b"\r\n":
                return
        raise ProtocolError("too many trailer fields")
    elif framing == "eof":
        while piece := await source.read(BUFFER):
            yield piece

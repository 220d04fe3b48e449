"""The guard's own answers: a short plain-text response for what it refuses or cannot do."""

from __future__ import annotations

import asyncio
import contextlib

from crawlproject.egress.framing import serialize_head

REFUSED_HEADER = "X-Crawljobs-Egress"  # on the guard's own 403: "network-rules"
REASONS = {
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


async def answer(
    writer: asyncio.StreamWriter,
    status: int,
    detail: str,
    *,
    keep_alive: bool,
    drain_timeout: float,
    extra: tuple[tuple[str, str], ...] = (),
) -> None:
    """Answer ``status`` with ``detail`` as the body.

    A client that has not read it after ``drain_timeout`` seconds is left to the caller, which closes.
    """
    body = f"{detail}\n".encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        *extra,
    ]
    if not keep_alive:
        headers.append(("Connection", "close"))
    writer.write(serialize_head(f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", headers) + body)
    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
        await asyncio.wait_for(writer.drain(), drain_timeout)

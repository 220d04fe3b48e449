"""The guard's stream plumbing: an idle clock per connection, reads and writes bounded by it, copy loops.

A connection on which nothing moves (in either direction) for ``idle`` seconds is given up: every read and
drain waits at most until the clock runs out, and every byte that moves winds it up again. Bodies are copied
through fixed-size buffers (``framing.BUFFER``), never held whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from crawlproject.egress.framing import Head, iter_body, read_head

LINGER_SECONDS = 10.0  # how long a closed connection may take to send what is left in its buffer

_T = TypeVar("_T")


@dataclass
class Activity:
    """When a connection last moved a byte (either direction): the clock of the idle timeout."""

    idle: float
    last: float = field(default_factory=time.monotonic)

    def touch(self) -> None:
        self.last = time.monotonic()


def finish(writer: asyncio.StreamWriter) -> None:
    """Close a connection once what was written is sent; one whose peer does not read is dropped soon."""
    transport = writer.transport
    if transport.is_closing():
        return
    writer.close()
    if transport.get_write_buffer_size():
        asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.abort)


async def read_timed_head(reader: asyncio.StreamReader, activity: Activity, *, request: bool) -> Head | None:
    """The next head on ``reader`` (`framing.read_head`) within the idle timeout, which reading it resets."""
    head = await read_head(reader, activity.idle, request=request)
    activity.touch()
    return head


class Stream:
    """Bytes moving on one connection (a tunnel: both directions) with its idle clock."""

    def __init__(self, activity: Activity) -> None:
        self.activity = activity

    async def wait(self, awaitable: Awaitable[_T]) -> _T:
        """``awaitable``'s result, or TimeoutError once nothing has moved on the connection for too long."""
        task: asyncio.Future[_T] = asyncio.ensure_future(awaitable)
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

    def reading(self, reader: asyncio.StreamReader) -> TimedReader:
        return TimedReader(self, reader)

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await self.wait(writer.drain())


class TimedReader:
    """A reader whose reads are bounded by a stream's idle clock (a `framing.Source`)."""

    def __init__(self, stream: Stream, reader: asyncio.StreamReader) -> None:
        self.stream = stream
        self.reader = reader

    async def read(self, n: int = -1) -> bytes:
        return await self.stream.wait(self.reader.read(n))

    async def readexactly(self, n: int) -> bytes:
        return await self.stream.wait(self.reader.readexactly(n))

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        return await self.stream.wait(self.reader.readuntil(separator))


async def copy_body(
    stream: Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framing: str, length: int = 0
) -> None:
    """Relay a body read as ``framing`` says (`framing.iter_body`), framed the same way on the other side.

    A chunked body is chunked again (chunk extensions and trailer fields dropped); ``"dechunk"`` reads a
    chunked one and sends its bare data (to a client that ends the body by closing the connection).
    """
    pieces = iter_body(stream.reading(reader), "chunked" if framing == "dechunk" else framing, length)
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            await stream.write(
                writer, b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece
            )
    if framing == "chunked":
        await stream.write(writer, b"0\r\n\r\n")


async def pipe(stream: Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One direction of a tunnel: copy to end of stream, then half-close the other side."""
    await copy_body(stream, reader, writer, "eof")
    if writer.can_write_eof() and not writer.is_closing():
        writer.write_eof()

"""The browser's egress guard: a local forward proxy that connects only to addresses the network rules allow.

Everything stays on loopback: the guard allows 127.0.0.1/32 only, and a second origin server on 127.0.0.2 (a
loopback address the policy refuses) must never see a connection.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from crawljobs.urls import NetworkPolicy
from crawlproject.egress import EgressGuard

POLICY = NetworkPolicy(allowed=(ipaddress.ip_network("127.0.0.1/32"),))


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in its own event loop (the project has no pytest-asyncio)."""

    def wrapper() -> None:
        asyncio.run(asyncio.wait_for(test(), 30))

    return wrapper


# ---- a tiny origin server ----------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Origin:
    """An HTTP/1.1 server that records what it receives. ``handler`` answers a request (raw bytes)."""

    host: str
    connections: int = 0
    requests: list[Seen] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> Origin:
        self.server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()

    def answer(self, seen: Seen) -> tuple[bytes, bool]:
        """(raw response, keep the connection)."""
        path = seen.target
        if path.startswith("/chunked"):
            body = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
            return (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\n\r\n" + body,
                True,
            )
        if path.startswith("/eof"):
            return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", False
        if path.startswith("/drop"):  # closes the connection without having said so
            return b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndrop", False
        if path.startswith("/hop"):
            head = b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nProxy-Authenticate: x\r\n"
            return head + b"Content-Length: 2\r\n\r\nok", True
        body = f"{seen.method} {seen.target} body={len(seen.body)}".encode()
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Origin: %s\r\n\r\n" % (
            len(body),
            self.host.encode(),
        )
        return head + (b"" if seen.method == "HEAD" else body), True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                lines = raw.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ")
                if target.startswith("/vanish"):  # closes between the head and the body, answering nothing
                    self.requests.append(Seen(method, target, {}, b""))
                    return
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = b""
                if headers.get("transfer-encoding") == "chunked":
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        if size == 0:
                            await reader.readuntil(b"\r\n")
                            break
                        body += await reader.readexactly(size)
                        await reader.readexactly(2)
                elif "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                seen = Seen(method, target, headers, body)
                self.requests.append(seen)
                response, keep = self.answer(seen)
                writer.write(response)
                await writer.drain()
                if not keep:
                    return
        finally:
            writer.close()


# ---- a client of the guard ---------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def auth_header(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return f"Proxy-Authorization: Basic {token}\r\n"


class Client:
    """One connection to the guard, speaking raw HTTP/1.1."""

    def __init__(self, guard: EgressGuard) -> None:
        self.guard = guard
        self.auth = auth_header(guard.username, guard.password)

    async def __aenter__(self) -> Client:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.guard.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.writer.close()

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def request(
        self, method: str, target: str, *, headers: str = "", body: bytes = b"", auth: bool = True
    ) -> Reply:
        length = f"Content-Length: {len(body)}\r\n" if body else ""
        host = target.split("/")[2] if "://" in target else target
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{self.auth if auth else ''}{length}{headers}\r\n"
        )
        await self.send(head.encode() + body)
        return await self.reply(head_only=method in ("HEAD", "CONNECT"))

    async def reply(self, *, head_only: bool = False) -> Reply:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if head_only and status == 200:
            return Reply(status, headers, b"")
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                body += await self.reader.readexactly(size)
                await self.reader.readexactly(2)
        elif "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        else:
            body = await self.reader.read()
        return Reply(status, headers, body)

    async def closed_by_peer(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 5) == b""


# ---- fixtures as an async context --------------------------------------------------------------------------


@dataclass
class World:
    guard: EgressGuard
    allowed: Origin
    forbidden: Origin

    def url(self, origin: Origin, path: str = "/", host: str | None = None) -> str:
        return f"http://{host or origin.host}:{origin.port}{path}"


def with_world(
    resolver: Callable[[str], Awaitable[list[str]]] | None = None, **guard_options: Any
) -> Callable[[Callable[[World], Coroutine[Any, Any, None]]], Callable[[], None]]:
    def decorate(test: Callable[[World], Coroutine[Any, Any, None]]) -> Callable[[], None]:
        @run
        async def wrapper() -> None:
            allowed = await Origin("127.0.0.1").start()
            forbidden = await Origin("127.0.0.2").start()
            options = dict(guard_options)
            if resolver is not None:
                options["resolver"] = resolver
            guard = await EgressGuard(POLICY, **options).start()
            try:
                await test(World(guard, allowed, forbidden))
                assert forbidden.connections == 0, "the forbidden origin was reached"
            finally:
                await guard.close()
                await allowed.close()
                await forbidden.close()

        wrapper.__name__ = wrapper.__qualname__ = test.__name__
        wrapper.__doc__ = test.__doc__
        return wrapper

    return decorate


# ---- tests -------------------------------------------------------------------------------------------------


@with_world()
async def test_an_allowed_target_is_proxied_without_the_proxy_headers(world: World) -> None:
    async with Client(world.guard) as client:
        reply = await client.request(
            "GET",
            world.url(world.allowed, "/hello?x=1"),
            headers="Proxy-Connection: keep-alive\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n"
            "Keep-Alive: 5\r\nTE: trailers\r\nX-Keep: yes\r\n",
        )
    assert reply.status == 200
    assert reply.text == "GET /hello?x=1 body=0"
    (seen,) = world.allowed.requests
    assert seen.target == "/hello?x=1"
    assert seen.headers["host"] == f"127.0.0.1:{world.allowed.port}"
    assert seen.headers["x-keep"] == "yes"
    for hop in ("proxy-authorization", "proxy-connection", "x-drop", "keep-alive", "te"):
        assert hop not in seen.headers


@with_world()
async def test_requests_with_bodies_share_a_kept_alive_connection(world: World) -> None:
    async with Client(world.guard) as client:
        first = await client.request("POST", world.url(world.allowed, "/a"), body=b"x" * 100_000)
        chunked = "Transfer-Encoding: chunked\r\n"
        head = f"PUT {world.url(world.allowed, '/b')} HTTP/1.1\r\n{client.auth}{chunked}\r\n"
        await client.send(head.encode() + b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        second = await client.reply()
        third = await client.request("HEAD", world.url(world.allowed, "/c"))
        fourth = await client.request("GET", world.url(world.allowed, "/chunked"))
        last = await client.request("GET", world.url(world.allowed, "/d"), headers="Connection: close\r\n")
        assert await client.closed_by_peer()
    assert first.text == "POST /a body=100000"
    assert second.text == "PUT /b body=5"
    assert third.status == 200 and third.body == b""
    assert fourth.body == b"hello, world"
    assert last.text == "GET /d body=0"
    assert last.headers["connection"] == "close"
    assert world.allowed.requests[1].body == b"abcde"
    assert world.allowed.connections == 1


@with_world()
async def test_a_kept_upstream_connection_closed_meanwhile_is_replaced(world: World) -> None:
    async with Client(world.guard) as client:
        assert (await client.request("GET", world.url(world.allowed, "/drop"))).body == b"drop"
        await asyncio.sleep(0.1)
        assert (await client.request("GET", world.url(world.allowed, "/next"))).status == 200
    assert world.allowed.connections == 2


@with_world()
async def test_a_chunked_request_is_not_sent_again_when_a_kept_upstream_closes(world: World) -> None:
    """A chunked body has no Content-Length: it was taken for no body, and sent again (without the body, which
    the client had already given) on a new connection, so the client waited for an answer until the idle
    timeout. Only a request without a body is sent again."""
    async with Client(world.guard) as client:
        assert (await client.request("GET", world.url(world.allowed, "/first"))).status == 200
        head = f"PUT {world.url(world.allowed, '/vanish')} HTTP/1.1\r\n{client.auth}Transfer-Encoding: chunked\r\n\r\n"
        await client.send(head.encode() + b"3\r\nabc\r\n0\r\n\r\n")
        reply = await asyncio.wait_for(client.reply(), 5)
    assert reply.status == 502
    assert [seen.target for seen in world.allowed.requests] == ["/first", "/vanish"]
    assert world.allowed.connections == 1


@with_world()
async def test_hop_by_hop_response_headers_are_dropped(world: World) -> None:
    async with Client(world.guard) as client:
        reply = await client.request("GET", world.url(world.allowed, "/hop"))
    assert reply.body == b"ok"
    assert "x-secret" not in reply.headers and "proxy-authenticate" not in reply.headers


@with_world()
async def test_a_response_that_ends_with_the_connection_closes_the_client_connection(world: World) -> None:
    async with Client(world.guard) as client:
        reply = await client.request("GET", world.url(world.allowed, "/eof"))
        assert reply.body == b"until the end"
        assert reply.headers["connection"] == "close"


@with_world()
async def test_a_forbidden_address_is_refused_and_never_reached(world: World) -> None:
    async with Client(world.guard) as client:
        reply = await client.request("GET", world.url(world.forbidden, "/secret"))
        assert reply.status == 403
        assert reply.text.startswith("refused by the network rules: address 127.0.0.2 is loopback")
        assert reply.headers["x-crawljobs-egress"] == "network-rules"
        after = await client.request("GET", world.url(world.allowed, "/after"))  # the connection stays usable
        assert after.status == 200


def test_a_refusal_is_logged_as_ssrf(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="crawlproject.egress")

    @with_world()
    async def refused(world: World) -> None:
        async with Client(world.guard) as client:
            assert (await client.request("GET", world.url(world.forbidden))).status == 403

    refused()
    (record,) = [r for r in caplog.records if r.name == "crawlproject.egress.guard"]
    assert record.levelno == logging.WARNING
    assert getattr(record, "action", None) == "ssrf"


@pytest.mark.parametrize(
    "spelling",
    [
        "2130706434",
        "0x7f000002",
        "0x7f.0.0.2",
        "0177.0.0.2",
        "017700000002",
        "127.2",
        "127.0.0.2.",
        "[::ffff:127.0.0.2]",
    ],
)
def test_other_spellings_of_a_forbidden_address_are_refused(spelling: str) -> None:
    @with_world()
    async def refused(world: World) -> None:
        async with Client(world.guard) as client:
            reply = await client.request("GET", world.url(world.forbidden, "/x", host=spelling))
            assert reply.status == 403, reply.text
            assert "127.0.0.2" in reply.text

    refused()


@with_world()
async def test_connect_to_a_forbidden_address_is_refused(world: World) -> None:
    async with Client(world.guard) as client:
        reply = await client.request("CONNECT", f"127.0.0.2:{world.forbidden.port}")
        assert reply.status == 403
        assert "refused by the network rules" in reply.text


@with_world()
async def test_connect_tunnels_to_an_allowed_address_with_half_close(world: World) -> None:
    received: list[bytes] = []

    async def echo_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client half-closes
        received.append(data)
        writer.write(b"got " + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo_after_eof, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Client(world.guard) as client:
            reply = await client.request("CONNECT", f"127.0.0.1:{port}")
            assert reply.status == 200
            await client.send(b"ping")
            client.writer.write_eof()
            assert await asyncio.wait_for(client.reader.read(), 5) == b"got ping"
    finally:
        server.close()
    assert received == [b"ping"]


@with_world()
async def test_credentials_are_required(world: World) -> None:
    async with Client(world.guard) as client:
        missing = await client.request("GET", world.url(world.allowed), auth=False)
        assert missing.status == 407
        assert missing.headers["proxy-authenticate"].startswith("Basic")
        wrong = await client.request(
            "GET", world.url(world.allowed), auth=False, headers=auth_header(world.guard.username, "nope")
        )
        assert wrong.status == 407
        connect = await client.request("CONNECT", f"127.0.0.1:{world.allowed.port}", auth=False)
        assert connect.status == 407
        assert (await client.request("GET", world.url(world.allowed))).status == 200  # same connection
    assert len(world.allowed.requests) == 1


@with_world()
async def test_an_unauthenticated_request_with_a_body_closes_the_connection(world: World) -> None:
    async with Client(world.guard) as client:
        reply = await client.request("POST", world.url(world.allowed), body=b"data", auth=False)
        assert reply.status == 407
        assert reply.headers["connection"] == "close"
        assert await client.closed_by_peer()
    assert world.allowed.connections == 0


FAKE_DNS = {
    "good.test": ["127.0.0.1"],
    "evil.test": ["127.0.0.2"],
    "mixed.test": ["127.0.0.1", "127.0.0.2"],
}


async def fake_resolver(host: str) -> list[str]:
    try:
        return FAKE_DNS[host]
    except KeyError:
        raise OSError(f"{host} does not resolve") from None


@with_world(resolver=fake_resolver)
async def test_names_are_resolved_once_and_checked(world: World) -> None:
    async with Client(world.guard) as client:
        evil = await client.request("GET", world.url(world.forbidden, "/x", host="evil.test"))
        assert evil.status == 403
        assert "evil.test resolves to 127.0.0.2, which is loopback" in evil.text
        mixed = await client.request("GET", world.url(world.allowed, "/x", host="mixed.test"))
        assert mixed.status == 403
        unknown = await client.request("GET", world.url(world.allowed, "/x", host="nowhere.test"))
        assert unknown.status == 403
        assert "does not resolve" in unknown.text
        connect = await client.request("CONNECT", f"evil.test:{world.forbidden.port}")
        assert connect.status == 403
    async with Client(world.guard) as client:
        good = await client.request("GET", world.url(world.allowed, "/y", host="GOOD.test"))
        assert good.status == 200
    assert world.allowed.requests[-1].headers["host"] == f"good.test:{world.allowed.port}"


answers: list[list[str]] = []


async def rebinding_resolver(host: str) -> list[str]:
    """A name that answers an allowed address first and a forbidden one on any later look-up."""
    answers.append(["127.0.0.1"] if not answers else ["127.0.0.2"])
    return answers[-1]


@with_world(resolver=rebinding_resolver)
async def test_the_checked_address_is_the_one_connected_to(world: World) -> None:
    answers.clear()
    async with Client(world.guard) as client:
        reply = await client.request("GET", world.url(world.allowed, "/r", host="rebind.test"))
    assert reply.status == 200
    assert reply.headers["x-origin"] == "127.0.0.1"
    assert len(answers) == 1


@with_world()
async def test_an_unreachable_upstream_is_a_502(world: World) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with Client(world.guard) as client:
        reply = await client.request("GET", f"http://127.0.0.1:{port}/")
        assert reply.status == 502
        connect = await client.request("CONNECT", f"127.0.0.1:{port}")
        assert connect.status == 502


@with_world()
async def test_malformed_requests_are_answered_400_or_431(world: World) -> None:
    async with Client(world.guard) as client:
        reply = await client.request("GET", "/relative")
        assert reply.status == 400
    async with Client(world.guard) as client:
        reply = await client.request("GET", "https://127.0.0.1/")
        assert reply.status == 400
    async with Client(world.guard) as client:
        reply = await client.request("GET", "http://user@127.0.0.1/")
        assert reply.status == 400
    async with Client(world.guard) as client:
        reply = await client.request(
            "POST",
            world.url(world.allowed),
            headers="Transfer-Encoding: chunked\r\n",
            body=b"0\r\n\r\n",  # Content-Length too: refused (request smuggling)
        )
        assert reply.status == 400
    async with Client(world.guard) as client:
        reply = await client.request(
            "GET", world.url(world.allowed), headers="X-Big: " + "a" * 70_000 + "\r\n"
        )
        assert reply.status == 431
    assert world.allowed.requests == []


@with_world(idle_timeout=0.3)
async def test_an_idle_connection_is_closed(world: World) -> None:
    async with Client(world.guard) as client:
        started = time.monotonic()
        assert await client.closed_by_peer()
        assert time.monotonic() - started < 3


@with_world()
async def test_closing_the_guard_ends_open_connections(world: World) -> None:
    client = Client(world.guard)
    async with client:
        assert (await client.request("GET", world.url(world.allowed))).status == 200
        await world.guard.close()
        assert await client.closed_by_peer()


@with_world()
async def test_a_malformed_chunked_body_is_a_400(world: World) -> None:
    async with Client(world.guard) as client:
        head = f"POST {world.url(world.allowed, '/c')} HTTP/1.1\r\n{client.auth}Transfer-Encoding: chunked\r\n\r\n"
        await client.send(head.encode() + b"zz\r\nabc\r\n")
        reply = await client.reply()
        assert reply.status == 400
        assert await client.closed_by_peer()

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
import secrets
from typing import Any

from crawljobs.exceptions import UrlRejected
from crawljobs.urls import NetworkPolicy, Resolver, resolve_and_check, system_resolver
from crawlproject.egress.answers import REFUSED_HEADER, answer
from crawlproject.egress.forward import Client, Request, Upstream, forward
from crawlproject.egress.framing import MAX_HEAD_BYTES, Head, ProtocolError, UpstreamError, body_framing
from crawlproject.egress.streams import Activity, Stream, finish, pipe, read_timed_head
from crawlproject.egress.targets import absolute_target, connect_target

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # resolving the target and opening the upstream connection
IDLE_TIMEOUT = 120.0  # nothing read or written on a connection for this long: it is closed
MAX_CONNECTIONS = 1024  # client connections served at once


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

    @property
    def server_url(self) -> str:
        """``http://127.0.0.1:PORT``, without credentials."""
        return f"http://{self.host}:{self.port}"

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
        client = Client(reader, writer, Activity(self.idle_timeout))
        try:
            if len(self._tasks) > self.max_connections:
                await self._answer(writer, 503, "too many connections", keep_alive=False)
                return
            await self._serve_requests(client)
        except asyncio.CancelledError:
            pass  # closing: the connections go with the server
        except Exception:  # never let one connection take anything else down
            logger.exception("egress guard: connection failed", extra={"action": "egress"})
        finally:
            self._tasks.discard(task)
            client.drop_kept()
            finish(writer)

    async def _serve_requests(self, client: Client) -> None:
        while True:
            try:
                head = await read_timed_head(client.reader, client.activity, request=True)
            except TimeoutError:
                return
            except ProtocolError as exc:
                await self._answer(client.writer, exc.status, str(exc), keep_alive=False)
                return
            except (ConnectionError, OSError):
                return
            if head is None:
                return
            try:
                keep_alive = await self._handle(head, client)
            except (
                ConnectionError,
                OSError,
                TimeoutError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ProtocolError,
                UpstreamError,
            ):
                return  # the response had begun (or the client went away): closing says it failed
            if not keep_alive:
                return

    def _authorized(self, head: Head) -> bool:
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
        await answer(
            writer, status, detail, keep_alive=keep_alive, drain_timeout=self.idle_timeout, extra=extra
        )

    async def _handle(self, head: Head, client: Client) -> bool:
        """Serve one request; True when the client connection stays open for the next one."""
        writer = client.writer
        method, target, version = head.start
        keep_alive = version == "1.1" and "close" not in head.tokens("connection")
        try:
            framing, length = ("none", 0) if method == "CONNECT" else body_framing(head, request=True)
        except ProtocolError as exc:
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
                host, port, path = (*connect_target(target), "")
            else:
                host, port, path = absolute_target(target)
        except ProtocolError as exc:
            await self._answer(writer, exc.status, str(exc), keep_alive=False)
            return False

        if method == "CONNECT":
            client.drop_kept()
            opened = await self._open(writer, host, port, target, keep_alive=False)
            if opened is not None:
                await self._tunnel(client, Upstream((host, port), *opened))
            return False
        request = Request(head, host, port, path, framing, length)
        return await forward(
            client, request, keep_alive=keep_alive, connect=self._open, drain_timeout=self.idle_timeout
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
                return opened
        reason = "timed out" if error is None or isinstance(error, TimeoutError) else str(error)
        logger.info("egress to %s failed: %s", shown, reason, extra={"action": "egress"})
        await self._answer(writer, 502, f"cannot connect to {host}:{port}: {reason}", keep_alive=keep_alive)
        return None

    async def _tunnel(self, client: Client, upstream: Upstream) -> None:
        """Answer ``200 Connection established``, then copy bytes both ways until both ends are done."""
        reader, writer = client.reader, client.writer
        stream = Stream(client.activity)
        tasks: list[asyncio.Future[None]] = []
        try:
            await stream.write(writer, b"HTTP/1.1 200 Connection established\r\n\r\n")
            tasks = [
                asyncio.ensure_future(pipe(stream, reader, upstream.writer)),
                asyncio.ensure_future(pipe(stream, upstream.reader, writer)),
            ]
            await asyncio.gather(*tasks)
        except (ConnectionError, OSError, TimeoutError):
            pass  # one side failed or nothing moved: both go
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            upstream.close()

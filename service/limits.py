"""Request bodies: read only for a valid API key, within a size limit, a process-wide budget and a deadline.

A body costs memory from its first byte until its request has been handled, and a client decides how fast it
arrives. So for every request a route will take that may carry one (any method but GET, HEAD and OPTIONS,
which no route reads a body of, so CORS preflights stay open), before a byte of the body is read:

- the API key is checked from the headers (`service.deps.authenticate`): without a valid one the answer is 401
  and the body is never read. The tenant found is kept in the request's state for the route
  (`service.deps.get_tenant`), which does not look it up again. Every route such a request can reach needs a
  key (each POST of /v1 and /functions/v1): one that did not would have to be let through here.
- a body longer than ``max_bytes`` (CRAWLJOBS_MAX_REQUEST_BYTES) is a 413, on its Content-Length or, without
  one, on the bytes received;
- the bodies in flight in this process (being read, or read and still being handled) hold at most
  ``max_in_flight`` bytes (CRAWLJOBS_MAX_BODY_BYTES_IN_FLIGHT): a body that does not fit is a 503 with
  Retry-After. Not a 413 (this body is within the limit, and would be taken a moment later) nor a 429 (the
  budget is the whole process's, not this client's rate): the server is busy for now, which is what 503 and
  Retry-After tell a client, and what clients and proxies retry. A Content-Length is reserved whole at once,
  so a body that cannot fit is refused before it is read; a chunked body reserves what arrives.
- a body must arrive whole within ``read_timeout`` seconds (CRAWLJOBS_BODY_READ_TIMEOUT_SECONDS), else 408.

The dashboard's forms (``service.dashboard``) come from a browser with no key in their headers: the app's
``state.body_auth`` (set by the dashboard) claims their paths and checks them its own way (the session cookie, checked the same way before the body is read; a request
without a session gets the dashboard's answer, a redirect to its sign-in page), and the sign-in form, which has
no session yet, is held to ``OPEN_BODY_BYTES``.

Each of these answers closes the connection: the rest of a body is not waited for. A request no route takes
gets its 404 or 405 from the app, which does not read the body either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crawljobs.exceptions import DatabaseUnavailable, Unauthorized
from crawljobs.store.pool import UNAVAILABLE
from service.deps import TENANT_STATE, authenticate, offered_keys
from service.errors import error_response

RETRY_AFTER_SECONDS = 2
_DATABASE_DOWN: tuple[type[Exception], ...] = (DatabaseUnavailable, *UNAVAILABLE)
_UNREAD = ("GET", "HEAD", "OPTIONS")
# The largest body of a form read with no session (the dashboard's sign-in: an API key and a CSRF token).
OPEN_BODY_BYTES = 16 * 1024

# Another part of the app's own check of the requests it takes, before their body is read (``app.state.body_auth``):
# (False, _) for a request it does not take; else (True, the tenant), (True, None) for a form open to anyone (held
# to OPEN_BODY_BYTES), or (True, the response to answer instead: a refusal).
BodyAuth = Callable[[HTTPConnection], Awaitable["tuple[bool, str | Response | None]"]]


class _Refusal(Exception):
    """Why a body is not read (on): answered with `status` and the connection closed."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {"Connection": "close"}  # what is left of the body is never read
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        await error_response(self.status, self.code, self.message, headers=headers)(scope, receive, send)


class _Held:
    """The bytes one request holds of the in-flight budget."""

    bytes = 0


class BodyLimitMiddleware:
    """Authenticates from the headers, then reads an HTTP request body within its limits and hands it on.

    Every body this API takes is one JSON document that is parsed whole anyway, so buffering costs nothing.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_in_flight: int, read_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_in_flight = max_in_flight
        self.read_timeout = read_timeout
        self.in_flight = 0  # bytes held by the bodies of this process's open requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _UNREAD:
            await self.app(scope, receive, send)
            return
        if not _routed(scope):
            await self.app(scope, receive, send)
            return
        held = _Held()
        try:
            try:
                body_auth: BodyAuth | None = getattr(scope["app"].state, "body_auth", None)
                limit = self.max_bytes
                claimed, found = (False, None) if body_auth is None else await _own_auth(body_auth, scope)
                if not claimed:
                    tenant: str | None = await _tenant(scope)
                else:
                    if isinstance(found, Response):
                        await found(scope, receive, send)
                        return
                    tenant = found
                    if tenant is None:
                        limit = min(limit, OPEN_BODY_BYTES)
                body = await self._read(scope, receive, held, limit)
            except _Refusal as refusal:
                await refusal.answer(scope, receive, send)
                return
            if body is None:  # the client went away
                return
            # A copy of the state: the server may hand every request the same lifespan state.
            if tenant is not None:
                scope["state"] = {**scope.get("state", {}), TENANT_STATE: tenant}
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.in_flight -= held.bytes

    async def _read(self, scope: Scope, receive: Receive, held: _Held, limit: int) -> bytes | None:
        """The whole body (None if the client disconnected), or _Refusal."""
        declared = _content_length(scope)
        if declared is not None:  # reserved whole: a body that cannot fit is refused before it is read
            self._hold(held, declared, limit)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.read_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > held.bytes:  # no Content-Length: what arrives is reserved as it does
                        self._hold(held, size - held.bytes, limit)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise _Refusal(
                408,
                "request_timeout",
                f"the request body did not arrive within {self.read_timeout:g} seconds",
            ) from None

    def _hold(self, held: _Held, size: int, limit: int) -> None:
        """Reserve `size` more bytes for this request's body, within its limit and the process's budget."""
        if held.bytes + size > limit:
            raise _Refusal(
                413,
                "request_too_large",
                f"the request body is larger than the limit of {limit} bytes",
            )
        if self.in_flight + size > self.max_in_flight:
            raise _Refusal(
                503,
                "server_busy",
                "the server is reading as many request bodies as it may at once; retry shortly",
                retry_after=RETRY_AFTER_SECONDS,
            )
        self.in_flight += size
        held.bytes += size


def _routed(scope: Scope) -> bool:
    """Whether a route takes this request; if none does, the app answers 404 or 405 without reading the body."""
    routes: Sequence[BaseRoute] = scope["app"].router.routes
    return any(route.matches(scope)[0] is Match.FULL for route in routes)


async def _own_auth(body_auth: BodyAuth, scope: Scope) -> tuple[bool, str | Response | None]:
    try:
        return await body_auth(HTTPConnection(scope))
    except _DATABASE_DOWN:
        raise _Refusal(
            503, "database_unavailable", "the database cannot be reached; try again shortly"
        ) from None


async def _tenant(scope: Scope) -> str:
    """The tenant of the request's API key, from its headers alone, or _Refusal (401, or 503 without a database)."""
    try:
        return await authenticate(scope["app"].state.manager, await offered_keys(HTTPConnection(scope)))
    except Unauthorized as exc:
        raise _Refusal(401, exc.code, exc.message) from None
    except _DATABASE_DOWN:
        raise _Refusal(
            503, "database_unavailable", "the database cannot be reached; try again shortly"
        ) from None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body read, then what the server says next (a disconnect)."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _content_length(scope: Scope) -> int | None:
    headers: Sequence[tuple[bytes, bytes]] = scope.get("headers", ())
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

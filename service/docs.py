"""The docs pages' Content-Security-Policy: nothing but this app's own assets may load in them.

Swagger UI and ReDoc are served from the packaged assets of fastapi-offline (``/static-offline-docs``), but
ReDoc's bundle still names an image on its maker's CDN (the "powered by" logo). The policy makes the browser
refuse any such load before it reaches the network, so the pages work the same with no network and tell no
third party that someone read them. Inline scripts and styles are allowed: both pages start from one.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
POLICY = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    b"frame-ancestors 'self'"
)


class DocsPolicyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in DOCS_PATHS:
            await self.app(scope, receive, send)
            return

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"content-security-policy", POLICY)]
            await send(message)

        await self.app(scope, receive, with_policy)

"""CORS: which other origins' pages may call the API from a browser (the old system had a browser dashboard).

None by default: a page of another origin gets no ``Access-Control-Allow-*`` header and its browser refuses it
the answer. ``CRAWLJOBS_CORS_ORIGINS`` names the origins that may (``https://app.example.com``, comma
separated), or ``*`` for any. Credentials (cookies, TLS client certificates) are never allowed: keys travel in
headers, which a page sends itself, so no ambient authority of a browser is ever spent on this API — which is
also what makes ``*`` safe to offer.

The middleware is the outermost of the app's own: preflights (``OPTIONS`` with ``Access-Control-Request-Method``) are
answered for every route before anything else looks at them, and every answer for an allowed origin carries
the headers, errors included, so a page can read a 401's or a 422's body.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

# What pages send: the key (either header), JSON, an idempotency key, and what supabase-js adds.
ALLOWED_HEADERS = (
    "authorization",
    "apikey",
    "content-type",
    "idempotency-key",
    "x-client-info",
    "x-region",
    "last-event-id",
)
ALLOWED_METHODS = ("GET", "POST", "DELETE", "OPTIONS")
# The answer's headers a page may read besides the CORS-safelisted ones.
EXPOSED_HEADERS = ("retry-after", "server-timing", "content-disposition", "www-authenticate", "allow")
PREFLIGHT_MAX_AGE = 600


def install_cors(app: FastAPI, origins: Sequence[str]) -> None:
    """Answer CORS for ``origins`` (``*``: any); nothing when there are none. Call it after every other
    ``add_middleware``: the last added is the outermost."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=list(ALLOWED_METHODS),
        allow_headers=list(ALLOWED_HEADERS),
        expose_headers=list(EXPOSED_HEADERS),
        allow_credentials=False,
        max_age=PREFLIGHT_MAX_AGE,
    )

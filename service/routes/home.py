"""``/about``: a small page that says what this is and where the API's docs are (no key needed, no asset from
elsewhere). ``/`` is the dashboard's (``service.dashboard``): its overview once signed in, else its sign-in
page, which shows the same links (``LINKS``)."""

from __future__ import annotations

import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from crawljobs import __version__

router = APIRouter(include_in_schema=False)

# What an API user looks for first: (address, what it is).
LINKS: tuple[tuple[str, str], ...] = (
    ("/docs", "API docs (Swagger UI)"),
    ("/redoc", "ReDoc"),
    ("/openapi.json", "the OpenAPI document"),
    ("/healthz", "/healthz"),
    ("/readyz", "/readyz"),
)

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>crawljobs</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem; }}
code {{ background: #f3f3f3; padding: 0 .2em; }}
</style>
</head>
<body>
<h1>crawljobs <small>{version}</small></h1>
<p>A self-hosted asynchronous crawl-job system. This is its HTTP API; <a href="/">the dashboard</a> is its
browser side (sign in with an API key).</p>
<ul>
{links}
</ul>
<p>Every API route needs a key: <code>Authorization: Bearer &lt;key&gt;</code>. <code>crawljobs up</code> saves the
first one in <code>.crawljobs/api-key</code>; <code>crawljobs keys create NAME</code> makes more.</p>
</body>
</html>
"""


@router.api_route("/about", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def about() -> HTMLResponse:
    links = "\n".join(f'<li><a href="{href}">{html.escape(text)}</a></li>' for href, text in LINKS)
    return HTMLResponse(PAGE.format(version=html.escape(__version__), links=links))

"""``/``: a small page that says what this is and where the docs are (no key needed, no asset from elsewhere)."""

from __future__ import annotations

import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from crawljobs import __version__

router = APIRouter(include_in_schema=False)

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
<p>A self-hosted asynchronous crawl-job system. This is its HTTP API.</p>
<ul>
<li><a href="/docs">API docs</a> (Swagger UI) and <a href="/redoc">ReDoc</a>, from
<a href="/openapi.json">the OpenAPI document</a></li>
<li><a href="/healthz">/healthz</a> and <a href="/readyz">/readyz</a></li>
</ul>
<p>Every API route needs a key: <code>Authorization: Bearer &lt;key&gt;</code>. <code>crawljobs up</code> saves the
first one in <code>.crawljobs/api-key</code>; <code>crawljobs keys create NAME</code> makes more.</p>
</body>
</html>
"""


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def home() -> HTMLResponse:
    return HTMLResponse(PAGE.format(version=html.escape(__version__)))

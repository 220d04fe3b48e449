"""Gauntlet pages of the test site for rendering until settled and for sessions (``/settle/...``).

Registered in ``tests.acceptance.site`` (``TestSite._route`` hands every ``/settle/`` path to :func:`route`).
No marker below occurs in the raw HTML: only a page whose scripts ran has it.

``/settle/late-marker?ms=N``     200; N ms (default 1500) after ``load`` a script writes ``<p id="late">`` with
                                 :data:`LATE_MARKER`.
``/settle/late-fetch?ms=N``      200; after ``load`` a script fetches ``/settle/data?ms=N`` (answered N ms
                                 later) and then writes ``<p id="fetched">`` with :data:`FETCHED_MARKER`.
``/settle/data?ms=N``            200 JSON after N ms.
``/settle/protected/<key>/<p>``  a site behind a JavaScript challenge: without the clearance cookie of ``key``
                                 a 403 Cloudflare-like challenge page ("Just a moment...", ``_cf_chl_opt``,
                                 header ``cf-mitigated: challenge``: ``crawlproject.blocks`` reads it as a
                                 challenge) whose script, ``delay`` ms (default 800) after load, computes the
                                 cookie, sets it and reloads; with the cookie, 200 with ``protected-ok:<key>:<p>``
                                 — for a browser and for plain HTTP alike. ``&reloads=R`` makes the challenge
                                 take R rounds (R - 1 intermediate cookies, each reloading again).
                                 :func:`revoke` makes every cookie of ``key`` issued so far invalid.
"""

from __future__ import annotations

import asyncio
import html
import json
import threading

__all__ = ["FETCHED_MARKER", "LATE_MARKER", "clearance", "clearance_cookie", "revoke", "route"]

LATE_MARKER = "late-marker-written"
FETCHED_MARKER = "fetched-marker-written"


def clearance_cookie(key: str) -> str:
    """The name of the clearance cookie of ``key`` (one per key: tests share the site's host)."""
    return f"cj_clearance_{key[:12]}"


# key -> generation: revoke() moves it on, so earlier cookies no longer clear.
_generations: dict[str, int] = {}
_lock = threading.Lock()


def _generation(key: str) -> int:
    with _lock:
        return _generations.get(key, 0)


def revoke(key: str) -> None:
    """Every clearance cookie of ``key`` issued so far stops working (a session the site retired)."""
    with _lock:
        _generations[key] = _generations.get(key, 0) + 1


def clearance(key: str, generation: int | None = None) -> str:
    """The value of the clearance cookie of ``key`` (what the challenge's script computes)."""
    return f"ok-{key[::-1]}-{_generation(key) if generation is None else generation}"


def _js(value: object) -> str:
    return json.dumps(value).replace("</", "<\\/")


def _page(title: str, body: str) -> bytes:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"</head>\n<body>\n{body}\n<p>A page of the settle gauntlet of the crawljobs test site, with some text "
        "so that it is not mistaken for an empty page or an app shell.</p>\n</body>\n</html>\n"
    ).encode()


def _ms(query: dict[str, str], default: int) -> int:
    try:
        return max(0, min(int(query.get("ms", default)), 60_000))
    except ValueError:
        return default


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    jar: dict[str, str] = {}
    for part in headers.get("cookie", "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            jar[name] = value
    return jar


def _late_marker(query: dict[str, str]) -> tuple[int, bytes, list[tuple[str, str]]]:
    script = (
        "<script>addEventListener('load', function () { setTimeout(function () {"
        " var p = document.createElement('p'); p.id = 'late'; p.textContent = 'late-' + 'marker-' + 'written';"
        f" document.body.appendChild(p); }}, {_ms(query, 1500)}); }});</script>"
    )
    return 200, _page("Late marker", f'<h1>Late marker</h1>\n<p id="page-id">late-page</p>\n{script}'), []


def _late_fetch(query: dict[str, str]) -> tuple[int, bytes, list[tuple[str, str]]]:
    script = (
        "<script>addEventListener('load', function () {"
        f" fetch('/settle/data?ms={_ms(query, 1500)}').then(function (r) {{ return r.json(); }}).then(function () {{"
        " var p = document.createElement('p'); p.id = 'fetched';"
        " p.textContent = 'fetched-' + 'marker-' + 'written'; document.body.appendChild(p); }); });</script>"
    )
    return 200, _page("Late fetch", f'<h1>Late fetch</h1>\n<p id="page-id">fetch-page</p>\n{script}'), []


def _challenge(key: str, rounds: int, delay: int, jar: dict[str, str]) -> bytes:
    """The challenge page: compute the next cookie (a last round's is the clearance), set it, reload."""
    generation = _generation(key)
    step = jar.get(f"cj_step_{key[:12]}", "")
    done = (
        int(step.rsplit("-", 1)[-1]) if step.startswith(f"{key}-") and step[len(key) + 1 :].isdigit() else 0
    )
    script = f"""<script>(function () {{
  window._cf_chl_opt = {{cType: 'managed', cRay: 'test'}};
  addEventListener('load', function () {{ setTimeout(function () {{
    var key = {_js(key)}, done = {done}, rounds = {rounds};
    if (done + 1 < rounds) {{
      document.cookie = 'cj_step_' + key.slice(0, 12) + '=' + key + '-' + (done + 1) + '; path=/';
    }} else {{
      document.cookie = {_js(clearance_cookie(key))} + '=ok-' + key.split('').reverse().join('') + '-' + {generation}
        + '; path=/; max-age=3600';
    }}
    location.reload();
  }}, {delay}); }});
}})();</script>"""
    return (
        b'<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>'
        b'<meta charset="utf-8"></head><body><h1>127.0.0.1</h1>'
        b'<h2 id="challenge-running">Checking if the site connection is secure</h2>'
        b"<noscript>Enable JavaScript and cookies to continue</noscript>"
        + script.encode()
        + b"</body></html>"
    )


def _protected(
    rest: str, query: dict[str, str], headers: dict[str, str]
) -> tuple[int, bytes, list[tuple[str, str]]]:
    key, _, page = rest.partition("/")
    jar = _cookies(headers)
    if jar.get(clearance_cookie(key)) == clearance(key):
        body = f'<h1>Protected page</h1>\n<p id="page-id">protected-ok:{html.escape(key)}:{html.escape(page)}</p>'
        return 200, _page("Protected page", body), []
    try:
        rounds = max(1, min(int(query.get("reloads", "1")), 10))
        delay = max(0, min(int(query.get("delay", "800")), 30_000))
    except ValueError:
        return 400, _page("Bad request", "<p>reloads and delay are numbers</p>"), []
    return (
        403,
        _challenge(key, rounds, delay, jar),
        [("Server", "cloudflare"), ("cf-mitigated", "challenge"), ("Cache-Control", "no-store")],
    )


async def route(
    path: str, query: dict[str, str], headers: dict[str, str]
) -> tuple[int, bytes, list[tuple[str, str]]] | None:
    """(status, HTML body, extra headers) for a ``/settle/...`` path, or None (the site answers 404)."""
    parts = path.strip("/").split("/", 2)
    name = parts[1] if len(parts) > 1 else ""
    rest = parts[2] if len(parts) > 2 else ""
    if name == "late-marker":
        return _late_marker(query)
    if name == "late-fetch":
        return _late_fetch(query)
    if name == "data":
        await asyncio.sleep(_ms(query, 0) / 1000)
        return 200, b'{"ok": true}', []
    if name == "protected" and "/" in rest:
        return _protected(rest, query, headers)
    return None

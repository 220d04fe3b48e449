"""The test site's pages for the dashboard's end-to-end tests (tests/acceptance/test_dashboard.py), under
``/dashboard/``, registered in ``site.py``:

``/dashboard/hostile?dashboard=D``  200, a page that tries everything a crawled page could against the
                                    dashboard that shows it (D: the dashboard's base URL): inline and external
                                    scripts, ``<meta http-equiv="refresh">`` (in ``<noscript>``: the crawler
                                    ignores it there, a browser without scripts, as in a sandbox, obeys it), a form posting to D's sign-out (and a
                                    script submitting it), image, stylesheet, frame and SVG beacons to this site,
                                    a ``<base>`` that points relative URLs here, an SVG with a script, and a title
                                    and attributes carrying markup. Each request it could cause goes to
                                    ``/dashboard/beacon/<what>`` on this site, so ``site.hits("/dashboard/beacon")``
                                    tells whether any part of it ran or loaded.
``/dashboard/beacon/<what>``        200, a 1x1 PNG (whatever was asked: an image, a script, a sheet, a frame).

Pages return (status, body, content type); ``site.py`` makes them its responses.
"""

from __future__ import annotations

import html

BEACON = "/dashboard/beacon/"
HOSTILE_MARKER = "hostile-page-unchanged"

_PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    b"\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82"
)


def hostile(host: str, dashboard: str) -> bytes:
    here = f"http://{host}"
    beacon = here + BEACON
    target = html.escape(dashboard.rstrip("/") + "/sign-out", quote=True)
    page = f"""<!doctype html>
<html>
<head>
<meta charset="utf-8">
<base href="{here}/dashboard/base/">
<noscript><meta http-equiv="refresh" content="0; url={beacon}meta-refresh"></noscript>
<title>Hostile </title><script>top.document.title='pwned-title'</script><img src="{beacon}title-img"></title>
<script>
  try {{ top.document.body.setAttribute('data-pwned', 'inline'); }} catch (e) {{}}
  try {{ parent.postMessage('pwned', '*'); }} catch (e) {{}}
  new Image().src = '{beacon}inline-script';
  document.cookie = 'pwned=1';
  fetch('{beacon}fetch');
</script>
<script src="{beacon}external.js"></script>
<link rel="stylesheet" href="{beacon}style.css">
<style>body {{ background: url('{beacon}css-background'); }}</style>
</head>
<body onload="new Image().src='{beacon}onload'">
<h1>A hostile page</h1>
<p id="hostile-marker">{HOSTILE_MARKER}</p>
<img src="{beacon}img" alt="beacon">
<img src="relative-through-base.png" alt="relative">
<img src="x" onerror="new Image().src='{beacon}onerror'" alt="onerror">
<iframe src="{beacon}frame" title="frame"></iframe>
<form id="steal" action="{target}" method="post" target="_top">
  <input name="csrf_token" value="stolen">
  <button type="submit" id="go">Sign out</button>
</form>
<script>document.getElementById('steal').submit();</script>
<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">
  <script>new Image().src = '{beacon}svg-script'; top.location = '{beacon}svg-top';</script>
  <image href="{beacon}svg-image" width="10" height="10"/>
</svg>
<div title='"><script>top.document.title="pwned-attr"</script>' data-x="<img src={beacon}attr-img>">attributes carrying markup</div>
<a href="{beacon}link" id="link">a link (only followed if clicked)</a>
<object data="{beacon}object"></object>
<video poster="{beacon}poster"></video>
</body>
</html>
"""
    return page.encode()


def route(rest: str, query: dict[str, str], host: str) -> tuple[int, bytes, str] | None:
    """The response to ``/dashboard/<rest>``, or None (a 404)."""
    if rest == "hostile":
        return 200, hostile(host, query.get("dashboard", "http://127.0.0.1")), "text/html; charset=utf-8"
    if rest.startswith("beacon/"):
        return 200, _PNG, "image/png"
    return None

"""The browser's gauntlet on the test site (issue 11): pages that tell a headless, automated or incoherent
browser from a real Chrome, each reporting its verdict back to the site.

Served under ``/gauntlet/`` by :mod:`tests.acceptance.site` (registered there in two lines):

``/gauntlet/headless?key=K``   refuses ``HeadlessChrome`` (in the User-Agent header, ``navigator.userAgent``,
                               ``navigator.appVersion`` or a brand of ``navigator.userAgentData``) and
                               ``navigator.webdriver``: the page reads ``headless-passed`` or
                               ``headless-refused:<signals>``.
``/gauntlet/coherence?key=K``  checks that the request's headers agree with each other (User-Agent version and
                               platform vs ``sec-ch-ua``/``sec-ch-ua-platform``, the navigation's
                               ``Sec-Fetch-*``, no ``Pragma``) and with what the page's scripts see
                               (``navigator.userAgent``, ``languages`` vs ``Accept-Language``, ``userAgentData``
                               and its high-entropy values, platform, timezone, a screen and a window larger
                               than the viewport, a WebGL renderer that is not SwiftShader):
                               ``coherence-passed`` or ``coherence-failed:<checks>``.
``/gauntlet/botd?key=K``       runs the open-source bot detector ``@fingerprintjs/botd`` (2.0.0, installed by npm
                               in ``tests/acceptance/node``; the site serves its ES module at
                               ``/gauntlet/botd.esm.js``, 404 when it is not installed) with monitoring off:
                               ``botd-human`` or ``botd-bot:<kind>``.

Each page posts its verdict and the signals it read as JSON to ``/gauntlet/report?page=<page>&key=K`` (a hit
the test reads: :func:`reports`), and holds its ``load`` event with an image (``/gauntlet/hold``) that the
site answers only once that report came (or after :data:`HOLD_SECONDS`), so that a browser that takes a page
at ``load`` has run the verdict first.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.acceptance.site import Hit, Response, TestSite

HOLD_SECONDS = 15.0
BOTD_MODULE = Path(__file__).resolve().parent / "node/node_modules/@fingerprintjs/botd/dist/botd.esm.js"


def reports(site: TestSite, page: str, key: str) -> list[dict[str, Any]]:
    """The reports the gauntlet page ``page`` posted for ``key``, parsed."""
    return [json.loads(hit.body) for hit in site.hits(f"/gauntlet/report?page={page}&key={key}")]


class _Holds:
    """Per site: the report events that hold pages' ``load``."""

    def __init__(self) -> None:
        self.events: dict[tuple[str, str], asyncio.Event] = {}

    def event(self, page: str, key: str) -> asyncio.Event:
        return self.events.setdefault((page, key), asyncio.Event())


def _holds(site: TestSite) -> _Holds:
    holds: _Holds | None = getattr(site, "_gauntlet_holds", None)
    if holds is None:
        holds = _Holds()
        site._gauntlet_holds = holds  # type: ignore[attr-defined]
    return holds


def _script_literal(value: object) -> str:
    return json.dumps(value).replace("</", "<\\/")


# Posts `verdict` and `signals`, writes the verdict into #verdict; the hold image keeps `load` until then.
_REPORT = """
function crawljobsReport(page, key, verdict, signals) {
  document.getElementById('verdict').textContent = verdict;
  return fetch('/gauntlet/report?page=' + page + '&key=' + encodeURIComponent(key), {
    method: 'POST', body: JSON.stringify({verdict: verdict, signals: signals}),
    headers: {'Content-Type': 'application/json'},
  });
}
"""


def _gauntlet_page(page: str, key: str, title: str, script: str, *, module: bool = False) -> bytes:
    from tests.acceptance.site import _page

    kind = ' type="module"' if module else ""
    body = (
        f'<h1>{html.escape(title)}</h1>\n<p id="verdict">{page}-pending</p>\n'
        f"<script>{_REPORT}</script>\n<script{kind}>\n{script}\n</script>\n"
        f'<img alt="" src="/gauntlet/hold?page={page}&amp;key={html.escape(key)}">'
    )
    return _page(title, body, filler=0)


def _headless(hit: Hit, key: str) -> bytes:
    header_agent = hit.user_agent or ""
    script = f"""
(function () {{
  var key = {_script_literal(key)};
  var refused = [];
  if ({_script_literal(bool(re.search("headless", header_agent, re.I)))}) refused.push('user-agent-header');
  if (navigator.webdriver) refused.push('navigator.webdriver');
  if (/headless/i.test(navigator.userAgent)) refused.push('navigator.userAgent');
  if (/headless/i.test(navigator.appVersion)) refused.push('navigator.appVersion');
  var brands = navigator.userAgentData ? navigator.userAgentData.brands.map(function (b) {{ return b.brand; }}) : null;
  if (brands && brands.some(function (b) {{ return /headless/i.test(b); }})) refused.push('userAgentData.brands');
  var verdict = refused.length ? 'headless-refused:' + refused.join(',') : 'headless-passed';
  crawljobsReport('headless', key, verdict, {{webdriver: navigator.webdriver, userAgent: navigator.userAgent,
    appVersion: navigator.appVersion, brands: brands, header: {_script_literal(header_agent)}}});
}})();
"""
    return _gauntlet_page("headless", key, "Headless check", script)


_BRAND = re.compile(r'"([^"]*)"\s*;\s*v="([^"]*)"')
_PLATFORMS = {"Linux": "X11; Linux", "Windows": "Windows NT", "macOS": "Macintosh"}


def _header_checks(headers: dict[str, str]) -> tuple[list[str], dict[str, Any]]:
    """What the site can tell from the navigation's headers alone: the failed checks, and what it parsed."""
    failed: list[str] = []
    agent = headers.get("user-agent", "")
    match = re.search(r"Chrome/(\d+)\.(\d+)\.(\d+)\.(\d+)", agent)
    major = match.group(1) if match else None
    if match is None or "headless" in agent.lower():
        failed.append("user-agent-is-chrome")
    if match is not None and match.group(2, 3, 4) != ("0", "0", "0"):
        failed.append("user-agent-reduced")  # Chrome sends MAJOR.0.0.0 since version 101
    brands = dict(_BRAND.findall(headers.get("sec-ch-ua", "")))
    named = {name: version for name, version in brands.items() if name in ("Google Chrome", "Chromium")}
    if "Chromium" not in named or any(version != major for version in named.values()):
        failed.append("sec-ch-ua-matches-user-agent")
    if not any(name.startswith("Not") for name in brands):
        failed.append("sec-ch-ua-grease")
    if headers.get("sec-ch-ua-mobile") != "?0":
        failed.append("sec-ch-ua-mobile")
    platform = headers.get("sec-ch-ua-platform", "").strip('"')
    if platform not in _PLATFORMS or _PLATFORMS[platform] not in agent:
        failed.append("sec-ch-ua-platform-matches-user-agent")
    language = headers.get("accept-language", "")
    if not re.match(r"^[a-z]{2,3}(-[A-Z]{2})?(,|$)", language):
        failed.append("accept-language")
    navigation = {
        "sec-fetch-mode": "navigate",
        "sec-fetch-dest": "document",
        "upgrade-insecure-requests": "1",
    }
    if any(headers.get(name) != value for name, value in navigation.items()):
        failed.append("navigation-headers")
    if "pragma" in headers or "cache-control" in headers:
        failed.append("no-cache-busting")
    return failed, {"brands": brands, "platform": platform, "major": major, "language": language}


def _coherence(hit: Hit, key: str) -> bytes:
    failed, parsed = _header_checks(hit.headers)
    script = f"""
(async function () {{
  var key = {_script_literal(key)};
  var failed = {_script_literal(failed)};
  var header = {_script_literal(hit.headers.get("user-agent", ""))};
  var parsed = {_script_literal(parsed)};
  var signals = {{}};
  function check(name, ok) {{ if (!ok) failed.push(name); }}
  try {{
    check('navigator.userAgent-is-header', navigator.userAgent === header);
    check('navigator.appVersion', navigator.appVersion === header.replace(/^Mozilla\\//, ''));
    var languages = parsed.language.split(',').map(function (l) {{ return l.split(';')[0].trim(); }});
    signals.languages = navigator.languages;
    check('navigator.languages-is-accept-language', navigator.languages.join(',') === languages.join(','));
    var uad = navigator.userAgentData;
    check('userAgentData', !!uad);
    if (uad) {{
      var brands = {{}};
      uad.brands.forEach(function (b) {{ brands[b.brand] = b.version; }});
      signals.brands = brands;
      check('userAgentData.brands-is-sec-ch-ua', JSON.stringify(Object.keys(brands).sort()) ===
        JSON.stringify(Object.keys(parsed.brands).sort()) && Object.keys(brands).every(function (b) {{
          return brands[b] === parsed.brands[b]; }}));
      check('userAgentData.platform-is-sec-ch-ua-platform', uad.platform === parsed.platform);
      var high = await uad.getHighEntropyValues(['architecture', 'bitness', 'platformVersion', 'fullVersionList']);
      signals.high = high;
      var full = (high.fullVersionList || []).filter(function (b) {{ return b.brand in parsed.brands; }});
      check('fullVersionList-matches', full.length === Object.keys(parsed.brands).length && full.every(function (b) {{
        return b.version.split('.')[0] === parsed.brands[b.brand]; }}));
      if (parsed.platform === 'Linux') {{
        check('architecture-is-x86-64', high.architecture === 'x86' && high.bitness === '64');
      }}
    }}
    signals.platform = navigator.platform;
    if (parsed.platform === 'Linux') check('navigator.platform-is-linux', /^Linux x86_64$/.test(navigator.platform));
    signals.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    check('timezone-set', !!signals.timezone && signals.timezone !== 'UTC' && signals.timezone !== 'Etc/UTC');
    signals.language = navigator.language;
    check('intl-locale-is-language', Intl.DateTimeFormat().resolvedOptions().locale === navigator.language);
    signals.screen = [screen.width, screen.height, innerWidth, innerHeight, outerWidth, outerHeight];
    check('screen-larger-than-viewport', screen.width >= innerWidth && screen.height > innerHeight);
    check('window-larger-than-viewport', outerWidth >= innerWidth && outerHeight > innerHeight);
    check('window-within-screen', outerWidth <= screen.width && outerHeight <= screen.height);
    var gl = document.createElement('canvas').getContext('webgl');
    var info = gl && gl.getExtension('WEBGL_debug_renderer_info');
    signals.webgl = info ? [gl.getParameter(info.UNMASKED_VENDOR_WEBGL), gl.getParameter(info.UNMASKED_RENDERER_WEBGL)] : null;
    check('webgl-not-swiftshader', !!signals.webgl && !/swiftshader/i.test(signals.webgl.join(' ')));
  }} catch (error) {{ failed.push('error:' + error); }}
  var verdict = failed.length ? 'coherence-failed:' + failed.join(',') : 'coherence-passed';
  crawljobsReport('coherence', key, verdict, signals);
}})();
"""
    return _gauntlet_page("coherence", key, "Coherence check", script)


def _botd(key: str) -> bytes:
    script = f"""
import {{ load }} from '/gauntlet/botd.esm.js';
const key = {_script_literal(key)};
try {{
  const detector = await load({{ monitoring: false }});
  const result = detector.detect();
  const verdict = result.bot ? 'botd-bot:' + result.botKind : 'botd-human';
  await crawljobsReport('botd', key, verdict, {{ result: result, detections: detector.getDetections() }});
}} catch (error) {{
  await crawljobsReport('botd', key, 'botd-error:' + error, {{}});
}}
"""
    return _gauntlet_page("botd", key, "BotD check", script, module=True)


async def route(site: TestSite, hit: Hit, rest: str) -> Response:
    """The answer to ``/gauntlet/<rest>``."""
    from tests.acceptance.site import PNG_BYTES, Response, _error_page

    key = hit.query.get("key", "")
    page = hit.query.get("page", "")
    if rest == "headless":
        return Response(200, _headless(hit, key))
    if rest == "coherence":
        return Response(200, _coherence(hit, key))
    if rest == "botd":
        return Response(200, _botd(key))
    if rest == "botd.esm.js":
        if not BOTD_MODULE.is_file():
            return _error_page(404, "@fingerprintjs/botd is not installed: npm ci in tests/acceptance/node")
        return Response(200, BOTD_MODULE.read_bytes(), content_type="text/javascript; charset=utf-8")
    if rest == "report" and hit.method == "POST":
        _holds(site).event(page, key).set()
        return Response(204, b"", content_type=None)
    if rest == "hold":
        event = _holds(site).event(page, key)
        with contextlib.suppress(TimeoutError):  # the page's verdict never came: let it load anyway
            await asyncio.wait_for(event.wait(), HOLD_SECONDS)
        return Response(200, PNG_BYTES, content_type="image/png")
    return _error_page(404, "There is no such gauntlet page.")

"""The API's own pages: ``/`` and the docs, whose assets the app serves itself (no CDN: they must work offline).

The docs test renders ``/docs`` and ``/redoc`` in Chromium with every request that is not to the API aborted (the
network cut off, as on a machine with no internet), checks the operations are listed and that the pages asked
for nothing elsewhere.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from crawljobs.config import Settings
from tests.integration.test_waiting import LiveApi, live_api

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def api(database_url: str, redis_url: str) -> Iterator[LiveApi]:
    with live_api(Settings(database_url=database_url, redis_url=redis_url)) as running:
        yield running


def test_the_root_page_points_at_the_docs(api: LiveApi) -> None:
    # `/` is the dashboard: a browser not signed in lands on its sign-in page, which links the API's docs, as
    # /about does.
    for path in ("/", "/about"):
        response = httpx.get(f"{api.base}{path}", follow_redirects=True)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert 'href="/docs"' in response.text and 'href="/redoc"' in response.text, path
    assert httpx.get(f"{api.base}/", follow_redirects=True).url.path == "/sign-in"
    assert httpx.head(f"{api.base}/about").status_code == 200


def test_the_docs_pages_name_no_asset_from_elsewhere(api: LiveApi) -> None:
    for page in ("/docs", "/redoc"):
        response = httpx.get(f"{api.base}{page}")
        text = response.text
        assert "cdn." not in text and "googleapis" not in text, page
        # The browser may load nothing from elsewhere in them (ReDoc's bundle names a logo on a CDN).
        assert "default-src 'self'" in response.headers["content-security-policy"]
        for asset in (
            ("swagger-ui-bundle.js", "swagger-ui.css") if page == "/docs" else ("redoc.standalone.js",)
        ):
            assert f"/static-offline-docs/{asset}" in text
            served = httpx.get(f"{api.base}/static-offline-docs/{asset}")
            assert served.status_code == 200 and len(served.content) > 10_000, asset


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (CI installs Debian's)")
def test_the_docs_render_with_the_network_cut_off(api: LiveApi) -> None:
    from playwright.sync_api import Route, sync_playwright

    own = urlsplit(api.base).netloc
    elsewhere: list[str] = []

    def only_the_api(route: Route) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:  # no network but the API: what the page wanted from elsewhere is recorded and refused
            elsewhere.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("**/*", only_the_api)
            page.goto(f"{api.base}/docs")
            page.wait_for_selector(".opblock", timeout=20_000)
            operations = page.locator(".opblock").count()
            page.goto(f"{api.base}/redoc")
            page.wait_for_selector("[data-section-id^='tag/']", timeout=20_000)
        finally:
            browser.close()
    assert operations >= 20, operations  # every route of the API is listed
    assert elsewhere == []

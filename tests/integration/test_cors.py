"""CORS: pages of the allowed origins may call the API from a browser, others may not (service/cors.py).

The browser test is Chromium itself: a page served from one loopback origin calls the API (another origin: a
different port) with `fetch`, its key in a header (so the browser sends a preflight first), and reads the
answers; a page of an origin the configuration does not name is refused by the browser.
"""

from __future__ import annotations

import secrets
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crawljobs.config import Settings
from crawljobs.keys import create_key
from service.app import create_app
from tests.integration.test_waiting import live_api

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SUPABASE_HEADERS = "authorization, apikey, x-client-info, content-type, x-region"


class Page:
    """A page server on its own loopback port: its own origin."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"<!doctype html><title>caller</title><p>a page of another origin</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pages() -> Iterator[tuple[Page, Page]]:
    allowed, other = Page(), Page()
    yield allowed, other
    allowed.close()
    other.close()


def test_no_origin_is_allowed_by_default(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        preflight = client.options(
            "/v1/batches",
            headers={"Origin": "http://127.0.0.1:1", "Access-Control-Request-Method": "GET"},
        )
        answer = client.get("/healthz", headers={"Origin": "http://127.0.0.1:1"})
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in answer.headers


def test_preflights_and_answers_for_an_allowed_origin(settings: Settings, database_url: str) -> None:
    origin = "http://127.0.0.1:3000"
    allowed = Settings(**{**settings.model_dump(), "cors_origins": [origin]})
    key = create_key(database_url, name=f"cors-{secrets.token_hex(3)}")
    with TestClient(create_app(allowed)) as client:
        for path in ("/functions/v1/get-crawl-job", "/functions/v1/submit-crawl-job", "/v1/batches"):
            preflight = client.options(
                path,
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": SUPABASE_HEADERS,
                },
            )
            assert preflight.status_code == 200, (path, preflight.text)
            assert preflight.headers["access-control-allow-origin"] == origin
            allowed_headers = preflight.headers["access-control-allow-headers"].lower()
            assert all(h.strip() in allowed_headers for h in SUPABASE_HEADERS.split(","))
            assert "access-control-allow-credentials" not in preflight.headers
        listed = client.get("/v1/batches", headers={"Origin": origin, "Authorization": f"Bearer {key}"})
        refused = client.get("/v1/batches", headers={"Origin": origin})  # an error a page can read too
        stranger = client.options(
            "/v1/batches",
            headers={"Origin": "http://127.0.0.1:4000", "Access-Control-Request-Method": "GET"},
        )
    assert listed.status_code == 200 and listed.headers["access-control-allow-origin"] == origin
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == origin
    assert "www-authenticate" in refused.headers["access-control-expose-headers"].lower()
    assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers


def test_an_origin_must_be_an_origin() -> None:
    for bad in ("http://127.0.0.1:3000/path", "127.0.0.1:3000", "ftp://example.com", " http://a.example"):
        with pytest.raises(ValueError):
            Settings(cors_origins=[bad])
    assert Settings(cors_origins="https://app.example.com, *").cors_origins == [
        "https://app.example.com",
        "*",
    ]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (CI installs Debian's)")
def test_a_browser_page_of_an_allowed_origin_calls_the_api_and_another_is_refused(
    settings: Settings, database_url: str, pages: tuple[Page, Page]
) -> None:
    from playwright.sync_api import sync_playwright

    allowed, other = pages
    key = create_key(database_url, name=f"cors-browser-{secrets.token_hex(3)}")
    cors = Settings(**{**settings.model_dump(), "cors_origins": [allowed.origin]})
    script = """async ([api, key]) => {
        const headers = {"Authorization": "Bearer " + key, "apikey": key, "x-client-info": "supabase-js/2",
                         "Content-Type": "application/json"};
        try {
            const listed = await fetch(api + "/v1/batches", {headers});
            const submitted = await fetch(api + "/functions/v1/submit-crawl-job", {
                method: "POST", headers, body: JSON.stringify({url: "https://example.com/from-a-page"})});
            const missing = await fetch(api + "/functions/v1/get-crawl-job", {
                method: "POST", headers, body: JSON.stringify({jobId: "00000000-0000-0000-0000-000000000000"})});
            return {listed: listed.status, submitted: (await submitted.json()).success,
                    missing: missing.status, missingBody: await missing.json()};
        } catch (error) {
            return {refused: String(error)};
        }
    }"""
    with live_api(cors) as api, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(allowed.origin + "/")
            from_allowed = page.evaluate(script, [api.base, key])
            page.goto(other.origin + "/")
            from_other = page.evaluate(script, [api.base, key])
        finally:
            browser.close()
    assert from_allowed == {
        "listed": 200,
        "submitted": True,
        "missing": 404,
        "missingBody": from_allowed["missingBody"],
    }, from_allowed
    assert from_allowed["missingBody"]["success"] is False
    assert "refused" in from_other and "Failed to fetch" in from_other["refused"], from_other

"""The impersonate engine through a real worker process: Chrome's navigation headers and TLS handshake (both
compared with what the machine's own Chromium sends), every proxy tier, redirects to a refused address,
cancellation.

The worker's ladder is the impersonate engine alone, on every tier; the hostile pages (endless heads, bombs,
redirect loops, oversized bodies, names resolving to refused addresses) are ``test_http_hostile.py``'s, run
for both engines.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.acceptance.conftest import system_settings_for
from tests.acceptance.proxies import TestProxy
from tests.acceptance.site import BackgroundLoop, Hit, TestSite, start_site
from tests.acceptance.system import System, running_system
from tests.acceptance.tls_site import TlsSite, fingerprint_of, is_chrome, ja4_ab, start_tls_site
from tests.conftest import drop_prefix

pytestmark = pytest.mark.acceptance

LADDER = "impersonate:direct,impersonate:premium,impersonate:ultra_premium"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Per connection, not per navigation (HTTP/1.1 only), or added by the proxy in front of the site.
NOT_COMPARED = {"host", "connection", "x-test-proxy"}


@pytest.fixture(scope="module")
def system(
    database_url: str,
    redis_url: str,
    premium_proxy: TestProxy,
    ultra_proxy: TestProxy,
    site: TestSite,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[System]:
    settings = system_settings_for(
        database_url, redis_url, premium_proxy, ultra_proxy, download_timeout=120.0
    )
    with running_system(settings, tmp_path_factory.mktemp("logs")) as running:
        running.start_worker(CRAWLJOBS_LADDER=LADDER)
        running.start_sweeper()
        yield running
    drop_prefix(redis_url, settings.queue_prefix)


@pytest.fixture(scope="module")
def forbidden_site() -> Iterator[TestSite]:
    with start_site("127.0.0.2") as running:
        yield running


def chromium_navigation(site: TestSite, path: str) -> Hit:
    """What the machine's Chromium sends when it navigates to ``path`` of the site (headless, outside the
    worker)."""
    assert CHROMIUM is not None
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", site.url(path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    (hit,) = site.wait_for_hits(path, 1, timeout=10)
    return hit


def chromium_major() -> int:
    assert CHROMIUM is not None
    out = subprocess.run(
        [CHROMIUM, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    match = re.search(r"(\d+)\.\d+\.\d+\.\d+", out)
    assert match, out
    return int(match.group(1))


@pytest.mark.skipif(CHROMIUM is None, reason="needs the machine's Chromium to compare with")
def test_the_navigation_headers_are_those_of_the_machines_chromium(system: System, site: TestSite) -> None:
    key = uuid.uuid4().hex
    (job,) = system.wait_final([system.submit(site.url(f"/ok/imp-{key}"))])
    assert job["status"] == "completed", job["error_message"]
    assert [(a["method"], a["outcome"]) for a in job["attempts"]] == [("impersonate:direct", "ok")]
    ours = site.hits(f"/ok/imp-{key}")[-1].headers
    chrome = chromium_navigation(site, f"/ok/chromium-{key}").headers
    print(ours)
    assert [n for n in ours if n not in NOT_COMPARED] == [n for n in chrome if n not in NOT_COMPARED]
    major = chromium_major()
    assert f"Chrome/{major}.0.0.0" in ours["user-agent"]
    assert ours["user-agent"] == chrome["user-agent"].replace("HeadlessChrome/", "Chrome/")
    for name in ("sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform", "accept", "accept-encoding"):
        assert ours[name] == chrome[name], name
    assert f'v="{major}"' in ours["sec-ch-ua"]
    assert "Scrapy" not in str(ours)


def test_every_proxy_tier_carries_the_same_headers(system: System, site: TestSite) -> None:
    key = uuid.uuid4().hex
    direct = system.submit(site.url(f"/ok/direct-{key}"))
    premium = system.submit(site.url(f"/needs-premium-proxy?key={key}"), premium=True)
    ultra = system.submit(site.url(f"/needs-ultra-proxy?key={key}"), ultra_premium=True)
    jobs = {j["id"]: j for j in system.wait_final([direct, premium, ultra])}
    assert jobs[premium]["success_method"] == "impersonate:premium", jobs[premium]["error_message"]
    assert jobs[ultra]["success_method"] == "impersonate:ultra_premium", jobs[ultra]["error_message"]
    assert "proxy-ok:premium" in jobs[premium]["html"]
    heads = [
        site.hits(f"/ok/direct-{key}")[-1],
        site.hits(f"/needs-premium-proxy?key={key}")[-1],
        site.hits(f"/needs-ultra-proxy?key={key}")[-1],
    ]
    assert [h.proxy for h in heads] == [None, "premium", "ultra"]
    names = [[n for n in h.headers if n not in NOT_COMPARED] for h in heads]
    assert names[0] == names[1] == names[2]
    assert "proxy-authorization" not in names[1]
    assert heads[0].headers["user-agent"] == heads[1].headers["user-agent"] == heads[2].headers["user-agent"]


def test_a_redirect_to_a_forbidden_address_is_refused(
    system: System, site: TestSite, forbidden_site: TestSite
) -> None:
    target = forbidden_site.url("/ok/impersonate-secret")
    (job,) = system.wait_final([system.submit(site.url(f"/redirect-to?url={target}"))])
    assert job["status"] == "error"
    assert "network rules" in job["error_message"]
    assert forbidden_site.hits() == []


def test_a_redirect_chain_is_followed_hop_by_hop(system: System, site: TestSite) -> None:
    key = uuid.uuid4().hex
    (job,) = system.wait_final([system.submit(site.url(f"/redirect/3?key={key}"))])
    assert job["status"] == "completed", job["error_message"]
    assert job["final_url"] == site.url("/ok/final")
    # Every hop a request of the worker's own (Scrapy's redirect middleware), none followed inside curl.
    assert [len(site.hits(f"/redirect/{n}")) >= 1 for n in (3, 2, 1)] == [True] * 3


class Trickle:
    """A raw server on 127.0.0.1 answering a head and then a byte a second for ever; it notes when its client
    goes away."""

    def __init__(self) -> None:
        self.closed_at: float | None = None
        self.sent = 0
        self._background = BackgroundLoop("trickle")
        self._server = self._background.call(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        untrack = self._background.track()
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n")
            while True:
                writer.write(b"1\r\nx\r\n")
                await writer.drain()
                self.sent += 1
                if reader.at_eof():
                    break
                await asyncio.sleep(0.5)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if self.closed_at is None:
                self.closed_at = time.monotonic()
            untrack()
            writer.close()

    def close(self) -> None:
        self._background.stop(self._server)


def test_cancelling_a_job_stops_its_transfer(system: System) -> None:
    trickle = Trickle()
    try:
        job_id = system.submit(f"http://127.0.0.1:{trickle.port}/forever")
        system.wait_for(lambda: trickle.sent > 2, "the transfer to start")

        async def cancel(manager: object) -> str:
            return str((await manager.cancel_job(tenant="acceptance", job_id=job_id)).status)  # type: ignore[attr-defined]

        assert system.with_manager(cancel) == "cancelled"
        cancelled = time.monotonic()
        # The heartbeat (a third of the 4 s lease) finds the job gone; the download timeout is 120 s away.
        system.wait_for(lambda: trickle.closed_at is not None, "the transfer to stop", timeout=30)
        assert trickle.closed_at is not None and trickle.closed_at - cancelled < 30
        job = system.job(job_id)
        assert job["status"] == "cancelled"
        assert job["attempts"] == []  # nothing recorded for a job that is not the worker's any more
    finally:
        trickle.close()


# -- the TLS page (tests/acceptance/tls_site.py) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_site() -> Iterator[TlsSite]:
    with start_tls_site() as running:
        yield running


def chromium_ja4(tls_site: TlsSite) -> str:
    """The JA4 the machine's own Chromium sends to the TLS page (headless, outside the worker)."""
    assert CHROMIUM is not None
    before = len(tls_site.hits("/tls"))
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--ignore-certificate-errors",
            "--dump-dom",
            tls_site.url("/tls"),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    hits = tls_site.hits("/tls")
    assert len(hits) > before, "Chromium did not reach the TLS page"
    return hits[-1].ja4


@pytest.mark.skipif(CHROMIUM is None, reason="needs the machine's Chromium to compare with")
def test_the_tls_page_sees_chromiums_handshake_on_every_tier(system: System, tls_site: TlsSite) -> None:
    direct = system.submit(tls_site.url("/tls"))
    premium = system.submit(tls_site.url("/tls"), premium=True)
    ultra = system.submit(tls_site.url("/tls"), ultra_premium=True)
    jobs = system.wait_final([direct, premium, ultra])
    chromium = chromium_ja4(tls_site)
    print("Chromium:", chromium)
    tiers = ("impersonate:direct", "impersonate:premium", "impersonate:ultra_premium")
    for job, method in zip(jobs, tiers, strict=True):
        assert job["status"] == "completed", job["error_message"]
        assert job["success_method"] == method
        seen = fingerprint_of(job["html"])
        print(method, seen["ja4"], seen["alpn"])
        assert seen["ja4_ab"] == ja4_ab(
            chromium
        )  # the first two parts: TLS 1.3, no SNI, 15 ciphers, 16 ext, h2
        assert is_chrome(seen["ja4"])
        assert seen["alpn"][0] == "h2"

"""The TLS page against the http engine, and the ladder climbing from it to the impersonate engine.

One worker whose ladder is ``http:direct,impersonate:direct``: ``/tls`` is fetched by the http engine and
sees Python's handshake; ``/tls-gate`` refuses it (403, a block) and lets the impersonate engine through.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.acceptance.conftest import system_settings_for
from tests.acceptance.proxies import TestProxy
from tests.acceptance.site import TestSite
from tests.acceptance.system import System, running_system
from tests.acceptance.tls_site import TlsSite, fingerprint_of, is_chrome, ja4_ab, start_tls_site
from tests.conftest import drop_prefix

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def tls_site() -> Iterator[TlsSite]:
    with start_tls_site() as running:
        yield running


@pytest.fixture(scope="module")
def system(
    database_url: str,
    redis_url: str,
    premium_proxy: TestProxy,
    ultra_proxy: TestProxy,
    site: TestSite,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[System]:
    settings = system_settings_for(database_url, redis_url, premium_proxy, ultra_proxy)
    with running_system(settings, tmp_path_factory.mktemp("logs")) as running:
        running.start_worker(CRAWLJOBS_LADDER="http:direct,impersonate:direct")
        running.start_sweeper()
        yield running
    drop_prefix(redis_url, settings.queue_prefix)


def test_the_http_engine_shows_pythons_handshake(system: System, tls_site: TlsSite) -> None:
    (job,) = system.wait_final([system.submit(tls_site.url("/tls"))])
    assert job["status"] == "completed", job["error_message"]
    assert job["success_method"] == "http:direct"
    seen = fingerprint_of(job["html"])
    print(seen["ja4"], seen["alpn"])
    assert not is_chrome(seen["ja4"])
    assert "h2" not in seen["alpn"]  # Scrapy's HTTP/1.1 handler offers no HTTP/2
    assert seen["ja4"].startswith(("t13i", "t12i"))  # an address, so no SNI


def test_the_tls_gate_blocks_http_and_the_ladder_climbs_to_impersonate(
    system: System, tls_site: TlsSite
) -> None:
    tls_site.reset()
    (job,) = system.wait_final([system.submit(tls_site.url("/tls-gate"))])
    assert job["status"] == "completed", job["error_message"]
    assert [(a["method"], a["outcome"], a["http_status"]) for a in job["attempts"]] == [
        ("http:direct", "blocked", 403),
        ("impersonate:direct", "ok", 200),
    ]
    assert "tls-gate-ok" in job["html"]
    refused, passed = tls_site.hits("/tls-gate")
    print(refused.ja4, "->", passed.ja4)
    assert (refused.status, passed.status) == (403, 200)
    assert not is_chrome(refused.ja4) and is_chrome(passed.ja4)
    assert ja4_ab(refused.ja4) != ja4_ab(passed.ja4)

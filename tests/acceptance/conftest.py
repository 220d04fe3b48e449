"""Fixtures of the acceptance tests: the local test site and the two test proxies, all on 127.0.0.1.

``site`` is shared by the whole session (so session-scoped fixtures such as worker processes can use its URLs);
``clean_site`` is the same site with its hits and counters reset before the test. ``premium_proxy`` and
``ultra_proxy`` are named "premium" and "ultra", the names the site grades as those tiers.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crawljobs.config import Settings
from tests.acceptance.proxies import TestProxy, start_proxy
from tests.acceptance.site import TestSite, start_site
from tests.acceptance.system import System, running_system
from tests.conftest import drop_prefix


@pytest.fixture(scope="session")
def site() -> Iterator[TestSite]:
    with start_site() as running:
        yield running


@pytest.fixture
def clean_site(site: TestSite) -> TestSite:
    site.reset()
    return site


@pytest.fixture(scope="session")
def premium_proxy() -> Iterator[TestProxy]:
    with start_proxy("premium", username="premium-user", password=secrets.token_hex(8)) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def ultra_proxy() -> Iterator[TestProxy]:
    with start_proxy("ultra", username="ultra-user", password=secrets.token_hex(8)) as proxy:
        yield proxy


def system_settings_for(
    database_url: str, redis_url: str, premium: TestProxy, ultra: TestProxy, **overrides: Any
) -> Settings:
    """Settings of a system under test: loopback allowed (127.0.0.1 only), both proxy tiers, short leases."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "queue_prefix": f"cjacc:{secrets.token_hex(4)}",
        "allowed_networks": ["127.0.0.1/32"],
        "premium_proxies": [premium.url],
        "ultra_premium_proxies": [ultra.url],
        "lease_seconds": 4,
        "sweep_interval_seconds": 0.5,
        "dispatch_stale_seconds": 5,
        "max_body_bytes": 1024 * 1024,
        "download_timeout": 20.0,
        "explore_rate": 0.0,
        "domain_memory": False,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def system(
    database_url: str,
    redis_url: str,
    premium_proxy: TestProxy,
    ultra_proxy: TestProxy,
    site: TestSite,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[System]:
    """One worker and one sweeper for a test module (domain memory off: every test page is on 127.0.0.1)."""
    settings = system_settings_for(database_url, redis_url, premium_proxy, ultra_proxy)
    with running_system(settings, tmp_path_factory.mktemp("logs")) as running:
        running.start_worker()
        running.start_sweeper()
        yield running
    drop_prefix(redis_url, settings.queue_prefix)


@pytest.fixture
def fresh(
    database_url: str,
    redis_url: str,
    premium_proxy: TestProxy,
    ultra_proxy: TestProxy,
    site: TestSite,
    tmp_path: Path,
) -> Iterator[System]:
    """A system with no process started yet, on its own queue prefix (each test starts its worker)."""
    settings = system_settings_for(database_url, redis_url, premium_proxy, ultra_proxy)
    with running_system(settings, tmp_path) as running:
        yield running
    drop_prefix(redis_url, settings.queue_prefix)

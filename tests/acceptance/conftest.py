"""Fixtures of the acceptance tests: the local test site and the two test proxies, all on 127.0.0.1.

``site`` is shared by the whole session (so session-scoped fixtures such as worker processes can use its URLs);
``clean_site`` is the same site with its hits and counters reset before the test. ``premium_proxy`` and
``ultra_proxy`` are named "premium" and "ultra", the names the site grades as those tiers.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.acceptance.proxies import TestProxy, start_proxy
from tests.acceptance.site import TestSite, start_site


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

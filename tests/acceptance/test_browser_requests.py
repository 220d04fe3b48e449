"""The browser's requests are a real Chrome's: nothing added by our interception (issue 11, item 2).

Playwright disables Chromium's cache whenever it intercepts requests (a route, or proxy credentials it answers
itself), and a Chromium without its cache sends ``Pragma: no-cache`` and ``Cache-Control: no-cache`` on every
request, navigations included, which a real Chrome navigation never does. Each tier is rendered through a
real worker and the site's record of the navigation is read.
"""

from __future__ import annotations

import uuid

import pytest

from tests.acceptance.site import TestSite
from tests.acceptance.system import System

pytestmark = pytest.mark.acceptance

TIERS = {
    "direct": {},
    "premium": {"premium": True},
    "ultra_premium": {"ultra_premium": True},
}


@pytest.mark.parametrize("tier", list(TIERS))
def test_browser_navigations_carry_no_cache_busting_headers(
    system: System, site: TestSite, tier: str
) -> None:
    key = uuid.uuid4().hex
    path = f"/redirect-to?url=/ok/nav-{key}"
    (job,) = system.wait_final([system.submit(site.url(path), render=True, **TIERS[tier])], timeout=90)
    assert job["status"] == "completed", job["error_message"]
    assert [a["method"] for a in job["attempts"]] == [f"browser:{tier}"]
    hits = site.hits(path) + site.hits(f"/ok/nav-{key}")
    assert len(hits) == 2, hits  # the navigation and its redirect hop
    for hit in hits:
        assert hit.headers.get("sec-fetch-mode") == "navigate", hit.headers
        assert "pragma" not in hit.headers, (hit.target, hit.headers)
        assert "cache-control" not in hit.headers, (hit.target, hit.headers)
        if tier != "direct":
            assert hit.proxy is not None and hit.proxy.startswith(tier.split("_")[0][:5]), hit.proxy

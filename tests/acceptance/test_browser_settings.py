"""The browser's profile settings through a real worker (its own module: a module-scoped ``system`` fixture's
sweeper would hand these jobs to its own worker, which has the default settings)."""

from __future__ import annotations

import pytest

from tests.acceptance.site import TestSite
from tests.acceptance.system import System
from tests.acceptance.test_browser_gauntlet import run_gauntlet_page

pytestmark = pytest.mark.acceptance


def test_a_google_chrome_brand_and_a_tier_region_stay_coherent(fresh: System, site: TestSite) -> None:
    """CRAWLJOBS_BROWSER_BRAND adds Chrome's brand (the page's CDP override); a tier's region gives its contexts
    their locale, languages and timezone."""
    fresh.start_worker(
        CRAWLJOBS_BROWSER_BRAND="Google Chrome",
        CRAWLJOBS_BROWSER_TIER_REGIONS="premium=de-DE@Europe/Berlin",
    )
    _, report = run_gauntlet_page(fresh, site, "coherence", premium=True)
    assert report["verdict"] == "coherence-passed", report["signals"]
    signals = report["signals"]
    assert set(signals["brands"]) == {
        "Google Chrome",
        "Chromium",
        next(b for b in signals["brands"] if b.startswith("Not")),
    }
    assert signals["timezone"] == "Europe/Berlin"
    assert signals["languages"] == ["de-DE", "de", "en-US", "en"]
    _, report = run_gauntlet_page(fresh, site, "botd", premium=True)
    assert report["verdict"] == "botd-human"

"""Browser profiles (crawlproject.profiles): brands as Chromium builds them, one coherent story per profile."""

from __future__ import annotations

import re
import shutil

import pytest

from crawlproject.profiles import (
    FALLBACK_VERSION,
    Identities,
    Profile,
    Region,
    accept_language,
    brand_list,
    browser_version,
    header_brands,
    languages_of,
    launch_args,
    navigation_headers,
    profile_for,
)


@pytest.mark.parametrize(
    ("version", "brand", "header"),
    [
        # Published by real Chrome releases (sec-ch-ua of Chrome 120, 124 and 131 on the wire).
        (
            "120.0.6099.109",
            "Google Chrome",
            '"Not_A Brand";v="8", "Chromium";v="120", "Google Chrome";v="120"',
        ),
        (
            "124.0.6367.60",
            "Google Chrome",
            '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"',
        ),
        (
            "131.0.6778.85",
            "Google Chrome",
            '"Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"',
        ),
        # Debian's Chromium 156, as it sends it (measured on the test site).
        ("156.0.8078.114", None, '"Not:A-Brand";v="8", "Chromium";v="156"'),
    ],
)
def test_brands_are_chromiums_grease_for_the_version(version: str, brand: str | None, header: str) -> None:
    assert header_brands(brand_list(version, brand)) == header


def test_the_full_version_list_carries_full_versions() -> None:
    assert brand_list("156.0.8078.114", "Google Chrome", full=True) == [
        ("Not:A-Brand", "8.0.0.0"),
        ("Chromium", "156.0.8078.114"),
        ("Google Chrome", "156.0.8078.114"),
    ]


def test_languages_and_accept_language_are_chromes() -> None:
    assert languages_of("en-US") == ("en-US", "en")
    assert languages_of("de-DE") == ("de-DE", "de", "en-US", "en")
    assert accept_language(("en-US", "en")) == "en-US,en;q=0.9"
    assert accept_language(languages_of("de-DE")) == "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7"


def test_a_profile_tells_one_story() -> None:
    profile = Profile(
        version="156.0.8078.114", region=Region("de-DE", "Europe/Berlin"), brand="Google Chrome"
    )
    assert profile.user_agent == (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
    )
    assert "Headless" not in profile.user_agent
    override = profile.user_agent_override()
    assert override["userAgent"] == profile.user_agent
    assert override["acceptLanguage"] == "de-DE,de,en-US,en"
    metadata = override["userAgentMetadata"]
    assert [b["brand"] for b in metadata["brands"]] == ["Not:A-Brand", "Chromium", "Google Chrome"]
    assert {b["version"] for b in metadata["brands"][1:]} == {"156"}
    assert (metadata["platform"], metadata["architecture"], metadata["bitness"]) == ("Linux", "x86", "64")
    headers = dict(navigation_headers(profile))
    assert headers["sec-ch-ua"] == profile.sec_ch_ua
    assert headers["sec-ch-ua-platform"] == '"Linux"'
    assert headers["user-agent"] == profile.user_agent
    assert headers["accept-language"] == "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7"
    assert "priority" not in headers and dict(navigation_headers(profile, http2=True))["priority"] == "u=0, i"
    options = profile.context_options(launch_region=Region())
    assert options["locale"] == "de-DE" and options["timezone_id"] == "Europe/Berlin"
    assert "locale" not in Profile(version="156.0.8078.114").context_options(launch_region=Region())
    assert options["screen"]["height"] > options["viewport"]["height"]
    assert f"--user-agent={profile.user_agent}" in launch_args(profile)
    assert "--disable-blink-features=AutomationControlled" in launch_args(profile)


def test_profiles_are_stable_per_context_and_vary_between_contexts() -> None:
    assert profile_for("156.0.8078.114", "direct-guarded") == profile_for("156.0.8078.114", "direct-guarded")
    screens = {profile_for("156.0.8078.114", f"premium-proxy-{n}").screen for n in range(40)}
    assert len(screens) > 1


def test_identities_parse_regions_and_refuse_nonsense() -> None:
    identities = Identities.from_values(None, "en-GB@Europe/London", "premium=de-DE@Europe/Berlin", "")
    assert identities.brand is None
    assert identities.version == FALLBACK_VERSION
    assert identities.for_context("premium", "p").region == Region("de-DE", "Europe/Berlin")
    assert identities.for_context("direct", "d").region == Region("en-GB", "Europe/London")
    for bad in ("premium=de-DE", "moon=de-DE@Europe/Berlin", "premium=german@Europe/Berlin"):
        with pytest.raises(ValueError):
            Identities.from_values(None, "en-US@America/New_York", bad, None)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium")
def test_the_version_is_read_from_the_real_browser() -> None:
    version = browser_version(shutil.which("chromium"))
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", version)

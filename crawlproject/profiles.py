"""Browser profiles: one coherent Chrome per browser context, derived from the real browser's version.

A ``Profile`` says everything a site can read about "the browser" — User-Agent, ``sec-ch-ua`` brands (the
GREASE brand included, built as Chromium builds them for that major version), ``navigator.userAgentData``
and its high-entropy values, platform, languages and ``Accept-Language``, locale, timezone, viewport, screen
and device scale — and every one of them follows from the version read once from the real browser
executable (``browser_version``) and from the profile's region. Pure: no I/O but that one ``--version``
read, so the http engines can use the same profile and headers (``navigation_headers``).

How the worker's browser is made to say it (``crawlproject.rendering``, ``crawlproject.settings``):

- launch flags, for every target of the browser (pages, iframes in other processes, workers, service
  workers): ``--user-agent`` (the reduced ``Chrome/<major>.0.0.0`` string, never ``HeadlessChrome``),
  ``--disable-blink-features=AutomationControlled`` (``navigator.webdriver`` false), ``--lang`` and
  ``--accept-lang`` of the default region, ``--window-size`` of the default screen (the window is larger
  than the viewport, as a real window with its toolbars is), and ``TZ`` in the browser's environment;
- context options: ``viewport``, ``screen``, ``device_scale_factor``, ``timezone_id`` and (for a region
  other than the launch default) ``locale``;
- one CDP call per page before its navigation, ``Emulation.setUserAgentOverride`` with the profile's
  ``userAgentMetadata``: with ``--user-agent`` alone Chromium blanks the high-entropy values (architecture,
  bitness, full version list: a tell), and Playwright's own ``user_agent`` option sends metadata without
  brands. (Iframes in other processes keep the launch flags' values: the same User-Agent and brands,
  blank high-entropy values; the settings' default brand keeps them identical to the page's.)

The brand list is the browser's own by default (Debian's Chromium: ``Chromium`` and the GREASE brand):
it is the same on every target without any per-target patch. ``CRAWLJOBS_BROWSER_BRAND=Google Chrome``
adds Chrome's brand on pages (the issue's "as Chrome builds them"), at the price of iframes in other
processes still saying Chromium only.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# When no browser can be asked (an http-only worker without Chromium): the version Debian ships now.
FALLBACK_VERSION = "156.0.8078.114"

# Chrome's navigation Accept (Chromium 156 sends image/jxl again) and Accept-Encoding.
NAVIGATION_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/jxl,image/avif,image/webp,image/apng,"
    "*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
ACCEPT_ENCODING = "gzip, deflate, br, zstd"

# Desktop screens of Linux users, each with Chrome's viewport in a maximised window on it: headless Chromium's
# outer window is the viewport plus 8 x 85 px (measured), so a viewport 8 px narrower than the screen and
# 133 px shorter gives a window the screen's width above a 48 px panel. Device scale 1.
SCREENS: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
    ((1920, 1080), (1912, 947)),
    ((1920, 1080), (1912, 947)),
    ((1600, 900), (1592, 767)),
    ((1366, 768), (1358, 635)),
    ((2560, 1440), (2552, 1307)),
)

# Chromium's GREASE (components/embedder_support/user_agent_utils.cc): characters and versions of the
# arbitrary brand and the permutations of the three brands, all chosen by the major version as the seed.
_GREASE_CHARS = (" ", "(", ":", "-", ".", "/", ")", ";", "=", "?", "_")
_GREASE_VERSIONS = ("8", "99", "24")
_ORDERS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)\.(\d+)")


@functools.cache
def browser_version(executable: str | None) -> str:
    """The full version (``156.0.8078.114``) of the browser at ``executable``, read once per process
    (``chromium --version``); FALLBACK_VERSION when there is none or it cannot tell."""
    if executable:
        try:
            out = subprocess.run(
                [executable, "--version"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("cannot read the browser's version from %s: %s", executable, exc)
        else:
            match = _VERSION.search(out)
            if match:
                return match.group(0)
            logger.warning("%s --version said %r: no version in it", executable, out[:200])
    return FALLBACK_VERSION


def brand_list(version: str, brand: str | None, *, full: bool = False) -> list[tuple[str, str]]:
    """``sec-ch-ua`` (``full``: ``sec-ch-ua-full-version-list``) brands as Chromium builds them for
    ``version``: the GREASE brand, ``Chromium`` and ``brand`` (``"Google Chrome"``; None for Chromium's
    own two), in the order the major version picks."""
    major = int(version.split(".")[0])
    shown = version if full else str(major)
    grease_version = _GREASE_VERSIONS[major % len(_GREASE_VERSIONS)]
    grease = (
        f"Not{_GREASE_CHARS[major % len(_GREASE_CHARS)]}A{_GREASE_CHARS[(major + 1) % len(_GREASE_CHARS)]}Brand",
        f"{grease_version}.0.0.0" if full else grease_version,
    )
    chromium = ("Chromium", shown)
    if not brand:
        pair = [grease, chromium] if major % 2 == 0 else [chromium, grease]
        return pair
    order = _ORDERS[major % len(_ORDERS)]
    brands: list[tuple[str, str]] = [("", "")] * 3
    brands[order[0]] = grease
    brands[order[1]] = chromium
    brands[order[2]] = (brand, shown)
    return brands


def header_brands(brands: list[tuple[str, str]]) -> str:
    """``"Not:A-Brand";v="8", "Chromium";v="156"``."""
    return ", ".join(f'"{name}";v="{version}"' for name, version in brands)


def languages_of(locale: str) -> tuple[str, ...]:
    """A Chrome's language list for a UI locale: ``de-DE`` → de-DE, de, en-US, en; ``en-US`` → en-US, en."""
    base = locale.split("-")[0]
    languages = [locale] if base == locale else [locale, base]
    for extra in ("en-US", "en"):
        if extra not in languages:
            languages.append(extra)
    return tuple(languages)


def accept_language(languages: tuple[str, ...]) -> str:
    """The header Chromium makes of a language list: q falls by 0.1 from 0.9 (never below 0.1)."""
    parts = [languages[0]] if languages else []
    for index, language in enumerate(languages[1:], 1):
        parts.append(f"{language};q={max(10 - index, 1) / 10:g}")
    return ",".join(parts)


def _kernel_version() -> str:
    """``sec-ch-ua-platform-version`` on Linux: the kernel's release, as Chrome reads it."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", os.uname().release)
    if not match:
        return ""
    return ".".join(part or "0" for part in match.groups())


@dataclass(frozen=True)
class Region:
    """Where the browser says it is: a UI locale and an IANA timezone."""

    locale: str = "en-US"
    timezone: str = "America/New_York"

    @classmethod
    def parse(cls, text: str) -> Region:
        """``de-DE@Europe/Berlin``."""
        locale, sep, timezone = text.strip().partition("@")
        if not sep or not re.fullmatch(r"[a-z]{2,3}(-[A-Z]{2})?", locale) or not timezone:
            raise ValueError(f"a region is locale@Timezone (en-US@America/New_York), not {text!r}")
        return cls(locale, timezone)


@dataclass(frozen=True)
class Profile:
    """One coherent desktop Chrome on Linux x86_64 (module docstring)."""

    version: str
    region: Region = field(default_factory=Region)
    brand: str | None = None
    screen: tuple[int, int] = (1920, 1080)
    viewport: tuple[int, int] = (1912, 947)
    device_scale_factor: float = 1.0
    platform_version: str = field(default_factory=_kernel_version)

    @property
    def major(self) -> str:
        return self.version.split(".")[0]

    @property
    def key(self) -> str:
        """A short stable name (browser contexts are named by it)."""
        text = f"{self.version}|{self.region}|{self.brand}|{self.screen}|{self.viewport}|{self.device_scale_factor}"
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    @property
    def user_agent(self) -> str:
        return (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{self.major}.0.0.0 Safari/537.36"
        )

    @property
    def languages(self) -> tuple[str, ...]:
        return languages_of(self.region.locale)

    @property
    def accept_language(self) -> str:
        return accept_language(self.languages)

    @property
    def brands(self) -> list[tuple[str, str]]:
        return brand_list(self.version, self.brand)

    @property
    def full_version_list(self) -> list[tuple[str, str]]:
        return brand_list(self.version, self.brand, full=True)

    @property
    def sec_ch_ua(self) -> str:
        return header_brands(self.brands)

    @property
    def sec_ch_ua_full_version_list(self) -> str:
        return header_brands(self.full_version_list)

    def user_agent_override(self) -> dict[str, Any]:
        """The parameters of CDP's ``Emulation.setUserAgentOverride`` for a page of this profile."""
        return {
            "userAgent": self.user_agent,
            "acceptLanguage": ",".join(self.languages),  # Chromium adds the q-values itself
            "platform": "Linux x86_64",
            "userAgentMetadata": {
                "brands": [{"brand": name, "version": version} for name, version in self.brands],
                "fullVersionList": [
                    {"brand": name, "version": version} for name, version in self.full_version_list
                ],
                "fullVersion": self.version,
                "platform": "Linux",
                "platformVersion": self.platform_version,
                "architecture": "x86",
                "model": "",
                "mobile": False,
                "bitness": "64",
                "wow64": False,
                "formFactors": ["Desktop"],
            },
        }

    def context_options(self, *, launch_region: Region | None = None) -> dict[str, Any]:
        """Playwright's ``new_context`` options. The locale is given only when it is not the launch default's
        (Playwright's ``locale`` sets a one-language Accept-Language on every target, which the page's CDP
        override then corrects on pages only)."""
        options: dict[str, Any] = {
            "viewport": {"width": self.viewport[0], "height": self.viewport[1]},
            "screen": {"width": self.screen[0], "height": self.screen[1]},
            "device_scale_factor": self.device_scale_factor,
            "timezone_id": self.region.timezone,
        }
        if launch_region is None or self.region.locale != launch_region.locale:
            options["locale"] = self.region.locale
        return options


def profile_for(
    version: str, seed: str, *, region: Region | None = None, brand: str | None = None
) -> Profile:
    """The profile of a browser context: its screen picked by ``seed`` (stable: the same context name gets
    the same profile in every worker), its region and brand as configured."""
    digest = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big")
    screen, viewport = SCREENS[digest % len(SCREENS)]
    return Profile(version=version, region=region or Region(), brand=brand, screen=screen, viewport=viewport)


def navigation_headers(
    profile: Profile, *, site: str = "none", user_activated: bool = True, http2: bool = False
) -> list[tuple[str, str]]:
    """The headers, in Chrome's order, of a top-level navigation by ``profile`` (``site``: ``Sec-Fetch-Site``,
    ``none`` for a typed URL; ``http2`` adds Chrome's ``priority``). Host (or ``:authority``), cookies and
    ``Referer`` are the caller's."""
    headers = [
        ("sec-ch-ua", profile.sec_ch_ua),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", '"Linux"'),
        ("upgrade-insecure-requests", "1"),
        ("user-agent", profile.user_agent),
        ("accept", NAVIGATION_ACCEPT),
        ("sec-fetch-site", site),
        ("sec-fetch-mode", "navigate"),
    ]
    if user_activated:
        headers.append(("sec-fetch-user", "?1"))
    headers += [
        ("sec-fetch-dest", "document"),
        ("accept-encoding", ACCEPT_ENCODING),
        ("accept-language", profile.accept_language),
    ]
    if http2:
        headers.append(("priority", "u=0, i"))
    return headers


def launch_args(profile: Profile) -> list[str]:
    """The launch flags that make every target of the browser say ``profile`` (module docstring)."""
    return [
        "--disable-blink-features=AutomationControlled",
        f"--user-agent={profile.user_agent}",
        f"--lang={profile.region.locale}",
        f"--accept-lang={','.join(profile.languages)}",
        f"--window-size={profile.screen[0]},{profile.screen[1] - 48}",
    ]


@dataclass
class Identities:
    """The worker's profiles: the real browser's version (read at the first render), the default region
    (the launch flags'), each proxy tier's region where one is configured, the brand; one profile per
    browser context name, kept."""

    executable: str | None
    region: Region = field(default_factory=Region)
    tier_regions: dict[str, Region] = field(default_factory=dict)
    brand: str | None = None
    _profiles: dict[str, Profile] = field(default_factory=dict)

    @classmethod
    def from_values(
        cls, executable: str | None, region: str, tier_regions: str | None, brand: str | None
    ) -> Identities:
        """From the settings' text (``CRAWLJOBS_BROWSER_REGION``, ``CRAWLJOBS_BROWSER_TIER_REGIONS`` as
        ``premium=de-DE@Europe/Berlin,ultra_premium=en-GB@Europe/London``); raises ``ValueError``."""
        regions: dict[str, Region] = {}
        for item in (tier_regions or "").split(","):
            if not item.strip():
                continue
            tier, sep, text = item.partition("=")
            if not sep or tier.strip() not in ("direct", "premium", "ultra_premium"):
                raise ValueError(f"browser tier regions: {item.strip()!r} is not tier=locale@Timezone")
            regions[tier.strip()] = Region.parse(text)
        return cls(
            executable, Region.parse(region), regions, brand.strip() if brand and brand.strip() else None
        )

    @property
    def version(self) -> str:
        return browser_version(self.executable)

    def launch_profile(self) -> Profile:
        """The profile the launch flags say (the default region, the most common screen)."""
        return Profile(version=self.version, region=self.region, brand=self.brand)

    def for_tier(self, tier: str) -> Profile:
        """The profile the http engines present on ``tier``: the launch profile in the tier's region (headers
        carry no screen)."""
        return Profile(
            version=self.version, region=self.tier_regions.get(tier, self.region), brand=self.brand
        )

    def for_context(self, tier: str, name: str) -> Profile:
        profile = self._profiles.get(name)
        if profile is None:
            region = self.tier_regions.get(tier, self.region)
            profile = self._profiles[name] = profile_for(self.version, name, region=region, brand=self.brand)
        return profile

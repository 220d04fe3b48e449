"""The impersonate engine's pure parts: Chrome's header set, its GREASE brand, the curl target, header merging."""

from __future__ import annotations

import pytest

from crawlproject.egress.framing import MAX_HEAD_BYTES, MAX_HEADERS
from crawlproject.errors import DecompressedBodyTooLarge, FetchedBodyTooLarge, ResponseHeadersTooLarge
from crawlproject.impersonate import (
    Transfer,
    chrome_navigation_headers,
    curl_target,
    curl_targets,
    merged_headers,
)
from crawlproject.profiles import Profile, navigation_headers

CHROMIUM_156 = Profile(version="156.0.8078.114")


def sec_ch_ua(major: int) -> str:
    return Profile(version=f"{major}.0.0.0").sec_ch_ua


def test_sec_ch_ua_is_what_chromium_156_sends() -> None:
    assert sec_ch_ua(156) == '"Not:A-Brand";v="8", "Chromium";v="156"'  # read from Debian's Chromium 156


@pytest.mark.parametrize(
    ("major", "grease"),
    # The GREASE brands Chrome 130 and 131 sent (their releases' sec-ch-ua, which also name "Google Chrome").
    [(130, '"Not?A_Brand";v="99"'), (131, '"Not_A Brand";v="24"')],
)
def test_the_grease_brand_follows_the_version(major: int, grease: str) -> None:
    assert grease in sec_ch_ua(major)
    assert f'"Chromium";v="{major}"' in sec_ch_ua(major)


def test_the_curl_target_is_the_nearest_chrome_not_newer() -> None:
    targets = curl_targets()
    newest = max(targets)
    assert curl_target(newest + 10) == targets[newest]
    assert curl_target(newest) == targets[newest]
    older = sorted(targets)[-2]
    assert curl_target(older) == targets[older]
    assert curl_target(1) == targets[min(targets)]  # nothing older: the oldest


def test_the_navigation_headers_carry_the_real_version_in_chromes_order() -> None:
    headers = chrome_navigation_headers(CHROMIUM_156)
    names = [name.lower() for name, _ in headers]
    assert names == [
        "sec-ch-ua",
        "sec-ch-ua-mobile",
        "sec-ch-ua-platform",
        "upgrade-insecure-requests",
        "user-agent",
        "accept",
        "sec-fetch-site",
        "sec-fetch-mode",
        "sec-fetch-user",
        "sec-fetch-dest",
        "accept-encoding",
        "accept-language",
    ]
    assert dict(headers)["User-Agent"] == CHROMIUM_156.user_agent
    assert "Chrome/156.0.0.0" in CHROMIUM_156.user_agent
    # One source: the browser profile's headers, in Chrome's HTTP/1.1 spelling; HTTP/2 adds Chrome's priority.
    assert [(n.lower(), v) for n, v in headers] == navigation_headers(CHROMIUM_156)
    assert chrome_navigation_headers(CHROMIUM_156, http2=True)[-1] == ("priority", "u=0, i")


SCRAPY = {"user-agent": "Scrapy-ish/1.0", "accept-language": "en"}


def test_the_requests_own_headers_override_in_place_and_scrapys_defaults_give_way() -> None:
    defaults = chrome_navigation_headers(CHROMIUM_156)
    own = [
        ("User-Agent", "Profile UA"),
        ("Accept-Language", "en"),  # Scrapy's default value: not the request's own
        ("Cookie", "cf_clearance=abc"),
        ("Referer", "https://example.com/"),
        ("X-Extra", "1"),
        ("Accept-Encoding", "identity"),  # curl decodes what the engine announces: never the request's
        ("Proxy-Authorization", "Basic secret"),
        ("Connection", "close"),
    ]
    merged = merged_headers(defaults, own, SCRAPY)
    names = [name.lower() for name, _ in merged]
    assert dict(merged)["User-Agent"] == "Profile UA"
    assert names.index("user-agent") == 4  # Chrome's place
    assert dict(merged)["Accept-Language"] == "en-US,en;q=0.9"
    assert dict(merged)["Accept-Encoding"] == "gzip, deflate, br, zstd"
    assert names[names.index("accept-encoding") - 1] == "referer"
    assert names[-2:] == ["cookie", "x-extra"]
    assert "proxy-authorization" not in names and "connection" not in names
    assert merged_headers(defaults, [("User-Agent", "Scrapy-ish/1.0")], SCRAPY) == defaults


# -- a transfer's limits (what curl's callbacks are handed) ---------------------------------------------------


def test_a_transfer_keeps_the_last_head_and_counts_every_line() -> None:
    transfer = Transfer(maxsize=100)
    for line in (b"HTTP/1.1 103 Early Hints\r\n", b"Link: </a.css>\r\n", b"\r\n"):
        transfer.on_header(line)
    for line in (b"HTTP/2 200 \r\n", b"content-type: text/html\r\n", b"set-cookie: a=1\r\n", b"\r\n"):
        transfer.on_header(line)
    assert transfer.status_line == b"HTTP/2 200 \r\n"
    assert transfer.headers().getlist("Set-Cookie") == [b"a=1"]
    assert transfer.headers().get("Link") is None
    transfer.on_body(b"x" * 100)
    with pytest.raises(FetchedBodyTooLarge):
        transfer.on_body(b"y")


def test_a_head_over_its_bounds_ends_the_transfer() -> None:
    transfer = Transfer(maxsize=0)
    transfer.on_header(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(ResponseHeadersTooLarge, match="fields"):
        for n in range(MAX_HEADERS + 2):
            transfer.on_header(b"x-%d: 1\r\n" % n)
    big = Transfer(maxsize=0)
    with pytest.raises(ResponseHeadersTooLarge, match="bytes"):
        big.on_header(b"HTTP/1.1 200 OK\r\nx: " + b"h" * MAX_HEAD_BYTES)


def test_content_length_over_the_limit_fails_before_the_body_and_a_decoded_body_is_named() -> None:
    plain = Transfer(maxsize=1000)
    plain.on_header(b"HTTP/1.1 200 OK\r\n")
    plain.on_header(b"Content-Length: 1001\r\n")
    with pytest.raises(FetchedBodyTooLarge, match="Content-Length"):
        plain.on_header(b"\r\n")
    bomb = Transfer(maxsize=1000)
    for line in (b"HTTP/1.1 200 OK\r\n", b"Content-Encoding: gzip\r\n", b"Content-Length: 50\r\n", b"\r\n"):
        bomb.on_header(line)  # 50 bytes sent: the decoded size is what counts
    bomb.on_body(b"x" * 1000)
    with pytest.raises(DecompressedBodyTooLarge, match="decompressed"):
        bomb.on_body(b"x")

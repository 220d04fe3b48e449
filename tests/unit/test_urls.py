"""Normalisation and address safety (crawljobs.urls). No test looks up a real name: resolvers are fakes."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Coroutine, Sequence
from typing import Any

import pytest
from w3lib.url import safe_url_string

from crawljobs import urls
from crawljobs.config import Settings
from crawljobs.exceptions import InvalidRequest, UrlRejected
from crawljobs.urls import (
    NetworkPolicy,
    UrlCheck,
    check_urls,
    host_of,
    hosts,
    normalize_url,
    parse_ip_literal,
    resolve_and_check,
    system_resolver,
)

PUBLIC = NetworkPolicy()

FAKE_DNS = {
    "example.com": ["93.184.215.14"],
    "www.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "internal.example.test": ["10.0.0.5"],
    "loopback.example.test": ["127.0.0.1"],
    "mapped.example.test": ["::ffff:127.0.0.1"],
    "mixed.example.test": ["93.184.215.16", "192.168.1.10"],
    "garbage.example.test": ["not-an-address"],
    "empty.example.test": [],
}


class FakeResolver:
    """A resolver answering from a dict (OSError for any other name) that counts its calls."""

    def __init__(self, table: dict[str, list[str]] | None = None, delay: float = 0.0) -> None:
        self.table = FAKE_DNS if table is None else table
        self.delay = delay
        self.calls: list[str] = []
        self.active = 0
        self.most_active = 0

    async def __call__(self, host: str) -> list[str]:
        self.calls.append(host)
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await asyncio.sleep(self.delay)
            if host not in self.table:
                raise OSError(f"[Errno -2] Name or service not known: {host}")
            return list(self.table[host])
        finally:
            self.active -= 1


async def no_dns(host: str) -> list[str]:
    raise AssertionError(f"no look-up expected, got one for {host!r}")


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def fullwidth(text: str) -> str:
    """`text` in full-width characters (U+FF01...), which IDNA maps back to ASCII as browsers do."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


def check(raw_urls: Sequence[object], policy: NetworkPolicy = PUBLIC, **kwargs: Any) -> UrlCheck:
    kwargs.setdefault("resolver", FakeResolver())
    return run(check_urls(raw_urls, policy, **kwargs))


def networks(*cidrs: str) -> NetworkPolicy:
    return NetworkPolicy(allowed=tuple(ipaddress.ip_network(c) for c in cidrs))


# --- Normalisation ------------------------------------------------------------------------------------------

NORMALISED = [
    ("https://example.com/page1?a=b", "https://example.com/page1?a=b"),
    ("https://example.com", "https://example.com/"),
    ("https://example.com?a=b", "https://example.com/?a=b"),
    ("HTTPS://Example.COM/Path/To?Q=V", "https://example.com/Path/To?Q=V"),
    ("http://example.com:80/x", "http://example.com/x"),
    ("https://example.com:443/x", "https://example.com/x"),
    ("http://example.com:443/x", "http://example.com:443/x"),
    ("https://example.com:8443", "https://example.com:8443/"),
    ("http://example.com:080/", "http://example.com/"),
    ("http://example.com:/", "http://example.com/"),
    ("https://Bücher.example/", "https://xn--bcher-kva.example/"),
    ("https://münchen.de/straße", "https://xn--mnchen-3ya.de/stra%C3%9Fe"),
    ("http://例え.テスト/", "http://xn--r8jz45g.xn--zckzah/"),
    ("https://example.com/a#fragment", "https://example.com/a"),
    ("https://example.com/a?b=c#frag?x", "https://example.com/a?b=c"),
    ("https://example.com#", "https://example.com/"),
    ("https://example.com/a b?q=c d", "https://example.com/a%20b?q=c%20d"),
    ("  https://example.com/x \n", "https://example.com/x"),
    ("https://example.com/café?q=é", "https://example.com/caf%C3%A9?q=%C3%A9"),
    ("https://example.com/%41%2f?q=%e9", "https://example.com/%41%2f?q=%e9"),
    ("https://example.com/100%?q=5%", "https://example.com/100%25?q=5%25"),
    ("https://example.com/%zz", "https://example.com/%25zz"),
    ("https://example.com/a\\b", "https://example.com/a%5Cb"),
    ("https://example.com\\@evil.test/", "https://example.com/%5C@evil.test/"),
    ('https://example.com/"q"<x>{y}^`|[z]', "https://example.com/%22q%22%3Cx%3E%7By%7D%5E%60%7C%5Bz%5D"),
    ("https://example.com/it's?q='v'", "https://example.com/it's?q=%27v%27"),
    ("https://example.com/a?b=2&a=1&b=1", "https://example.com/a?b=2&a=1&b=1"),
    ("https://example.com/?", "https://example.com/"),
    ("https://example.com/?q=a/b?c:d@e", "https://example.com/?q=a/b?c:d@e"),
    ("https://example.com./", "https://example.com/"),
    ("https://my_host.example.com/", "https://my_host.example.com/"),
    ("https://ex-ample.com/~user/;p=1", "https://ex-ample.com/~user/;p=1"),
    ("http://0x7f.1/", "http://127.0.0.1/"),
    ("http://2130706433:8080/x", "http://127.0.0.1:8080/x"),
    ("http://93.184.215.14/", "http://93.184.215.14/"),
    ("http://[::FFFF:7f00:1]/", "http://[::ffff:7f00:1]/"),
    ("http://[::ffff:127.0.0.1]:81/", "http://[::ffff:7f00:1]:81/"),
    ("http://[2606:2800:0:0:0:0:0:1]/", "http://[2606:2800::1]/"),
    (f"http://{fullwidth('127.0.0.1')}/", "http://127.0.0.1/"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALISED)
def test_normalize_url(raw: str, expected: str) -> None:
    assert normalize_url(raw) == expected


@pytest.mark.parametrize("raw", [raw for raw, _ in NORMALISED])
def test_normalised_url_is_a_fixed_point_for_us_and_for_scrapy(raw: str) -> None:
    normalised = normalize_url(raw)
    assert normalize_url(normalised) == normalised
    assert safe_url_string(normalised) == normalised  # what the worker fetches is what we stored


def test_plain_url_comes_back_as_the_same_object() -> None:
    url = "https://example.com/page1?a=b"
    assert normalize_url(url) is url


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://Bücher.example/", "https://xn--bcher-kva.example/"),
        ("https://BÜCHER.EXAMPLE/", "https://xn--bcher-kva.example/"),
        (f"http://{fullwidth('127.0.0.1')}/", "http://127.0.0.1/"),
    ],
)
def test_idna_falls_back_to_the_stdlib_codec(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: str
) -> None:
    monkeypatch.setattr(hosts, "_idna", None)
    assert normalize_url(raw) == expected


REFUSED = [
    ("", "empty"),
    ("   \t ", "empty"),
    ("ftp://example.com/file", "scheme 'ftp' is not allowed"),
    ("javascript:alert(1)", "scheme 'javascript' is not allowed"),
    ("JavaScript:alert(1)", "scheme 'javascript' is not allowed"),
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("data:text/html,<script>alert(1)</script>", "scheme 'data' is not allowed"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "scheme 'gopher' is not allowed"),
    ("example.com/page", "must be absolute"),
    ("//example.com/page", "must be absolute"),
    ("http:example.com", "no host"),
    ("http:/example.com", "no host"),
    ("http://", "no host"),
    ("http:///path", "no host"),
    ("http://:80/", "no host"),
    ("http://?q", "no host"),
    ("https://user:pass@example.com/", "credentials"),
    ("https://user@example.com/", "credentials"),
    ("https://@example.com/", "credentials"),
    ("https://example.com:abc/", "invalid port"),
    ("https://example.com:-1/", "invalid port"),
    (f"https://example.com:{fullwidth('80')}/", "invalid port"),
    ("https://example.com:0/", "port 0 is out of range"),
    ("https://example.com:65536/", "port 65536 is out of range"),
    ("https://example.com:99999999999999999999/", "invalid port"),
    ("https://exa mple.com/", "invalid character"),
    ("https://exa%6dple.com/", "invalid character"),
    ("https://exa*mple.com/", "invalid character"),
    ("https://a..b/", "empty label"),
    ("https://.example.com/", "empty label"),
    ("https://" + "a" * 64 + ".com/", "longer than 63"),
    ("https://" + ".".join(["a" * 60] * 5) + "/", "longer than 253"),
    ("https://xn--zz.com/", "invalid punycode"),
    ("https://☃\u200d.com/", "IDNA"),
    ("https://ex\u00adample\u0378.com/", "IDNA"),
    ("https://1.2.3.256/", "not an IPv4 address"),
    ("https://1.2.3.4.5/", "not an IPv4 address"),
    ("https://08.0.0.1/", "not an IPv4 address"),
    ("https://example.123/", "not an IPv4 address"),
    ("https://[::1/", "invalid IPv6"),
    ("https://[::1]x/", "invalid host"),
    ("https://[not:an:ip]/", "invalid IPv6 address"),
    ("https://[fe80::1%25eth0]/", "zone"),
    ("https://::1/", "must be in brackets"),
    ("https://example.com/a\tb", "control or whitespace"),
    ("https://example.com/a\nb", "control or whitespace"),
    ("https://exam\rple.com/", "control or whitespace"),
    ("https://example.com/\x00", "control or whitespace"),
    ("https://example.com/\x7f", "control or whitespace"),
    ("https://example.com/a\x85b", "control or whitespace"),
    ("https://example.com/a\u00a0b", "control or whitespace"),
    ("https://example.com/a\u2028b", "control or whitespace"),
    ("https://example.com/\ud800", "control or whitespace"),
]


@pytest.mark.parametrize(("raw", "reason"), REFUSED)
def test_normalize_url_refuses(raw: str, reason: str) -> None:
    with pytest.raises(UrlRejected) as caught:
        normalize_url(raw)
    assert reason in caught.value.message
    assert isinstance(caught.value, InvalidRequest)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (None, "null"),
        (42, "a number"),
        (4.2, "a number"),
        (True, "a boolean"),
        ([], "an array"),
        ({}, "an object"),
    ],
)
def test_normalize_url_refuses_non_strings(raw: object, kind: str) -> None:
    with pytest.raises(UrlRejected, match=f"must be a string, not {kind}"):
        normalize_url(raw)


def test_too_long_counts_the_raw_form() -> None:
    url = "https://example.com/" + "a" * 80
    assert normalize_url(url, max_length=len(url)) == url
    with pytest.raises(UrlRejected, match="longer than 99 bytes"):
        normalize_url(url, max_length=99)


def test_too_long_counts_utf8_bytes_not_characters() -> None:
    url = "https://example.com/" + "é" * 30  # 50 characters, 80 bytes
    with pytest.raises(UrlRejected, match="longer than 64 bytes"):
        normalize_url(url, max_length=64)


def test_too_long_counts_the_normalised_form() -> None:
    url = "https://example.com/" + "a b" * 10  # 50 bytes raw, 70 once each space is %20
    with pytest.raises(UrlRejected, match="longer than 64 bytes"):
        normalize_url(url, max_length=64)


def test_default_length_limit_is_8192() -> None:
    url = "https://example.com/" + "a" * (8192 - 20)
    assert normalize_url(url) == url
    with pytest.raises(UrlRejected):
        normalize_url(url + "a")


def test_reasons_do_not_echo_huge_input() -> None:
    with pytest.raises(UrlRejected) as caught:
        normalize_url("x" * 5000 + "://example.com/")
    assert len(caught.value.message) < 200


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://example.com/a", "example.com"),
        ("https://example.com:8443/a", "example.com"),
        ("https://example.com?q=1", "example.com"),
        ("http://127.0.0.1:8000/", "127.0.0.1"),
        ("http://[::1]:8000/", "::1"),
        ("http://[2606:2800::1]/", "2606:2800::1"),
    ],
)
def test_host_of(url: str, host: str) -> None:
    assert host_of(url) == host


# --- IP literals --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0177.0.0.0x1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("10.0x10000", "10.1.0.0"),
        ("4294967295", "255.255.255.255"),
        (fullwidth("127.0.0.1"), "127.0.0.1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[2606:2800::1]", "2606:2800::1"),
    ],
)
def test_parse_ip_literal(host: str, address: str) -> None:
    assert parse_ip_literal(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    "host",
    [
        "",
        "example.com",
        "localhost",
        "127.0.0.1.nip.io",
        "1.2.3.256",
        "256.0.0.0.0",
        "4294967296",
        "08.0.0.1",
        "0x1g",
        "1..1",
        "9" * 5000,
        "[fe80::1%25eth0]",
        "[fe80::1%eth0]",
        "[::1",
        "[example.com]",
    ],
)
def test_parse_ip_literal_returns_none_for_anything_else(host: str) -> None:
    assert parse_ip_literal(host) is None


# --- Addresses ----------------------------------------------------------------------------------------------

# (URL, what its refusal says). At least every vector of the brief; none of them may need DNS.
REFUSED_ADDRESSES = [
    ("http://10.0.0.1/", "address 10.0.0.1 is private"),
    ("http://10.255.255.255/", "is private"),
    ("http://172.16.0.1/", "address 172.16.0.1 is private"),
    ("http://172.31.255.254/", "is private"),
    ("http://192.168.1.1/", "address 192.168.1.1 is private"),
    ("http://127.0.0.1/", "address 127.0.0.1 is loopback"),
    ("http://127.1/", "address 127.0.0.1 is loopback"),
    ("http://127.0.1/", "address 127.0.0.1 is loopback"),
    ("http://2130706433/", "address 127.0.0.1 is loopback"),
    ("http://0x7f000001/", "address 127.0.0.1 is loopback"),
    ("http://0177.0.0.1/", "address 127.0.0.1 is loopback"),
    ("http://0x7f.0.0.1/", "address 127.0.0.1 is loopback"),
    ("http://017700000001/", "address 127.0.0.1 is loopback"),
    ("http://127.0.0.1.:8080/", "address 127.0.0.1 is loopback"),
    ("http://0.0.0.0/", "address 0.0.0.0 is unspecified"),
    ("http://0/", "address 0.0.0.0 is unspecified"),
    ("http://0.1.2.3/", "'this network'"),
    ("http://[::1]/", "address ::1 is loopback"),
    ("http://[::]/", "address :: is unspecified"),
    ("http://[::ffff:127.0.0.1]/", "is loopback (it embeds 127.0.0.1)"),
    ("http://[::ffff:7f00:1]/", "is loopback (it embeds 127.0.0.1)"),
    ("http://[::ffff:10.0.0.1]/", "is private (it embeds 10.0.0.1)"),
    ("http://[::ffff:169.254.169.254]/", "is a cloud metadata address (it embeds 169.254.169.254)"),
    ("http://[::127.0.0.1]/", "is loopback (it embeds 127.0.0.1)"),
    ("http://[64:ff9b::a00:1]/", "is private (it embeds 10.0.0.1)"),
    ("http://[64:ff9b::7f00:1]/", "is loopback (it embeds 127.0.0.1)"),
    ("http://[2002:a00:1::]/", "is private (it embeds 10.0.0.1)"),
    ("http://[2002:7f00:1::1]/", "is loopback (it embeds 127.0.0.1)"),
    ("http://[fe80::1]/", "address fe80::1 is link-local"),
    ("http://[fc00::1]/", "address fc00::1 is private"),
    ("http://[fd12:3456::1]/", "is private"),
    ("http://[ff02::1]/", "is multicast"),
    ("http://[2001:db8::1]/", "reserved for documentation"),
    ("http://[64:ff9b:1::a00:1]/", "reserved"),
    ("http://[4000::1]/", "reserved"),
    ("http://169.254.169.254/latest/meta-data/", "address 169.254.169.254 is a cloud metadata address"),
    ("http://169.254.170.2/v2/credentials", "address 169.254.170.2 is a cloud metadata address"),
    ("http://100.100.100.200/", "address 100.100.100.200 is a cloud metadata address"),
    ("http://[fd00:ec2::254]/", "address fd00:ec2::254 is a cloud metadata address"),
    ("http://0xa9fea9fe/", "address 169.254.169.254 is a cloud metadata address"),
    ("http://169.254.1.1/", "address 169.254.1.1 is link-local"),
    ("http://100.64.0.1/", "address 100.64.0.1 is shared address space"),
    ("http://192.0.0.8/", "reserved"),
    ("http://198.18.0.1/", "reserved for benchmarking"),
    ("http://192.0.2.1/", "reserved for documentation"),
    ("http://224.0.0.1/", "address 224.0.0.1 is multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "address 255.255.255.255 is broadcast"),
    ("http://localhost/", "host localhost is a loopback name"),
    ("http://LOCALHOST.:3000/", "host localhost is a loopback name"),
    ("http://foo.localhost/", "host foo.localhost is a loopback name"),
    ("http://localhost.localdomain/", "is a loopback name"),
    ("http://ip6-localhost/", "is a loopback name"),
    ("http://ip6-loopback/", "is a loopback name"),
    (f"http://{fullwidth('localhost')}/", "host localhost is a loopback name"),
    ("http://metadata.google.internal/computeMetadata/v1/", "is a cloud metadata name"),
    ("http://metadata/", "is a cloud metadata name"),
    ("http://instance-data/latest/", "is a cloud metadata name"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED_ADDRESSES)
def test_literal_addresses_and_local_names_are_refused_without_dns(url: str, reason: str) -> None:
    result = check([url], resolver=no_dns)
    assert result.accepted == []
    [(index, raw, message)] = result.rejected
    assert (index, raw) == (0, url)
    assert reason in message
    with pytest.raises(UrlRejected, match="is "):  # at fetch time too, still without a look-up
        run(resolve_and_check(host_of(normalize_url(url)), PUBLIC, no_dns))


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/",
        "http://8.8.8.8/",
        "http://1.1.1.1:8080/x",
        "http://0x5db8d70e/",
        "http://[2606:4700::1111]/",
        "http://[::ffff:8.8.8.8]/",
        "http://[64:ff9b::808:808]/",
        "http://[2002:808:808::1]/",
        "http://100.63.255.255/",
        "http://100.128.0.0/",
        "http://172.15.255.255/",
        "http://172.32.0.0/",
    ],
)
def test_public_literal_addresses_are_accepted_without_dns(url: str) -> None:
    address = host_of(normalize_url(url))
    assert run(resolve_and_check(address, PUBLIC, no_dns)) == [address]
    result = check([url], resolver=no_dns)
    assert result.rejected == []
    assert result.accepted == [(0, normalize_url(url))]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.0.0.1", "address 10.0.0.1 is private"),
        (ipaddress.ip_address("127.0.0.1"), "address 127.0.0.1 is loopback"),
        ("fe80::1%eth0", "address fe80::1 is link-local"),
        ("::ffff:7f00:1", "address ::ffff:7f00:1 is loopback (it embeds 127.0.0.1)"),
        ("192.0.0.192", "cloud metadata"),
        ("nonsense", "is not a valid IP address"),
    ],
)
def test_policy_refusal(address: str, reason: str) -> None:
    refusal = PUBLIC.refusal(address)
    assert refusal is not None
    assert reason in refusal


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::1111", ipaddress.ip_address("1.1.1.1")])
def test_policy_allows_public_addresses(address: str) -> None:
    assert PUBLIC.refusal(address) is None


def test_policy_from_settings() -> None:
    settings = Settings(allowed_networks=["10.0.0.0/8", "fd00::/8"])
    policy = NetworkPolicy.from_settings(settings)
    assert policy.allowed == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
    assert policy.refusal("10.1.2.3") is None
    assert policy.refusal("fd00::1") is None
    assert policy.refusal("192.168.0.1") == "address 192.168.0.1 is private"


# --- Allowed networks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("http://127.0.0.1:8000/", True),
        ("http://127.1:8000/", True),
        ("http://[::ffff:127.0.0.1]/", True),  # judged by the IPv4 address it embeds
        ("http://localhost:8000/", True),  # it means 127.0.0.1, which is allowed
        ("http://app.localhost/", True),
        ("http://127.0.0.2/", False),
        ("http://[::1]/", False),
        ("http://ip6-localhost/", False),  # it means ::1 only
        ("http://10.0.0.1/", False),
        ("http://metadata.google.internal/", False),
    ],
)
def test_allowed_network_overrides_only_what_it_covers(url: str, accepted: bool) -> None:
    policy = networks("127.0.0.1/32")
    result = check([url], policy, resolver=no_dns)
    assert bool(result.accepted) is accepted
    assert bool(result.rejected) is not accepted


def test_allowed_metadata_network_lets_metadata_through() -> None:
    policy = networks("169.254.0.0/16")
    assert policy.refusal("169.254.169.254") is None
    assert run(resolve_and_check("metadata.google.internal", policy, no_dns)) == ["169.254.169.254"]


def test_allowed_ipv6_network() -> None:
    policy = networks("fd00::/8")
    assert check(["http://[fd12::1]/"], policy, resolver=no_dns).rejected == []
    assert check(["http://[fc00::1]/"], policy, resolver=no_dns).accepted == []


# --- Submit time: resolution --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "https://internal.example.test/",
            "host internal.example.test resolves to 10.0.0.5, which is private",
        ),
        (
            "https://loopback.example.test/",
            "host loopback.example.test resolves to 127.0.0.1, which is loopback",
        ),
        (
            "https://mapped.example.test/",
            "resolves to ::ffff:7f00:1, which is loopback (it embeds 127.0.0.1)",
        ),
        ("https://mixed.example.test/", "host mixed.example.test resolves to 192.168.1.10, which is private"),
        ("https://garbage.example.test/", "which is not a valid IP address"),
    ],
)
def test_hostname_resolving_to_a_refused_address_is_refused(url: str, reason: str) -> None:
    result = check([url])
    assert result.accepted == []
    [(index, raw, message)] = result.rejected
    assert (index, raw) == (0, url)
    assert message.startswith(f"host {host_of(url)} resolves to ")
    assert reason in message


def test_hostname_resolving_to_an_allowed_private_address_is_accepted() -> None:
    result = check(["https://internal.example.test/"], networks("10.0.0.0/8"))
    assert result.accepted == [(0, "https://internal.example.test/")]


def test_public_hostnames_are_accepted() -> None:
    result = check(["https://example.com/", "https://WWW.example.com/a"])
    assert result.accepted == [(0, "https://example.com/"), (1, "https://www.example.com/a")]
    assert result.rejected == []


@pytest.mark.parametrize("url", ["https://nowhere.example.test/", "https://empty.example.test/"])
def test_unresolvable_hostname_is_accepted(url: str) -> None:
    # The worker resolves again at fetch time and fails the job then.
    assert check([url]).accepted == [(0, url)]


def test_resolver_that_fails_oddly_is_treated_as_unresolvable() -> None:
    async def broken(host: str) -> list[str]:
        raise ValueError("resolver bug")

    assert check(["https://example.com/"], resolver=broken).accepted == [(0, "https://example.com/")]


def test_resolution_timeout_accepts_the_slow_hosts_and_still_judges_the_fast_ones() -> None:
    class SlowFor(FakeResolver):
        async def __call__(self, host: str) -> list[str]:
            if host == "slow.example.test":
                await asyncio.sleep(30)
            return await super().__call__(host)

    async def scenario() -> tuple[UrlCheck, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await check_urls(
            ["https://slow.example.test/", "https://internal.example.test/"],
            PUBLIC,
            resolver=SlowFor(),
            dns_timeout=0.05,
        )
        return result, loop.time() - started

    result, elapsed = run(scenario())
    assert elapsed < 5
    assert result.accepted == [(0, "https://slow.example.test/")]
    assert [r[0] for r in result.rejected] == [1]


def test_each_distinct_host_is_resolved_once() -> None:
    resolver = FakeResolver()
    raw = [
        "https://example.com/1",
        "https://EXAMPLE.com/2",
        "https://example.com./3",
        "https://internal.example.test/a",
        "https://example.com:8443/4",
        "https://internal.example.test/b",
        "https://nowhere.example.test/",
        "https://nowhere.example.test/again",
        "http://10.0.0.1/",
        "http://localhost/",
    ]
    result = check(raw, resolver=resolver)
    assert sorted(resolver.calls) == ["example.com", "internal.example.test", "nowhere.example.test"]
    assert [i for i, _ in result.accepted] == [0, 1, 2, 4, 6, 7]
    assert [i for i, _, _ in result.rejected] == [3, 5, 8, 9]


def test_resolution_is_concurrent_but_bounded() -> None:
    hosts = {f"h{i}.example.test": ["93.184.215.14"] for i in range(100)}
    resolver = FakeResolver(hosts, delay=0.01)
    result = check([f"https://{h}/" for h in hosts], resolver=resolver)
    assert len(result.accepted) == 100
    assert 1 < resolver.most_active <= urls.DNS_CONCURRENCY


def test_order_is_kept_and_every_input_is_reported_once() -> None:
    raw: list[object] = [
        "https://example.com/0",
        "ftp://example.com/1",
        "https://internal.example.test/2",
        None,
        "https://www.example.com/4",
        "http://127.0.0.1/5",
        "https://nowhere.example.test/6",
        "x" * 1000,
        "https://example.com/8#frag",
    ]
    result = check(raw)
    assert result.accepted == [
        (0, "https://example.com/0"),
        (4, "https://www.example.com/4"),
        (6, "https://nowhere.example.test/6"),
        (8, "https://example.com/8"),
    ]
    assert [(i, r) for i, r, _ in result.rejected] == [
        (1, "ftp://example.com/1"),
        (2, "https://internal.example.test/2"),
        (3, "None"),
        (5, "http://127.0.0.1/5"),
        (7, "x" * 300),
    ]
    assert all(reason for _, _, reason in result.rejected)


def test_check_urls_applies_max_length() -> None:
    result = check(["https://example.com/" + "a" * 100], max_length=64)
    assert result.rejected[0][2] == "URL is longer than 64 bytes"


def test_check_urls_of_nothing() -> None:
    assert check([], resolver=no_dns) == UrlCheck(accepted=[], rejected=[])


# --- Fetch time ---------------------------------------------------------------------------------------------


def test_resolve_and_check_returns_the_checked_addresses() -> None:
    addresses = run(resolve_and_check("www.example.com", PUBLIC, FakeResolver()))
    assert addresses == FAKE_DNS["www.example.com"]


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("internal.example.test", "host internal.example.test resolves to 10.0.0.5, which is private"),
        ("mixed.example.test", "resolves to 192.168.1.10, which is private"),
        ("nowhere.example.test", "host nowhere.example.test does not resolve"),
        ("empty.example.test", "host empty.example.test does not resolve"),
        ("127.0.0.1", "address 127.0.0.1 is loopback"),
        ("::1", "address ::1 is loopback"),
        ("localhost", "host localhost is a loopback name"),
    ],
)
def test_resolve_and_check_refuses(host: str, reason: str) -> None:
    with pytest.raises(UrlRejected) as caught:
        run(resolve_and_check(host, PUBLIC, FakeResolver()))
    assert reason in caught.value.message


@pytest.mark.parametrize(
    ("host", "addresses"),
    [("93.184.215.14", ["93.184.215.14"]), ("2606:4700::1111", ["2606:4700::1111"]), ("[::1]", None)],
)
def test_resolve_and_check_takes_ip_literals_without_dns(host: str, addresses: list[str] | None) -> None:
    if addresses is None:
        with pytest.raises(UrlRejected, match="loopback"):
            run(resolve_and_check(host, PUBLIC, no_dns))
    else:
        assert run(resolve_and_check(host, PUBLIC, no_dns)) == addresses


def test_resolve_and_check_gives_the_allowed_addresses_of_a_local_name() -> None:
    assert run(resolve_and_check("localhost", networks("127.0.0.0/8"), no_dns)) == ["127.0.0.1"]
    assert run(resolve_and_check("localhost", networks("::1/128"), no_dns)) == ["::1"]
    assert run(resolve_and_check("localhost", networks("127.0.0.0/8", "::1/128"), no_dns)) == [
        "127.0.0.1",
        "::1",
    ]


def test_resolve_and_check_treats_a_failing_resolver_as_no_answer() -> None:
    async def broken(host: str) -> list[str]:
        raise UnicodeError("label too long")

    with pytest.raises(UrlRejected, match="does not resolve"):
        run(resolve_and_check("example.com", PUBLIC, broken))


def test_system_resolver_reads_numeric_hosts_without_dns() -> None:
    assert run(system_resolver("127.0.0.1")) == ["127.0.0.1"]


def test_system_resolver_raises_oserror_for_a_name_it_cannot_encode() -> None:
    with pytest.raises(OSError):
        run(system_resolver("a" * 64 + ".example.test"))  # refused by the IDNA codec before any packet

"""Unicode and IDN URLs through the API: what is stored is the ASCII form a browser (and the worker) would use.

IDN hosts become punycode (UTS #46, as browsers map them), non-ASCII paths and queries are percent-encoded as
UTF-8, and the normalised URL is a fixed point: submitting it again stores the same URL. Host names are
resolved in their ASCII form only, and only through the suite's fake resolver; a name that does not resolve
is accepted at submit time (the worker checks it again when it fetches). Invalid IDNA is a 422.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from crawljobs.urls import normalize_url
from tests.hostile.conftest import LOOKUPS

# (id, submitted, stored)
ACCEPTED = [
    ("idn-latin", "http://bücher.example/", "http://xn--bcher-kva.example/"),
    ("idn-upper-case", "http://BÜCHER.Example/Path", "http://xn--bcher-kva.example/Path"),
    ("idn-fullwidth-letter", "http://\uff42ücher.example/", "http://xn--bcher-kva.example/"),
    ("idn-ideographic-dot", "http://bücher\u3002example/", "http://xn--bcher-kva.example/"),
    ("idn-japanese", "http://例え.テスト/", "http://xn--r8jz45g.xn--zckzah/"),
    ("idn-greek", "https://δοκιμή.example/", "https://xn--jxalpdlp.example/"),
    ("idn-arabic", "https://مثال.example/", "https://xn--mgbh0fb.example/"),
    ("idn-cyrillic-tld", "https://example.рф/", "https://example.xn--p1ai/"),
    ("idn-sharp-s-kept", "http://faß.de/", "http://xn--fa-hia.de/"),  # non-transitional, as browsers now do
    # Mixed scripts: a Cyrillic a (U+0430) in a Latin name is stored as punycode, so the homograph shows.
    ("mixed-script-homograph", "http://p\u0430ypal.com/", "http://xn--pypal-4ve.com/"),
    ("mixed-script-label", "http://bücher-книги.example/", "http://xn--bcher--3ya307djbbt0b.example/"),
    ("idn-already-punycode", "http://xn--bcher-kva.example/", "http://xn--bcher-kva.example/"),
    ("invisible-characters-dropped", "http://exa\u200bm\u00adple.com/", "http://example.com/"),
    ("roman-numeral-mapped", "http://\u2168.example/", "http://ix.example/"),
    # Paths and queries.
    ("path-and-query", "https://example.com/café?q=naïve", "https://example.com/caf%C3%A9?q=na%C3%AFve"),
    (
        "escapes-kept",
        "https://example.com/caf%c3%a9?q=%E2%82%AC",
        "https://example.com/caf%c3%a9?q=%E2%82%AC",
    ),
    (
        "emoji-path",
        "https://example.com/😀/ü?ß=€#fragment",
        "https://example.com/%F0%9F%98%80/%C3%BC?%C3%9F=%E2%82%AC",
    ),
    (
        "greek-path",
        "https://example.com/παράδειγμα",
        "https://example.com/%CF%80%CE%B1%CF%81%CE%AC%CE%B4%CE%B5%CE%B9%CE%B3%CE%BC%CE%B1",
    ),
    ("spaces", "https://example.com/a b?c d", "https://example.com/a%20b?c%20d"),
    ("stray-percent", "https://example.com/100%?x=%zz", "https://example.com/100%25?x=%25zz"),
    ("encoded-nul-stays-escaped", "https://example.com/%00", "https://example.com/%00"),
]

# (id, submitted, words of the refusal)
REFUSED = [
    ("bad-punycode", "http://xn--a.example/", "invalid punycode label"),
    ("empty-punycode", "http://xn--/", "invalid punycode label"),
    ("punycode-of-a-symbol", "http://xn--ls8h.example/", "invalid punycode label"),
    ("symbol-not-idna2008", "http://💩.example/", "cannot be IDNA-encoded"),
    ("leading-combining-mark", "http://\u0301abc.example/", "cannot be IDNA-encoded"),
    ("bidi-override", "http://\u202eexample.com/", "cannot be IDNA-encoded"),
    ("zero-width-joiner", "http://a\u200db.example/", "cannot be IDNA-encoded"),
    ("label-over-63", "http://" + "a" * 64 + ".example/", "a label is longer than 63 characters"),
    ("idn-label-over-63", "http://" + "ü" * 60 + ".example/", "cannot be IDNA-encoded"),
    ("host-over-253", "http://" + ("a" * 60 + ".") * 5 + "example/", "longer than 253 characters"),
    ("empty-label", "http://a..b/", "empty label"),
    ("space-in-host", "http://ex ample.com/", "invalid character"),
    ("percent-in-host", "http://ex%41mple.com/", "invalid character"),
    ("nbsp-in-host", "http://exa\u00a0mple.com/", "control or whitespace character"),
    ("ideographic-space", "http://example.com/a\u3000b", "control or whitespace character"),
    ("line-separator", "http://example.com/a\u2028b", "control or whitespace character"),
    ("lone-surrogate", "http://example.com/\ud800", "control or whitespace character"),
]

SUBMIT = [
    ("/v1/jobs", lambda u: {"url": u}),
    ("/functions/v1/submit-crawl-job", lambda u: {"url": u}),
]


def post_json(client: TestClient, path: str, body: object, headers: dict[str, str]) -> Response:
    """POST `body` as ASCII JSON, so that a lone surrogate travels as the escape a hostile client would send."""
    content = json.dumps(body).encode("ascii")
    return client.post(path, content=content, headers={**headers, "content-type": "application/json"})


def _stored_url(client: TestClient, auth: dict[str, str], path: str, job_id: str) -> str:
    if path.startswith("/v1/"):
        return str(client.get(f"/v1/jobs/{job_id}", headers=auth).json()["url"])
    legacy = client.get("/functions/v1/get-crawl-job", params={"jobId": job_id}, headers=auth)
    return str(legacy.json()["job"]["url"])


@pytest.mark.parametrize(("raw", "stored"), [a[1:] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_unicode_url_is_stored_in_its_ascii_form(
    client: TestClient, auth: dict[str, str], raw: str, stored: str
) -> None:
    assert normalize_url(stored) == stored  # a fixed point: what is stored normalises to itself
    for path, body in SUBMIT:
        for submitted in (raw, stored):  # the round trip: the stored form submitted again stays the same
            response = client.post(path, json=body(submitted), headers=auth)
            assert response.status_code in (200, 201), (path, response.text)
            answer = response.json()
            job_id = answer.get("id") or answer["jobId"]
            assert _stored_url(client, auth, path, job_id) == stored, (path, submitted)


def test_a_batch_stores_every_form_in_order(client: TestClient, auth: dict[str, str]) -> None:
    raws = [raw for _, raw, _ in ACCEPTED]
    response = client.post("/v1/batches", json={"urls": raws, "batch_id": "unicode-all"}, headers=auth)
    assert response.status_code == 201, response.text
    assert response.json()["accepted"] == len(raws)
    page = client.get("/v1/batches/unicode-all", params={"limit": 1000}, headers=auth).json()
    assert [job["url"] for job in page["jobs"]] == [stored for _, _, stored in ACCEPTED]


@pytest.mark.parametrize(("raw", "words"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_invalid_idna_and_unicode_hosts_are_422(
    client: TestClient,
    auth: dict[str, str],
    footprint: Callable[[], dict[str, int]],
    raw: str,
    words: str,
) -> None:
    before = footprint()
    for path, body in SUBMIT:
        response = post_json(client, path, body(raw), auth)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["code"] == "url_rejected"
        assert words in response.json()["error"], (path, response.json())
    legacy = post_json(client, "/functions/v1/submit-crawl-jobs-batch", {"urls": [raw]}, auth)
    assert legacy.status_code == 422
    (failure,) = legacy.json()["details"]["failures"]
    assert words in failure["reason"]
    assert footprint() == before


def test_names_are_resolved_in_ascii_and_only_through_the_fake_resolver(
    client: TestClient, auth: dict[str, str], no_real_dns: list[str]
) -> None:
    LOOKUPS.clear()
    urls = [
        "http://bücher.example/a",
        "http://BÜCHER.example/b",
        "http://例え.テスト/",
        "https://δοκιμή.example/",
    ]
    response = client.post("/v1/batches", json={"urls": urls}, headers=auth)
    assert response.status_code == 201, response.text
    # Each distinct host once, in its ASCII form; δοκιμή.example does not resolve and is accepted all the same.
    assert sorted(LOOKUPS) == ["xn--bcher-kva.example", "xn--jxalpdlp.example", "xn--r8jz45g.xn--zckzah"]
    assert response.json()["accepted"] == 4
    assert no_real_dns == []


def test_an_idn_name_resolving_to_a_private_address_is_refused_by_its_ascii_name(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = client.post("/v1/jobs", json={"url": "http://BÜCHER.evil.example/"}, headers=auth)
    assert response.status_code == 422
    assert (
        "host xn--bcher-kva.evil.example resolves to 192.168.7.7, which is private"
        in response.json()["error"]
    )


def test_the_dns_tripwire_is_armed(no_real_dns: list[str]) -> None:
    import socket

    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("example.com", 80)
    assert no_real_dns == ["example.com"]
    no_real_dns.clear()  # seen: the fixture's own check after the test must pass

"""Server-side request forgery: every way of pointing a crawl (or a webhook) at a private address is refused.

One table names every vector and the test that tries it. Submit-time vectors are tried here, on every route
that takes a URL (/v1 and /functions/v1, crawl URLs and callback URLs), with no worker running: literal
private addresses are only ever submitted, never fetched. Each must be a 422 JSON error saying why, and leave
no row and no queue entry behind. Fetch-time vectors (a redirect, a browser sub-request, a webhook delivery,
DNS answers that change) need real workers or the egress guard against 127.0.0.2 with only 127.0.0.1/32
allowed; they live next to those fixtures, and the table here names them and checks that they exist.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

HERE = "tests/hostile/test_ssrf.py::test_submit_time_vector_is_refused_everywhere"
ROOT = Path(__file__).resolve().parents[2]
GOOD_URL = "https://example.com/ssrf-control"


@dataclass(frozen=True)
class Vector:
    id: str
    kind: str  # what the task's list calls it: private, loopback, metadata, hex...
    target: str  # the URL submitted, or what the fetch is led to
    refusal: str  # words the refusal must contain (for a fetch-time vector: what its test asserts)
    where: str = HERE  # "path::test" that tries it


SUBMIT_TIME = [
    # Private networks, loopback, link-local.
    Vector("private-10", "private", "http://10.0.0.8/", "address 10.0.0.8 is private"),
    Vector("private-172-16", "private", "http://172.16.0.1/", "address 172.16.0.1 is private"),
    Vector("private-172-31", "private", "http://172.31.255.254:8443/admin", "172.31.255.254 is private"),
    Vector("private-192-168", "private", "http://192.168.1.1/router", "address 192.168.1.1 is private"),
    Vector("loopback", "loopback", "http://127.0.0.1/", "address 127.0.0.1 is loopback"),
    Vector("loopback-other", "loopback", "http://127.0.0.2:8080/", "address 127.0.0.2 is loopback"),
    Vector("loopback-redis-port", "loopback", "http://127.0.0.1:6379/", "127.0.0.1 is loopback"),
    Vector("loopback-name", "loopback", "http://localhost:8080/", "localhost is a loopback name"),
    Vector("loopback-name-upper-dot", "loopback", "http://LOCALHOST./", "localhost is a loopback name"),
    Vector("loopback-subdomain", "loopback", "http://api.localhost/", "api.localhost is a loopback name"),
    Vector("unspecified", "loopback", "http://0.0.0.0/", "0.0.0.0 is unspecified"),
    Vector("unspecified-short", "short", "http://0/", "0.0.0.0 is unspecified"),
    Vector("link-local", "link-local", "http://169.254.10.10/", "169.254.10.10 is link-local"),
    Vector("cgnat", "private", "http://100.64.0.1/", "100.64.0.1 is shared address space"),
    # Cloud metadata.
    Vector("metadata-v4", "metadata", "http://169.254.169.254/latest/meta-data/", "cloud metadata address"),
    Vector(
        "metadata-gcp-name",
        "metadata",
        "http://metadata.google.internal/computeMetadata/v1/",
        "metadata.google.internal is a cloud metadata name",
    ),
    Vector("metadata-bare-name", "metadata", "http://metadata/computeMetadata/v1/", "cloud metadata name"),
    Vector(
        "metadata-aws-v6", "metadata", "http://[fd00:ec2::254]/latest/", "fd00:ec2::254 is a cloud metadata"
    ),
    Vector("metadata-alibaba", "metadata", "http://100.100.100.200/latest/", "cloud metadata address"),
    Vector("metadata-hex", "hex", "http://0xa9fea9fe/", "169.254.169.254 is a cloud metadata address"),
    Vector("metadata-mapped", "ipv4-mapped", "http://[::ffff:a9fe:a9fe]/", "embeds 169.254.169.254"),
    # IPv6 forms that carry an IPv4 address.
    Vector("mapped-dotted", "ipv4-mapped", "http://[::ffff:127.0.0.1]/", "loopback (it embeds 127.0.0.1)"),
    Vector("mapped-hex", "ipv4-mapped", "http://[::ffff:7f00:1]/", "loopback (it embeds 127.0.0.1)"),
    Vector("mapped-long", "ipv4-mapped", "http://[0:0:0:0:0:ffff:127.0.0.1]/", "embeds 127.0.0.1"),
    Vector("compatible", "ipv4-mapped", "http://[::127.0.0.1]/", "loopback (it embeds 127.0.0.1)"),
    Vector("nat64", "ipv4-mapped", "http://[64:ff9b::7f00:1]/", "loopback (it embeds 127.0.0.1)"),
    Vector("6to4", "ipv4-mapped", "http://[2002:7f00:1::]/", "loopback (it embeds 127.0.0.1)"),
    # Other spellings of 127.0.0.1.
    Vector("decimal", "decimal", "http://2130706433/", "address 127.0.0.1 is loopback"),
    Vector("octal-dotted", "octal", "http://0177.0.0.1/", "address 127.0.0.1 is loopback"),
    Vector("octal-integer", "octal", "http://017700000001/", "address 127.0.0.1 is loopback"),
    Vector("hex-dotted", "hex", "http://0x7f.0.0.1/", "address 127.0.0.1 is loopback"),
    Vector("hex-integer", "hex", "http://0x7f000001/", "address 127.0.0.1 is loopback"),
    Vector("hex-short-upper", "hex", "http://0x7F.1/", "address 127.0.0.1 is loopback"),
    Vector("short-two-parts", "short", "http://127.1/", "address 127.0.0.1 is loopback"),
    Vector("short-three-parts", "short", "http://127.0.1/", "address 127.0.0.1 is loopback"),
    Vector("trailing-dot", "loopback", "http://127.0.0.1./", "address 127.0.0.1 is loopback"),
    Vector(
        "fullwidth-digits",
        "loopback",
        "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",
        "address 127.0.0.1 is loopback",
    ),
    Vector("percent-encoded-host", "loopback", "http://%31%32%37.0.0.1/", "not an IPv4 address"),
    # IPv6 loopback, unique local, link-local.
    Vector("ipv6-loopback", "ipv6-loopback", "http://[::1]/", "address ::1 is loopback"),
    Vector("ipv6-loopback-long", "ipv6-loopback", "http://[0:0:0:0:0:0:0:1]/", "address ::1 is loopback"),
    Vector("ipv6-unspecified", "ipv6-loopback", "http://[::]/", "address :: is unspecified"),
    Vector("ipv6-ula-fd", "ipv6-ula", "http://[fd12:3456:789a::1]/", "fd12:3456:789a::1 is private"),
    Vector("ipv6-ula-fc", "ipv6-ula", "http://[fc00::1]/", "address fc00::1 is private"),
    Vector("ipv6-link-local", "link-local", "http://[fe80::1]/", "address fe80::1 is link-local"),
    Vector("ipv6-zone-id", "link-local", "http://[fe80::1%25eth0]/", "zone identifiers are not allowed"),
    # Names that resolve (through the suite's fake DNS) to refused addresses.
    Vector("dns-private", "dns", "http://internal.example.com/", "resolves to 10.1.2.3, which is private"),
    Vector("dns-loopback", "dns", "http://loopback.example.com/", "resolves to 127.0.0.1, which is loopback"),
    Vector("dns-one-private-of-two", "dns", "http://mixed.example.com/", "resolves to 192.168.1.10"),
    Vector("dns-172", "dns", "http://rebind.example.com/", "resolves to 172.16.5.5, which is private"),
    Vector("dns-link-local", "dns", "http://linklocal.example.com/", "169.254.10.10, which is link-local"),
    Vector(
        "dns-metadata", "dns", "http://metadata.example.com/", "169.254.169.254, which is a cloud metadata"
    ),
    Vector(
        "dns-ipv6-loopback", "dns", "http://v6loopback.example.com/", "resolves to ::1, which is loopback"
    ),
    Vector("dns-ipv6-ula", "dns", "http://ula.example.com/", "fd12:3456:789a::1, which is private"),
    Vector("dns-ipv4-mapped", "dns", "http://mapped.example.com/", "(it embeds 127.0.0.1)"),
    Vector(
        "dns-idn", "dns", "http://bücher.evil.example/", "xn--bcher-kva.evil.example resolves to 192.168.7.7"
    ),
    # Userinfo and other parser confusion.
    Vector("userinfo-host", "userinfo", "http://example.com@127.0.0.1/", "must not contain credentials"),
    Vector("userinfo-password", "userinfo", "http://user:pass@10.0.0.1/", "must not contain credentials"),
    Vector("fragment-at", "userinfo", "http://127.0.0.1#@example.com/", "address 127.0.0.1 is loopback"),
    Vector("query-at", "userinfo", "http://127.0.0.1?@example.com/", "address 127.0.0.1 is loopback"),
    Vector("backslash-at", "userinfo", "http://127.0.0.1\\@example.com/", "address 127.0.0.1 is loopback"),
    # Schemes that would reach an internal service another way.
    Vector("scheme-gopher", "scheme", "gopher://127.0.0.1:6379/_INFO", "scheme 'gopher' is not allowed"),
    Vector("scheme-file", "scheme", "file:///etc/passwd", "scheme 'file' is not allowed"),
    Vector("scheme-dict", "scheme", "dict://127.0.0.1:6379/info", "scheme 'dict' is not allowed"),
    Vector("scheme-relative", "scheme", "//127.0.0.1/", "must be absolute"),
]

FETCH_TIME = [
    Vector(
        "redirect-http",
        "redirect",
        "a page of the test site answering 302 to http://127.0.0.2:PORT/",
        "network rules",
        "tests/acceptance/test_ladder.py::test_redirect_to_a_forbidden_address_is_refused",
    ),
    Vector(
        "redirect-browser",
        "redirect",
        "the same redirect followed by Chromium",
        "network rules",
        "tests/acceptance/test_ladder.py::test_browser_redirect_to_a_forbidden_address_is_refused",
    ),
    Vector(
        "redirect-impersonate",
        "redirect",
        "the same redirect fetched by the impersonate engine (curl follows nothing: Scrapy makes each hop)",
        "network rules",
        "tests/acceptance/test_impersonate.py::test_a_redirect_to_a_forbidden_address_is_refused",
    ),
    Vector(
        "dns-fetch-time",
        "dns",
        "names resolving to 127.0.0.2 at fetch time, and one curl cannot resolve itself (the checked address is "
        "handed to it), for the http and impersonate engines",
        "refused by the network rules: ",
        "tests/acceptance/test_http_hostile.py::test_a_name_resolving_to_a_refused_address_is_refused_by_the_network_rules",
    ),
    Vector(
        "browser-subrequest",
        "browser-subrequest",
        "a page whose script fetches http://127.0.0.2:PORT/",
        "subrequest-failed",
        "tests/acceptance/test_ladder.py::test_browser_subrequests_to_forbidden_addresses_are_aborted",
    ),
    Vector(
        "webhook-delivery",
        "webhook-delivery",
        "a delivery row naming http://127.0.0.2:PORT/hook",
        "refused by the network rules",
        "tests/integration/test_webhooks.py::test_forbidden_callback_is_refused_at_submit_and_at_delivery",
    ),
    Vector(
        "egress-literal",
        "egress",
        "the egress guard asked for http://127.0.0.2:PORT/",
        "address 127.0.0.2 is loopback",
        "tests/integration/test_egress.py::test_a_forbidden_address_is_refused_and_never_reached",
    ),
    Vector(
        "egress-spellings",
        "egress",
        "127.0.0.2 as 2130706434, 0x7f.2, [::ffff:127.0.0.2]...",
        "127.0.0.2",
        "tests/integration/test_egress.py::test_other_spellings_of_a_forbidden_address_are_refused",
    ),
    Vector(
        "egress-connect",
        "egress",
        "CONNECT 127.0.0.2:PORT",
        "refused by the network rules",
        "tests/integration/test_egress.py::test_connect_to_a_forbidden_address_is_refused",
    ),
    Vector(
        "egress-dns",
        "dns",
        "a name resolving to 127.0.0.2 at fetch time",
        "resolves to 127.0.0.2",
        "tests/integration/test_egress.py::test_names_are_resolved_once_and_checked",
    ),
    Vector(
        "dns-rebinding",
        "dns",
        "a name answering 127.0.0.1 and then 127.0.0.2",
        'reply.headers["x-origin"] == "127.0.0.1"',
        "tests/integration/test_egress.py::test_the_checked_address_is_the_one_connected_to",
    ),
]

VECTORS = SUBMIT_TIME + FETCH_TIME

# What the table must cover (issue 5, item 3, point 2).
REQUIRED_KINDS = {
    "private",
    "loopback",
    "link-local",
    "metadata",
    "ipv4-mapped",
    "decimal",
    "octal",
    "hex",
    "short",
    "ipv6-loopback",
    "ipv6-ula",
    "dns",
    "userinfo",
    "redirect",
    "browser-subrequest",
    "webhook-delivery",
}


@dataclass(frozen=True)
class Route:
    """One way of submitting a URL: the request body for a URL, what a refusal answers."""

    id: str
    path: str
    body: Callable[[str], dict[str, Any]]
    code: str
    field: str | None = None  # the field a refused callback names


ROUTES = [
    Route("v1-job", "/v1/jobs", lambda u: {"url": u}, "url_rejected", "url"),
    Route("v1-batch", "/v1/batches", lambda u: {"urls": [u]}, "no_valid_urls"),
    Route("legacy-job", "/functions/v1/submit-crawl-job", lambda u: {"url": u}, "url_rejected", "url"),
    Route("legacy-batch", "/functions/v1/submit-crawl-jobs-batch", lambda u: {"urls": [u]}, "no_valid_urls"),
    Route(
        "v1-job-callback",
        "/v1/jobs",
        lambda u: {"url": GOOD_URL, "callback_url": u},
        "url_rejected",
        "callback_url",
    ),
    Route(
        "v1-batch-callback",
        "/v1/batches",
        lambda u: {"urls": [GOOD_URL], "callback_url": u},
        "url_rejected",
        "callback_url",
    ),
    Route(
        "legacy-job-callback",
        "/functions/v1/submit-crawl-job",
        lambda u: {"url": GOOD_URL, "callbackUrl": u},
        "url_rejected",
        "callbackUrl",
    ),
    Route(
        "legacy-batch-callback",
        "/functions/v1/submit-crawl-jobs-batch",
        lambda u: {"urls": [GOOD_URL], "callbackUrl": u},
        "url_rejected",
        "callbackUrl",
    ),
]


def _reason(route: Route, body: dict[str, Any]) -> str:
    """The refusal's reason as the client sees it: the message, or the batch's one failure."""
    if route.code == "no_valid_urls":
        (failure,) = body["details"]["failures"]
        assert failure["index"] == 0
        return str(failure["reason"])
    assert body["details"]["field"] == route.field
    return str(body["error"])


@pytest.mark.parametrize("vector", SUBMIT_TIME, ids=[v.id for v in SUBMIT_TIME])
def test_submit_time_vector_is_refused_everywhere(
    client: TestClient,
    auth: dict[str, str],
    footprint: Callable[[], dict[str, int]],
    vector: Vector,
) -> None:
    before = footprint()
    for route in ROUTES:
        response = client.post(route.path, json=route.body(vector.target), headers=auth)
        assert response.status_code == 422, (route.id, response.text)
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert (body["success"], body["code"]) == (False, route.code), route.id
        assert vector.refusal in _reason(route, body), (route.id, body)
    assert footprint() == before


def test_a_batch_of_every_vector_keeps_only_the_good_url(
    client: TestClient, auth: dict[str, str], footprint: Callable[[], dict[str, int]]
) -> None:
    urls = [v.target for v in SUBMIT_TIME] + [GOOD_URL]
    for path, body, status in [
        ("/v1/batches", {"urls": urls, "batch_id": "ssrf-mix-v1"}, 201),
        ("/functions/v1/submit-crawl-jobs-batch", {"urls": urls, "batchId": "ssrf-mix-legacy"}, 200),
    ]:
        before = footprint()
        response = client.post(path, json=body, headers=auth)
        assert response.status_code == status, response.text
        answer = response.json()
        failures = answer["failures"]
        assert [f["index"] for f in failures] == list(range(len(SUBMIT_TIME)))
        for failure, vector in zip(failures, SUBMIT_TIME, strict=True):
            assert vector.refusal in failure["reason"], (vector.id, failure)
        after = footprint()
        assert after["crawl_jobs"] == before["crawl_jobs"] + 1
        assert after["crawl_batches"] == before["crawl_batches"] + 1
    mine = client.get("/v1/batches/ssrf-mix-v1", headers=auth).json()
    assert [job["url"] for job in mine["jobs"]] == [GOOD_URL]


# Tricks that look like a private target but name a public host (or a name only DNS at fetch time can judge):
# accepted, and what is stored says where the fetch will really go.
ACCEPTED = [
    ("backslash-userinfo", "http://example.com\\@127.0.0.1/", "http://example.com/%5C@127.0.0.1/"),
    ("private-looking-path", "http://example.com/127.0.0.1/", "http://example.com/127.0.0.1/"),
    (
        "private-in-query",
        "https://example.com/?next=http://10.0.0.1/",
        "https://example.com/?next=http://10.0.0.1/",
    ),
    ("unresolvable-name", "http://169.254.169.254.nip.example/", "http://169.254.169.254.nip.example/"),
]


@pytest.mark.parametrize(("raw", "stored"), [a[1:] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_lookalikes_of_a_public_host_are_stored_as_that_host(
    client: TestClient, auth: dict[str, str], raw: str, stored: str
) -> None:
    response = client.post("/v1/jobs", json={"url": raw}, headers=auth)
    assert response.status_code == 201, response.text
    assert response.json()["url"] == stored


def _test_function(where: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    path, _, name = where.partition("::")
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return node
    raise AssertionError(f"{where}: no such test")


def test_the_vector_table_names_every_vector_and_where_it_is_tested() -> None:
    ids = [v.id for v in VECTORS]
    assert len(ids) == len(set(ids)), "vector ids must be unique"
    assert len(SUBMIT_TIME) >= 20
    kinds = {v.kind for v in VECTORS}
    assert kinds >= REQUIRED_KINDS, REQUIRED_KINDS - kinds
    # Callback URLs get every submit-time vector, on both API generations.
    assert {r.field for r in ROUTES} >= {"callback_url", "callbackUrl"}
    assert {r.path.split("/")[1] for r in ROUTES} == {"v1", "functions"}
    for vector in VECTORS:
        node = _test_function(vector.where)
        if vector.where != HERE:
            # A fetch-time test aims at the forbidden origin on 127.0.0.2 (named in it or in a helper of its
            # module) and asserts the refusal.
            module = (ROOT / vector.where.partition("::")[0]).read_text(encoding="utf-8")
            source = ast.get_source_segment(module, node)
            assert source is not None
            assert "forbidden" in source or "127.0.0.2" in module, vector.id
            assert vector.refusal in source, (vector.id, vector.refusal)

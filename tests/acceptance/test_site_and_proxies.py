"""The acceptance fixtures themselves: every page of the test site and the behaviour of the test proxies.

Everything here talks to 127.0.0.1 only, except the proxy-refusal tests, which aim at 127.0.0.2 (a loopback
address too) and check that nothing arrived there.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
import time
import uuid
import zlib
from collections.abc import Iterator

import httpx
import pytest

from tests.acceptance.proxies import TestProxy
from tests.acceptance.site import (
    JS_MARKER,
    JS_RENDERED_TEXT,
    PDF_BYTES,
    PNG_BYTES,
    SUBREQUEST_DONE,
    TestSite,
    start_site,
)

BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
)


def client(proxy: TestProxy | str | None = None, **kwargs: object) -> httpx.Client:
    """An httpx client that ignores the environment's proxy settings."""
    url = proxy.url if isinstance(proxy, TestProxy) else proxy
    return httpx.Client(proxy=url, trust_env=False, timeout=10.0, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with client() as c:
        yield c


def key() -> str:
    return uuid.uuid4().hex[:12]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def basic(proxy: TestProxy) -> str:
    return "Basic " + base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(4096)
        if not piece:
            break
        data += piece
    return data


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One Content-Length-framed response from ``sock``: (head, body)."""
    data = read_head(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        piece = sock.recv(65536)
        assert piece, "connection closed mid-body"
        body += piece
    return head, body


def connect_tunnel(
    proxy: TestProxy, target: str, *, authorization: str | None
) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if authorization:
        request += f"Proxy-Authorization: {authorization}\r\n"
    sock.sendall((request + "\r\n").encode())
    return sock, read_head(sock)


# ---- the site ------------------------------------------------------------------------------------------------


def test_ok_page_and_hit_record(clean_site: TestSite, http: httpx.Client) -> None:
    response = http.get(clean_site.url("/ok/7?x=1"), headers={"User-Agent": "probe/1.0", "X-Extra": "yes"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 1500 <= len(response.content) <= 3000
    assert "<title>Test page 7</title>" in response.text
    assert "ok-page:7" in response.text
    assert 'href="/ok/final"' in response.text
    [hit] = clean_site.hits("/ok/7")
    assert (hit.method, hit.target, hit.path, hit.query) == ("GET", "/ok/7?x=1", "/ok/7", {"x": "1"})
    assert hit.user_agent == "probe/1.0"
    assert hit.headers["x-extra"] == "yes"
    assert hit.proxy is None
    assert hit.status == 200
    assert hit.client[0] == "127.0.0.1"
    assert clean_site.hits("/ok/7?x=1") == [hit]
    assert clean_site.hits("/ok/7?x=2") == []


def test_fast_page_and_keep_alive(clean_site: TestSite, http: httpx.Client) -> None:
    for n in range(20):
        response = http.get(clean_site.url(f"/fast/{n}"))
        assert response.status_code == 200
        assert f"fast-page:{n}" in response.text
        assert "<title>" in response.text
    ports = {hit.client[1] for hit in clean_site.hits()}
    assert len(ports) == 1, "one kept-alive connection serves all requests"


def test_head_and_post(clean_site: TestSite, http: httpx.Client) -> None:
    head = http.head(clean_site.url("/ok/h"))
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(http.get(clean_site.url("/ok/h")).content)
    assert http.post(clean_site.url("/ok/p"), content=b"a=1&b=2").status_code == 200
    assert http.post(clean_site.url("/ok/c"), content=iter([b"chunk-", b"ed"])).status_code == 200  # chunked
    assert [hit.body for hit in clean_site.hits("/ok/p")] == [b"a=1&b=2"]
    assert [hit.body for hit in clean_site.hits("/ok/c")] == [b"chunk-ed"]
    assert [hit.method for hit in clean_site.hits("/ok/h")] == ["HEAD", "GET"]


@pytest.mark.parametrize(
    ("agent", "status"),
    [
        ("python-httpx/0.28", 403),
        ("Scrapy/2.13.3 (+https://scrapy.org)", 403),
        ("Mozilla/5.0 (compatible; Scrapy/2.13)", 403),
        (BROWSER_UA, 200),
        (BROWSER_UA.replace("Chrome/", "HeadlessChrome/"), 200),
    ],
)
def test_ua_block(site: TestSite, http: httpx.Client, agent: str, status: int) -> None:
    response = http.get(site.url("/ua-block"), headers={"User-Agent": agent})
    assert response.status_code == status
    if status == 403:
        assert "Access Denied" in response.text
    else:
        assert "ua-ok" in response.text


@pytest.mark.parametrize(
    ("path", "via", "allowed"),
    [
        ("/needs-proxy", None, False),
        ("/needs-proxy", "premium_proxy", True),
        ("/needs-proxy", "ultra_proxy", True),
        ("/needs-premium-proxy", None, False),
        ("/needs-premium-proxy", "premium_proxy", True),
        ("/needs-premium-proxy", "ultra_proxy", True),
        ("/needs-ultra-proxy", None, False),
        ("/needs-ultra-proxy", "premium_proxy", False),
        ("/needs-ultra-proxy", "ultra_proxy", True),
    ],
)
def test_proxy_gated_pages(
    clean_site: TestSite, request: pytest.FixtureRequest, path: str, via: str | None, allowed: bool
) -> None:
    proxy: TestProxy | None = request.getfixturevalue(via) if via else None
    with client(proxy, headers={"User-Agent": BROWSER_UA}) as c:
        response = c.get(clean_site.url(path))
    [hit] = clean_site.hits(path)
    assert hit.proxy == (proxy.name if proxy else None)
    if allowed:
        assert response.status_code == 200
        assert f"proxy-ok:{hit.proxy}" in response.text
    else:
        assert response.status_code == 403
        assert "Just a moment..." in response.text
        assert "cf-chl" in response.text
        assert response.headers["cf-mitigated"] == "challenge"


def test_js_only_page_needs_the_script(site: TestSite, http: httpx.Client) -> None:
    response = http.get(site.url("/js-only"))
    assert response.status_code == 200
    assert "Please enable JavaScript to view this page" in response.text
    assert JS_RENDERED_TEXT not in response.text
    assert JS_MARKER not in response.text
    assert 'id="content"' in response.text
    assert "<script>" in response.text


def test_js_subrequest_page(site: TestSite, http: httpx.Client) -> None:
    target = "http://127.0.0.2:9/x?a=1&b=</script>"
    response = http.get(site.url("/js-subrequest"), params={"target": target})
    assert response.status_code == 200
    assert "fetch(" in response.text
    assert '"http://127.0.0.2:9/x?a=1&b=<\\/script>"' in response.text
    assert '</script>"' not in response.text
    assert SUBREQUEST_DONE in response.text  # in the script, set once the fetch settles
    assert http.get(site.url("/js-subrequest")).status_code == 400


def test_flaky_429_then_success(site: TestSite, http: httpx.Client) -> None:
    name, other = key(), key()
    statuses = [http.get(site.url(f"/flaky/{name}?fail=2")) for _ in range(4)]
    assert [r.status_code for r in statuses] == [429, 429, 200, 200]
    assert statuses[0].headers["retry-after"] == "1"
    assert f"flaky-ok:{name}" in statuses[2].text
    assert http.get(site.url(f"/flaky/{other}")).status_code == 429  # default fail=1, its own counter
    assert http.get(site.url(f"/flaky/{other}")).status_code == 200
    assert len(site.hits(f"/flaky/{name}")) == 4


def test_flaky_503_then_success_and_reset(site: TestSite, http: httpx.Client) -> None:
    name = key()
    assert [http.get(site.url(f"/flaky500/{name}?fail=3")).status_code for _ in range(4)] == [
        503,
        503,
        503,
        200,
    ]
    assert http.get(site.url(f"/flaky/{name}?fail=1")).status_code == 429  # /flaky counts separately
    site.reset()
    assert site.hits() == []
    assert http.get(site.url(f"/flaky500/{name}?fail=1")).status_code == 503  # the counter restarted


def test_always500_and_notfound(site: TestSite, http: httpx.Client) -> None:
    name = key()
    assert [http.get(site.url(f"/always500/{name}")).status_code for _ in range(3)] == [500, 500, 500]
    assert len(site.hits(f"/always500/{name}")) == 3
    assert [hit.status for hit in site.hits(f"/always500/{name}")] == [500, 500, 500]
    assert http.get(site.url("/notfound")).status_code == 404
    assert http.get(site.url("/no/such/page")).status_code == 404


def test_slow_page_does_not_block_others(site: TestSite) -> None:
    async def run() -> tuple[float, float, list[int]]:
        async with httpx.AsyncClient(trust_env=False, timeout=10.0) as c:
            started = time.monotonic()

            async def timed_ok() -> float:
                await asyncio.sleep(0.1)  # let the slow requests arrive first
                response = await c.get(site.url("/ok/while-slow"))
                assert response.status_code == 200
                return time.monotonic() - started

            slow1, slow2, ok_after = await asyncio.gather(
                c.get(site.url("/slow?delay=0.8")), c.get(site.url("/slow?delay=0.8")), timed_ok()
            )
            return ok_after, time.monotonic() - started, [slow1.status_code, slow2.status_code]

    ok_after, total, statuses = asyncio.run(run())
    assert statuses == [200, 200]
    assert ok_after < 0.5, "a fast page answers while slow ones sleep"
    assert 0.75 <= total < 1.5, "two slow pages sleep at the same time"


def test_redirect_chain(clean_site: TestSite) -> None:
    with client(follow_redirects=True) as c:
        response = c.get(clean_site.url("/redirect/3"))
    assert response.status_code == 200
    assert response.url.path == "/ok/final"
    assert [r.status_code for r in response.history] == [302, 302, 302]
    assert [hit.path for hit in clean_site.hits()] == [
        "/redirect/3",
        "/redirect/2",
        "/redirect/1",
        "/ok/final",
    ]


def test_redirect_to_any_url(site: TestSite, http: httpx.Client) -> None:
    target = "http://127.0.0.2:8080/private?x=1"
    response = http.get(site.url("/redirect-to"), params={"url": target})
    assert response.status_code == 302
    assert response.headers["location"] == target
    assert http.get(site.url("/redirect-to"), params={"url": "/ok/1", "status": "307"}).status_code == 307
    assert http.get(site.url("/redirect-to")).status_code == 400


@pytest.mark.parametrize("chunked", [False, True])
def test_huge_body_is_streamed(site: TestSite, http: httpx.Client, chunked: bool) -> None:
    query = "/huge?mb=3" + ("&chunked=1" if chunked else "")
    with http.stream("GET", site.url(query)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        if chunked:
            assert "content-length" not in response.headers
            assert response.headers["transfer-encoding"] == "chunked"
        else:
            assert response.headers["content-length"] == str(3 * 1024 * 1024)
        pieces = list(response.iter_bytes())
    body = b"".join(pieces)
    assert len(body) == 3 * 1024 * 1024
    assert body.startswith(b"<!DOCTYPE html>")
    assert body.endswith(b"</html>\n")
    head = http.head(site.url("/huge?mb=0.5"))
    assert head.headers["content-length"] == str(512 * 1024)
    assert head.content == b""
    assert len(http.get(site.url("/huge?mb=0.0001")).content) == 104


def test_binary_bodies(site: TestSite, http: httpx.Client) -> None:
    png = http.get(site.url("/binary"))
    assert (png.status_code, png.headers["content-type"], png.content) == (200, "image/png", PNG_BYTES)
    assert PNG_BYTES.startswith(b"\x89PNG\r\n\x1a\n")
    offset, tags = 8, []
    while offset < len(PNG_BYTES):
        (length,) = struct.unpack(">I", PNG_BYTES[offset : offset + 4])
        tag, data = PNG_BYTES[offset + 4 : offset + 8], PNG_BYTES[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", PNG_BYTES[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(tag + data)
        tags.append(tag)
        offset += 12 + length
    assert tags == [b"IHDR", b"IDAT", b"IEND"]

    pdf = http.get(site.url("/pdf"))
    assert (pdf.status_code, pdf.headers["content-type"], pdf.content) == (200, "application/pdf", PDF_BYTES)
    assert PDF_BYTES.startswith(b"%PDF-1.4") and PDF_BYTES.rstrip().endswith(b"%%EOF")
    xref = int(PDF_BYTES.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    assert PDF_BYTES[xref:].startswith(b"xref")

    empty = http.get(site.url("/empty"))
    assert (empty.status_code, empty.content, empty.headers["content-length"]) == (200, b"", "0")


def test_captcha_page(site: TestSite, http: httpx.Client) -> None:
    response = http.get(site.url("/captcha"))
    assert response.status_code == 200
    assert 'class="g-recaptcha"' in response.text
    assert 'src="/recaptcha/api.js"' in response.text
    assert http.get(site.url("/recaptcha/api.js")).headers["content-type"] == "text/javascript"


@pytest.mark.parametrize(
    "path",
    [
        "/ok/1",
        "/fast/1",
        "/ua-block",
        "/needs-proxy",
        "/js-only",
        "/captcha",
        "/flaky/x",
        "/slow?delay=0",
        "/notfound",
    ],
)
def test_pages_refer_to_no_other_host(site: TestSite, http: httpx.Client, path: str) -> None:
    """A browser rendering the site must have no reason to reach another host."""
    for agent in ("probe", BROWSER_UA):
        text = http.get(site.url(path), headers={"User-Agent": agent}).text
        assert "://" not in text


def test_bad_request_is_answered_400(site: TestSite) -> None:
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        head, _ = read_response(sock)
    assert head.startswith(b"HTTP/1.1 400")


def test_site_binds_only_loopback() -> None:
    with pytest.raises(ValueError):
        start_site("0.0.0.0")


# ---- the proxies ---------------------------------------------------------------------------------------------


def test_proxy_needs_credentials(clean_site: TestSite, premium_proxy: TestProxy) -> None:
    premium_proxy.reset()
    for proxy_url in (
        premium_proxy.server,
        f"http://{premium_proxy.username}:wrong@127.0.0.1:{premium_proxy.port}",
    ):
        with client(proxy_url) as c:
            response = c.get(clean_site.url("/ok/1"))
        assert response.status_code == 407
        assert response.headers["proxy-authenticate"] == 'Basic realm="test"'
    assert clean_site.hits() == []
    assert [(r.authorized, r.status) for r in premium_proxy.requests] == [(False, 407), (False, 407)]


def test_proxy_challenge_then_credentials_on_one_connection(
    clean_site: TestSite, premium_proxy: TestProxy
) -> None:
    """As Chromium does: a request without credentials, the 407, the same request with them."""
    with socket.create_connection(("127.0.0.1", premium_proxy.port), timeout=5) as sock:
        request = f"GET {clean_site.url('/ok/challenged')} HTTP/1.1\r\nHost: 127.0.0.1:{clean_site.port}\r\n"
        sock.sendall((request + "\r\n").encode())
        head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 407")
        sock.sendall((request + f"Proxy-Authorization: {basic(premium_proxy)}\r\n\r\n").encode())
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"ok-page:challenged" in body
    [hit] = clean_site.hits("/ok/challenged")
    assert hit.proxy == "premium"
    assert "proxy-authorization" not in hit.headers


def test_proxy_identification_and_forwarding(clean_site: TestSite, premium_proxy: TestProxy) -> None:
    premium_proxy.reset()
    with client(premium_proxy, headers={"X-Test-Proxy": "ultra"}) as c:  # a spoofed name is replaced
        assert c.get(clean_site.url("/ok/a?q=1"), headers={"User-Agent": BROWSER_UA}).status_code == 200
        assert c.post(clean_site.url("/ok/b"), content=b"payload").status_code == 200
        assert c.post(clean_site.url("/ok/c"), content=iter([b"chun", b"ked"])).status_code == 200
        head = c.head(clean_site.url("/huge?mb=2"))
        assert (head.status_code, head.headers["content-length"], head.content) == (
            200,
            str(2 * 1024 * 1024),
            b"",
        )
        assert c.get(clean_site.url("/redirect/2")).headers["location"] == "/redirect/1"
        assert c.get(clean_site.url(f"/flaky/{key()}?fail=1")).status_code == 429
        assert len(c.get(clean_site.url("/huge?mb=1&chunked=1")).content) == 1024 * 1024
        assert len(c.get(clean_site.url("/huge?mb=1")).content) == 1024 * 1024
        assert c.get(clean_site.url("/binary")).content == PNG_BYTES
        assert c.get(clean_site.url("/empty")).content == b""
    hits = clean_site.hits()
    assert {hit.proxy for hit in hits} == {"premium"}
    assert [hit.headers["x-test-proxy"] for hit in hits] == ["premium"] * len(hits)
    assert hits[0].target == "/ok/a?q=1" and hits[0].user_agent == BROWSER_UA
    assert [hit.body for hit in clean_site.hits("/ok/b")] == [b"payload"]
    assert [hit.body for hit in clean_site.hits("/ok/c")] == [b"chunked"]
    assert len({hit.client for hit in hits}) == 1, "the proxy keeps its upstream connection alive"
    assert len({request.client for request in premium_proxy.requests}) == 1
    assert [request.status for request in premium_proxy.requests] == [
        200,
        200,
        200,
        200,
        302,
        429,
        200,
        200,
        200,
        200,
    ]
    assert premium_proxy.forwarded() == premium_proxy.requests


def test_proxy_refuses_other_addresses_without_reaching_them(premium_proxy: TestProxy) -> None:
    premium_proxy.reset()
    with start_site("127.0.0.2") as forbidden:
        port = forbidden.port
        with client(premium_proxy) as c:
            for url in (
                forbidden.url("/ok/1"),
                f"http://localhost:{port}/ok/1",
                f"http://2130706434:{port}/ok/1",  # 127.0.0.2 as a decimal number
            ):
                response = c.get(url)
                assert response.status_code == 403, url
            assert c.post(forbidden.url("/ok/2"), content=b"x").status_code == 403
        # httpx writes an IPv6 target without its brackets, so this one goes by hand.
        with socket.create_connection(("127.0.0.1", premium_proxy.port), timeout=5) as sock:
            request = f"GET http://[::1]:{port}/ok/1 HTTP/1.1\r\nHost: [::1]:{port}\r\n"
            sock.sendall(f"{request}Proxy-Authorization: {basic(premium_proxy)}\r\n\r\n".encode())
            head, _ = read_response(sock)
            assert head.startswith(b"HTTP/1.1 403")
        for target in (f"127.0.0.2:{port}", f"localhost:{port}", f"[::1]:{port}"):
            sock, head = connect_tunnel(premium_proxy, target, authorization=basic(premium_proxy))
            sock.close()
            assert head.startswith(b"HTTP/1.1 403"), target
        assert forbidden.hits() == []
        assert premium_proxy.forwarded() == []
        with client() as c:  # the forbidden site was up all along
            assert c.get(forbidden.url("/ok/direct")).status_code == 200
        assert [hit.path for hit in forbidden.hits()] == ["/ok/direct"]


def test_proxy_answers_502_when_upstream_is_down(premium_proxy: TestProxy) -> None:
    with client(premium_proxy) as c:
        assert c.get(f"http://127.0.0.1:{free_port()}/ok/1").status_code == 502


def test_connect_tunnel(clean_site: TestSite, ultra_proxy: TestProxy) -> None:
    ultra_proxy.reset()
    sock, head = connect_tunnel(ultra_proxy, f"127.0.0.1:{clean_site.port}", authorization=None)
    sock.close()
    assert head.startswith(b"HTTP/1.1 407")

    sock, head = connect_tunnel(ultra_proxy, f"127.0.0.1:{clean_site.port}", authorization=basic(ultra_proxy))
    with sock:
        assert head.startswith(b"HTTP/1.1 200")
        for name in ("t1", "t2"):
            sock.sendall(f"GET /needs-ultra-proxy?n={name} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            response_head, body = read_response(sock)
            assert response_head.startswith(b"HTTP/1.1 200")
            assert b"proxy-ok:ultra" in body
    hits = clean_site.hits("/needs-ultra-proxy")
    assert [hit.target for hit in hits] == ["/needs-ultra-proxy?n=t1", "/needs-ultra-proxy?n=t2"]
    assert [hit.proxy for hit in hits] == ["ultra", "ultra"]  # identified by the tunnel's address
    assert "x-test-proxy" not in hits[0].headers
    assert [(r.method, r.status) for r in ultra_proxy.requests] == [("CONNECT", 407), ("CONNECT", 200)]

    # Once the tunnel is closed its address is forgotten: a later direct request is not taken for the proxy's.
    with client() as c:
        assert c.get(clean_site.url("/needs-ultra-proxy")).status_code == 403

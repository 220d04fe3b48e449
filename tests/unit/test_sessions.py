"""The pure parts of sessions (crawlproject/sessions.py): which cookies a URL gets, where a job starts when
its domain has a session, what a stored session may hold."""

from __future__ import annotations

from crawlproject.methods import DEFAULT_ORDER, Method
from crawlproject.sessions import Session, cheaper_start, proxy_identity, session_key

NOW = 1_800_000_000.0


def cookie(name: str, domain: str, *, path: str = "/", secure: bool = False, expires: float = -1) -> dict:
    return {
        "name": name,
        "value": f"v-{name}",
        "domain": domain,
        "path": path,
        "secure": secure,
        "expires": expires,
        "httpOnly": True,
        "sameSite": "Lax",
    }


def session(*cookies: dict) -> Session:
    return Session(id="s", tier="direct", domain="shop.example.com", cookies=cookies)


def test_a_url_gets_the_cookies_a_browser_would_send_it() -> None:
    jar = session(
        cookie("host", "shop.example.com"),
        cookie("parent", ".example.com"),
        cookie("other", "other.example.com"),
        cookie("deep", "shop.example.com", path="/cart"),
        cookie("secure", "shop.example.com", secure=True),
        cookie("expired", "shop.example.com", expires=NOW - 1),
        cookie("later", "shop.example.com", expires=NOW + 60),
    )
    assert (
        jar.cookie_header("http://shop.example.com/item", now=NOW)
        == "host=v-host; parent=v-parent; later=v-later"
    )
    https_cart = jar.cookie_header("https://shop.example.com/cart/1", now=NOW)
    assert https_cart is not None
    assert https_cart.startswith("deep=v-deep; ")  # the longer path first, as browsers order them
    assert "secure=v-secure" in https_cart
    assert (
        jar.cookie_header("http://shop.example.com/cartoon", now=NOW)
        == "host=v-host; parent=v-parent; later=v-later"
    )
    assert jar.cookie_header("http://example.com/", now=NOW) == "parent=v-parent"
    assert jar.cookie_header("http://evil-example.com/", now=NOW) is None
    assert jar.cookie_header("http://www.shop.example.com/", now=NOW) == "parent=v-parent"


def test_a_browser_start_gives_way_to_the_http_rung_of_a_tier_with_a_session() -> None:
    ladder = list(DEFAULT_ORDER)
    cheap = {m.tier: m for m in reversed(ladder) if m.engine != "browser"}  # each tier's cheapest other rung
    browser_direct = ladder.index(Method("browser", "direct"))
    browser_premium = ladder.index(Method("browser", "premium"))
    assert cheaper_start(ladder, browser_direct, {"direct"}) == ladder.index(cheap["direct"])
    assert cheaper_start(ladder, browser_premium, {"premium"}) == ladder.index(cheap["premium"])
    assert cheaper_start(ladder, browser_premium, {"direct"}) == browser_premium, "a session of another tier"
    assert cheaper_start(ladder, browser_direct, set()) == browser_direct
    http_premium = ladder.index(cheap["premium"])
    assert cheaper_start(ladder, http_premium, {"premium"}) == http_premium
    render_only = [m for m in ladder if m.engine == "browser"]
    assert cheaper_start(render_only, 0, {"direct"}) == 0, "a render job stays in the browser"


def test_a_stored_session_round_trips_and_bad_ones_are_dropped() -> None:
    kept = Session(
        id="abc",
        tier="premium",
        domain="example.com",
        cookies=(cookie("a", "example.com"),),
        user_agent="Mozilla/5.0 test",
        proxy=proxy_identity("http://user:secret@proxy.example.net:8080"),
    )
    assert kept.proxy == "proxy.example.net:8080", "never the proxy's credentials"
    assert Session.from_json(kept.to_json()) == kept
    assert Session.from_json("not json") is None
    assert Session.from_json('{"id": "x"}') is None
    assert Session.from_json('{"id": "x", "tier": "moon", "domain": "d", "cookies": []}') is None
    odd = Session.from_json(
        '{"id": "x", "tier": "direct", "domain": "d", "cookies": [1, {"name": "n"}, {"name": "n", "value": "v"}]}'
    )
    assert odd is not None and odd.cookies == ({"name": "n", "value": "v"},)


def test_session_keys_cannot_be_confused_between_tenants() -> None:
    assert session_key("p", "a:direct", "premium", "d") != session_key("p", "a", "direct", "premium:d")
    assert session_key("p", "t", "direct", "example.com") == "p:1:t:direct:example.com"

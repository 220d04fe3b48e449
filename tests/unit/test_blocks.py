"""Block detection (crawlproject.blocks): every signature on a realistic page, statuses, content types, and the
ordinary pages that must not look blocked."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crawlproject.blocks import DEFAULT_RULES, Block, BlockRules, _visible_in, detect_block, visible_chars
from crawlproject.signatures import HeaderSignature, Signature, literal, signature

HTML = "text/html; charset=utf-8"
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
)


def detect(
    body: bytes | str,
    status: int = 200,
    content_type: str | None = HTML,
    *,
    headers: dict[str, str] | None = None,
    rules: BlockRules = DEFAULT_RULES,
    rendered: bool = False,
) -> str | None:
    """The block's reason, or None."""
    block = detect_block(
        status=status, headers=headers, body=body, content_type=content_type, rules=rules, rendered=rendered
    )
    return None if block is None else block.reason


def page(title: str, body: str, head: str = "") -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>{head}</head>'
        f"<body>{body}</body></html>"
    )


LOREM = (
    "Our widgets are machined from a single block of aluminium, anodised in six colours and tested by hand "
    "before they leave the workshop. Each one ships with a two-year warranty and free returns. "
)


def product_page(extra: str = "", paragraphs: int = 12, head: str = "") -> str:
    """An ordinary shop page: navigation, a product, reviews, a footer, well over a thousand visible
    characters."""
    nav = "".join(f'<li><a href="/c/{i}">Category {i}</a></li>' for i in range(12))
    reviews = "".join(f'<div class="review"><p>{LOREM}</p><span>5/5</span></div>' for _ in range(paragraphs))
    return page(
        "Acme Widget 3000 | Acme Store",
        f"<header><nav><ul>{nav}</ul></nav></header><main><h1>Acme Widget 3000</h1>"
        f'<img src="/img/widget.jpg" alt="Widget"><p class="price">$49.99</p>{reviews}{extra}</main>'
        '<footer><a href="/privacy">Privacy</a> <a href="/terms">Terms</a></footer>',
        head=head + '<script src="/static/app.js" type="text/javascript"></script>',
    )


# --- Challenge pages: blocks whatever their size and status ---------------------------------------------------

CLOUDFLARE_CHALLENGE = page(
    "Just a moment...",
    '<div class="main-wrapper"><h1 class="zone-name-title h1">shop.example</h1>'
    '<h2 id="challenge-running">Checking if the site connection is secure</h2>'
    '<noscript><span id="challenge-error-text">Enable JavaScript and cookies to continue</span></noscript></div>'
    "<script>(function(){window._cf_chl_opt={cvId: '3',cZone: \"shop.example\",cType: 'managed'};"
    "var cpo=document.createElement('script');"
    "cpo.src='/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1?ray=8a1b2c3d4e5f6a7b';}());</script>",
)
CLOUDFLARE_CHALLENGE_LOCALISED = page(
    "Un instant…",
    "<script>(function(){window._cf_chl_opt={cvId: '3',cZone: \"shop.example\"};}());</script>",
)
CLOUDFLARE_BLOCK = page(
    "Attention Required! | Cloudflare",
    '<div id="cf-wrapper"><h1 data-translate="block_headline">Sorry, you have been blocked</h1>'
    "<h2>You are unable to access shop.example</h2><p>This website is using a security service to protect "
    "itself from online attacks.</p></div>",
)
PERIMETERX = page(
    "Access to this page has been denied.",
    '<div class="px-captcha-container"><div id="px-captcha"></div></div>'
    "<p>Press &amp; Hold to confirm you are a human (and not a bot).</p>"
    "<script>window._pxAppId = 'PXabc123';</script>",
)
PERIMETERX_UNTITLED = page("shop.example", '<div id="px-captcha"></div>' + f"<p>{LOREM * 20}</p>")
DATADOME = (
    "<html><head><title>shop.example</title><style>#cmsg{animation: A 1.5s;}</style></head>"
    "<body><script>var dd={'rt':'c','cid':'AHrlqAAAAAMA','hsh':'2211F522B61E269B869FA6EAFFB5E1',"
    "'t':'fe','host':'geo.captcha-delivery.com'}</script>"
    '<iframe src="https://geo.captcha-delivery.com/captcha/?initialCid=AHrlqAAAAAMA" width="100%" '
    'height="100%"></iframe></body></html>'
)
INCAPSULA_IFRAME = (
    '<html style="height:100%"><head><META NAME="ROBOTS" CONTENT="NOINDEX, NOFOLLOW"></head>'
    '<body style="margin:0px;height:100%"><iframe id="main-iframe" '
    'src="/_Incapsula_Resource?CWUDNSAI=23&xinfo=11-10860617-0%200NNN%20RT&incident_id=1234" frameborder=0 '
    'width="100%" height="100%">Request unsuccessful. Incapsula incident ID: 1234-5678</iframe></body></html>'
)
INCAPSULA_TEXT = page("shop.example", "<p>Request unsuccessful. Incapsula incident ID: 1234000870-5678</p>")
AKAMAI = (
    "<HTML><HEAD>\n<TITLE>Access Denied</TITLE>\n</HEAD><BODY>\n<H1>Access Denied</H1>\n \n"
    'You don\'t have permission to access "http&#58;&#47;&#47;shop&#46;example&#47;" on this server.<P>\n'
    "Reference&#32;&#35;18&#46;5e3c1002&#46;1700000000&#46;2a1b3c4d\n</BODY>\n</HTML>\n"
)
AKAMAI_ENTITY = page("shop.example", "<p>You don&#39;t have permission to access this resource.</p>")
AKAMAI_CURLY = page(
    "shop.example", "<p>You don\u2019t have permission to access this page on this server.</p>"
)
DISTIL = page(
    "Pardon Our Interruption",
    "<h1>Pardon Our Interruption...</h1><p>As you were browsing something about your browser made us think "
    "you were a bot.</p>",
)
DISTIL_CAPTCHA = page("shop.example", '<form id="distilCaptchaForm"><div id="distil_r_captcha"></div></form>')
GOOGLE_SORRY = page(
    "https://www.google.com/search?q=widgets",
    '<div id="infoDiv0"><p>Our systems have detected unusual traffic from your computer network. This page '
    "checks to see if it's really you sending the requests, and not a robot.</p>"
    '<a href="//www.google.com/policies/terms/">Terms of Service</a></div>',
)

CHALLENGES = [
    ("cloudflare", CLOUDFLARE_CHALLENGE, "signature: cloudflare challenge"),
    ("cloudflare-localised", CLOUDFLARE_CHALLENGE_LOCALISED, "signature: cloudflare challenge"),
    ("cloudflare-block", CLOUDFLARE_BLOCK, "signature: cloudflare block"),
    ("perimeterx", PERIMETERX, "signature: perimeterx captcha"),
    ("perimeterx-on-a-long-page", PERIMETERX_UNTITLED, "signature: perimeterx captcha"),
    ("datadome", DATADOME, "signature: datadome captcha"),
    ("incapsula-iframe", INCAPSULA_IFRAME, "signature: incapsula block"),
    ("akamai", AKAMAI, "signature: akamai access denied"),
    ("distil", DISTIL, "signature: distil interruption"),
    ("distil-captcha", DISTIL_CAPTCHA, "signature: distil interruption"),
]


@pytest.mark.parametrize(("body", "reason"), [c[1:] for c in CHALLENGES], ids=[c[0] for c in CHALLENGES])
@pytest.mark.parametrize("status", [200, 403, 429, 503])
def test_challenge_pages_are_blocks_with_their_name(body: str, reason: str, status: int) -> None:
    assert detect(body.encode(), status) == reason
    assert detect(body, status) == reason  # a browser's str body
    assert detect(body.upper().encode(), status) == reason  # case does not matter


@pytest.mark.parametrize(("body", "reason"), [c[1:] for c in CHALLENGES], ids=[c[0] for c in CHALLENGES])
def test_a_challenge_stays_a_challenge_in_the_browser(body: str, reason: str) -> None:
    assert detect(body, rendered=True) == reason


def test_a_challenge_inside_a_long_ordinary_page_is_still_found() -> None:
    body = product_page(extra='<div id="px-captcha"></div>', paragraphs=40)
    assert visible_chars(body.lower()) > 5000
    assert detect(body) == "signature: perimeterx captcha"


def test_the_cloudflare_header_is_a_challenge_on_any_page() -> None:
    headers = {"Server": "cloudflare", "CF-Mitigated": "challenge"}
    assert detect(b"", 403, headers=headers) == "signature: cloudflare challenge"
    assert (
        detect(product_page(), 200, headers={"cf-mitigated": "Challenge"})
        == "signature: cloudflare challenge"
    )
    assert detect(product_page(), 200, headers={"cf-ray": "8a1b2c3d4e5f6a7b-AMS"}) is None


# --- Small-page signatures: blocks only when the page has little else -----------------------------------------

RECAPTCHA_PAGE = page(
    "One more step",
    "<h1>One more step</h1><p>Please complete the security check to access this site.</p>"
    '<form action="/verify" method="POST"><div class="g-recaptcha" data-sitekey="6LeIxAcTAAAAAJcZ"></div>'
    '<input type="submit" value="Submit"></form>',
    head='<script src="https://www.google.com/recaptcha/api.js" async defer></script>',
)
HCAPTCHA_PAGE = page(
    "Security check",
    '<form><div class="h-captcha" data-sitekey="10000000-ffff-ffff-ffff-000000000001"></div></form>',
    head='<script src="https://js.hcaptcha.com/1/api.js" async defer></script>',
)
TURNSTILE_PAGE = page(
    "shop.example",
    '<form><div class="cf-turnstile" data-sitekey="1x00000000000000000000AA"></div></form>',
    head='<script src="https://challenges.cloudflare.com/turnstile/v0/api.js" async defer></script>',
)
HUMAN_PAGE = page("Checking your browser", "<p>Please verify you are human to continue.</p>")
ROBOT_PAGE = page("shop.example", "<h1>Are you a robot?</h1><p>Solve the captcha below.</p>")
ACCESS_DENIED_PAGE = page("Error", "<h1>Access denied</h1><p>Error 1020. Ray ID: 8a1b2c3d4e5f6a7b</p>")
FORBIDDEN_PAGE = page("shop.example", "<p>Access forbidden.</p>")
BOT_DETECTION_PAGE = page("Hold on", "<p>Our bot detection flagged this request. Contact support.</p>")
SUSPICIOUS_PAGE = page("Hold on", "<p>We have detected unusual activity from your network.</p>")
BLOCKED_PAGE = page("Blocked", "<p>Your IP address has been blocked.</p>")
REQUEST_BLOCKED_PAGE = "<html><body>Request blocked.</body></html>"

SMALL_PAGES = [
    ("incapsula-text", INCAPSULA_TEXT, "signature: incapsula block"),
    ("akamai-entity", AKAMAI_ENTITY, "signature: akamai access denied"),
    ("akamai-curly-quote", AKAMAI_CURLY, "signature: akamai access denied"),
    ("google", GOOGLE_SORRY, "signature: google unusual traffic"),
    ("recaptcha", RECAPTCHA_PAGE, "signature: captcha"),
    ("hcaptcha", HCAPTCHA_PAGE, "signature: captcha"),
    ("turnstile", TURNSTILE_PAGE, "signature: captcha"),
    ("verify-human", HUMAN_PAGE, "signature: captcha"),
    ("robot", ROBOT_PAGE, "signature: captcha"),
    ("access-denied", ACCESS_DENIED_PAGE, "signature: access denied"),
    ("access-forbidden", FORBIDDEN_PAGE, "signature: access denied"),
    ("bot-detection", BOT_DETECTION_PAGE, "signature: bot detection"),
    ("unusual-activity", SUSPICIOUS_PAGE, "signature: bot detection"),
    ("ip-blocked", BLOCKED_PAGE, "signature: blocked"),
    ("request-blocked", REQUEST_BLOCKED_PAGE, "signature: blocked"),
]


@pytest.mark.parametrize(("body", "reason"), [c[1:] for c in SMALL_PAGES], ids=[c[0] for c in SMALL_PAGES])
@pytest.mark.parametrize("status", [200, 403, 503])
def test_small_block_pages_are_blocks(body: str, reason: str, status: int) -> None:
    assert detect(body.encode(), status) == reason


@pytest.mark.parametrize(("body", "reason"), [c[1:] for c in SMALL_PAGES], ids=[c[0] for c in SMALL_PAGES])
def test_the_same_words_on_an_ordinary_page_are_no_block(body: str, reason: str) -> None:
    # The small page's body, embedded in a shop page with plenty of text around it.
    inner = re.search(r"<body>(.*)</body>", body, re.DOTALL)
    assert inner is not None
    assert detect(product_page(extra=f"<aside>{inner.group(1)}</aside>")) is None


def test_a_normal_page_that_mentions_captcha_in_a_footer_link_is_no_block() -> None:
    body = product_page(extra='<p><a href="/help/captcha">Why do we show a captcha?</a></p>')
    assert detect(body) is None
    # Even a small page: the bare word "captcha" is no signature.
    small = page("Help", '<p><a href="/help/captcha">Why do we show a captcha?</a></p><p>See our FAQ.</p>')
    assert detect(small) is None


def test_a_contact_form_with_recaptcha_on_an_ordinary_page_is_no_block() -> None:
    form = (
        '<form action="/contact"><textarea name="message"></textarea><div class="g-recaptcha"></div></form>'
    )
    assert detect(product_page(extra=form, head='<script src="/recaptcha/api.js"></script>')) is None


@pytest.mark.parametrize(
    "snippet",
    [
        # Cloudflare's bot-management script, injected into ordinary pages.
        "<script>(function(){var a=document.createElement('script');"
        "a.src='/cdn-cgi/challenge-platform/scripts/jsd/main.js';})();</script>",
        # Incapsula's script, injected into ordinary pages.
        '<script src="/_Incapsula_Resource?SWJIYLWA=719d34d31c8e3a6e6fffd425f7e032f3"></script>',
        # DataDome's tag and PerimeterX's client on protected but unblocked pages.
        '<script src="https://js.datadome.co/tags.js" async></script>',
        "<script>window._pxAppId='PXabc123';</script><script src='/PXabc123/init.js'></script>",
        # Words in ordinary text.
        "<p>Access denied errors are explained in our help centre.</p>",
        "<p>Read about our bot detection research.</p>",
        '<meta name="robots" content="index,follow">',
        "<p>Blocked drains? Call us.</p>",
        "<noscript>Please enable JavaScript for the best experience.</noscript>",
    ],
)
def test_ordinary_pages_of_protected_sites_are_no_block(snippet: str) -> None:
    assert detect(product_page(extra=snippet)) is None


def test_a_small_ordinary_page_is_no_block() -> None:
    for body in (
        page("Page 1", "<h1>Page 1</h1><p>Hello</p>"),
        "<html><body>ok</body></html>",
        "pong",
        page("Gallery", '<img src="/a.jpg"><img src="/b.jpg">'),
        page("Links", '<a href="/a"></a><a href="/b"></a>'),
        page("Form", '<form action="/search"><input name="q"></form>'),
    ):
        assert detect(body) is None, body


# --- Pages that need JavaScript -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (CLOUDFLARE_CHALLENGE, 200, Block("challenge", "cloudflare challenge")),
        (DISTIL, 200, Block("challenge", "distil interruption")),
        (PERIMETERX, 403, Block("captcha", "perimeterx captcha")),
        (DATADOME, 403, Block("captcha", "datadome captcha")),
        (RECAPTCHA_PAGE, 200, Block("captcha", "captcha")),
        (GOOGLE_SORRY, 429, Block("captcha", "google unusual traffic")),
        (AKAMAI, 403, Block("access_denied", "akamai access denied")),
        (CLOUDFLARE_BLOCK, 403, Block("access_denied", "cloudflare block")),
        (BLOCKED_PAGE, 200, Block("access_denied", "blocked")),
        (
            page("Loading...", '<div id="app">Please enable JavaScript.</div>'),
            200,
            Block("needs_javascript", "needs javascript"),
        ),
        (
            page("App", '<div id="root"></div><script src="/app.js"></script>'),
            200,
            Block("needs_javascript", "needs javascript"),
        ),
        (product_page(), 403, Block("status", "status 403")),
        ("<html><body></body></html>", 200, Block("empty_body", "empty body")),
    ],
)
def test_a_block_says_what_the_site_did(body: str, status: int, expected: Block) -> None:
    assert detect_block(status=status, headers=None, body=body, content_type=HTML) == expected


JS_PAGES = [
    (
        "create-react-app",
        page(
            "React App",
            '<noscript>You need to enable JavaScript to run this app.</noscript><div id="root"></div>'
            '<script src="/static/js/main.8e5d3c.js"></script>',
        ),
    ),
    ("please-enable", page("Loading...", '<div id="app">Please enable JavaScript to view this page.</div>')),
    ("required", page("shop.example", "<p>JavaScript is required to use this site.</p>")),
    ("disabled", page("shop.example", "<p>JavaScript is disabled in your browser.</p>")),
    ("must-be-enabled", page("shop.example", "<p>JavaScript must be enabled.</p>")),
    ("requires", page("shop.example", "<p>This application requires JavaScript.</p>")),
    ("turn-on", page("shop.example", "<p>Turn on JavaScript and reload.</p>")),
    (
        "app-shell",
        page(
            "Shop",
            '<div id="__app"></div><script>window.__STATE__={"page":"product"}</script>'
            '<script src="/bundle.js"></script>',
        ),
    ),
    (
        "many-script-tags-before-the-notice",
        page(
            "Shop",
            '<script type="text/javascript">var a=1;</script>' * 80
            + "<noscript>Please enable JavaScript.</noscript>",
        ),
    ),
]


@pytest.mark.parametrize("body", [c[1] for c in JS_PAGES], ids=[c[0] for c in JS_PAGES])
def test_pages_that_need_javascript(body: str) -> None:
    assert detect(body.encode()) == "needs javascript"


@pytest.mark.parametrize("body", [c[1] for c in JS_PAGES[:-2]], ids=[c[0] for c in JS_PAGES[:-2]])
def test_a_403_that_asks_for_javascript_needs_javascript(body: str) -> None:
    # A JavaScript challenge behind a 403: the browser is the next step, not another proxy.
    assert detect(body.encode(), 403) == "needs javascript"


def test_a_403_app_shell_is_a_status_block() -> None:
    # An empty shell is judged as such only on a 2xx page; on a 403 the status speaks.
    assert detect(JS_PAGES[-2][1], 403) == "status 403"


@pytest.mark.parametrize("body", [c[1] for c in JS_PAGES], ids=[c[0] for c in JS_PAGES])
def test_a_rendered_page_never_needs_javascript(body: str) -> None:
    assert detect(body, rendered=True) in (None, "empty body")


def test_a_rendered_app_shell_that_stayed_empty_is_an_empty_body() -> None:
    shell = page("Shop", '<div id="__app"></div><script src="/bundle.js"></script>')
    assert detect(shell, rendered=True) == "empty body"


def test_a_long_page_with_a_noscript_notice_does_not_need_javascript() -> None:
    body = product_page(extra="<noscript>You need to enable JavaScript to run this app.</noscript>")
    assert detect(body) is None


# --- Statuses -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 406, 407, 451])
def test_block_statuses(status: int) -> None:
    body = page("Forbidden", "<h1>Forbidden</h1>").encode()
    assert detect(body, status) == f"status {status}"
    assert detect(product_page(), status) == f"status {status}"
    assert detect(PNG, status, "image/png") == f"status {status}"
    assert detect(b"", status, None) == f"status {status}"


@pytest.mark.parametrize("status", [429, 503])
def test_rate_limits_and_outages_are_no_block_without_a_signature(status: int) -> None:
    assert detect(page("Too Many Requests", "<h1>Slow down.</h1>"), status) is None
    assert detect(b"", status) is None


@pytest.mark.parametrize("status", [301, 302, 304, 400, 404, 410, 500, 502, 504])
def test_other_statuses_are_never_blocks(status: int) -> None:
    assert detect(CLOUDFLARE_CHALLENGE, status) is None
    assert detect(b"", status) is None


def test_a_header_signature_counts_on_any_status() -> None:
    assert detect(b"", 500, headers={"cf-mitigated": "challenge"}) == "signature: cloudflare challenge"


# --- Empty bodies and content types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   \n\t ",
        b"<html><head></head><body></body></html>",
        b"<!DOCTYPE html><html><head><title>x</title><style>body{}</style></head><body>\n  \n</body></html>",
        b"<html><body><!-- nothing for you --></body></html>",
    ],
)
def test_empty_html_pages(body: bytes) -> None:
    assert detect(body) == "empty body"
    assert detect(body, content_type=None) == "empty body"  # no content type: judged as HTML


@pytest.mark.parametrize("status", [204, 205])
def test_no_content_statuses_are_not_empty_bodies(status: int) -> None:
    assert detect(b"", status) is None


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("image/png", PNG),
        ("image/png", b""),
        ("application/pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"),
        ("application/octet-stream", b""),
        ("application/zip", b"PK\x03\x04"),
        ("font/woff2", b"wOF2"),
        ("video/mp4", b"\x00\x00\x00\x18ftypmp42"),
        (None, PNG),  # no content type, sniffed as binary
        (None, b"%PDF-1.7"),
        (None, b"\x00\x01\x02captcha-delivery.com"),
    ],
)
def test_binary_content_is_never_a_signature_or_empty_block(content_type: str | None, body: bytes) -> None:
    assert detect(body, 200, content_type) is None


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{}"),
        ("application/json", b""),
        ("text/plain", b""),
        ("text/plain; charset=utf-8", b"OK"),
        ("application/xml", b"<feed></feed>"),
        ("application/rss+xml", b"<rss><channel></channel></rss>"),
        ("text/css", b""),
    ],
)
def test_text_that_is_not_html_is_never_an_empty_body(content_type: str, body: bytes) -> None:
    assert detect(body, 200, content_type) is None


def test_text_content_is_still_checked_for_signatures() -> None:
    body = b'{"url":"https://geo.captcha-delivery.com/captcha/?initialCid=AHrlqAAAAAMA"}'
    assert detect(body, 200, "application/json") == "signature: datadome captcha"
    assert detect(b"Access denied", 200, "text/plain") == "signature: access denied"


def test_the_content_type_falls_back_to_the_header() -> None:
    assert detect(PNG, content_type=None, headers={"Content-Type": "image/png"}) is None
    assert detect(b"", content_type=None, headers={"CONTENT-TYPE": "application/json"}) is None
    assert detect(b"", content_type=None, headers={"content-type": "text/html"}) == "empty body"


# --- The scan window ------------------------------------------------------------------------------------------


def test_only_the_first_scan_bytes_are_read() -> None:
    rules = BlockRules(scan_bytes=4096)
    filler = "<p>" + "x" * 5000 + "</p>"
    late = page("shop.example", filler + '<div id="px-captcha"></div>')
    early = page("shop.example", '<div id="px-captcha"></div>' + filler)
    assert detect(late, rules=rules) is None
    assert detect(early, rules=rules) == "signature: perimeterx captcha"
    assert detect(late) == "signature: perimeterx captcha"  # 64 KB by default


def test_a_body_longer_than_the_window_is_never_small_or_empty() -> None:
    # An enormous inline style fills the window: no visible text in it, but the page goes on.
    body = (
        "<html><head><style>"
        + "a{color:red}" * 10_000
        + "</style></head><body>"
        + LOREM * 50
        + "</body></html>"
    )
    assert len(body) > DEFAULT_RULES.scan_bytes
    assert detect(body) is None
    assert detect("<p>Access denied</p>" + " " * 70_000) is None


def test_a_body_cut_inside_a_multibyte_character_is_fine() -> None:
    rules = BlockRules(scan_bytes=1024)
    body = ("é" * 600).encode() + b"<p>px-captcha</p>"
    assert detect(body, rules=rules) is None
    assert (
        detect(CLOUDFLARE_CHALLENGE.encode("utf-8") + "ü".encode() * 10) == "signature: cloudflare challenge"
    )


# --- Rules as data --------------------------------------------------------------------------------------------


def test_rules_can_be_changed() -> None:
    rules = BlockRules(
        status_codes=frozenset({403, 999}),
        challenge_status_codes=frozenset(),
        signatures=(literal("shop outage page", "our elves are fixing it"),),
        header_signatures=(HeaderSignature("waf", "x-waf-action", re.compile("deny", re.IGNORECASE)),),
    )
    assert detect(b"", 401, rules=rules) is None
    assert detect(page("x", "<h1>Nope</h1>"), 999, rules=rules) == "status 999"
    assert (
        detect(product_page(extra="<p>Our elves are fixing it.</p>"), rules=rules)
        == "signature: shop outage page"
    )
    assert detect(CLOUDFLARE_CHALLENGE, rules=rules) is None
    assert detect(CLOUDFLARE_CHALLENGE, 503, rules=rules) is None  # no challenge statuses
    assert detect(product_page(), headers={"X-WAF-Action": "DENY"}, rules=rules) == "signature: waf"


def test_thresholds_can_be_changed() -> None:
    tiny = page("Hi", "<p>Hello there</p>")
    assert detect(tiny) is None
    assert detect(tiny, rules=BlockRules(min_text_chars=20)) == "empty body"
    assert detect(ACCESS_DENIED_PAGE, rules=BlockRules(small_page_chars=10)) is None


def test_a_title_signature_of_a_small_page_kind() -> None:
    sig = signature("maintenance", r"^\s*down for maintenance", kind="small_page", scope="title")
    rules = BlockRules(signatures=(sig,))
    assert detect(page("Down for maintenance", "<p>Back soon.</p>"), rules=rules) == "signature: maintenance"
    assert (
        detect(product_page().replace("Acme Widget 3000 | Acme Store", "Down for maintenance"), rules=rules)
        is None
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BlockRules(scan_bytes=100), "scan_bytes"),
        (lambda: BlockRules(small_page_chars=-1), "must be >= 0"),
        (lambda: Signature("x", re.compile("x"), ()), "needs at least one needle"),
        (lambda: Signature("x", re.compile("x"), ("X",)), "lowercase"),
        (lambda: Signature("x", re.compile("x"), ("",)), "lowercase"),
        (lambda: Signature("x", re.compile("x"), ("x",), kind="javascript"), "need javascript"),
        (lambda: Signature("x", re.compile("x"), ("x",), block="needs_javascript"), "need javascript"),
    ],
)
def test_bad_rules_are_rejected(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


SAMPLES = [c[1] for c in CHALLENGES] + [c[1] for c in SMALL_PAGES] + [c[1] for c in JS_PAGES]


@pytest.mark.parametrize("body", SAMPLES)
def test_every_match_of_a_default_page_signature_contains_one_of_its_needles(body: str) -> None:
    # The needles are a prefilter: a pattern whose matches could miss them would never fire.
    text = body.lower()
    for sig in DEFAULT_RULES.signatures:
        if sig.scope == "page":
            for match in sig.pattern.finditer(text):
                assert any(needle in match.group(0) for needle in sig.needles), (sig.name, match.group(0))
                assert len(match.group(0)) <= 128


def test_many_occurrences_of_a_challenge_needle_before_the_marker() -> None:
    body = page("Help", "<p>What is a captcha?</p>" * 100 + '<div id="px-captcha"></div>')
    assert detect(body) == "signature: perimeterx captcha"


def test_many_occurrences_of_a_small_page_needle_on_a_long_page() -> None:
    links = '<a href="javascript:void(0)">more</a>' * 100
    assert detect(product_page(extra=links + "<noscript>Please enable JavaScript.</noscript>")) is None
    assert (
        detect(page("Shop", links + "<noscript>Please enable JavaScript.</noscript>")) == "needs javascript"
    )


def test_visible_chars() -> None:
    html = (
        "<html><head><title>Title</title><style>p{}</style></head><body><!-- c --><script>var x = 1;</script>"
        "<noscript>enable js</noscript><template><p>later</p></template><p>Hello   <b>world</b></p></body></html>"
    )
    assert visible_chars(html) == len("Helloworld")
    assert visible_chars("<P>ABC</P><SCRIPT>ignored()</SCRIPT>") == 3
    assert visible_chars("") == 0


# -- what a reader sees, counted in linear time ----------------------------------------------------------

# The regular expressions that defined "hidden" and "tag" before the scanner (quadratic on openings never
# closed): the scanner must count exactly as they did.
_REFERENCE_HIDDEN = re.compile(
    r"<(script|style|noscript|template|head)\b[^>]*>.*?</\1\s*>|<!--.*?-->", re.DOTALL
)
_REFERENCE_OPEN_HIDDEN = re.compile(r"<(?:script|style|noscript|template|head)\b|<!--")
_REFERENCE_TAG = re.compile(r"<[^>]*>")


def _reference_visible(html: str, *, cut: bool) -> int:
    text = _REFERENCE_HIDDEN.sub("", html.lower())
    if cut:
        unclosed = _REFERENCE_OPEN_HIDDEN.search(text)
        if unclosed is not None:
            text = text[: unclosed.start()]
        last_open = text.rfind("<")
        if last_open > text.rfind(">"):
            text = text[:last_open]
    text = _REFERENCE_TAG.sub("", text)
    return len(text) - sum(text.count(space) for space in " \t\n\r\x0b\x0c\xa0")


_PIECES = (
    "<", ">", "<!--", "-->", "--", "<!-->", "<script", "<script>", "<SCRIPT type=x>", "</script>", "</script >",
    "<scripts>", "<style>", "</style\n>", "<head>", "</head>", "<noscript>", "</noscript>", "<template>",
    "</template>", "<b>", "</b>", "<a href='>'>", "word", " ", "\n", "é", "x>", "<<", "<!---->",
)  # fmt: skip


@given(st.lists(st.sampled_from(_PIECES), max_size=40), st.booleans())
@settings(max_examples=400, deadline=None, derandomize=True, database=None)
def test_the_scanner_counts_as_the_regular_expressions_did(pieces: list[str], cut: bool) -> None:
    html = "".join(pieces)
    assert _visible_in(html, cut=cut) == _reference_visible(html, cut=cut)


@pytest.mark.parametrize(
    "page",
    [
        "<!--" * 2000,
        "<" * 4000,
        "<a" * 2000,
        "<script" * 1000,
        "<style>" * 1000,
        "text <!-- a comment --> more " * 300 + "<!--" * 1000,
        "<script>x</script>" * 200 + "<head>" * 1000,
    ],
    ids=["comments", "lt", "tag-openings", "script-openings", "styles", "closed-then-open", "heads"],
)
def test_pages_of_openings_never_closed_count_as_before(page: str) -> None:
    # The hostile pages of issue 10 (finding 7), at a size the old regular expressions still finish quickly.
    for cut in (False, True):
        assert _visible_in(page, cut=cut) == _reference_visible(page, cut=cut)

"""Block detection as data: status codes, header and page signatures, and the rules that combine them.

``detect_block`` runs on every response, so it looks at the first ``scan_bytes`` of the body only and matches
all page signatures with one precompiled regex. It answers None or a short reason:

- ``"signature: <name>"``: a header or page signature matched. *Challenge* signatures are markers that only
  bot-protection pages carry (Cloudflare's challenge script, PerimeterX's ``px-captcha``, DataDome's
  ``captcha-delivery.com``, Incapsula's block iframe, Akamai's "You don't have permission to access"...): they
  count anywhere in the scanned body. *Small-page* signatures are words that an ordinary page may also carry
  (a reCAPTCHA widget on a contact form, "access denied" in an article, "bot detection" in a footer): they
  count only when the page has little else, under ``small_page_chars`` characters of visible text. The bare
  word "captcha" is no signature at all: a footer link to a captcha policy blocks nothing.
- ``"needs javascript"``: the page is small and asks for JavaScript ("Please enable JavaScript", "You need to
  enable JavaScript to run this app"), or it has no visible text at all, only scripts (an app shell). Its own
  reason because it escalates to a browser engine, not to a proxy tier. Never said of a rendered page.
- ``"status <code>"``: a status that means "not you" (``status_codes``: 401, 403, 406, 407, 451).
- ``"empty body"``: a 2xx HTML page with nothing in it: no visible text (under ``min_text_chars``), no links,
  images, media or forms.

Statuses 429 and 503 (``challenge_status_codes``) are rate limits and outages, retried with backoff, unless
the page carries a signature (Cloudflare and others serve challenges with them). Other statuses (3xx, 404,
500...) are never blocks: ``retrying.classify`` decides about them. Binary content (images, PDF, archives) is
blocked only by status.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

SignatureKind = Literal["challenge", "small_page", "javascript"]


@dataclass(frozen=True)
class Signature:
    """A named case-insensitive pattern of page text (no backreferences: all are combined into one regex)."""

    name: str
    pattern: re.Pattern[str]
    kind: SignatureKind = "challenge"


@dataclass(frozen=True)
class HeaderSignature:
    """A named pattern of one response header's value."""

    name: str
    header: str
    pattern: re.Pattern[str]


def signature(name: str, *patterns: str, kind: SignatureKind = "challenge") -> Signature:
    """A signature matching any of ``patterns`` (regexes, case-insensitive)."""
    return Signature(name, re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE), kind)


DEFAULT_SIGNATURES: tuple[Signature, ...] = (
    # Cloudflare's managed/JS challenge ("Just a moment...", window._cf_chl_opt, the orchestrate script). Not
    # "/cdn-cgi/challenge-platform/scripts/jsd/": Cloudflare injects that one into ordinary pages.
    signature(
        "cloudflare challenge",
        r"<title>\s*just a moment\.\.\.\s*</title>",
        r"_cf_chl_opt",
        r"/cdn-cgi/challenge-platform/h/[a-z]/orchestrate",
        r"cf-browser-verification",
        r"id=[\"']?challenge-error-text",
    ),
    signature(
        "cloudflare block",
        r"<title>\s*attention required! \| cloudflare\s*</title>",
        r"sorry, you have been blocked",
    ),
    signature("perimeterx captcha", r"px-captcha", r"access to this page has been denied"),
    signature("datadome captcha", r"captcha-delivery\.com"),
    # Incapsula injects a _Incapsula_Resource *script* into ordinary pages; the block page is an iframe.
    signature("incapsula block", r"<iframe[^>]{0,300}_incapsula_resource", r"incapsula incident id"),
    signature(
        "akamai access denied",
        r"you don(?:'|&#39;|&#x27;|&rsquo;|\u2019)t have permission to access",
        r"<title>\s*access denied\s*</title>",
    ),
    signature("distil interruption", r"<title>\s*pardon our interruption", r"distil_r_captcha"),
    signature("google unusual traffic", r"our systems have detected unusual traffic"),
    signature(
        "captcha",
        r"g-recaptcha",
        r"recaptcha/api\.js",
        r"h-captcha",
        r"hcaptcha\.com/1/api\.js",
        r"cf-turnstile",
        r"challenges\.cloudflare\.com/turnstile",
        r"(?:complete|solve|enter|fill in) (?:the |a )?(?:security )?captcha",
        r"verify (?:that )?you are (?:a )?human",
        r"are you a robot",
        r"not a robot",
        kind="small_page",
    ),
    signature("access denied", r"access denied", r"access forbidden", kind="small_page"),
    signature(
        "bot detection",
        r"bot detection",
        r"detected (?:unusual|automated|suspicious) (?:activity|traffic|requests)",
        kind="small_page",
    ),
    signature(
        "blocked",
        r"you have been blocked",
        r"your (?:ip(?: address)?|request|access) (?:has been|was|is) blocked",
        r"request (?:was )?blocked",
        kind="small_page",
    ),
    signature(
        "needs javascript",
        r"enable javascript",
        r"javascript is (?:required|disabled|not enabled|turned off)",
        r"javascript (?:must|needs to) be enabled",
        r"requires javascript",
        r"turn on javascript",
        r"javascript to run this app",
        kind="javascript",
    ),
)

DEFAULT_HEADER_SIGNATURES: tuple[HeaderSignature, ...] = (
    HeaderSignature("cloudflare challenge", "cf-mitigated", re.compile(r"challenge", re.IGNORECASE)),
)

# Elements that are content even without text: a page of links or pictures is not empty.
_SUBSTANCE = re.compile(
    r"<(?:a|img|picture|video|audio|iframe|embed|object|svg|canvas|form|input|button|select|textarea)\b",
    re.IGNORECASE,
)
_HIDDEN = re.compile(
    r"<(script|style|noscript|template|head)\b[^>]*>.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL
)
_TAG = re.compile(r"<[^>]*>")
_SCRIPT = re.compile(r"<script\b", re.IGNORECASE)
_BINARY_MAGIC = (b"%PDF", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"PK\x03\x04", b"\x1f\x8b", b"RIFF", b"OggS")

_ContentKind = Literal["html", "text", "binary", "unknown"]


@dataclass(frozen=True)
class BlockRules:
    """What counts as a block. See the module docstring for how the parts combine."""

    status_codes: frozenset[int] = frozenset({401, 403, 406, 407, 451})
    challenge_status_codes: frozenset[int] = frozenset({429, 503})
    signatures: tuple[Signature, ...] = DEFAULT_SIGNATURES
    header_signatures: tuple[HeaderSignature, ...] = DEFAULT_HEADER_SIGNATURES
    small_page_chars: int = 1000
    min_text_chars: int = 1
    scan_bytes: int = 64 * 1024
    _combined: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _by_group: dict[str, Signature] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.scan_bytes < 1024:
            raise ValueError("scan_bytes must be at least 1024")
        if self.small_page_chars < 0 or self.min_text_chars < 0:
            raise ValueError("small_page_chars and min_text_chars must be >= 0")
        by_group = {f"s{index}": sig for index, sig in enumerate(self.signatures)}
        combined = "|".join(f"(?P<{group}>{sig.pattern.pattern})" for group, sig in by_group.items())
        # With no signatures, a pattern that never matches.
        object.__setattr__(self, "_combined", re.compile(combined or r"(?!)", re.IGNORECASE))
        object.__setattr__(self, "_by_group", by_group)

    def match_signatures(self, text: str) -> tuple[Signature | None, Signature | None, Signature | None]:
        """The first challenge, small-page and javascript signatures found in ``text`` (stops at a challenge)."""
        small: Signature | None = None
        javascript: Signature | None = None
        for match in self._combined.finditer(text):
            found = self._by_group[match.lastgroup or ""]
            if found.kind == "challenge":
                return found, small, javascript
            if found.kind == "small_page":
                small = small or found
            else:
                javascript = javascript or found
        return None, small, javascript


DEFAULT_RULES = BlockRules()


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is not None:
        return value
    for key, item in headers.items():
        if key.lower() == name:
            return item
    return None


def _content_kind(content_type: str | None, window: bytes | str) -> _ContentKind:
    media = (content_type or "").partition(";")[0].strip().lower()
    if not media:
        head = window[:1024]
        if isinstance(head, bytes) and (head.startswith(_BINARY_MAGIC) or b"\x00" in head):
            return "binary"
        return "unknown"
    if "html" in media:
        return "html"
    if media.startswith("text/") or media.endswith(
        ("/xml", "+xml", "/json", "+json", "javascript", "ecmascript")
    ):
        return "text"
    return "binary"


def visible_chars(html: str) -> int:
    """How many non-space characters of ``html`` a reader sees (no head, scripts, styles, tags, comments)."""
    text = _TAG.sub(" ", _HIDDEN.sub(" ", html))
    return sum(len(word) for word in text.split())


def detect_block(
    *,
    status: int,
    headers: Mapping[str, str] | None,
    body: bytes | str,
    content_type: str | None,
    rules: BlockRules = DEFAULT_RULES,
    rendered: bool = False,
) -> str | None:
    """None, or why this response is a block (``"status 403"``, ``"signature: cloudflare challenge"``,
    ``"needs javascript"``, ``"empty body"``).

    ``content_type`` falls back to the Content-Type header. ``rendered``: the body is a browser's DOM, so
    it has had its JavaScript (a page that still asks for it is not "needs javascript").
    """
    for header_signature in rules.header_signatures:
        value = _header(headers, header_signature.header)
        if value is not None and header_signature.pattern.search(value):
            return f"signature: {header_signature.name}"

    blocked_status = status in rules.status_codes
    success = 200 <= status < 300
    if not (blocked_status or success or status in rules.challenge_status_codes):
        return None

    window = body[: rules.scan_bytes]
    kind = _content_kind(content_type or _header(headers, "content-type"), window)
    if kind == "binary":
        return f"status {status}" if blocked_status else None
    text = window.decode("utf-8", "replace") if isinstance(window, bytes) else window
    # Only a body that fits in the window can be judged small or empty.
    whole = len(body) <= rules.scan_bytes

    challenge, small_page, javascript = rules.match_signatures(text)
    if challenge is not None:
        return f"signature: {challenge.name}"
    chars: int | None = None
    if whole and (small_page is not None or (javascript is not None and not rendered)):
        chars = visible_chars(text)
        if chars < rules.small_page_chars:
            if small_page is not None:
                return f"signature: {small_page.name}"
            return "needs javascript"

    if blocked_status:
        return f"status {status}"
    if not success or status in (204, 205) or not whole or kind == "text":
        return None
    if not text.strip():
        return "empty body"
    if _SUBSTANCE.search(text):
        return None
    if chars is None:
        chars = visible_chars(text)
    if chars >= rules.min_text_chars:
        return None
    if not rendered and _SCRIPT.search(text):
        return "needs javascript"
    return "empty body"

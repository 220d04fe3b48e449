"""Block detection as data: status codes, header and page signatures, and the rules that combine them.

``detect_block`` answers None or a ``Block``: its ``kind`` (what the site did: ``challenge``, ``captcha``,
``access_denied``, ``needs_javascript``, ``status``, ``empty_body``), its ``name`` and the ``reason`` a person
reads:

- ``"signature: <name>"``: a header or page signature matched (its ``block`` kind says which of challenge,
  captcha or access denied). *Challenge* signatures are markers only
  bot-protection pages carry (Cloudflare's ``cf-mitigated: challenge`` header, ``_cf_chl_opt`` and "Just a
  moment..." title, PerimeterX's ``px-captcha``, DataDome's ``captcha-delivery.com``, Incapsula's block
  iframe, Akamai's "Access Denied" title...): they count on any page. *Small-page* signatures are words and
  phrases an ordinary page may carry too (a reCAPTCHA widget on a contact form, "access denied" in an
  article, a help page quoting "You don't have permission to access"): they count only on a small page, one
  with under ``small_page_chars`` (1000) characters of visible text, as block pages are. The bare word
  "captcha" is no signature at all: a footer link to a captcha policy blocks nothing.
- ``"needs javascript"``: a small page that asks for JavaScript ("Please enable JavaScript", "You need to
  enable JavaScript to run this app"), or a 2xx page with no visible text, links or media, only scripts (an
  app shell). Its own kind (``needs_javascript``) because it escalates to a browser engine, not to a proxy tier. Never said of a
  rendered page (``rendered=True``): that one has had its JavaScript.
- ``"status <code>"``: a status that means "not you" (``status_codes``: 401, 403, 406, 407, 451), when no
  signature says more.
- ``"empty body"``: a 2xx HTML page with nothing in it: no visible text (under ``min_text_chars``, 1), no
  links, images, media or forms. Kept that strict on purpose: a false "empty" climbs the whole ladder and
  fails a job whose page was fine; a false "not empty" stores a page whose length shows what it is.

429 and 503 (``challenge_status_codes``) are rate limits and outages, retried with backoff, unless the page
carries a signature (Cloudflare and others serve challenges with them). Other statuses (3xx, 404, 500...) are
never blocks: ``retrying.classify`` decides about them. Binary content (images, PDF, archives, or no content
type and binary bytes) is blocked by status only.

Speed (it runs on every page): only the first ``scan_bytes`` (64 KB) of the body are read, lowercased once.
A page signature names *needles*, lowercase literals one of which each of its matches contains; the page is
searched for the needles with ``str.find``, and the signature's regex runs only on the 128 characters either
side of a needle found. Title signatures read the ``<title>`` only. Small-page signatures are looked for only
on small pages, and counting visible text stops at the limit, so an ordinary page pays for three needle
searches and its first few KB of text. (One combined case-insensitive regex took 29 ms on a 100 KB page.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

SignatureKind = Literal["challenge", "small_page", "javascript"]
SignatureScope = Literal["page", "title"]
BlockKind = Literal["challenge", "captcha", "access_denied", "needs_javascript", "status", "empty_body"]

# The kinds whose name is the whole reason (the others read "signature: <name>").
_PLAIN_KINDS: frozenset[BlockKind] = frozenset({"needs_javascript", "status", "empty_body"})

# How far around a needle a signature's match may reach.
_REACH = 128
# How many occurrences of one needle are looked around before the rest of the text is searched whole.
_MAX_OCCURRENCES = 64
# Where the <title> is looked for.
_TITLE_WINDOW = 8192


@dataclass(frozen=True)
class Signature:
    """A named case-insensitive pattern of page text.

    ``needles`` (for ``scope="page"``): lowercase literals, one of which every match of ``pattern`` contains,
    no match reaching further than 128 characters either side of it. A ``scope="title"`` signature is
    matched against the page's ``<title>`` text. ``kind``: where it counts (see the module docstring);
    ``block``: what a match is (a ``javascript`` signature is always ``needs_javascript``).
    """

    name: str
    pattern: re.Pattern[str]
    needles: tuple[str, ...]
    kind: SignatureKind = "challenge"
    scope: SignatureScope = "page"
    block: BlockKind = "access_denied"

    def __post_init__(self) -> None:
        if (self.kind == "javascript") != (self.block == "needs_javascript"):
            raise ValueError(
                f"signature {self.name!r}: javascript signatures, and only they, need javascript"
            )
        if self.scope == "page" and not self.needles:
            raise ValueError(f"signature {self.name!r}: a page signature needs at least one needle")
        if any(needle != needle.lower() or not needle for needle in self.needles):
            raise ValueError(f"signature {self.name!r}: needles are non-empty lowercase literals")


@dataclass(frozen=True)
class HeaderSignature:
    """A named pattern of one response header's value."""

    name: str
    header: str
    pattern: re.Pattern[str]
    block: BlockKind = "challenge"


@dataclass(frozen=True)
class Block:
    """Why a response is a block: what the site did (``kind``) and which rule said so (``name``)."""

    kind: BlockKind
    name: str

    @property
    def reason(self) -> str:
        """What a person reads: ``"signature: cloudflare challenge"``, ``"needs javascript"``, ``"status 403"``,
        ``"empty body"``."""
        return self.name if self.kind in _PLAIN_KINDS else f"signature: {self.name}"


NEEDS_JAVASCRIPT = Block("needs_javascript", "needs javascript")
EMPTY_BODY = Block("empty_body", "empty body")


def status_block(status: int) -> Block:
    return Block("status", f"status {status}")


def signature(
    name: str,
    *patterns: str,
    needles: tuple[str, ...] = (),
    kind: SignatureKind = "challenge",
    scope: SignatureScope = "page",
    block: BlockKind | None = None,
) -> Signature:
    """A signature matching any of ``patterns`` (regexes, case-insensitive). ``block`` defaults to
    ``needs_javascript`` for a javascript signature, else to ``access_denied``."""
    pattern = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
    if block is None:
        block = "needs_javascript" if kind == "javascript" else "access_denied"
    return Signature(name, pattern, needles, kind, scope, block)


def literal(
    name: str, *texts: str, kind: SignatureKind = "challenge", block: BlockKind = "access_denied"
) -> Signature:
    """A page signature matching any of the literal ``texts`` (case-insensitive); they are its needles."""
    lowered = tuple(text.lower() for text in texts)
    return signature(name, *(re.escape(text) for text in lowered), needles=lowered, kind=kind, block=block)


DEFAULT_SIGNATURES: tuple[Signature, ...] = (
    # --- Challenge pages: markers only bot protection serves. ---
    signature(
        "cloudflare challenge",
        r"^\s*just a moment\.\.\.\s*$",
        scope="title",
        block="challenge",
    ),
    # Not "/cdn-cgi/challenge-platform/scripts/jsd/": Cloudflare injects that one into ordinary pages.
    literal("cloudflare challenge", "_cf_chl_opt", block="challenge"),
    signature("cloudflare block", r"^\s*attention required! \| cloudflare\s*$", scope="title"),
    signature(
        "perimeterx captcha", r"^\s*access to this page has been denied", scope="title", block="captcha"
    ),
    signature("perimeterx captcha", r"px-captcha", needles=("captcha",), block="captcha"),
    signature("datadome captcha", r"captcha-delivery\.com", needles=("captcha",), block="captcha"),
    # Incapsula injects a _Incapsula_Resource *script* into ordinary pages; its block page is an iframe.
    signature("incapsula block", r"<iframe[^>]{0,100}_incapsula_resource", needles=("_incapsula_resource",)),
    signature("akamai access denied", r"^\s*access denied\s*$", scope="title"),
    signature("distil interruption", r"^\s*pardon our interruption", scope="title", block="challenge"),
    signature("distil interruption", r"distil_r_captcha", needles=("captcha",), block="captcha"),
    # --- Phrases of block pages, which an article or a help page may quote: on small pages only. ---
    literal("incapsula block", "incapsula incident id", kind="small_page"),
    signature(
        "akamai access denied",
        r"you don(?:'|&#39;|&#x27;|&rsquo;|\u2019)t have permission to access",
        needles=("have permission to access",),
        kind="small_page",
    ),
    literal(
        "google unusual traffic",
        "our systems have detected unusual traffic",
        kind="small_page",
        block="captcha",
    ),
    # --- Words that an ordinary page may carry too: on small pages only. ---
    signature(
        "captcha",
        r"g-recaptcha",
        r"recaptcha/api\.js",
        r"h-captcha",
        r"hcaptcha\.com/1/api\.js",
        r"(?:complete|solve|enter|fill in) (?:the |a |this )?(?:security )?captcha",
        r"cf-turnstile",
        r"challenges\.cloudflare\.com/turnstile",
        r"verify (?:that )?you are (?:a )?human",
        r"are you a robot",
        r"not a robot",
        needles=("captcha", "turnstile", "human", "robot"),
        kind="small_page",
        block="captcha",
    ),
    literal("access denied", "access denied", "access forbidden", kind="small_page"),
    signature(
        "bot detection",
        r"bot detection",
        r"detected (?:unusual|automated|suspicious) (?:activity|traffic|requests)",
        needles=("bot detection", "detected"),
        kind="small_page",
    ),
    signature(
        "blocked",
        r"you have been blocked",
        r"your (?:ip(?: address)?|request|access) (?:has been|was|is) blocked",
        r"request (?:was )?blocked",
        needles=("blocked",),
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
        needles=("javascript",),
        kind="javascript",
    ),
)

DEFAULT_HEADER_SIGNATURES: tuple[HeaderSignature, ...] = (
    HeaderSignature("cloudflare challenge", "cf-mitigated", re.compile(r"challenge", re.IGNORECASE)),
)

# Elements that are content even without text: a page of links or pictures is not empty.
_SUBSTANCE = re.compile(
    r"<(?:a|img|picture|video|audio|iframe|embed|object|svg|canvas|form|input|button|select|textarea)\b"
)
# What a reader does not see (in lowercase HTML): elements with invisible content, comments; then any tag.
_HIDDEN = re.compile(r"<(script|style|noscript|template|head)\b[^>]*>.*?</\1\s*>|<!--.*?-->", re.DOTALL)
_OPEN_HIDDEN = re.compile(r"<(?:script|style|noscript|template|head)\b|<!--")
_TAG = re.compile(r"<[^>]*>")
_SPACES = " \t\n\r\x0b\x0c\xa0"
# The first piece of a body that visible_chars with a limit counts; it grows fourfold while short of it.
_FIRST_PIECE = 4096
_TITLE = re.compile(r"<title\b[^>]*>([^<]{0,500})")
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
    _challenges: tuple[Signature, ...] = field(init=False, repr=False, compare=False)
    _small_pages: tuple[Signature, ...] = field(init=False, repr=False, compare=False)
    _javascript: tuple[Signature, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.scan_bytes < 1024:
            raise ValueError("scan_bytes must be at least 1024")
        if self.small_page_chars < 0 or self.min_text_chars < 0:
            raise ValueError("small_page_chars and min_text_chars must be >= 0")
        for name, kind in (
            ("_challenges", "challenge"),
            ("_small_pages", "small_page"),
            ("_javascript", "javascript"),
        ):
            object.__setattr__(self, name, tuple(sig for sig in self.signatures if sig.kind == kind))

    def find_challenge(self, text: str) -> Signature | None:
        """The first challenge signature found in ``text`` (lowercase), or None."""
        return _first_match(self._challenges, text)

    def find_small_page(self, text: str, *, javascript: bool) -> Signature | None:
        """The first small-page signature found in ``text`` (lowercase), else (if ``javascript``) the first
        javascript one, or None. Meant for small pages only."""
        found = _first_match(self._small_pages, text)
        if found is None and javascript:
            found = _first_match(self._javascript, text)
        return found


def _title_of(text: str) -> str | None:
    match = _TITLE.search(text, 0, _TITLE_WINDOW)
    return match.group(1) if match else None


def _first_match(signatures: tuple[Signature, ...], text: str) -> Signature | None:
    title: str | None = None
    title_read = False
    positions: dict[str, int] = {}
    for sig in signatures:
        if sig.scope == "title":
            if not title_read:
                title, title_read = _title_of(text), True
            if title is not None and sig.pattern.search(title):
                return sig
            continue
        for needle in sig.needles:
            position = positions.get(needle)
            if position is None:
                position = positions[needle] = text.find(needle)
            if position >= 0 and _matches_near(sig.pattern, text, needle, position):
                return sig
    return None


def _matches_near(pattern: re.Pattern[str], text: str, needle: str, position: int) -> bool:
    """Whether ``pattern`` matches around an occurrence of ``needle``, the first at ``position``. A needle
    that occurs too often to look around every occurrence has the rest of the text searched."""
    for _ in range(_MAX_OCCURRENCES):
        if pattern.search(text, max(0, position - _REACH), position + len(needle) + _REACH):
            return True
        position = text.find(needle, position + 1)
        if position < 0:
            return False
    return pattern.search(text, max(0, position - _REACH)) is not None


DEFAULT_RULES = BlockRules()


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A header's value, its name matched case-insensitively (``name`` in lowercase)."""
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
    if media.startswith("text/") or media.endswith(("/xml", "+xml", "/json", "+json", "javascript")):
        return "text"
    return "binary"


def _visible_in(html: str, *, cut: bool) -> int:
    text = _HIDDEN.sub("", html.lower())
    if cut:
        # The piece ends inside the page: drop an element or tag it opens without closing.
        unclosed = _OPEN_HIDDEN.search(text)
        if unclosed is not None:
            text = text[: unclosed.start()]
        last_open = text.rfind("<")
        if last_open > text.rfind(">"):
            text = text[:last_open]
    text = _TAG.sub("", text)
    return len(text) - sum(text.count(space) for space in _SPACES)


def visible_chars(html: str, limit: int | None = None) -> int:
    """How many non-space characters of ``html`` a reader sees: none of the head, scripts, styles, noscript,
    templates, comments or tags.

    With ``limit``, counting may stop once it is reached (the answer is then ``>= limit``): it starts at
    ``<body>`` with the first 4 KB and reads more only while short of the limit, so an ordinary page costs
    little.
    """
    if limit is None:
        return _visible_in(html, cut=False)
    start = max(html.find("<body"), html.find("<BODY"), 0)
    size = _FIRST_PIECE
    while True:
        end = start + size
        count = _visible_in(html[start:end], cut=end < len(html))
        if count >= limit or end >= len(html):
            return count
        size *= 4


def detect_block(
    *,
    status: int,
    headers: Mapping[str, str] | None,
    body: bytes | str,
    content_type: str | None,
    rules: BlockRules = DEFAULT_RULES,
    rendered: bool = False,
) -> Block | None:
    """None, or why this response is a block (its reason: ``"status 403"``, ``"signature: cloudflare
    challenge"``, ``"needs javascript"``, ``"empty body"``).

    ``content_type`` falls back to the Content-Type header. ``rendered``: the body is a browser's DOM, so it
    has had its JavaScript.
    """
    for header_signature in rules.header_signatures:
        value = _header(headers, header_signature.header)
        if value is not None and header_signature.pattern.search(value):
            return Block(header_signature.block, header_signature.name)

    blocked_status = status in rules.status_codes
    success = 200 <= status < 300
    if not (blocked_status or success or status in rules.challenge_status_codes):
        return None

    window = body[: rules.scan_bytes]
    kind = _content_kind(content_type or _header(headers, "content-type"), window)
    if kind == "binary":
        return status_block(status) if blocked_status else None
    text = (window.decode("utf-8", "replace") if isinstance(window, bytes) else window).lower()

    challenge = rules.find_challenge(text)
    if challenge is not None:
        return Block(challenge.block, challenge.name)

    # Only a body that fits in the window can be judged small or empty. Counting stops once the page is
    # known not to be small, so an ordinary page costs the first thousand characters of text.
    chars: int | None = None
    if len(body) <= rules.scan_bytes:
        chars = visible_chars(text, max(rules.small_page_chars, rules.min_text_chars))
        if chars < rules.small_page_chars:
            found = rules.find_small_page(text, javascript=not rendered)
            if found is not None:
                return NEEDS_JAVASCRIPT if found.kind == "javascript" else Block(found.block, found.name)

    if blocked_status:
        return status_block(status)
    if chars is None or not success or status in (204, 205) or kind == "text":
        return None
    if not text.strip():
        return EMPTY_BODY
    if chars >= rules.min_text_chars or _SUBSTANCE.search(text):
        return None
    if not rendered and "<script" in text:
        return NEEDS_JAVASCRIPT
    return EMPTY_BODY

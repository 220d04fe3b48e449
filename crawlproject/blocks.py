"""Block detection as data: status codes, header and page signatures, and the rules that combine them.

``detect_block`` answers None or a short reason:

- ``"signature: <name>"``: a header or page signature matched. *Challenge* signatures are markers that only
  bot-protection pages carry (Cloudflare's ``_cf_chl_opt`` and "Just a moment..." title, PerimeterX's
  ``px-captcha``, DataDome's ``captcha-delivery.com``, Incapsula's block iframe, Akamai's "You don't have
  permission to access"...): they count on any page. *Small-page* signatures are words an ordinary page may
  carry too (a reCAPTCHA widget on a contact form, "access denied" in an article, "bot detection" in a
  footer): they count only on a small page, one with under ``small_page_chars`` characters of visible text.
  The bare word "captcha" is no signature at all: a footer link to a captcha policy blocks nothing.
- ``"needs javascript"``: a small page that asks for JavaScript ("Please enable JavaScript", "You need to
  enable JavaScript to run this app"), or a page with no visible text, links or media, only scripts (an app
  shell). Its own reason because it escalates to a browser engine, not to a proxy tier. Never said of a
  rendered page (``rendered=True``): that one has had its JavaScript.
- ``"status <code>"``: a status that means "not you" (``status_codes``: 401, 403, 406, 407, 451).
- ``"empty body"``: a 2xx HTML page with nothing in it: no visible text (under ``min_text_chars``), no links,
  images, media or forms. Kept that strict on purpose: a false "empty" climbs the whole ladder and fails a
  job whose page was fine, a false "not empty" stores a page whose length shows what it is.

429 and 503 (``challenge_status_codes``) are rate limits and outages, retried with backoff, unless the page
carries a signature (Cloudflare and others serve challenges with them). Other statuses (3xx, 404, 500...) are
never blocks: ``retrying.classify`` decides about them. Binary content (images, PDF, archives) is blocked by
status only.

Speed: this runs on every page. Only the first ``scan_bytes`` of the body are read, lowercased once. A
signature names *needles*, literal lowercase strings one of which any match contains; the page is searched
for the needles (``str.find``, a fast scan), and a signature's regex runs only on the few hundred characters
around a needle it found. Title signatures run on the ``<title>`` only. Small-page signatures are looked for
only in bodies that fit in the window. (One combined case-insensitive regex over 64 KB took 29 ms a page.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

SignatureKind = Literal["challenge", "small_page", "javascript"]
SignatureScope = Literal["page", "title"]

# How far around a needle a signature's match may reach.
_REACH = 256
# How many occurrences of one needle are tried before giving up (common words on long pages).
_MAX_OCCURRENCES = 64
# Where the <title> is looked for.
_TITLE_WINDOW = 8192


@dataclass(frozen=True)
class Signature:
    """A named case-insensitive pattern of page text.

    ``needles``: lowercase literals, one of which every match of ``pattern`` contains, no match longer than
    a few hundred characters around it (for ``scope="page"``; a title is matched whole). ``kind``: see the
    module docstring.
    """

    name: str
    pattern: re.Pattern[str]
    needles: tuple[str, ...]
    kind: SignatureKind = "challenge"
    scope: SignatureScope = "page"

    def __post_init__(self) -> None:
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


def signature(
    name: str,
    *patterns: str,
    needles: tuple[str, ...] = (),
    kind: SignatureKind = "challenge",
    scope: SignatureScope = "page",
) -> Signature:
    """A signature matching any of ``patterns`` (regexes, case-insensitive)."""
    pattern = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
    return Signature(name, pattern, needles, kind, scope)


def literal(name: str, *texts: str, kind: SignatureKind = "challenge") -> Signature:
    """A page signature matching any of the literal ``texts`` (case-insensitive); they are its needles."""
    lowered = tuple(text.lower() for text in texts)
    return signature(name, *(re.escape(text) for text in lowered), needles=lowered, kind=kind)


DEFAULT_SIGNATURES: tuple[Signature, ...] = (
    # --- Challenge pages: markers only bot protection serves. ---
    signature(
        "cloudflare challenge",
        r"^\s*just a moment\.\.\.\s*$",
        scope="title",
    ),
    # Not "/cdn-cgi/challenge-platform/scripts/jsd/": Cloudflare injects that one into ordinary pages.
    literal("cloudflare challenge", "_cf_chl_opt"),
    signature("cloudflare block", r"^\s*attention required! \| cloudflare\s*$", scope="title"),
    signature("perimeterx captcha", r"^\s*access to this page has been denied", scope="title"),
    signature("perimeterx captcha", r"px-captcha", needles=("captcha",)),
    signature("datadome captcha", r"captcha-delivery\.com", needles=("captcha",)),
    # Incapsula injects a _Incapsula_Resource *script* into ordinary pages; its block page is an iframe.
    signature(
        "incapsula block",
        r"<iframe[^>]{0,200}_incapsula_resource",
        r"incapsula incident id",
        needles=("incapsula",),
    ),
    signature("akamai access denied", r"^\s*access denied\s*$", scope="title"),
    signature(
        "akamai access denied",
        r"you don(?:'|&#39;|&#x27;|&rsquo;|\u2019)t have permission to access",
        needles=("have permission to access",),
    ),
    signature("distil interruption", r"^\s*pardon our interruption", scope="title"),
    signature("distil interruption", r"distil_r_captcha", needles=("captcha",)),
    literal("google unusual traffic", "our systems have detected unusual traffic"),
    # --- Words that block only on a small page. ---
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
_HIDDEN = re.compile(
    r"<(script|style|noscript|template|head)\b[^>]*>.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL
)
_TAG = re.compile(r"<[^>]*>")
_TITLE = re.compile(r"<title\b[^>]*>([^<]{0,500})")
_BINARY_MAGIC = (b"%PDF", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"PK\x03\x04", b"\x1f\x8b", b"RIFF", b"OggS")

_ContentKind = Literal["html", "text", "binary", "unknown"]


@dataclass(frozen=True)
class _Scan:
    """What the signatures found in one page. ``undecided``: small-page signatures whose needle occurs too
    often to check every occurrence; they are decided only if the page turns out small."""

    challenge: Signature | None = None
    small_page: Signature | None = None
    javascript: Signature | None = None
    undecided: tuple[Signature, ...] = ()


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
    _title_signatures: tuple[Signature, ...] = field(init=False, repr=False, compare=False)
    _page_signatures: tuple[Signature, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.scan_bytes < 1024:
            raise ValueError("scan_bytes must be at least 1024")
        if self.small_page_chars < 0 or self.min_text_chars < 0:
            raise ValueError("small_page_chars and min_text_chars must be >= 0")
        # Challenges first: a page that has one is that block, whatever else it says.
        by_kind = sorted(self.signatures, key=lambda sig: sig.kind != "challenge")
        object.__setattr__(self, "_title_signatures", tuple(s for s in by_kind if s.scope == "title"))
        object.__setattr__(self, "_page_signatures", tuple(s for s in by_kind if s.scope == "page"))

    def scan(self, text: str, *, small_candidates: bool) -> _Scan:
        """The signatures found in ``text`` (lowercase), the small-page ones only if ``small_candidates``."""
        small_page: Signature | None = None
        javascript: Signature | None = None
        undecided: list[Signature] = []
        title_match = _TITLE.search(text, 0, _TITLE_WINDOW)
        if title_match is not None:
            title = title_match.group(1)
            for sig in self._title_signatures:
                if sig.kind != "challenge" and not small_candidates:
                    break
                if sig.pattern.search(title):
                    if sig.kind == "challenge":
                        return _Scan(challenge=sig)
                    if sig.kind == "small_page":
                        small_page = small_page or sig
                    else:
                        javascript = javascript or sig
        first: dict[str, int] = {}
        for sig in self._page_signatures:
            if sig.kind != "challenge" and not small_candidates:
                break
            if (sig.kind == "small_page" and small_page) or (sig.kind == "javascript" and javascript):
                continue
            for needle in sig.needles:
                position = first.get(needle)
                if position is None:
                    position = first[needle] = text.find(needle)
                if position < 0:
                    continue
                near = _matches_near(sig.pattern, text, needle, position)
                if near is None and sig.kind != "challenge":
                    undecided.append(sig)
                    break
                if near:
                    if sig.kind == "challenge":
                        return _Scan(challenge=sig)
                    if sig.kind == "small_page":
                        small_page = sig
                    else:
                        javascript = sig
                    break
        return _Scan(small_page=small_page, javascript=javascript, undecided=tuple(undecided))


def _matches_near(pattern: re.Pattern[str], text: str, needle: str, position: int) -> bool | None:
    """Whether ``pattern`` matches around an occurrence of ``needle`` from ``position`` on; None if the
    needle occurs too often to look at every occurrence."""
    for _ in range(_MAX_OCCURRENCES):
        if pattern.search(text, max(0, position - _REACH), position + len(needle) + _REACH):
            return True
        position = text.find(needle, position + 1)
        if position < 0:
            return False
    return None


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


def visible_chars(html: str) -> int:
    """How many non-space characters of ``html`` a reader sees: no head, scripts, styles,
    noscript, templates, comments or tags."""
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

    ``content_type`` falls back to the Content-Type header. ``rendered``: the body is a browser's DOM, so it
    has had its JavaScript.
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
    text = (window.decode("utf-8", "replace") if isinstance(window, bytes) else window).lower()
    # Only a body that fits in the window can be judged small or empty.
    whole = len(body) <= rules.scan_bytes

    found = rules.scan(text, small_candidates=whole)
    if found.challenge is not None:
        return f"signature: {found.challenge.name}"
    undecided = [sig for sig in found.undecided if sig.kind == "small_page" or not rendered]
    chars: int | None = None
    if found.small_page is not None or (found.javascript is not None and not rendered) or undecided:
        chars = visible_chars(text)
        if chars < rules.small_page_chars:
            small_page = found.small_page or next(
                (s for s in undecided if s.kind == "small_page" and s.pattern.search(text)), None
            )
            if small_page is not None:
                return f"signature: {small_page.name}"
            if not rendered and (
                found.javascript is not None
                or any(s.kind == "javascript" and s.pattern.search(text) for s in undecided)
            ):
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
    if not rendered and "<script" in text:
        return "needs javascript"
    return "empty body"

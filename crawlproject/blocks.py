"""Block detection as data: status codes, header and page signatures, and the rules that combine them.

``detect_block`` answers None or a ``Block``: its ``kind`` (what the site did: ``challenge``, ``captcha``,
``access_denied``, ``needs_javascript``, ``status``, ``empty_body``), its ``name`` and the ``reason`` a person
reads:

- ``"signature: <name>"``: a header or page signature (``signatures``) matched; its ``block`` kind says
  which of challenge, captcha or access denied. *Challenge* signatures are markers only bot-protection pages
  carry (Cloudflare's ``cf-mitigated: challenge`` header, ``_cf_chl_opt`` and "Just a moment..." title,
  PerimeterX's ``px-captcha``, DataDome's ``captcha-delivery.com``, Incapsula's block iframe, Akamai's
  "Access Denied" title...): they count on any page. *Small-page* signatures are words and
  phrases an ordinary page may carry too (a reCAPTCHA widget on a contact form, "access denied" in an
  article, a help page quoting "You don't have permission to access"): they count only on a small page, one
  with under ``small_page_chars`` (1000) characters of visible text, as block pages are. The bare word
  "captcha" is no signature at all: a footer link to a captcha policy blocks nothing.
- ``"needs javascript"``: a small page that asks for JavaScript ("Please enable JavaScript", "You need to
  enable JavaScript to run this app"), or a 2xx page with no visible text, links or media, only scripts (an
  app shell). Its own kind (``needs_javascript``) because it escalates to a browser engine, not to a proxy
  tier. Never said of a rendered page (``rendered=True``): that one has had its JavaScript.
- ``"status <code>"``: a status that means "not you" (``status_codes``: 401, 403, 406, 407, 451), when no
  signature says more.
- ``"empty body"``: a 2xx HTML page with nothing in it: no visible text (under ``min_text_chars``, 1), no
  links, images, media or forms. Kept that strict on purpose: a false "empty" climbs the whole ladder and
  fails a job whose page was fine; a false "not empty" stores a page whose length shows what it is.

429 and 503 (``challenge_status_codes``) are rate limits and outages, retried with backoff, unless the page
carries a signature (Cloudflare and others serve challenges with them). Other statuses (3xx, 404, 500...) are
never blocks: ``retrying.classify`` decides about them. Binary content (images, PDF, archives, or no content
type and binary bytes) is blocked by status only.

Speed (it runs on every page): only the first ``scan_bytes`` (64 KB) of the body are read, lowercased once,
and signatures are found by their needles (``signatures``). Small-page signatures are looked for only
on small pages, and counting visible text stops at the limit, so an ordinary page pays for three needle
searches and its first few KB of text. (One combined case-insensitive regex took 29 ms on a 100 KB page.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from crawlproject.signatures import (
    DEFAULT_HEADER_SIGNATURES,
    DEFAULT_SIGNATURES,
    BlockKind,
    HeaderSignature,
    Signature,
    first_match,
)

# The kinds whose name is the whole reason (the others read "signature: <name>").
_PLAIN_KINDS: frozenset[BlockKind] = frozenset({"needs_javascript", "status", "empty_body"})


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


# Elements that are content even without text: a page of links or pictures is not empty.
_SUBSTANCE = re.compile(
    r"<(?:a|img|picture|video|audio|iframe|embed|object|svg|canvas|form|input|button|select|textarea)\b"
)
# What a reader does not see (in lowercase HTML): elements with invisible content, comments; then any tag.
# They are removed by scanning (`_without_hidden`, `_without_tags`), in time linear in the page: the regular
# expressions that say the same (`<(script|...)\b[^>]*>.*?</\1\s*>|<!--.*?-->`, then `<[^>]*>`) search to
# the end of the page again from every opening that is never closed, and a page of 16,384 unclosed `<!--`
# took 13 s of the worker's event loop.
_HIDDEN_ELEMENTS = ("script", "style", "noscript", "template", "head")
_OPEN_HIDDEN = re.compile(r"<(?:(script|style|noscript|template|head)\b|!--)")
_CLOSE_HIDDEN = {name: re.compile(rf"</{name}\s*>") for name in _HIDDEN_ELEMENTS}
_SPACES = " \t\n\r\x0b\x0c\xa0"
# The first piece of a body that visible_chars with a limit counts; it grows fourfold while short of it.
_FIRST_PIECE = 4096
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
        return first_match(self._challenges, text)

    def find_small_page(self, text: str, *, javascript: bool) -> Signature | None:
        """The first small-page signature found in ``text`` (lowercase), else (if ``javascript``) the first
        javascript one, or None. Meant for small pages only."""
        found = first_match(self._small_pages, text)
        if found is None and javascript:
            found = first_match(self._javascript, text)
        return found


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


def _without_hidden(text: str) -> str:
    """`text` without the comments and the script, style, noscript, template and head elements that are
    closed (an opening never closed stays, as text and tags). Linear: an opening whose end is missing means
    that every later opening of that kind misses it too, so each end is searched to the page's end at most once."""
    kept: list[str] = []
    pos = 0
    missing: set[str] = set()  # ends not found after some opening: "-->", ">" or an element's name
    while (opening := _OPEN_HIDDEN.search(text, pos)) is not None:
        end = _hidden_end(text, opening, missing)
        if end < 0:  # never closed: it stays, and the search goes on after its "<"
            kept.append(text[pos : opening.start() + 1])
            pos = opening.start() + 1
        else:
            kept.append(text[pos : opening.start()])
            pos = end
    kept.append(text[pos:])
    return "".join(kept)


def _hidden_end(text: str, opening: re.Match[str], missing: set[str]) -> int:
    """Where the comment or hidden element that `opening` starts ends, or -1 when it is never closed (then
    `missing` learns which end is not in the rest of `text`)."""
    name = opening.group(1)
    if name is None:  # a comment
        close = -1 if "-->" in missing else text.find("-->", opening.end())
        if close < 0:
            missing.add("-->")
            return -1
        return close + 3
    if ">" in missing or name in missing:
        return -1
    head_end = text.find(">", opening.end())
    if head_end < 0:
        missing.add(">")
        return -1
    closing = _CLOSE_HIDDEN[name].search(text, head_end + 1)
    if closing is None:
        missing.add(name)
        return -1
    return closing.end()


def _without_tags(text: str) -> str:
    """`text` without its tags (`<` to the next `>`); an opening `<` never closed stays, with what follows."""
    kept: list[str] = []
    pos = 0
    while (start := text.find("<", pos)) >= 0 and (end := text.find(">", start + 1)) >= 0:
        kept.append(text[pos:start])
        pos = end + 1
    kept.append(text[pos:])
    return "".join(kept)


def _visible_in(html: str, *, cut: bool) -> int:
    text = _without_hidden(html.lower())
    if cut:
        # The piece ends inside the page: drop an element or tag it opens without closing.
        unclosed = _OPEN_HIDDEN.search(text)
        if unclosed is not None:
            text = text[: unclosed.start()]
        last_open = text.rfind("<")
        if last_open > text.rfind(">"):
            text = text[:last_open]
    text = _without_tags(text)
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

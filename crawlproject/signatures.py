"""Block signatures as data: named patterns of page text and headers that bot protection and block pages carry.

A page signature names *needles*, lowercase literals one of which each of its matches contains; the page is
searched for the needles with ``str.find``, and the signature's regex runs only on the 128 characters either
side of a needle found. Title signatures read the ``<title>`` only. Which signatures count where (on any page,
on small pages only) and what a match means is ``blocks``'s part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

SignatureKind = Literal["challenge", "small_page", "javascript"]
SignatureScope = Literal["page", "title"]
BlockKind = Literal["challenge", "captcha", "access_denied", "needs_javascript", "status", "empty_body"]

# How far around a needle a signature's match may reach.
_REACH = 128
# How many occurrences of one needle are looked around before the rest of the text is searched whole.
_MAX_OCCURRENCES = 64
# Where the <title> is looked for.
_TITLE_WINDOW = 8192
_TITLE = re.compile(r"<title\b[^>]*>([^<]{0,500})")


@dataclass(frozen=True)
class Signature:
    """A named case-insensitive pattern of page text.

    ``needles`` (for ``scope="page"``): lowercase literals, one of which every match of ``pattern`` contains,
    no match reaching further than 128 characters either side of it. A ``scope="title"`` signature is
    matched against the page's ``<title>`` text. ``kind``: where it counts (see ``blocks``);
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


def _title_of(text: str) -> str | None:
    match = _TITLE.search(text, 0, _TITLE_WINDOW)
    return match.group(1) if match else None


def first_match(signatures: tuple[Signature, ...], text: str) -> Signature | None:
    """The first of ``signatures`` found in ``text`` (lowercase), or None."""
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

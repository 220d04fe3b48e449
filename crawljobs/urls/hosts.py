"""How a browser reads the host of a URL (WHATWG URL): IP literals in every spelling, IDNA, label rules.

IDNA (UTS #46) comes first; then a host whose last label is a number is an IPv4 address in any inet_aton
spelling (``0x7f.1``, ``017700000001``, ``2130706433``...), rewritten to dotted decimal, or refused when it is
not a valid one. One trailing dot is dropped. An IPv6 literal is written in RFC 5952 form.
"""

from __future__ import annotations

import functools
import re
from ipaddress import IPv4Address, IPv6Address
from types import ModuleType

from crawljobs.exceptions import UrlRejected

_idna: ModuleType | None
try:  # The `idna` package implements UTS #46 (what browsers do); the stdlib codec is IDNA 2003.
    import idna as _idna
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    _idna = None

IPAddress = IPv4Address | IPv6Address

_REASON_INPUT_CHARS = 60  # how much of an offending piece a reason quotes


def clip(text: str, limit: int = _REASON_INPUT_CHARS) -> str:
    """``text`` as a refusal reason quotes it: at most ``limit`` characters, then "..."."""
    return text if len(text) <= limit else text[:limit] + "..."


def address_text(addr: IPAddress) -> str:
    """The canonical text of an address: dotted decimal, or RFC 5952 IPv6 always in hexadecimal."""
    if isinstance(addr, IPv4Address):
        return str(addr)
    # str() writes IPv4-mapped addresses as ::ffff:1.2.3.4 from Python 3.13 on; a browser and Python 3.11
    # write ::ffff:102:304. Do it ourselves so the result does not depend on the Python version.
    value = int(addr)
    words = [(value >> (112 - 16 * i)) & 0xFFFF for i in range(8)]
    best_start, best_len, start = -1, 0, -1
    for i, word in enumerate([*words, 1]):
        if word == 0:
            if start < 0:
                start = i
        elif start >= 0:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = -1
    hexes = [f"{w:x}" for w in words]
    if best_len < 2:
        return ":".join(hexes)
    return ":".join(hexes[:best_start]) + "::" + ":".join(hexes[best_start + best_len :])


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_OCT_DIGITS = frozenset("01234567")
_DEC_DIGITS = frozenset("0123456789")


def _ipv4_number(part: str) -> int | None:
    """One part of an IPv4 address as inet_aton and browsers read it: decimal, 0x hex, or 0-led octal."""
    if not part or not part.isascii():
        return None
    if part[:2] in ("0x", "0X"):
        digits, base, allowed = part[2:], 16, _HEX_DIGITS
    elif len(part) > 1 and part[0] == "0":
        digits, base, allowed = part[1:], 8, _OCT_DIGITS
    else:
        digits, base, allowed = part, 10, _DEC_DIGITS
    if not digits:
        return 0  # "0x" alone is zero for browsers
    if not allowed.issuperset(digits):
        return None
    try:
        return int(digits, base)
    except ValueError:  # more decimal digits than int() will read
        return None


def _parse_ipv4(host: str) -> IPv4Address | None:
    if host.endswith("."):
        host = host[:-1]
    parts = host.split(".")
    if len(parts) > 4:
        return None
    numbers = []
    for part in parts:
        number = _ipv4_number(part)
        if number is None:
            return None
        numbers.append(number)
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (24 - 8 * i)
    return IPv4Address(value)


def _parse_ipv6(text: str) -> IPv6Address | None:
    if "%" in text or not text.isascii():  # zone ids (fe80::1%eth0) mean nothing to another machine
        return None
    try:
        return IPv6Address(text)
    except ValueError:
        return None


def _ends_in_number(host: str) -> bool:
    """WHATWG's rule: a host whose last label is a number must be an IPv4 address (or is invalid)."""
    last = host[:-1] if host.endswith(".") else host
    last = last.rpartition(".")[2]
    if last and last.isascii() and last.isdigit():
        return True
    return last[:2] in ("0x", "0X") and _HEX_DIGITS.issuperset(last[2:])


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address `host` names if a browser, curl or inet_aton would read it as one; None for a name.

    Reads dotted decimal, a single integer (``2130706433``), hexadecimal and octal parts (``0x7f.0.0.1``,
    ``0177.0.0.1``, ``017700000001``), short forms (``127.1``), a trailing dot, full-width digits (mapped by
    IDNA as a browser does) and IPv6 with or without brackets. An IPv6 zone id (``[fe80::1%25eth0]``) is not
    accepted: None.
    """
    if not host:
        return None
    if host[0] == "[":
        return _parse_ipv6(host[1:-1]) if host[-1] == "]" else None
    if ":" in host:
        return _parse_ipv6(host)
    if not host.isascii():
        try:
            host = _idna_encode(host)
        except UrlRejected:
            return None
    return _parse_ipv4(host) if _ends_in_number(host) else None


_HOST_LABEL = re.compile(r"[a-z0-9_-]{1,63}")


def _idna_encode(host: str) -> str:
    """A non-ASCII host in ASCII (punycode), mapped as browsers do (UTS #46, non-transitional)."""
    return _to_ascii(host)[0]


def _to_ascii(host: str) -> tuple[str, frozenset[str]]:
    """`_idna_encode`'s host, and the labels it encoded: valid punycode by construction, not to be decoded again
    (decoding a label to check it costs more than encoding it)."""
    try:
        if _idna is not None:
            labels = _idna.uts46_remap(host, std3_rules=False, transitional=False).split(".")
            ascii_labels = [label if label.isascii() else _alabel(label) for label in labels]
            encoded = frozenset(
                a for label, a in zip(labels, ascii_labels, strict=True) if not label.isascii()
            )
            return ".".join(ascii_labels), encoded
        return host.encode("idna").decode("ascii").lower(), frozenset()
    except (UnicodeError, ValueError) as exc:
        raise UrlRejected(f"invalid host {clip(host)!r}: it cannot be IDNA-encoded") from exc


@functools.lru_cache(maxsize=16384)
def _alabel(label: str) -> str:
    """One non-ASCII label in ASCII, checked by `idna`; cached: a batch's hosts often share labels (the domain
    of its subdomains) where they are not the same host."""
    assert _idna is not None
    return _idna.alabel(label).decode("ascii")


def _valid_punycode(label: str) -> bool:
    try:
        if _idna is not None:
            _idna.ulabel(label)
        else:
            label[4:].encode("ascii").decode("punycode")
    except (UnicodeError, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=4096)
def canonicalize_host(raw_host: str) -> tuple[str, str, IPAddress | None]:
    """A URL's raw host as a browser reads it, in canonical form, or UrlRejected saying what is wrong.

    Gives (the host as the normalised URL writes it, IPv6 in brackets; the bare host; its address when it
    is an IP literal).
    """
    if not raw_host:
        raise UrlRejected("URL has no host")
    if raw_host[0] == "[":
        if raw_host[-1] != "]":
            raise UrlRejected(f"invalid IPv6 host {clip(raw_host)!r}")
        inner = raw_host[1:-1]
        if "%" in inner:
            raise UrlRejected("IPv6 zone identifiers are not allowed in URLs")
        addr6 = _parse_ipv6(inner)
        if addr6 is None:
            raise UrlRejected(f"invalid IPv6 address {clip(inner)!r}")
        text = address_text(addr6)
        return f"[{text}]", text, addr6
    host, encoded = (raw_host.lower(), frozenset[str]()) if raw_host.isascii() else _to_ascii(raw_host)
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise UrlRejected("URL has no host")
    if _ends_in_number(host):
        addr4 = _parse_ipv4(host)
        if addr4 is None:
            raise UrlRejected(f"invalid host {clip(host)!r}: it ends in a number but is not an IPv4 address")
        text = str(addr4)
        return text, text, addr4
    if len(host) > 253:
        raise UrlRejected("invalid host: longer than 253 characters")
    for label in host.split("."):
        if not label:
            raise UrlRejected(f"invalid host {clip(host)!r}: empty label")
        if len(label) > 63:
            raise UrlRejected(f"invalid host {clip(host)!r}: a label is longer than 63 characters")
        if not _HOST_LABEL.fullmatch(label):
            raise UrlRejected(f"invalid host {clip(host)!r}: invalid character")
        if label.startswith("xn--") and label not in encoded and not _valid_punycode(label):
            raise UrlRejected(f"invalid host {clip(host)!r}: invalid punycode label {clip(label)!r}")
    return host, host, None

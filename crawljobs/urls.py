"""URL validation, normalisation and address safety (DESIGN.md rule 7).

One module, used twice: the API at submit time (`check_urls`: normalise every URL, refuse literal private
addresses and always-local names, resolve each distinct hostname once) and the Scrapy workers at fetch time
(`resolve_and_check`: resolve again and connect only to an address that was checked, which defeats DNS
rebinding).

Decisions worth knowing:

- A URL is `http` or `https`, absolute, with a host and no credentials. Tabs, newlines, other control
  characters and whitespace other than a plain space are refused anywhere in it; a plain space in the path or
  query is percent-encoded.
- Percent-encoding leaves alone exactly what Scrapy's ``safe_url_string`` (w3lib 2.5) leaves alone, so a
  normalised URL is what the worker fetches, byte for byte: RFC 3986 unreserved characters, sub-delimiters,
  ``:@/`` (and ``?`` in the query) and valid ``%XX`` escapes stay; anything else (space, ``"``, ``<``, ``>``,
  ``\\``, ``^``, backtick, ``{``, ``}``, ``[``, ``]``, ``|``, ``'`` in the query, a stray ``%`` and every
  non-ASCII character, as UTF-8) is encoded. An empty query (a bare ``?``) is dropped. A backslash ends the
  host as it does in a browser, so every parser agrees on the host; in the path it is encoded, not turned
  into ``/``.
- Hosts are parsed the way a browser does (WHATWG URL): IDNA (UTS #46) first, then a host whose last label
  is a number is an IPv4 address in any inet_aton spelling (``0x7f.1``, ``017700000001``, ``2130706433``...)
  and is rewritten to dotted decimal, or refused when it is not a valid one. One trailing dot is dropped.
- Anything not globally routable is refused unless it lies in an operator-allowed network; IPv6 forms that
  embed an IPv4 address are judged by that address.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import reprlib
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from types import ModuleType

from crawljobs.config import Settings
from crawljobs.exceptions import UrlRejected

_idna: ModuleType | None
try:  # The `idna` package implements UTS #46 (what browsers do); the stdlib codec is IDNA 2003.
    import idna as _idna
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    _idna = None

logger = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

Resolver = Callable[[str], Awaitable[list[str]]]
"""Resolve a host name to a list of address strings; raise OSError when it does not resolve."""

DEFAULT_MAX_LENGTH = 8192
DNS_CONCURRENCY = 32
_REASON_INPUT_CHARS = 60  # how much of an offending piece a reason quotes
_RAW_INPUT_CHARS = 300  # how much of the raw input a rejection reports


# --- Addresses ----------------------------------------------------------------------------------------------

_METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OCI, DigitalOcean, OpenStack...
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (classic)
        "fd00:ec2::254",  # AWS IMDS over IPv6
    )
)


def _ranges(table: Sequence[tuple[str, str]]) -> tuple[tuple[int, int, str], ...]:
    """Networks as (first, last, description) integer ranges: a lookup is a few integer comparisons."""
    out = []
    for cidr, what in table:
        net = ipaddress.ip_network(cidr)
        out.append((int(net.network_address), int(net.broadcast_address), what))
    return tuple(out)


# Order matters: the first range that holds the address names it.
_V4_REFUSED = _ranges(
    [
        ("0.0.0.0/32", "unspecified"),
        ("255.255.255.255/32", "broadcast"),
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("169.254.0.0/16", "link-local"),
        ("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
        ("224.0.0.0/4", "multicast"),
        ("0.0.0.0/8", "reserved ('this network')"),
        ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
        ("192.0.2.0/24", "reserved for documentation"),
        ("198.51.100.0/24", "reserved for documentation"),
        ("203.0.113.0/24", "reserved for documentation"),
        ("198.18.0.0/15", "reserved for benchmarking"),
        ("192.88.99.0/24", "reserved (6to4 relay anycast)"),
        ("240.0.0.0/4", "reserved"),
    ]
)
_V6_REFUSED = _ranges(
    [
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private (site-local)"),
        ("fc00::/7", "private"),
        ("ff00::/8", "multicast"),
        ("64:ff9b:1::/48", "reserved (local-use NAT64)"),
        ("100::/64", "reserved (discard-only)"),
        ("2001::/32", "reserved (Teredo)"),
        ("2001:db8::/32", "reserved for documentation"),
        ("3fff::/20", "reserved for documentation"),
    ]
)
_V6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_V6_MAPPED = ipaddress.ip_network("::ffff:0:0/96")  # ::ffff:a.b.c.d
_V6_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # ::ffff:0:a.b.c.d (SIIT)
_V6_COMPATIBLE = ipaddress.ip_network("::/96")  # ::a.b.c.d (deprecated)
_V6_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V6_6TO4 = ipaddress.ip_network("2002::/16")


def _embedded_ipv4(addr: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, when it is one of the forms that carry one."""
    if addr in _V6_MAPPED or addr in _V6_TRANSLATED or addr in _V6_NAT64:
        return IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _V6_COMPATIBLE and int(addr) > 1:  # but not :: and ::1, which are IPv6's own
        return IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _V6_6TO4:
        return addr.sixtofour
    return None


def _lookup(table: tuple[tuple[int, int, str], ...], value: int) -> str | None:
    for first, last, what in table:
        if first <= value <= last:
            return what
    return None


def _address_text(addr: IPAddress) -> str:
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


def _as_address(address: IPAddress | str) -> IPAddress | None:
    if isinstance(address, IPv4Address | IPv6Address):
        return address
    text = str(address)
    if "%" in text and ":" in text:  # a resolver's link-local answer may carry a zone: fe80::1%eth0
        text = text.split("%", 1)[0]
    return parse_ip_literal(text)


@dataclass(frozen=True)
class NetworkPolicy:
    """Which addresses a fetch may go to: the public Internet, plus the networks the operator allows."""

    allowed: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> NetworkPolicy:
        return cls(allowed=tuple(settings.networks))

    def refusal(self, address: IPAddress | str) -> str | None:
        """None if a fetch may go to `address`; otherwise a short reason ("address 10.0.0.1 is private")."""
        addr = _as_address(address)
        if addr is None:
            return f"address {_clip(str(address))!r} is not a valid IP address"
        what = self._refused_as(addr)
        return None if what is None else f"address {_address_text(addr)} is {what}"

    def allows(self, addr: IPAddress) -> bool:
        """True when `addr` lies in a network the operator allows."""
        return any(addr in net for net in self.allowed)

    def _refused_as(self, addr: IPAddress) -> str | None:
        """What makes `addr` unfit ("private", "loopback"...), or None when a fetch may go there."""
        if self.allowed and self.allows(addr):
            return None
        if addr in _METADATA_ADDRESSES:
            return "a cloud metadata address"
        value = int(addr)
        if isinstance(addr, IPv4Address):
            what = _lookup(_V4_REFUSED, value)
            if what is None and not addr.is_global:
                what = "not globally routable"
            return what
        if value > 1:  # :: and ::1 are in ::/96 but are IPv6's own unspecified and loopback
            embedded = _embedded_ipv4(addr)
            if embedded is not None:
                inner = self._refused_as(embedded)
                return None if inner is None else f"{inner} (it embeds {embedded})"
        what = _lookup(_V6_REFUSED, value)
        if what is None and addr not in _V6_GLOBAL_UNICAST:
            what = "reserved (outside global unicast 2000::/3)"
        if what is None and not addr.is_global:
            what = "not globally routable"
        return what


# --- Host parsing -------------------------------------------------------------------------------------------

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
    try:
        if _idna is not None:
            mapped = _idna.uts46_remap(host, std3_rules=False, transitional=False)
            return ".".join(
                label if label.isascii() else _idna.alabel(label).decode("ascii")
                for label in mapped.split(".")
            )
        return host.encode("idna").decode("ascii").lower()
    except (UnicodeError, ValueError) as exc:
        raise UrlRejected(f"invalid host {_clip(host)!r}: it cannot be IDNA-encoded") from exc


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
def _canonical_host(raw_host: str) -> tuple[str, str, IPAddress | None]:
    """(host as written in the URL, bare host, address if it is an IP literal) or UrlRejected."""
    if not raw_host:
        raise UrlRejected("URL has no host")
    if raw_host[0] == "[":
        if raw_host[-1] != "]":
            raise UrlRejected(f"invalid IPv6 host {_clip(raw_host)!r}")
        inner = raw_host[1:-1]
        if "%" in inner:
            raise UrlRejected("IPv6 zone identifiers are not allowed in URLs")
        addr6 = _parse_ipv6(inner)
        if addr6 is None:
            raise UrlRejected(f"invalid IPv6 address {_clip(inner)!r}")
        text = _address_text(addr6)
        return f"[{text}]", text, addr6
    host = raw_host.lower() if raw_host.isascii() else _idna_encode(raw_host)
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise UrlRejected("URL has no host")
    if _ends_in_number(host):
        addr4 = _parse_ipv4(host)
        if addr4 is None:
            raise UrlRejected(f"invalid host {_clip(host)!r}: it ends in a number but is not an IPv4 address")
        text = str(addr4)
        return text, text, addr4
    if len(host) > 253:
        raise UrlRejected("invalid host: longer than 253 characters")
    for label in host.split("."):
        if not label:
            raise UrlRejected(f"invalid host {_clip(host)!r}: empty label")
        if len(label) > 63:
            raise UrlRejected(f"invalid host {_clip(host)!r}: a label is longer than 63 characters")
        if not _HOST_LABEL.fullmatch(label):
            raise UrlRejected(f"invalid host {_clip(host)!r}: invalid character")
        if label.startswith("xn--") and not _valid_punycode(label):
            raise UrlRejected(f"invalid host {_clip(host)!r}: invalid punycode label {_clip(label)!r}")
    return host, host, None


# --- Normalisation ------------------------------------------------------------------------------------------

# Characters left as they are in a path or query (w3lib's safe set): unreserved, reserved, "|" and "%".
_PATH_SAFE = r"A-Za-z0-9\-._~!$&'()*+,;=:@/%"
_QUERY_SAFE = r"A-Za-z0-9\-._~!$&()*+,;=:@/?%"  # w3lib encodes ' in the query of http(s) URLs
_FAST_URL = re.compile(
    r"(https?)://([a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*)(?::([0-9]{1,5}))?"
    rf"(/[{_PATH_SAFE}]*)?(\?[{_QUERY_SAFE}]+)?"
)
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PATH_TO_QUOTE = re.compile(rf"%(?![0-9A-Fa-f]{{2}})|[^{_PATH_SAFE}]+")
_QUERY_TO_QUOTE = re.compile(rf"%(?![0-9A-Fa-f]{{2}})|[^{_QUERY_SAFE}]+")
_CONTROL_ASCII = re.compile(r"[\x00-\x1f\x7f]")
# C0, DEL, C1, lone surrogates, and every Unicode whitespace character but the plain space.
_CONTROL_ANY = re.compile(
    "[\x00-\x1f\x7f-\xa0\ud800-\udfff\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_AUTHORITY_END = re.compile(r"[/?#\\]")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_JSON_TYPES = {
    "NoneType": "null",
    "bool": "a boolean",
    "int": "a number",
    "float": "a number",
    "list": "an array",
    "dict": "an object",
}


def _clip(text: str, limit: int = _REASON_INPUT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _quote_byte_run(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode("utf-8"))


def _quote(part: str, to_quote: re.Pattern[str]) -> str:
    """Percent-encode what may not appear in a path or query, leaving valid %XX escapes alone."""
    return to_quote.sub(_quote_byte_run, part)


def _too_long(max_length: int) -> UrlRejected:
    return UrlRejected(f"URL is longer than {max_length} bytes")


def _normalize(raw: object, max_length: int) -> tuple[str, str, IPAddress | None]:
    """(normalised URL, bare host, address if the host is an IP literal) or UrlRejected."""
    if not isinstance(raw, str):
        kind = type(raw).__name__
        raise UrlRejected(f"URL must be a string, not {_JSON_TYPES.get(kind, kind)}")
    if len(raw) > max_length:  # characters <= bytes: too long already, whatever the encoding
        raise _too_long(max_length)
    # Fast path: a plain lowercase ASCII URL that needs no escaping and names no IP address.
    m = _FAST_URL.fullmatch(raw)
    if m is not None:
        scheme, host, port, path, query = m.groups()
        addr: IPAddress | None = None
        plain = len(host) <= 253 and "xn--" not in host
        if plain and host[host.rfind(".") + 1] in "0123456789":
            # An IP literal: fine as it is only when already canonical (127.0.0.1, not 0x7f.1).
            try:
                host_text, _bare, addr = _canonical_host(host)
            except UrlRejected:
                plain = False
            else:
                plain = host_text == host
        if plain and ("%" not in raw or _BAD_PERCENT.search(raw) is None):
            if port is None:
                if path:
                    return raw, host, addr
                return f"{scheme}://{host}/{query or ''}", host, addr
            number = int(port)
            if 0 < number <= 65535:
                netloc = host if number == _DEFAULT_PORTS[scheme] else f"{host}:{number}"
                return f"{scheme}://{netloc}{path or '/'}{query or ''}", host, addr
    return _normalize_slowly(raw, max_length)


def _normalize_slowly(raw: str, max_length: int) -> tuple[str, str, IPAddress | None]:
    text = raw.strip()
    if not text:
        raise UrlRejected("URL is empty")
    ascii_only = text.isascii()
    bad = (_CONTROL_ASCII if ascii_only else _CONTROL_ANY).search(text)
    if bad is not None:
        raise UrlRejected(f"URL contains a control or whitespace character ({bad.group()!r})")
    if not ascii_only and len(raw.encode("utf-8")) > max_length:
        raise _too_long(max_length)

    colon = text.find(":")
    scheme = text[:colon] if colon > 0 else ""
    if not _SCHEME.fullmatch(scheme):
        raise UrlRejected("URL must be absolute and start with http:// or https://")
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UrlRejected(f"scheme {_clip(scheme, 20)!r} is not allowed (only http and https)")
    rest = text[colon + 1 :]
    if not rest.startswith("//"):
        raise UrlRejected(f"URL has no host (expected {scheme}://host/...)")
    rest = rest[2:]

    end = _AUTHORITY_END.search(rest)
    authority, tail = (rest[: end.start()], rest[end.start() :]) if end else (rest, "")
    if "@" in authority:
        raise UrlRejected("URL must not contain credentials (user:password@)")

    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise UrlRejected(f"invalid IPv6 host {_clip(authority)!r}")
        raw_host, after = authority[: close + 1], authority[close + 1 :]
        if after and not after.startswith(":"):
            raise UrlRejected(f"invalid host {_clip(authority)!r}")
        port = after[1:]
    else:
        raw_host, _, port = authority.partition(":")
        if ":" in port:
            raise UrlRejected(f"invalid host {_clip(authority)!r} (an IPv6 address must be in brackets)")
    if not raw_host:
        raise UrlRejected("URL has no host")
    host_text, host, addr = _canonical_host(raw_host)

    if port:
        digits = port.lstrip("0")
        if not (port.isascii() and port.isdigit()) or len(digits) > 5:
            raise UrlRejected(f"invalid port {_clip(port, 20)!r}")
        number = int(port)
        if not 0 < number <= 65535:
            raise UrlRejected(f"port {number} is out of range (1-65535)")
        port = "" if number == _DEFAULT_PORTS[scheme] else str(number)

    tail = tail.partition("#")[0]
    path, _, query = tail.partition("?")
    if path and path[0] != "/":  # it starts with a backslash
        path = "/" + path
    path = _quote(path, _PATH_TO_QUOTE) or "/"
    query = "?" + _quote(query, _QUERY_TO_QUOTE) if query else ""
    url = f"{scheme}://{host_text}{':' + port if port else ''}{path}{query}"
    if len(url) > max_length:
        raise _too_long(max_length)
    return url, host, addr


def normalize_url(raw: object, *, max_length: int = DEFAULT_MAX_LENGTH) -> str:
    """The canonical form of a URL a client submitted, or UrlRejected saying what is wrong with it.

    Lowercases scheme and host, encodes an IDN host to punycode, rewrites an IP literal to its canonical
    form, drops a default port and the fragment, makes an empty path "/", and percent-encodes what may not
    appear in a path or query (valid ``%XX`` escapes are kept; the query is otherwise kept as it is).
    """
    return _normalize(raw, max_length)[0]


def host_of(url: str) -> str:
    """The host of a normalised URL, without brackets for IPv6."""
    _, sep, rest = url.partition("://")
    if not sep:
        raise UrlRejected("URL has no host")
    end = _AUTHORITY_END.search(rest)
    authority = rest[: end.start()] if end else rest
    if authority.startswith("["):
        return authority[1 : authority.find("]")]
    return authority.rpartition("@")[2].partition(":")[0]


# --- Names that are local whatever DNS says -----------------------------------------------------------------

_LOOPBACK = (IPv4Address("127.0.0.1"), IPv6Address("::1"))
_METADATA = (IPv4Address("169.254.169.254"),)
_LOCAL_NAMES: dict[str, tuple[str, tuple[IPAddress, ...]]] = {
    "localhost": ("a loopback name", _LOOPBACK),
    "localhost.localdomain": ("a loopback name", _LOOPBACK),
    "localhost6": ("a loopback name", _LOOPBACK[1:]),
    "localhost6.localdomain6": ("a loopback name", _LOOPBACK[1:]),
    "ip6-localhost": ("a loopback name", _LOOPBACK[1:]),
    "ip6-loopback": ("a loopback name", _LOOPBACK[1:]),
    "ip6-localnet": ("a local name", (IPv6Address("fe00::"),)),
    "ip6-mcastprefix": ("a local name", (IPv6Address("ff00::"),)),
    "ip6-allnodes": ("a local name", (IPv6Address("ff02::1"),)),
    "ip6-allrouters": ("a local name", (IPv6Address("ff02::2"),)),
    "metadata": ("a cloud metadata name", _METADATA),
    "metadata.google.internal": ("a cloud metadata name", _METADATA),
    "instance-data": ("a cloud metadata name", _METADATA),
    "instance-data.ec2.internal": ("a cloud metadata name", _METADATA),
}


def _local_name(host: str) -> tuple[str, tuple[IPAddress, ...]] | None:
    """(what it is, the addresses it means) for a name that is local whatever DNS says, else None."""
    found = _LOCAL_NAMES.get(host)
    if found is None and host.endswith(".localhost"):  # RFC 6761
        found = _LOCAL_NAMES["localhost"]
    return found


def _local_addresses(host: str, policy: NetworkPolicy) -> list[IPAddress] | None:
    """For an always-local name, the addresses it means that the policy allows (UrlRejected if none)."""
    local = _local_name(host)
    if local is None:
        return None
    what, addresses = local
    permitted = [a for a in addresses if policy.refusal(a) is None]
    if not permitted:
        raise UrlRejected(f"host {host} is {what}")
    return permitted


def _check_host(host: str, addr: IPAddress | None, policy: NetworkPolicy) -> bool:
    """Refuse a literal address or an always-local name; True when no DNS look-up is needed."""
    if addr is not None:
        reason = policy.refusal(addr)
        if reason is not None:
            raise UrlRejected(reason)
        return True
    return _local_addresses(host, policy) is not None


def check_address_literal(url: str, policy: NetworkPolicy) -> None:
    """Refuse a normalised URL whose host is a refused IP literal or a name that is always local.

    Always-local names are ``localhost`` and ``*.localhost``, the loopback aliases of /etc/hosts
    (``localhost.localdomain``, ``ip6-localhost``...) and the cloud metadata names (``metadata``,
    ``metadata.google.internal``, ``instance-data``). Such a name is accepted when the policy allows one of
    the addresses it means (``localhost`` with 127.0.0.0/8 allowed): at fetch time `resolve_and_check` hands
    the worker exactly those allowed addresses. Other ``*.internal`` names are ordinary names: the DNS
    check judges what they resolve to.
    """
    host = host_of(url)
    _check_host(host, parse_ip_literal(host), policy)


# --- Resolution ---------------------------------------------------------------------------------------------


async def system_resolver(host: str) -> list[str]:
    """The addresses the system resolver gives for `host`, each once, in its order; OSError if none."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except UnicodeError as exc:  # the stdlib's IDNA codec refuses the name (a label too long...)
        raise OSError(f"cannot resolve {host!r}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _resolved_refusal(host: str, addresses: Sequence[str], policy: NetworkPolicy) -> str | None:
    for address in addresses:
        addr = _as_address(address)
        if addr is None:
            return f"host {host} resolves to {_clip(str(address))!r}, which is not a valid IP address"
        what = policy._refused_as(addr)
        if what is not None:
            return f"host {host} resolves to {_address_text(addr)}, which is {what}"
    return None


async def resolve_and_check(
    host: str, policy: NetworkPolicy, resolver: Resolver = system_resolver
) -> list[str]:
    """For fetch time: the addresses of `host`, all checked; connect to one of them, never look up again.

    Raises UrlRejected when any address is refused (a name answering both public and private addresses is
    treated as hostile) or when the host does not resolve. An IP literal is checked without a look-up; an
    always-local name (``localhost``) gives the addresses it means that the policy allows.
    """
    addr = parse_ip_literal(host)
    if addr is not None:
        reason = policy.refusal(addr)
        if reason is not None:
            raise UrlRejected(reason)
        return [_address_text(addr)]
    bare = host.lower().rstrip(".")
    local = _local_addresses(bare, policy)
    if local is not None:
        return [_address_text(a) for a in local]
    try:
        addresses = list(dict.fromkeys(await resolver(host)))
    except (OSError, ValueError) as exc:  # ValueError: a name the resolver cannot even encode
        raise UrlRejected(f"host {host} does not resolve") from exc
    if not addresses:
        raise UrlRejected(f"host {host} does not resolve")
    reason = _resolved_refusal(host, addresses, policy)
    if reason is not None:
        raise UrlRejected(reason)
    return addresses


# --- Submit time --------------------------------------------------------------------------------------------


@dataclass
class UrlCheck:
    """The outcome of `check_urls`, both lists in input order."""

    accepted: list[tuple[int, str]] = field(default_factory=list)  # (index in input, normalised URL)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (index, raw input, reason)


# What JSON text cannot carry (a lone surrogate is not UTF-8) and PostgreSQL cannot store (NUL, in text or jsonb).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _raw_text(raw: object) -> str:
    """The submitted input as a refusal reports it: clipped, with NUL and lone surrogates written as escapes
    (the report is sent back as JSON and kept with the batch in PostgreSQL)."""
    text = raw if isinstance(raw, str) else reprlib.repr(raw)
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text[:_RAW_INPUT_CHARS])


async def _resolve_all(hosts: Sequence[str], resolver: Resolver, seconds: float) -> dict[str, list[str]]:
    """The addresses of each host that resolved within `seconds` (a host that failed is left out)."""
    limit = asyncio.Semaphore(DNS_CONCURRENCY)

    async def resolve(host: str) -> list[str]:
        async with limit:
            return await resolver(host)

    tasks = {asyncio.create_task(resolve(host), name=f"resolve {host}"): host for host in hosts}
    done, pending = await asyncio.wait(tasks.keys(), timeout=seconds)
    for task in pending:
        task.cancel()
    if pending:
        logger.info("DNS timed out for %d of %d hosts", len(pending), len(tasks), extra={"action": "dns"})
    resolved = {}
    for task in done:
        if task.cancelled():  # the resolver cancelled itself: as good as unresolvable
            continue
        exc = task.exception()
        if exc is None:
            resolved[tasks[task]] = task.result()
        elif not isinstance(exc, OSError):
            logger.warning("resolver failed for %s: %r", tasks[task], exc, extra={"action": "dns"})
    return resolved


async def check_urls(
    raw_urls: Sequence[object],
    policy: NetworkPolicy,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    resolver: Resolver = system_resolver,
    dns_timeout: float = 2.0,
) -> UrlCheck:
    """Normalise and check a batch of submitted URLs; every one ends in exactly one of the two lists.

    Refuses malformed URLs, literal addresses the policy refuses and always-local names, then resolves each
    distinct remaining host once (at most `DNS_CONCURRENCY` at a time, the whole step bounded by
    `dns_timeout`) and refuses every URL whose host resolves to any refused address.

    A host that does not resolve, whose resolver fails, or whose resolution does not finish in time is
    ACCEPTED: the API may not see the DNS the workers see, and the worker checks the address again at fetch
    time (`resolve_and_check`), failing the job then. This step only turns obvious cases into a 4xx early.
    """
    outcome: list[str | tuple[str, str]] = []  # normalised URL, or (raw, reason)
    to_resolve: dict[str, list[int]] = {}
    verdicts: dict[str, bool | str] = {}  # host -> no look-up needed / needs one / the refusal
    for index, raw in enumerate(raw_urls):
        try:
            url, host, addr = _normalize(raw, max_length)
            verdict = verdicts.get(host)
            if verdict is None:
                try:
                    verdict = _check_host(host, addr, policy)
                except UrlRejected as exc:
                    verdict = exc.message
                verdicts[host] = verdict
            if isinstance(verdict, str):
                raise UrlRejected(verdict)
            if not verdict:
                to_resolve.setdefault(host, []).append(index)
        except UrlRejected as exc:
            outcome.append((_raw_text(raw), exc.message))
        else:
            outcome.append(url)

    if to_resolve:
        resolved = await _resolve_all(list(to_resolve), resolver, dns_timeout)
        for host, addresses in resolved.items():
            reason = _resolved_refusal(host, addresses, policy)
            if reason is not None:
                for index in to_resolve[host]:
                    outcome[index] = (_raw_text(raw_urls[index]), reason)

    result = UrlCheck()
    for index, item in enumerate(outcome):
        if isinstance(item, str):
            result.accepted.append((index, item))
        else:
            result.rejected.append((index, item[0], item[1]))
    return result

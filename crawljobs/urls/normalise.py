"""URL normalisation: what the API stores is what the worker fetches, byte for byte.

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
- The host is read as a browser reads it (`crawljobs.urls.hosts`).
"""

from __future__ import annotations

import re

from crawljobs.exceptions import UrlRejected
from crawljobs.urls.hosts import IPAddress, canonicalize_host, clip

DEFAULT_MAX_LENGTH = 8192

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


def _quote_byte_run(match: re.Match[str]) -> str:
    # "%" before each byte in hexadecimal, written by bytes.hex in C: a generator per byte took 20 times as long
    # (0.4 ms for a URL with 180 non-ASCII characters).
    return "%" + match.group().encode("utf-8").hex("%").upper()


def _quote(part: str, to_quote: re.Pattern[str]) -> str:
    """Percent-encode what may not appear in a path or query, leaving valid %XX escapes alone."""
    return to_quote.sub(_quote_byte_run, part)


def _too_long(max_length: int) -> UrlRejected:
    return UrlRejected(f"URL is longer than {max_length} bytes")


def normalize_url_and_host(raw: object, max_length: int) -> tuple[str, str, IPAddress | None]:
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
                host_text, _bare, addr = canonicalize_host(host)
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
        raise UrlRejected(f"scheme {clip(scheme, 20)!r} is not allowed (only http and https)")
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
            raise UrlRejected(f"invalid IPv6 host {clip(authority)!r}")
        raw_host, after = authority[: close + 1], authority[close + 1 :]
        if after and not after.startswith(":"):
            raise UrlRejected(f"invalid host {clip(authority)!r}")
        port = after[1:]
    else:
        raw_host, _, port = authority.partition(":")
        if ":" in port:
            raise UrlRejected(f"invalid host {clip(authority)!r} (an IPv6 address must be in brackets)")
    if not raw_host:
        raise UrlRejected("URL has no host")
    host_text, host, addr = canonicalize_host(raw_host)

    if port:
        digits = port.lstrip("0")
        if not (port.isascii() and port.isdigit()) or len(digits) > 5:
            raise UrlRejected(f"invalid port {clip(port, 20)!r}")
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
    return normalize_url_and_host(raw, max_length)[0]


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

"""What a proxy request's target names, read as a browser reads a URL's host (`crawljobs.urls`).

``CONNECT host:port`` and absolute-form ``GET http://host[:port]/path`` give the host in its canonical form
(an IP literal in any spelling becomes the address it means, an IDN becomes punycode), so that what the
network rules check is what the guard connects to.
"""

from __future__ import annotations

from crawljobs.exceptions import UrlRejected
from crawljobs.urls import host_of, normalize_url
from crawlproject.egress.framing import ProtocolError


def parse_authority(authority: str) -> tuple[str, int | None]:
    """(host, port or None) of ``host[:port]`` as a browser reads it; ProtocolError when it is not one."""
    if not authority or "@" in authority or any(c in authority for c in "/?#\\ "):
        raise ProtocolError("invalid target host")
    if authority.startswith("["):
        _, bracket, after = authority.partition("]")
        if not bracket:
            raise ProtocolError("invalid target host")
    else:
        _, colon, after = authority.partition(":")
        after = colon + after
    if after and not after.startswith(":"):
        raise ProtocolError("invalid target host")
    port_text = after[1:]
    port: int | None = None
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
            raise ProtocolError("invalid target port")
        port = int(port_text)
        if not 0 < port <= 65535:
            raise ProtocolError("invalid target port")
    host_part = authority[: len(authority) - len(after)]
    try:
        normalized = normalize_url(f"http://{host_part}/")
    except UrlRejected as exc:
        raise ProtocolError(f"invalid target: {exc.message}") from None
    return host_of(normalized), port


def connect_target(target: str) -> tuple[str, int]:
    """(host, port) of a ``CONNECT`` target, which must give a port."""
    host, port = parse_authority(target)
    if port is None:
        raise ProtocolError("CONNECT takes host:port")
    return host, port


def absolute_target(target: str) -> tuple[str, int, str]:
    """(host, port, origin-form path and query) of an absolute-form ``http://`` request target."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() != "http":
        raise ProtocolError("an absolute http:// URI is needed (https goes through CONNECT)")
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:].partition("#")[0]
    if not path.startswith("/"):
        path = "/" + path
    host, port = parse_authority(authority)
    return host, port or 80, path


def authority(host: str, port: int, *, default: int | None = None) -> str:
    """``host:port`` as a Host header writes it (IPv6 in brackets; no port when it is ``default``)."""
    bracketed = f"[{host}]" if ":" in host else host
    return bracketed if port == default else f"{bracketed}:{port}"

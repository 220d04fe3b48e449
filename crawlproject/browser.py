"""Network rules inside the browser: every request Chromium makes (page scripts included) is checked."""

from __future__ import annotations

import logging
from functools import cache
from urllib.parse import urlsplit

from crawljobs.config import Settings
from crawljobs.exceptions import UrlRejected
from crawljobs.urls import NetworkPolicy, parse_ip_literal, resolve_and_check

logger = logging.getLogger(__name__)


@cache
def _policy() -> NetworkPolicy:
    return NetworkPolicy.from_settings(Settings())


async def refuse_forbidden_request(request: object) -> bool:
    """PLAYWRIGHT_ABORT_REQUEST: True (abort) for a request to an address the network rules refuse."""
    url: str = getattr(request, "url", "")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return parts.scheme not in ("data", "blob", "about")
    host = parts.hostname or ""
    policy = _policy()
    literal = parse_ip_literal(host)
    if literal is not None:
        refused = policy.refusal(literal) is not None
    else:
        try:
            await resolve_and_check(host, policy)
            refused = False
        except UrlRejected:
            refused = True
    if refused:
        logger.warning(
            "browser request to %s refused by the network rules", url[:200], extra={"action": "ssrf"}
        )
    return refused

"""Network rules inside the browser: every request Chromium makes (page scripts included) is checked.

``BrowserGuard`` is a Scrapy add-on: built with the crawler, it installs its ``BrowserRequestCheck`` (the
crawler's network rules) as scrapy-playwright's ``PLAYWRIGHT_ABORT_REQUEST``, which takes a callable.

WebRTC is the one way out that neither the check nor the egress guard sees: its STUN and TURN traffic is UDP
that Chromium sends itself, to servers a page names. ``NO_WEBRTC`` is the init script every browser context
gets (``crawlproject.rendering``): it removes the API from every frame before the page's own scripts run.
Behind it, the launch flag ``--webrtc-ip-handling-policy=disable_non_proxied_udp`` (``crawlproject.settings``)
keeps Chromium from sending UDP that does not go through a proxy, which a proxy never carries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from scrapy.crawler import Crawler
from scrapy.settings import BaseSettings

from crawljobs.exceptions import UrlRejected
from crawljobs.urls import NetworkPolicy, parse_ip_literal, resolve_and_check
from crawlproject.config import WorkerConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrowserRequestCheck:
    """PLAYWRIGHT_ABORT_REQUEST: True (abort) for a request to an address the network rules refuse."""

    policy: NetworkPolicy

    async def __call__(self, request: object) -> bool:
        return await self.refusal(getattr(request, "url", "")) is not None

    async def refusal(self, url: str) -> str | None:
        """Why the network rules refuse a browser request to ``url`` ("address 127.0.0.2 is loopback"), or
        None when they allow it."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return (
                None
                if parts.scheme in ("data", "blob", "about")
                else f"scheme {parts.scheme!r} is not allowed"
            )
        host = parts.hostname or ""
        literal = parse_ip_literal(host)
        if literal is not None:
            reason = self.policy.refusal(literal)
        else:
            try:
                await resolve_and_check(host, self.policy)
                reason = None
            except UrlRejected as exc:
                reason = exc.message
        if reason is not None:
            logger.warning(
                "browser request to %s refused by the network rules", url[:200], extra={"action": "ssrf"}
            )
        return reason


# The init script of every browser context: run in every frame (about:blank and srcdoc iframes included) before
# the page's scripts, it deletes WebRTC's constructors, so that no page can open a peer connection at all. The
# names are those Chromium exposes on a window; workers have no peer connections.
NO_WEBRTC = """(() => {
  for (const name of [
    "RTCPeerConnection", "webkitRTCPeerConnection", "RTCDataChannel", "RTCIceCandidate", "RTCIceTransport",
    "RTCDtlsTransport", "RTCSctpTransport", "RTCSessionDescription", "RTCRtpSender", "RTCRtpReceiver",
    "RTCRtpTransceiver", "RTCCertificate", "RTCDTMFSender", "RTCEncodedAudioFrame", "RTCEncodedVideoFrame",
    "RTCRtpScriptTransform", "RTCIdentityAssertion",
  ]) {
    try { delete globalThis[name]; } catch (error) {}
  }
})();"""


class BrowserGuard:
    """The add-on that gives scrapy-playwright this crawler's check."""

    def __init__(self, check: BrowserRequestCheck) -> None:
        self.check = check

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BrowserGuard:
        return cls(BrowserRequestCheck(WorkerConfig.of(crawler).network))

    def update_settings(self, settings: BaseSettings) -> None:
        settings.set("PLAYWRIGHT_ABORT_REQUEST", self.check, priority="addon")

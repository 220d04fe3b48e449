"""The browser's requests, checked without being touched: CDP's Fetch domain on the browser target.

scrapy-playwright routes ``**`` on every page, and Playwright intercepts on its own whenever a context has
proxy credentials (it answers the proxy's 407 itself). Either way Playwright also sends
``Network.setCacheDisabled``, and a Chromium without its cache sends ``Pragma: no-cache`` and
``Cache-Control: no-cache`` on every request, navigations included, which a real Chrome never does (measured
on the test site: every navigation of every tier carried both). So the worker's browser uses neither:

- no route: the render handler does not call ``page.route`` (``RenderHandler._download_request_with_retry``);
- no credentials in Playwright's context options: ``BrowserNetwork.context_proxy`` strips them and keeps them
  here, by proxy origin;
- one CDP session on the browser target (``Browser.new_browser_cdp_session``) enables ``Fetch`` with
  ``handleAuthRequests`` and one pattern, every URL at the request stage. That covers every target of the
  browser (pages, out-of-process iframes, workers, service workers) and every hop of a redirect, which
  Playwright's route never saw. Each paused request is checked with the crawler's network rules
  (``BrowserRequestCheck``, as ``PLAYWRIGHT_ABORT_REQUEST`` was) and continued unchanged
  (``Fetch.continueRequest`` with no overrides: the headers are Chromium's own) or failed
  (``BlockedByClient``); a refused document request of a page's main frame is told to the renders
  (``on_refused``) before it fails. A proxy's 407 is answered with that proxy's credentials; a site's own
  401 is cancelled, as a Chrome with nobody at the keyboard would leave it.

Per tier: the direct tier also goes through the egress guard, which checks every connection on the address it
connects to (redirect hops and CONNECT tunnels included); the proxy tiers' connections are the operator's
proxies', so for them this check is the one that holds (it resolves a name and checks every answer; the proxy
resolves it again, as for the http engine through a proxy). The check runs for every tier: one CDP round trip
per request, what Playwright's route cost before, and the direct tier keeps two independent checks.

A request whose check fails for any reason (an error in the check itself) is failed: closed, never open.
Contexts that share a proxy origin share its credentials (the worker names a context by its proxy's host and
port already).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Browser, CDPSession
from playwright.async_api import Error as PlaywrightError

from crawlproject.browser import BrowserRequestCheck

logger = logging.getLogger(__name__)

# (frame id, url, reason) of a refused document request: the caller records it on the page's render.
RefusalListener = Callable[[str, str, str], Awaitable[None]]

FAIL_REASON = "BlockedByClient"  # the page sees net::ERR_BLOCKED_BY_CLIENT


def proxy_origin(server: str) -> str:
    """``http://Host:8080/`` → ``http://host:8080``: the form of CDP's ``authChallenge.origin``."""
    parts = urlsplit(server if "://" in server else f"http://{server}")
    scheme = (parts.scheme or "http").lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme, 0)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


class BrowserNetwork:
    """The Fetch session of one browser (module docstring). ``await attach(browser)`` before any context."""

    def __init__(self, check: BrowserRequestCheck | None, on_refused: RefusalListener | None = None) -> None:
        self.check = check
        self.on_refused = on_refused
        self.browser: Browser | None = None
        self._session: CDPSession | None = None
        self._credentials: dict[str, tuple[str, str]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    def context_proxy(self, proxy: dict[str, str]) -> dict[str, str]:
        """The ``proxy`` option of a context without its credentials, which are kept to answer its 407s."""
        stripped = {key: value for key, value in proxy.items() if key not in ("username", "password")}
        username, password = proxy.get("username") or "", proxy.get("password") or ""
        if username or password:
            origin = proxy_origin(proxy["server"])
            known = self._credentials.get(origin)
            if known is not None and known != (username, password):
                logger.warning(
                    "proxy %s is configured with two sets of credentials: the first is used", origin
                )
            else:
                self._credentials[origin] = (username, password)
        return stripped

    async def attach(self, browser: Browser) -> None:
        """Enable the Fetch domain on ``browser`` (raises if it cannot: no context may exist without it)."""
        session = await browser.new_browser_cdp_session()
        session.on("Fetch.requestPaused", self._spawn(self._paused))
        session.on("Fetch.authRequired", self._spawn(self._auth))
        await session.send(
            "Fetch.enable",
            {"handleAuthRequests": True, "patterns": [{"urlPattern": "*", "requestStage": "Request"}]},
        )
        self._session = session
        self.browser = browser

    def _spawn(
        self, handler: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> Callable[[dict[str, Any]], None]:
        def listener(event: dict[str, Any]) -> None:
            task = asyncio.ensure_future(handler(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return listener

    async def _send(self, method: str, params: dict[str, Any]) -> None:
        session = self._session
        if session is None:
            return
        # The request may be gone meanwhile (its page closed, the browser closing): nothing to answer.
        with contextlib.suppress(PlaywrightError):
            await session.send(method, params)

    async def _paused(self, event: dict[str, Any]) -> None:
        request_id = event["requestId"]
        url = str(event.get("request", {}).get("url", ""))
        try:
            reason = await self.check.refusal(url) if self.check is not None else None
        except Exception as exc:  # closed, never open
            logger.exception("the browser's request check failed on %s: refused", url[:200])
            reason = f"the request check failed: {exc}"
        if reason is None:
            await self._send("Fetch.continueRequest", {"requestId": request_id})
            return
        if event.get("resourceType") == "Document" and self.on_refused is not None:
            try:
                await self.on_refused(str(event.get("frameId", "")), url, reason)
            except Exception:
                logger.exception("could not record a refused navigation")
        await self._send("Fetch.failRequest", {"requestId": request_id, "errorReason": FAIL_REASON})

    async def _auth(self, event: dict[str, Any]) -> None:
        challenge = event.get("authChallenge", {})
        credentials = (
            self._credentials.get(proxy_origin(str(challenge.get("origin", ""))))
            if challenge.get("source") == "Proxy"
            else None
        )
        if credentials is None:
            answer: dict[str, str] = {"response": "CancelAuth"}
        else:
            answer = {
                "response": "ProvideCredentials",
                "username": credentials[0],
                "password": credentials[1],
            }
        await self._send(
            "Fetch.continueWithAuth", {"requestId": event["requestId"], "authChallengeResponse": answer}
        )

    async def detach(self) -> None:
        session, self._session = self._session, None
        for task in list(self._tasks):
            task.cancel()
        if session is not None:
            with contextlib.suppress(PlaywrightError):
                await asyncio.wait_for(session.detach(), 5)

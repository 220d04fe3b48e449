"""Rendering until the page settles: what a render waits for between ``load`` and reading the page.

A page taken at ``load`` misses what its scripts do next: data fetched after load, a marker written a second
later, a JavaScript challenge that computes, sets a cookie and reloads. ``Settler.settle`` runs after the
navigation (``rendering.RenderHandler._apply_page_methods``) and before the page is measured and read:

1. the job's ``wait_for``: until the CSS selector matches an element in the DOM (attached, visible or not),
   across the page's own navigations, at most ``CRAWLJOBS_RENDER_MAX_WAIT_MS``. A selector that never matches
   does not end the render: the page is taken as it is and the attempt is marked (``SELECTOR_MISSING``), so the
   retry middleware first asks whether the page is a block (a challenge that was not passed climbs the ladder)
   and otherwise fails the job with that named reason: a job that named the element it needs must not be
   ``completed`` with a page that lacks it. A selector Chromium cannot parse ends the attempt
   ``InvalidSelector`` (permanent);
2. the job's ``wait_ms``;
3. network quiet: no request of the page in flight for ``CRAWLJOBS_RENDER_QUIET_MS``, and no main-frame
   navigation under way, at most ``CRAWLJOBS_RENDER_SETTLE_MAX_MS`` (a page that polls for ever is taken then);
4. a page that still looks like a JavaScript challenge (the challenge signatures of ``blocks``, read in an
   isolated world page scripts cannot tamper with) is given ``CRAWLJOBS_RENDER_CHALLENGE_WAIT_MS`` to navigate
   itself (``location.reload()``, a form, ``location.href``); each such navigation is followed (back to 3) up
   to ``CRAWLJOBS_RENDER_MAX_RELOADS`` times, and the final page is the one taken.

Every wait ends ``margin`` before the render's deadline (``CRAWLJOBS_RENDER_TIMEOUT``), so a page that settles
late is still taken rather than closed. When the page navigated itself, the status and headers of the result
are those of its last document (the challenge's 403 is not the final page's status).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from playwright.async_api import CDPSession, Page
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Request as PlaywrightRequest
from playwright.async_api import Response as PlaywrightResponse
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from crawljobs.config import Settings
from crawlproject.blocks import detect_block
from crawlproject.errors import InvalidSelector

logger = logging.getLogger(__name__)

# Where a render leaves, for the retry middleware, why the job's wait_for selector is missing.
SELECTOR_MISSING = "crawljobs_selector_missing"
# Where it leaves whether it passed a challenge (the page looked like one, navigated itself, and was left).
CHALLENGE_PASSED = "crawljobs_challenge_passed"

# The statuses bot protection serves its challenges with.
CHALLENGE_STATUSES = frozenset({403, 429, 503})
POLL_SECONDS = 0.05  # how often time-based conditions (quiet for N ms) are looked at again
SAMPLE_CHARS = 64 * 1024  # what of the page the challenge check reads (the block rules read as much)
DETACH_TIMEOUT = 10.0

# The page's first characters, read in an isolated world (page scripts cannot redefine what it calls there).
_SAMPLE_SCRIPT = f"""(() => {{
  const root = document.documentElement;
  return root ? root.outerHTML.slice(0, {SAMPLE_CHARS}) : "";
}})()"""


def is_main_frame_navigation(request: PlaywrightRequest) -> bool:
    try:
        return request.is_navigation_request() and request.frame.parent_frame is None
    except PlaywrightError:  # a service worker's request has no frame
        return False


@dataclass(eq=False)
class PageActivity:
    """What one page's network and main frame do, heard from its events from the page's creation on."""

    page: Page
    in_flight: set[PlaywrightRequest] = field(default_factory=set)
    last_change: float = 0.0
    navigating: bool = False  # a main-frame navigation started and its document has not loaded yet
    navigations: int = 0  # main-frame navigations started (redirect hops not counted)
    document: PlaywrightResponse | None = None  # the response of the main frame's last document
    first_document: PlaywrightResponse | None = None
    documents: int = 0  # main-frame document responses seen
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def attach(cls, page: Page) -> PageActivity:
        activity = cls(page, last_change=asyncio.get_running_loop().time())
        page.on("request", activity._on_request)
        page.on("requestfinished", activity._on_request_done)
        page.on("requestfailed", activity._on_request_failed)
        page.on("response", activity._on_response)
        page.on("load", activity._on_load)
        return activity

    def _touch(self) -> None:
        self.last_change = asyncio.get_running_loop().time()
        self.changed.set()

    def _on_request(self, request: PlaywrightRequest) -> None:
        self.in_flight.add(request)
        if is_main_frame_navigation(request):
            self.navigating = True
            if request.redirected_from is None:
                self.navigations += 1
        self._touch()

    def _on_request_done(self, request: PlaywrightRequest) -> None:
        self.in_flight.discard(request)
        self._touch()

    def _on_request_failed(self, request: PlaywrightRequest) -> None:
        self.in_flight.discard(request)
        if is_main_frame_navigation(request):
            self.navigating = False
        self._touch()

    def _on_response(self, response: PlaywrightResponse) -> None:
        if is_main_frame_navigation(response.request) and not 300 <= response.status < 400:
            self.document = response
            self.documents += 1
            if self.first_document is None:
                self.first_document = response
        self._touch()

    def _on_load(self, _page: Page) -> None:
        self.navigating = False
        self._touch()

    def quiet_for(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        return not self.navigating and not self.in_flight and loop.time() - self.last_change >= seconds

    async def until(self, condition: Callable[[], bool], seconds: float) -> bool:
        """Wait until ``condition()`` holds (True) or ``seconds`` pass (False)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while not condition():
            left = end - loop.time()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, POLL_SECONDS))
        return True


@dataclass
class Settled:
    """What settling found: the last document when the page navigated itself, and whether it passed a
    challenge."""

    followed: int = 0  # the page's own navigations followed
    challenged: bool = False  # the page looked like a challenge at some point
    passed: bool = False  # ... and no longer does
    selector_missing: str | None = None
    status: int | None = None  # of the last document, when it is not the one navigated to
    headers: dict[str, str] | None = None


class Settler:
    """The settling of one worker's renders (its bounds come from the settings)."""

    def __init__(self, settings: Settings, *, deadline: float) -> None:
        self.quiet = settings.render_quiet_ms / 1000
        self.settle_max = settings.render_settle_max_ms / 1000
        self.max_wait = settings.render_max_wait_ms / 1000
        self.challenge_wait = settings.render_challenge_wait_ms / 1000
        self.max_reloads = settings.render_max_reloads
        # Kept free at the end of the render's deadline for measuring and reading the page (a quarter of it,
        # between 1 and 5 s: on a loaded machine the reads of a page took over a second).
        self.margin = max(1.0, min(5.0, deadline * 0.25))

    async def settle(
        self,
        page: Page,
        activity: PageActivity,
        *,
        ends_at: float,
        wait_for: str | None,
        wait_ms: int | None,
        session: CDPSession | None = None,
    ) -> Settled:
        """Wait for the page to settle (module docstring); ``ends_at`` is the render's deadline (loop time);
        ``session``: a CDP session of the page kept as long as it, to read it on (else one per read)."""
        loop = asyncio.get_running_loop()
        until = ends_at - self.margin
        result = Settled()
        # Counted from the first document (the navigation's own): the page may have navigated on already
        # between the navigation's end and now.
        first_document = min(activity.documents, 1)

        def left(cap: float) -> float:
            return max(0.0, min(cap, until - loop.time()))

        if wait_for is not None:
            result.selector_missing = await self._wait_for_selector(page, wait_for, left(self.max_wait))
        if wait_ms:
            await asyncio.sleep(left(min(wait_ms / 1000, self.max_wait)))
        counted = min(activity.navigations, 1)
        # Looked at once at load too: a challenge may navigate on before the network is quiet.
        result.challenged = await self._looks_like_challenge(page, activity, session)
        first_status = activity.first_document.status if activity.first_document is not None else 200
        while True:
            await activity.until(lambda: activity.quiet_for(self.quiet), left(self.settle_max))
            if activity.navigations > counted:
                result.followed += activity.navigations - counted
                counted = activity.navigations
            if activity.navigating or left(self.challenge_wait) <= 0:
                break
            if not result.challenged and not result.followed:
                break  # an ordinary page that stayed where it was
            if not await self._looks_like_challenge(page, activity, session):
                # Passed: the page that looked like a challenge (or answered as one) navigated itself away.
                result.passed = result.followed > 0 and (
                    result.challenged or first_status in CHALLENGE_STATUSES
                )
                break
            result.challenged = True
            if result.followed >= self.max_reloads:
                break
            if not await activity.until(
                partial(_navigated_since, activity, activity.navigations), left(self.challenge_wait)
            ):
                break  # the challenge did not navigate: the page is taken as it is (a block)
        if activity.documents > first_document and activity.document is not None:
            result.status = activity.document.status
            with contextlib.suppress(PlaywrightError):
                result.headers = await activity.document.all_headers()
        if result.followed:
            logger.info(
                "the page navigated itself %d time(s) after it loaded%s",
                result.followed,
                " (a challenge, passed)" if result.passed else "",
            )
        return result

    async def _wait_for_selector(self, page: Page, selector: str, seconds: float) -> str | None:
        """None once ``selector`` matches; else why it is missing."""
        try:
            await page.wait_for_selector(f"css={selector}", state="attached", timeout=seconds * 1000)
            return None
        except PlaywrightTimeoutError:
            return f"wait_for: the selector {json.dumps(selector[:200])} matched nothing within {seconds * 1000:.0f} ms"
        except PlaywrightError as exc:
            message = str(exc)
            if "selector" in message.lower() and ("valid" in message.lower() or "pars" in message.lower()):
                raise InvalidSelector(
                    f"wait_for: {json.dumps(selector[:200])} is not a CSS selector Chromium accepts"
                ) from None
            raise

    async def _looks_like_challenge(
        self, page: Page, activity: PageActivity, session: CDPSession | None
    ) -> bool:
        sample = await isolated_evaluate(page, _SAMPLE_SCRIPT, session=session)
        if not isinstance(sample, str):
            return False
        document = activity.document
        status = document.status if document is not None else 200
        headers = document.headers if document is not None else {}
        block = detect_block(
            status=status, headers=headers, body=sample, content_type="text/html", rendered=True
        )
        return block is not None and block.kind == "challenge"


def _navigated_since(activity: PageActivity, count: int) -> bool:
    return activity.navigations > count


async def isolated_evaluate(
    page: Page, expression: str, *, session: CDPSession | None = None, world_name: str = "crawljobs-settle"
) -> Any:
    """``expression``'s value in an isolated world of the page's main frame (page scripts cannot redefine what
    it calls there); None when it cannot be evaluated (the page is navigating).

    ``session``: a CDP session of the page its owner keeps (and detaches); without one, a session is attached
    for this read and detached after it: two more round trips to the browser for every read of every page."""
    own = session is None
    if session is None:
        session = await page.context.new_cdp_session(page)
    try:
        tree = await session.send("Page.getFrameTree")
        world = await session.send(
            "Page.createIsolatedWorld",
            {"frameId": tree["frameTree"]["frame"]["id"], "worldName": world_name},
        )
        result = await session.send(
            "Runtime.evaluate",
            {"expression": expression, "contextId": world["executionContextId"], "returnByValue": True},
        )
    except PlaywrightError as exc:
        logger.debug("could not read the page: %s", exc)
        return None
    finally:
        if own:  # Not awaited: on a renderer that never answers, a detach would wait with it.
            _detaching.add(task := asyncio.ensure_future(_detach(session)))
            task.add_done_callback(_detaching.discard)
    return result.get("result", {}).get("value")


_detaching: set[asyncio.Future[None]] = set()


async def _detach(session: CDPSession) -> None:
    with contextlib.suppress(PlaywrightError, TimeoutError):
        await asyncio.wait_for(session.detach(), DETACH_TIMEOUT)


__all__ = [
    "CHALLENGE_PASSED",
    "SELECTOR_MISSING",
    "PageActivity",
    "Settled",
    "Settler",
    "is_main_frame_navigation",
    "isolated_evaluate",
]

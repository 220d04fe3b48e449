"""The browser engine's bounds: scrapy-playwright's download handler, with every render held to its limits.

scrapy-playwright opens a page per request, navigates, reads the DOM and closes the page, and bounds nothing
but the navigation: a page whose scripts spin after ``load`` keeps ``page.content()`` waiting for ever (and its
job's lease renewed, and a page of the context taken), a DOM built by script is read whole whatever its size,
and what the page did after it loaded is stored as it stands, Chromium's error page included. ``RenderHandler``
keeps scrapy-playwright's handler and adds, per render (one request of the browser engine):

- **a deadline** (``CRAWLJOBS_RENDER_TIMEOUT``) from the page's opening to its HTML in the worker: when it
  passes, the page is closed (its context too, if the page will not close) and the attempt ends as
  ``PageBusyTimeout`` when the page had loaded (its scripts hold the renderer: permanent) or ``RenderTimeout``
  before (a timeout like any other: transient);
- **cancel and take-over**: the lease heartbeat names the held jobs it could not renew (``Leases.on_gone``);
  their renders are closed at once (``RenderAbandoned``: nothing is written for them);
- **stopping**: when the engine stops, renders in flight get ``CRAWLJOBS_SHUTDOWN_GRACE_SECONDS`` to finish,
  then are closed and their jobs given back (``RenderAbandoned``), and no new render starts;
- **the body limit**: the serialised DOM is measured inside the page, in an isolated world that page scripts
  cannot tamper with, before it is read; over ``CRAWLJOBS_MAX_BODY_BYTES`` the attempt ends
  ``RenderedPageTooLarge`` (the http engine's "larger than" error) and nothing is transferred. The HTML that
  is read is measured again (a page growing in between);
- **navigations after load**: a main-frame navigation the network rules refuse (the browser's request check,
  or the egress guard's answer to a redirect hop) ends the attempt ``AddressForbidden``; a page left on
  Chromium's error page (``chrome-error://``) ends ``NavigationFailed``: neither is ever stored as the page;
- **settling**: between ``load`` and the page's HTML, ``settling.Settler`` waits for the job's ``wait_for`` and
  ``wait_ms``, for the network to be quiet, and through the page's own navigations when it looks like a
  JavaScript challenge; the result carries the status and headers of the page's last document;
- **no WebRTC**: every context gets ``browser.NO_WEBRTC`` as an init script;
- **a memory cap**: Chromium is started through a two-line ``sh`` wrapper that sets ``RLIMIT_DATA``
  (``CRAWLJOBS_BROWSER_MEMORY_MB``) for it and every process it forks; a renderer past the cap dies alone and
  its attempt ends ``PageCrashed`` at once. Four pages of 40 MiB of script-built text took Chromium from
  0.6 GiB to 10.5 GiB of RSS without it (each renderer past 2 GiB, in layout), to 1.9 GiB with the default
  1 GiB cap. (``--renderer-cmd-prefix`` would cap renderers alone, but it bypasses Chromium's zygote and cost
  160 ms to 440 ms per page here; V8's ``--max-old-space-size`` bounds only the script heap.)

It overrides four methods of scrapy-playwright's handler (``_download_request``, ``_create_page``,
``_apply_page_methods``, ``_create_browser_context``), each calling the original, and gives it a browser
provider of its own (``MemoryCappedProvider``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, CDPSession, Page
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Request as PlaywrightRequest
from playwright.async_api import Response as PlaywrightResponse
from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.http import Response
from scrapy.http.headers import Headers
from scrapy_playwright.handler import (
    DEFAULT_CONTEXT_NAME,
    BrowserContextWrapper,
    Config,
    ScrapyPlaywrightDownloadHandler,
    _attach_page_event_handlers,
    _maybe_execute_page_init_callback,
)
from scrapy_playwright.provider import PlaywrightBrowserProvider
from twisted.internet.defer import Deferred, succeed

from crawlproject.browser import NO_WEBRTC, BrowserRequestCheck
from crawlproject.capacity import browser_pages, fetch_starting
from crawlproject.config import WorkerConfig
from crawlproject.context import WorkerContext
from crawlproject.egress import REFUSED_HEADER
from crawlproject.errors import (
    AddressForbidden,
    NavigationFailed,
    PageBusyTimeout,
    PageCrashed,
    RenderAbandoned,
    RenderedPageTooLarge,
    RenderTimeout,
)
from crawlproject.interception import BrowserNetwork
from crawlproject.profiles import Profile, launch_args
from crawlproject.sessions import EARNED, SESSION, Session
from crawlproject.settling import (
    CHALLENGE_PASSED,
    SELECTOR_MISSING,
    PageActivity,
    Settled,
    Settler,
    isolated_evaluate,
)

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT = 10.0  # how long a page (then its context) may take to close
STOP_POLL_SECONDS = 0.25  # how often the engine is looked at for a stop that has begun

# The size in UTF-8 bytes of what ``page.content()`` would return (the doctype and the root element's outer
# HTML), exact when it is close to the limit and a bound otherwise: a UTF-16 code unit is 1 to 3 bytes.
_SIZE_SCRIPT = """(() => {{
  const doctype = document.doctype ? new XMLSerializer().serializeToString(document.doctype) : "";
  const root = document.documentElement ? document.documentElement.outerHTML : "";
  const units = doctype.length + root.length;
  if (units > {limit} || units * 3 <= {limit}) return units;
  return new TextEncoder().encode(doctype + root).length;
}})()"""


@dataclass(eq=False)
class Render:
    """One request of the browser engine in flight."""

    job_id: uuid.UUID | None
    task: asyncio.Future[Response]
    deadline: float
    page: Page | None = None
    timer: asyncio.TimerHandle | None = None
    loaded: bool = False  # the navigation finished: what follows is the page's own doing
    ended: str | None = None  # why the worker ended it: "deadline", "crashed", "gone" or "stopping"
    refused: str | None = None  # a main-frame navigation the network rules refused
    failed_navigation: str | None = None  # the last main-frame navigation that failed, and how
    target_id: str | None = None  # the page's CDP target id (its main frame's id), once asked for
    closing: asyncio.Future[None] | None = None
    opened: float = 0.0  # loop time when its page opened (its deadline counts from there)
    activity: PageActivity | None = None  # what its page's network and main frame do
    settled: Settled | None = None
    # Set when the worker ended the render and its task still had not finished after its page was closed.
    given_up: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def end(self, why: str) -> None:
        """Cancel the render and close its page (a cancelled Playwright call can wait on a renderer that never
        answers: closing the page is what ends it)."""
        if self.ended is not None or self.task.done():
            return
        self.ended = why
        self.disarm()
        self.task.cancel()
        self.closing = asyncio.ensure_future(self._close_then_give_up())

    async def _close_then_give_up(self) -> None:
        await self.close()
        await asyncio.wait({self.task}, timeout=CLOSE_TIMEOUT)
        if not self.given_up.done():
            self.given_up.set_result(None)

    async def close(self) -> None:
        """Close the page (its context, if the page will not close)."""
        page = self.page
        if page is None or page.is_closed():
            return
        try:
            await asyncio.wait_for(page.close(), CLOSE_TIMEOUT)
            return
        except (TimeoutError, PlaywrightError) as exc:
            logger.warning("a page would not close (%s): closing its context", exc)
        with contextlib.suppress(TimeoutError, PlaywrightError):
            await asyncio.wait_for(page.context.close(), CLOSE_TIMEOUT)

    def arm(self) -> None:
        if self.timer is None:
            loop = asyncio.get_running_loop()
            self.opened = loop.time()
            self.timer = loop.call_later(self.deadline, self.end, "deadline")

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def error(self) -> Exception:
        """What the attempt ends with when the worker ended it."""
        if self.ended == "deadline":
            if self.loaded:
                return PageBusyTimeout(
                    f"the page had loaded, but its scripts still held the browser {self.deadline:g} s after it "
                    "opened (CRAWLJOBS_RENDER_TIMEOUT); it was closed"
                )
            return RenderTimeout(
                f"the page was not rendered within {self.deadline:g} s (CRAWLJOBS_RENDER_TIMEOUT); it was closed"
            )
        if self.ended == "crashed":
            return PageCrashed(
                "the page's renderer crashed (over CRAWLJOBS_BROWSER_MEMORY_MB, or a fault of Chromium's)"
            )
        if self.ended == "gone":
            return RenderAbandoned("the job was cancelled or taken over: its render was closed")
        return RenderAbandoned("the worker is stopping: the render was closed and the job given back")

    # Page events (Playwright calls them with the event's object).

    def on_response(self, response: PlaywrightResponse) -> None:
        if response.headers.get(REFUSED_HEADER.lower()) and _is_main_frame_navigation(response.request):
            self.refused = f"the page navigated to {response.url[:200]}, which the egress guard refused"

    def on_request_failed(self, request: PlaywrightRequest) -> None:
        if _is_main_frame_navigation(request):
            self.failed_navigation = f"{request.url[:200]}: {request.failure or 'failed'}"

    def on_crash(self, _page: Page) -> None:
        # Ended here: a CDP call to a crashed renderer is never answered.
        self.end("crashed")


class Renders:
    """The renders in flight of one crawler (its http and https handlers are two instances: they share this),
    and what ends them from outside: the lease heartbeat and the crawler stopping."""

    _KEY = "_crawljobs_renders"

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        settings = WorkerConfig.of(crawler).settings
        self.grace = float(settings.shutdown_grace_seconds)
        self.pages = asyncio.Semaphore(browser_pages(settings))
        self.in_flight: dict[Request, Render] = {}
        self.stopping = False
        self._started = False
        self._background: set[asyncio.Future[Any]] = set()

    @classmethod
    def of(cls, crawler: Crawler) -> Renders:
        renders: Renders | None = getattr(crawler, cls._KEY, None)
        if renders is None:
            renders = cls(crawler)
            setattr(crawler, cls._KEY, renders)
        return renders

    async def start(self) -> None:
        """At engine start, once: hear from the heartbeat, watch for the stop."""
        if self._started:
            return
        self._started = True
        context = WorkerContext.of(self.crawler)
        await context.manager()
        context.leases.on_gone = self.jobs_gone
        self.spawn(self._watch_stop())

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def jobs_gone(self, ids: set[uuid.UUID]) -> None:
        """The heartbeat could not renew these jobs (cancelled, or taken over): stop working on them."""
        WorkerContext.of(self.crawler).leases.let_go(list(ids))
        for render in list(self.in_flight.values()):
            if render.job_id in ids:
                logger.info("job %s is no longer held: closing its render", render.job_id)
                render.end("gone")

    def of_page(self, page: Page) -> Render | None:
        return next((render for render in self.in_flight.values() if render.page is page), None)

    async def _watch_stop(self) -> None:
        """When the crawler stops, give the renders in flight the grace, then close them.

        Scrapy sends no signal when a stop begins (``engine_stopped`` comes after every download in flight has
        ended, which a page that never ends would never let happen), so the crawler is looked at."""
        while self.crawler.crawling:  # False from the first moment of Crawler.stop_async()  # noqa: ASYNC110
            await asyncio.sleep(STOP_POLL_SECONDS)
        self.stopping = True
        loop = asyncio.get_running_loop()
        until = loop.time() + self.grace
        while self.in_flight and loop.time() < until:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for render in list(self.in_flight.values()):
            render.end("stopping")


def _is_main_frame_navigation(request: PlaywrightRequest) -> bool:
    try:
        return request.is_navigation_request() and request.frame.parent_frame is None
    except PlaywrightError:  # a service worker's request has no frame
        return False


class MemoryCappedProvider(PlaywrightBrowserProvider):
    """scrapy-playwright's browser provider, launching Chromium through a wrapper that sets RLIMIT_DATA."""

    def __init__(self, config: Config, *, memory_bytes: int) -> None:
        super().__init__(config)
        self.memory_bytes = memory_bytes
        self._directory: Path | None = None

    async def launch_browser(self) -> Browser:
        if self.memory_bytes <= 0 or self.config.cdp_url or self.config.connect_url:
            return await super().launch_browser()
        assert self.browser_type is not None, "start() comes first"
        options = self.config.launch_options
        real = options.get("executable_path") or self.browser_type.executable_path
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="crawljobs-browser-"))
        wrapper = self._directory / "chromium"
        # ulimit -d counts KiB; both limits, so that nothing below can raise it again.
        wrapper.write_text(
            f'#!/bin/sh\nulimit -d {self.memory_bytes // 1024} || exit 1\nexec {shlex.quote(str(real))} "$@"\n',
            encoding="utf-8",
        )
        wrapper.chmod(0o700)
        logger.info("Chromium's processes capped at %d MiB each", self.memory_bytes >> 20)
        return await self.browser_type.launch(**{**options, "executable_path": str(wrapper)})

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)


class RenderHandler(ScrapyPlaywrightDownloadHandler):
    """scrapy-playwright's download handler, holding every render to the worker's limits (module docstring)."""

    # Set by scrapy-playwright's __init__ (an untyped package): typed here for the two this class replaces.
    browser_provider_cls: Callable[[Config], PlaywrightBrowserProvider]
    abort_request: Callable[[PlaywrightRequest], Awaitable[bool]] | None

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        config = WorkerConfig.of(crawler)
        self.deadline = config.settings.render_timeout
        self.max_body_bytes = config.max_body_bytes
        self.settler = Settler(config.settings, deadline=self.deadline)
        self.identities = config.identities
        if self.browser_provider_cls is PlaywrightBrowserProvider:  # (PLAYWRIGHT_BROWSER_PROVIDER unset)
            memory_bytes = config.settings.browser_memory_mb * 1024 * 1024
            self.browser_provider_cls = partial(MemoryCappedProvider, memory_bytes=memory_bytes)
        self.renders = Renders.of(crawler)
        # The network rules' check (BrowserGuard installs it): run on every request of the browser by CDP's
        # Fetch domain (crawlproject.interception), never by a Playwright route (which disables the cache).
        self.check = self.abort_request if isinstance(self.abort_request, BrowserRequestCheck) else None
        self.abort_request = None
        self.network = BrowserNetwork(self.check, self._refused_navigation)
        crawler.signals.connect(self.renders.start, signal=signals.engine_started)
        self._launching = asyncio.Lock()
        self._profile_sessions: dict[Page, CDPSession] = {}
        self._context_used: dict[str, float] = {}  # context name -> when a page last opened in it
        self.context_idle_seconds = config.settings.browser_context_idle_seconds

    # -- Playwright, started with the first render -----------------------------------------------------------
    # scrapy-playwright starts Playwright's driver (a Node process, one per handler: http and https) when the
    # engine starts. Here it starts with the first render instead: a worker that renders nothing never starts
    # it, and a worker started in a dead one's place takes plain jobs without waiting for it.

    async def _maybe_launch_in_thread(self) -> None:
        """engine_started (Scrapy's async API): nothing to start yet."""

    def _engine_started(self) -> Deferred[None]:
        """engine_started (older Scrapy): nothing to start yet."""
        return succeed(None)

    async def _launch_once(self) -> None:
        async with self._launching:
            if getattr(self, "browser_provider", None) is None:
                self._add_profile_flags()
                await self._maybe_future_from_coro(self._launch())
                self.renders.spawn(self._close_idle_contexts_forever())

    def _add_profile_flags(self) -> None:
        """The launch profile's flags and timezone (crawlproject.profiles), for every target of the browser."""
        options = self.config.launch_options
        args = list(options.get("args") or [])
        if any(arg.startswith("--user-agent=") for arg in args):  # (set already, or by the operator)
            return
        profile = self.identities.launch_profile()
        options["args"] = [*args, *launch_args(profile)]
        options["env"] = {**os.environ, **(options.get("env") or {}), "TZ": profile.region.timezone}
        logger.info("the browser says %s (%s, %s)", profile.user_agent, profile.sec_ch_ua, profile.region)

    # -- a render --------------------------------------------------------------------------------------------

    async def _download_request(self, request: Request, spider: Spider | None = None) -> Response:
        if self.renders.stopping:
            raise RenderAbandoned("the worker is stopping: the job is given back")
        await self._launch_once()
        # One budget of pages for the worker, all contexts together (crawlproject.capacity).
        async with self.renders.pages:
            if self.renders.stopping:
                raise RenderAbandoned("the worker is stopping: the job is given back")
            fetch_starting(request.meta)
            return await self._render(request, spider)

    async def _render(self, request: Request, spider: Spider | None) -> Response:
        job = request.meta.get("job")
        task = asyncio.ensure_future(super()._download_request(request, spider))
        render = Render(job_id=getattr(job, "id", None), task=task, deadline=self.deadline)
        self.renders.in_flight[request] = render
        try:
            await asyncio.wait({task, render.given_up}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # our caller was cancelled
            task.cancel()
            raise
        finally:
            render.disarm()
            del self.renders.in_flight[request]
        try:
            if not task.done():
                logger.error("a render would not end after its page was closed: left behind")
                raise render.error()
            try:
                response = task.result()
            except asyncio.CancelledError:
                raise render.error() from None
            except Exception as exc:
                if render.ended is not None:
                    raise render.error() from exc
                if render.refused is not None:  # (the navigation the rules refused failed: net::ERR_FAILED)
                    raise AddressForbidden(render.refused) from exc
                raise
        finally:
            await (render.closing or render.close())
        self._check_result(render, response)
        return _as_last_document(render.settled, response)

    def _check_result(self, render: Render, response: Response) -> None:
        if len(response.body) > self.max_body_bytes:
            raise RenderedPageTooLarge(f"the rendered page is {len(response.body)} bytes")
        if render.refused is not None and not response.headers.get(REFUSED_HEADER):
            # (The guard's answer to the navigation itself is the response: the retry middleware reads it.)
            raise AddressForbidden(render.refused)
        if response.url.startswith("chrome-error:"):
            raise NavigationFailed(
                "the page was left on Chromium's error page after a navigation failed: "
                + (render.failed_navigation or "unknown")
            )

    async def _download_request_with_retry(self, request: Request, spider: Spider) -> Response:
        """scrapy-playwright's, without its ``page.route("**")``: a route makes Playwright disable Chromium's
        cache, and Chromium then adds ``Pragma``/``Cache-Control: no-cache`` to every request. The requests are
        checked by the Fetch session instead (``crawlproject.interception``). (The route also let a request's
        method and body replace the navigation's: the worker's renders are GETs.)"""
        page = await self._create_page(request=request, spider=spider)
        context_name = request.meta.setdefault("playwright_context", DEFAULT_CONTEXT_NAME)
        _attach_page_event_handlers(page=page, request=request, spider=spider, context_name=context_name)
        await _maybe_execute_page_init_callback(
            page=page, request=request, context_name=context_name, spider=spider
        )
        try:
            return await self._download_request_with_page(request, page, spider)
        except Exception:
            if not page.is_closed():
                await page.close()
            raise

    async def _create_page(self, request: Request, spider: Spider) -> Page:
        # Shielded: a page that is being made when its render ends is closed once it exists, or it would keep
        # its place in the context for ever.
        creating = asyncio.ensure_future(super()._create_page(request, spider))
        try:
            page = await asyncio.shield(creating)
        except asyncio.CancelledError:
            creating.add_done_callback(self._close_orphan)
            raise
        self._context_used[str(request.meta.get("playwright_context"))] = time.monotonic()
        profile = request.meta.get("crawljobs_profile")
        if isinstance(profile, Profile):
            try:
                await self._say_profile(page, profile)
            except BaseException:
                self.renders.spawn(page.close())
                raise
        render = self.renders.in_flight.get(request)
        session: Session | None = request.meta.get(SESSION)
        if session is not None and session.cookies:
            try:  # the tenant's session of the domain, in the tenant's own context (sessions.SessionMiddleware)
                await page.context.add_cookies(list(session.cookies))
            except PlaywrightError as exc:
                logger.info("could not give the page its session's cookies: %s", exc)
        if render is not None:
            render.page = page
            render.activity = PageActivity.attach(page)
            page.on("response", render.on_response)
            page.on("requestfailed", render.on_request_failed)
            page.on("crash", render.on_crash)
            render.arm()
        return page

    async def _close_idle_contexts(self, *, make_room: bool = False) -> None:
        """Close the contexts that have had no page for CRAWLJOBS_BROWSER_CONTEXT_IDLE_SECONDS; with
        ``make_room``, also the least recently used page-less ones while the contexts are at their bound."""
        now = time.monotonic()
        idle = [
            (self._context_used.get(name, 0.0), name)
            for name, wrapper in self.context_wrappers.items()
            if not wrapper.context.pages
        ]
        idle.sort()
        limit = self.config.max_contexts or 0
        for used, name in idle:
            too_many = make_room and limit and len(self.context_wrappers) >= limit
            if now - used < self.context_idle_seconds and not too_many:
                continue
            wrapper = self.context_wrappers.get(name)
            if wrapper is None or wrapper.context.pages:
                continue
            logger.debug("closing the idle browser context %s", name)
            self._context_used.pop(name, None)
            with contextlib.suppress(PlaywrightError):
                await asyncio.wait_for(wrapper.context.close(), CLOSE_TIMEOUT)

    async def _close_idle_contexts_forever(self) -> None:
        while True:
            await asyncio.sleep(max(self.context_idle_seconds / 2, 1.0))
            async with self.context_launch_lock:
                await self._close_idle_contexts()

    async def _say_profile(self, page: Page, profile: Profile) -> None:
        """Before the page navigates: its User-Agent metadata (brands, platform, high-entropy values) and
        languages, by CDP on a session kept as long as the page (a detached session's override is undone)."""
        session = await page.context.new_cdp_session(page)
        await session.send("Emulation.setUserAgentOverride", profile.user_agent_override())
        self._profile_sessions[page] = session

        def forget(closed: Page) -> None:
            self._profile_sessions.pop(closed, None)

        page.on("close", forget)

    def _close_orphan(self, creating: asyncio.Future[Page]) -> None:
        if not creating.cancelled() and creating.exception() is None:
            self.renders.spawn(creating.result().close())

    async def _apply_page_methods(self, page: Page, request: Request, spider: Spider) -> None:
        """After the navigation, before the content is read: the page's size, measured where it is."""
        render = self.renders.in_flight.get(request)
        if render is not None:
            render.loaded = True
            if render.activity is not None:
                job = request.meta.get("job")
                render.settled = settled = await self.settler.settle(
                    page,
                    render.activity,
                    ends_at=render.opened + render.deadline,
                    wait_for=getattr(job, "wait_for", None),
                    wait_ms=getattr(job, "wait_ms", None),
                    session=self._profile_sessions.get(page),
                )
                request.meta[SELECTOR_MISSING] = settled.selector_missing
                request.meta[CHALLENGE_PASSED] = settled.passed
                if settled.passed:
                    await self._earned(page, request, render.activity)
        await super()._apply_page_methods(page, request, spider)
        size = await self._rendered_size(page)
        if size is not None and size > self.max_body_bytes:
            raise RenderedPageTooLarge(f"the rendered page is at least {size} bytes")

    @staticmethod
    async def _earned(page: Page, request: Request, activity: PageActivity) -> None:
        """A challenge passed: the cookies the context now holds for the page, and the agent that earned them,
        for ``sessions`` (the retry middleware keeps them once the attempt is read as a success)."""
        try:
            cookies = await page.context.cookies([page.url])
        except PlaywrightError as exc:
            logger.info("could not read the cookies of a passed challenge: %s", exc)
            return
        document = activity.document
        agent = document.request.headers.get("user-agent") if document is not None else None
        request.meta[EARNED] = {"url": page.url, "cookies": cookies, "user_agent": agent}

    async def _rendered_size(self, page: Page) -> int | None:
        """The size of the page's HTML, measured in an isolated world (page scripts cannot redefine what it
        calls there); None when it cannot be measured (the page is navigating: the read HTML is measured).
        On the page's profile session when it has one (no attach and detach per page)."""
        value = await isolated_evaluate(
            page,
            _SIZE_SCRIPT.format(limit=self.max_body_bytes),
            session=self._profile_sessions.get(page),
            world_name="crawljobs-size",
        )
        return int(value) if isinstance(value, int | float) else None

    async def _create_browser_context(
        self, name: str, context_kwargs: dict[str, Any] | None, spider: Spider | None = None
    ) -> BrowserContextWrapper:
        await self._close_idle_contexts(make_room=True)
        kwargs = dict(context_kwargs or {})
        if kwargs.get("proxy"):
            kwargs["proxy"] = self.network.context_proxy(kwargs["proxy"])
        await self._maybe_launch_browser()
        if self.network.browser is not self.browser:  # the first context of this browser (or of a new one)
            await self.network.attach(self.browser)
        wrapper = await super()._create_browser_context(name, kwargs, spider)
        # Before any page of the context exists (the caller holds the context lock).
        await wrapper.context.add_init_script(NO_WEBRTC)
        return wrapper

    async def _refused_navigation(self, frame_id: str, url: str, reason: str) -> None:
        """The network rules refused a document request of frame ``frame_id``: if it is a page's main frame,
        its render ends ``AddressForbidden`` (before the request fails, so the render knows why it did)."""
        for render in list(self.renders.in_flight.values()):
            page = render.page
            if page is None or page.is_closed():
                continue
            if render.target_id is None:
                session = await page.context.new_cdp_session(page)
                try:
                    render.target_id = (await session.send("Target.getTargetInfo"))["targetInfo"]["targetId"]
                finally:
                    self.renders.spawn(_detach(session))
            if render.target_id == frame_id:
                render.refused = f"{reason} (the page navigated to {url[:200]})"
                return


def _as_last_document(settled: Settled | None, response: Response) -> Response:
    """The response with the status and headers of the page's last document, when it navigated itself after it
    loaded (a challenge that reloads: its 403 is not the status of the page that was read)."""
    if settled is None or settled.status is None:
        return response
    headers = Headers(settled.headers or {})
    headers.pop("Content-Encoding", None)
    return response.replace(status=settled.status, headers=headers)


async def _detach(session: CDPSession) -> None:
    with contextlib.suppress(PlaywrightError):
        await asyncio.wait_for(session.detach(), CLOSE_TIMEOUT)

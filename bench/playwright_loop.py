"""The bare Playwright loop the browser row of ``bench.crawl`` compares the system with.

    python -m bench.playwright_loop --base http://127.0.0.1:PORT --pages 200 --concurrency 4 [--tag T]

One Chromium (the worker's executable, headless), one context, ``--concurrency`` tasks each opening a page,
navigating to the next ``/fast/<tag>-<n>`` URL until ``load`` (``--wait-until networkidle``: until Playwright's
network idle, no request for 500 ms, the wait the worker's renders make by default after ``load``:
``CRAWLJOBS_RENDER_QUIET_MS``), reading its HTML and closing the page: what a render costs with nothing of the
system around it. A warm-up of ``2 x concurrency`` pages runs before the
clock. ``--arg FLAG`` adds a Chromium flag, ``--fetch`` pauses and continues every request with CDP's Fetch
domain, ``--guard`` goes through the worker's egress guard, ``--viewport WxH`` sets the pages' size, ``--override`` sets the worker's User-Agent override on each page (to measure what the worker's choices cost one by
one). Prints one JSON line: ``{"seconds": ..., "pages": ..., "cpu": ...}`` (``cpu``: this process and its
children, Chromium's included, in seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import resource
import shutil
import time
from typing import Any, Literal

from playwright.async_api import Browser, async_playwright

from crawljobs.urls import NetworkPolicy
from crawlproject.egress import EgressGuard
from crawlproject.interception import BrowserNetwork
from crawlproject.profiles import Profile

VIEWPORT: tuple[int, int] | None = None  # --viewport (else Playwright's 1280 x 720)
OVERRIDE: dict[str, Any] | None = None  # --override: the profile's User-Agent override, on a session per page


async def render_all(
    browser: Browser,
    urls: list[str],
    concurrency: int,
    proxy: dict[str, str] | None = None,
    wait_until: Literal["load", "networkidle"] = "load",
) -> None:
    options: dict[str, Any] = {"proxy": proxy} if proxy else {}
    if VIEWPORT is not None:
        options["viewport"] = {"width": VIEWPORT[0], "height": VIEWPORT[1]}
    context = await browser.new_context(**options)
    queue = list(reversed(urls))

    async def one_task() -> None:
        while queue:
            url = queue.pop()
            page = await context.new_page()
            sessions = []
            try:
                if (
                    OVERRIDE is not None
                ):  # as the worker does (rendering._say_profile), kept as long as the page
                    sessions.append(session := await context.new_cdp_session(page))
                    await session.send("Emulation.setUserAgentOverride", OVERRIDE)
                await page.goto(url, wait_until=wait_until)
                html = await page.content()
                if "fast-page:" not in html:
                    raise RuntimeError(f"{url}: not the page")
            finally:
                await page.close()

    await asyncio.gather(*(one_task() for _ in range(concurrency)))
    await context.close()


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def intercept_all(browser: Browser) -> None:
    """``--fetch``: what the worker's request check costs, with no check: every request paused by CDP's Fetch
    domain on the browser target and continued."""
    session = await browser.new_browser_cdp_session()
    sending: set[asyncio.Future[Any]] = set()

    def paused(event: dict[str, str]) -> None:
        task = asyncio.ensure_future(session.send("Fetch.continueRequest", {"requestId": event["requestId"]}))
        sending.add(task)
        task.add_done_callback(sending.discard)

    session.on("Fetch.requestPaused", paused)
    await session.send("Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]})


async def main_async(
    base: str,
    pages: int,
    concurrency: int,
    tag: str,
    args: list[str] | None = None,
    fetch: bool = False,
    guard: bool = False,
    wait_until: Literal["load", "networkidle"] = "load",
    override: bool = False,
) -> dict[str, float]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=shutil.which("chromium") or None, headless=True, args=args or []
        )
        if fetch:
            await intercept_all(browser)
        if override:
            global OVERRIDE
            OVERRIDE = Profile(version=browser.version).user_agent_override()
        proxy = None
        egress: EgressGuard | None = None
        if guard:  # the worker's egress guard, its credentials answered by the worker's Fetch session
            egress = await EgressGuard(NetworkPolicy(allowed=(ipaddress.ip_network("127.0.0.1/32"),))).start()
            network = BrowserNetwork(None)
            proxy = network.context_proxy(egress.playwright_proxy)
            await network.attach(browser)
        await render_all(
            browser, [f"{base}/fast/warm-{tag}-{i}" for i in range(2 * concurrency)], concurrency, proxy
        )
        before = cpu_seconds()
        started = time.monotonic()
        await render_all(
            browser, [f"{base}/fast/{tag}-{i}" for i in range(pages)], concurrency, proxy, wait_until
        )
        seconds = time.monotonic() - started
        await browser.close()
        if egress is not None:
            await egress.close()
    # (Chromium's CPU is counted once its processes have been waited for, at close.)
    return {"seconds": seconds, "pages": pages, "cpu": cpu_seconds() - before}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tag", default="bare")
    parser.add_argument("--arg", action="append", default=[], help="a Chromium flag (repeatable)")
    parser.add_argument("--fetch", action="store_true", help="pause and continue every request (CDP Fetch)")
    parser.add_argument("--guard", action="store_true", help="through the worker's egress guard")
    parser.add_argument(
        "--wait-until",
        choices=("load", "networkidle"),
        default="load",
        help="networkidle: also wait for 500 ms without a request, as the worker's renders do after load",
    )
    parser.add_argument(
        "--override", action="store_true", help="the worker's User-Agent override, by CDP on each page"
    )
    parser.add_argument(
        "--viewport", help="WxH of the pages (the worker's profiles use a whole screen's, e.g. 1912x947)"
    )
    args = parser.parse_args()
    if args.viewport:
        width, _, height = args.viewport.partition("x")
        global VIEWPORT
        VIEWPORT = (int(width), int(height))
    result = asyncio.run(
        main_async(
            args.base,
            args.pages,
            args.concurrency,
            args.tag,
            args.arg,
            args.fetch,
            args.guard,
            args.wait_until,
            args.override,
        )
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""The dashboard in a real browser (Debian's Chromium through Playwright) against the running system: an API
process, a real worker and sweeper, the local test site. Each flow is done as a person does it — typing, clicking,
reading the page — and every assertion about progress is read from the page, not from the API.

One system and one browser for the module. Screenshots of every page at desktop and phone width go to
``tests/acceptance/screenshots/`` (git-ignored); axe-core checks every page for serious or critical violations.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crawljobs.keys import create_key
from tests.acceptance.dashboard_pages import BEACON, HOSTILE_MARKER
from tests.acceptance.site import TestSite
from tests.acceptance.system import System

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(__file__).parent / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (CI installs Debian's)"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def dashboard(system: System) -> str:
    port = free_port()
    system.start_api(port)
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def key(database_url: str) -> str:
    return create_key(database_url, name=f"dash-{secrets.token_hex(3)}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def page(browser: Any, dashboard: str, key: str) -> Iterator[Any]:
    """A signed-in tab (signing in is the first flow, tested below on a tab of its own)."""
    context = browser.new_context(base_url=dashboard, viewport=DESKTOP, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    tab.goto("/sign-in")
    tab.get_by_label("API key").fill(key)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(f"{dashboard}/")
    yield tab
    context.close()


def submit_batch(page: Any, urls: list[str], *, batch_id: str, retry_limit: int | None = None) -> None:
    page.goto("/submit")
    page.get_by_label("URLs, one a line").fill("\n".join(urls))
    page.get_by_label("Batch id (optional)").fill(batch_id)
    if retry_limit is not None:
        page.locator("#batch-max_retries").fill(str(retry_limit))
    page.get_by_role("button", name="Submit the batch").click()
    page.get_by_role("heading", name="Batch submitted").wait_for()


def notice(page: Any) -> str:
    """What the page says an action did (its notice)."""
    text: str = page.locator("p.notice.ok").inner_text()
    return text


def tile(page: Any, status: str) -> int:
    return int(page.locator(f'[data-live-batch] [data-field="{status}"]').first.inner_text())


def wait_until(condition: Any, what: str, timeout: float = 60, also: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}" + (f"\n{also()}" if also else ""))
        time.sleep(0.1)


def test_sign_in_refuses_a_wrong_key_then_signs_in_and_out(browser: Any, dashboard: str, key: str) -> None:
    context = browser.new_context(base_url=dashboard)
    tab = context.new_page()
    tab.goto("/")
    assert tab.url == f"{dashboard}/sign-in"
    assert tab.get_by_role("link", name="API docs (Swagger UI)").is_visible()
    tab.get_by_label("API key").fill("cj_wrong")
    tab.get_by_role("button", name="Sign in").click()
    assert "the API key is not valid" in tab.get_by_role("alert").inner_text()
    tab.get_by_label("API key").fill(key)
    tab.keyboard.press("Enter")  # the form works from the keyboard
    tab.get_by_role("heading", name="Overview").wait_for()
    (cookie,) = [c for c in context.cookies() if c["name"] == "crawljobs_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert tab.evaluate("document.cookie") == ""  # no script of the page can read it
    tab.get_by_role("button", name="Sign out").click()
    tab.wait_for_url(f"{dashboard}/sign-in")
    tab.goto("/batches")
    assert tab.url.startswith(f"{dashboard}/sign-in")
    context.close()


def test_the_overview_counts_move_as_a_job_completes_and_a_worker_is_listed(
    page: Any, site: TestSite
) -> None:
    page.goto("/")
    assert page.locator("#workers-heading").inner_text() == "Workers (1 connected)"
    assert page.get_by_text("No workers connected").count() == 0
    completed = page.locator('[data-count="completed"]')
    before = int(completed.inner_text().replace(",", ""))
    other = page.context.new_page()  # the same browser, another tab
    other.goto("/submit")
    other.get_by_label("URL", exact=True).fill(site.url(f"/ok/overview-{secrets.token_hex(3)}"))
    other.get_by_role("button", name="Submit the URL").click()
    other.close()
    wait_until(
        lambda: int(completed.inner_text().replace(",", "")) == before + 1, "the overview's count, live"
    )


def test_a_batch_submitted_from_the_page_shows_its_progress_bar_moving(page: Any, site: TestSite) -> None:
    batch_id = f"moving-{secrets.token_hex(3)}"
    delays = [0.5, 1.5, 2.5, 3.5, 4.5]
    urls = [site.url(f"/slow?delay={d}&k={batch_id}") for d in delays]
    submit_batch(page, [*urls, "ftp://example.com/refused"], batch_id=batch_id)
    refused = page.locator("table.refused tbody tr")
    assert refused.count() == 1 and "ftp://example.com/refused" in refused.inner_text()
    assert refused.locator("td").first.inner_text() == "6"  # the line it was on
    page.get_by_role("link", name="Follow the batch").click()
    bar = page.locator("#batch-progress")
    seen: list[int] = []

    def read() -> bool:
        value = int(bar.get_attribute("value") or "0")
        if not seen or seen[-1] != value:
            seen.append(value)
        return value == 100

    wait_until(read, "the batch's progress bar at 100", timeout=90)
    assert seen == sorted(seen) and seen[-1] == 100
    assert any(0 < value < 100 for value in seen), (
        seen
    )  # it moved while the page was open, not only at the end
    assert tile(page, "completed") == len(delays)
    # The jobs table follows too (read again while the counts change).
    wait_until(
        lambda: page.locator("table.jobs .badge.status-completed").count() == len(delays),
        "the table all completed",
    )


def test_the_batches_list_updates_its_bars_from_one_stream(page: Any, site: TestSite) -> None:
    batch_id = f"listed-{secrets.token_hex(3)}"
    submit_batch(page, [site.url(f"/slow?delay={d}&k={batch_id}") for d in (1, 3)], batch_id=batch_id)
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/events/" in r.url else None)
    page.goto(f"/batches?search={batch_id}")
    row = page.locator(f'tr[data-batch="{batch_id}"]')
    wait_until(
        lambda: row.locator('[data-field="progress"]').get_attribute("value") == "100", "the row at 100"
    )
    assert row.locator('[data-field="completed"]').inner_text() == "2"
    assert len(streams) == 1, streams  # one stream for the page, not one per row


def test_a_failed_job_is_retried_from_the_page_and_completes(page: Any, site: TestSite) -> None:
    batch_id = f"retried-{secrets.token_hex(3)}"
    flaky = site.url(f"/flaky500/{uuid.uuid4().hex}?fail=1")
    submit_batch(page, [flaky], batch_id=batch_id, retry_limit=0)
    page.goto(f"/batches/{batch_id}")
    wait_until(lambda: tile(page, "error") == 1, "the job failed, as the page shows")
    page.get_by_role("button", name="Retry failed jobs").click()
    assert "1 failed job put back in the queue" in notice(page)
    wait_until(lambda: tile(page, "completed") == 1, "the retried job completed, as the page shows")
    assert tile(page, "error") == 0
    # Its page shows both attempts on the timeline.
    page.get_by_role("link", name=flaky).click()
    page.get_by_role("heading", name="Attempts").wait_for()
    assert page.locator("ol.timeline > li").count() == 2


def test_a_batch_is_cancelled_from_the_page(page: Any, site: TestSite) -> None:
    batch_id = f"cancelled-{secrets.token_hex(3)}"
    submit_batch(page, [site.url(f"/slow?delay=20&k={batch_id}&n={n}") for n in range(3)], batch_id=batch_id)
    page.goto(f"/batches/{batch_id}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel batch").click()
    assert "3 jobs cancelled" in notice(page)
    wait_until(lambda: tile(page, "cancelled") == 3, "three cancelled jobs on the page")
    assert page.locator('[data-field="state"]').inner_text() == "done"


def test_an_export_is_downloaded_and_its_rows_counted(page: Any, site: TestSite) -> None:
    batch_id = f"exported-{secrets.token_hex(3)}"
    urls = [site.url(f"/ok/{batch_id}-{n}") for n in range(4)]
    submit_batch(page, urls, batch_id=batch_id)
    page.goto(f"/batches/{batch_id}")
    wait_until(lambda: tile(page, "completed") == 4, "the batch completed")
    with page.expect_download() as csv_download:
        page.get_by_role("link", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(csv_download.value.path()).read_text())))
    assert len(rows) == 4 and sorted(row["url"] for row in rows) == sorted(urls)
    assert {row["status"] for row in rows} == {"completed"}
    with page.expect_download() as ndjson_download:
        page.get_by_role("link", name="Export NDJSON (with HTML)").click()
    lines = Path(ndjson_download.value.path()).read_text().splitlines()
    assert len(lines) == 4 and all(f"ok-page:{batch_id}" in json.loads(line)["html"] for line in lines)


def test_a_hostile_page_runs_nothing_loads_nothing_and_leaves_the_dashboard_alone(
    page: Any, site: TestSite, dashboard: str
) -> None:
    hostile = site.url(f"/dashboard/hostile?dashboard={dashboard}&k={secrets.token_hex(3)}")
    page.goto("/submit")
    page.get_by_label("URL", exact=True).fill(hostile)
    page.get_by_role("button", name="Submit the URL").click()
    page.wait_for_url(f"{dashboard}/jobs/**")
    job_url = page.url.split("?")[0]
    fetched = site.wait_for_hits("/dashboard/hostile", 1, timeout=60)
    assert fetched
    wait_until(
        lambda: page.locator("iframe.crawled").count() == 1,
        "the job page reloaded itself, completed",
        also=lambda: page.locator("dl.facts").inner_text(),
    )
    before = site.hits()
    frame = page.frame_locator("iframe.crawled")
    frame.locator("#hostile-marker").wait_for()
    title = page.title()
    document = page.evaluate("document.documentElement.outerHTML")
    time.sleep(3)  # time for a refresh, a script, a beacon, a form to do their worst
    assert page.url.split("?")[0] == job_url
    assert page.title() == title and "pwned" not in title
    assert page.evaluate("document.documentElement.outerHTML") == document
    assert page.evaluate("document.body.getAttribute('data-pwned')") is None
    assert frame.locator("#hostile-marker").inner_text() == HOSTILE_MARKER  # the frame is the page, unchanged
    assert [hit.target for hit in site.hits() if hit.path.startswith(BEACON)] == []
    assert [hit.target for hit in site.hits()[len(before) :] if hit.path.startswith("/dashboard/")] == []
    # The escaped source is text on the page, and the form did not sign the dashboard out.
    assert "<script>top.document.title='pwned-title'</script>" in page.locator("pre.source").text_content()
    page.goto("/batches")
    assert page.url.endswith("/batches")


def test_webhook_deliveries_are_listed_and_one_is_redelivered(page: Any, site: TestSite) -> None:
    hook = f"/ok/hook-{secrets.token_hex(3)}"
    page.goto("/submit")
    page.get_by_label("URL", exact=True).fill(site.url(f"/ok/{secrets.token_hex(3)}"))
    page.locator("#job-callback_url").fill(site.url(hook))
    page.get_by_role("button", name="Submit the URL").click()
    site.wait_for_hits(hook, 1, timeout=60)
    page.goto("/webhooks")
    row = page.locator("table.deliveries tbody tr").first
    wait_until(
        lambda: (page.reload() or True) and "delivered" in row.inner_text(),
        "the delivery shown delivered",
        30,
    )
    row.get_by_role("button", name="Redeliver").click()
    assert "will be sent again now" in notice(page)
    site.wait_for_hits(hook, 2, timeout=60)


PAGES = {
    "overview": "/",
    "submit": "/submit",
    "batches": "/batches",
    "webhooks": "/webhooks",
}


def test_every_page_passes_axe_and_is_photographed(
    browser: Any, page: Any, dashboard: str, site: TestSite
) -> None:
    from axe_playwright_python.sync_playwright import Axe

    page.goto("/batches")
    batch_path = page.locator("table.batches tbody tr a").first.get_attribute("href")
    page.goto(batch_path)
    job_path = page.locator("table.jobs a").first.get_attribute("href")
    pages = {**PAGES, "batch": batch_path, "job": job_path}
    SCREENSHOTS.mkdir(exist_ok=True)
    axe = Axe()
    problems: dict[str, list[str]] = {}
    # Desktop and phone, light and dark (the system's choice): axe on each at desktop width, both schemes.
    for width_name, viewport, scheme in (
        ("desktop", DESKTOP, "light"),
        ("desktop", DESKTOP, "dark"),
        ("phone", PHONE, "light"),
        ("phone", PHONE, "dark"),
    ):
        page.set_viewport_size(viewport)
        page.emulate_media(color_scheme=scheme)
        for name, path in pages.items():
            page.goto(path)
            page.wait_for_load_state("load")
            suffix = width_name if scheme == "light" else f"{width_name}-dark"
            if name == "job":
                page.frame_locator("iframe.crawled").locator("#page-id").wait_for()
                # A full-page capture leaves the sandboxed frame (a process of its own) blank: the frame alone too.
                page.locator("iframe.crawled").screenshot(path=str(SCREENSHOTS / f"job-frame-{suffix}.png"))
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{suffix}.png"), full_page=True)
            if width_name == "desktop":
                result = axe.run(page).response
                assert result["passes"], name  # axe ran in the page (its policy did not keep it out)
                found = result["violations"]
                bad = [
                    f"{v['id']} ({v['impact']}): {v['help']}"
                    for v in found
                    if v["impact"] in ("serious", "critical")
                ]
                if bad:
                    problems[f"{name} {scheme}"] = bad
    page.emulate_media(color_scheme="light")
    # The sign-in page, signed out, in a tab of its own.
    context = browser.new_context(base_url=dashboard)
    for width_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        tab = context.new_page()
        tab.set_viewport_size(viewport)
        tab.goto("/sign-in")
        tab.screenshot(path=str(SCREENSHOTS / f"sign-in-{width_name}.png"), full_page=True)
        found = axe.run(tab).response["violations"]
        bad = [
            f"{v['id']} ({v['impact']}): {v['help']}" for v in found if v["impact"] in ("serious", "critical")
        ]
        if bad:
            problems[f"sign-in {width_name}"] = bad
    context.close()
    assert problems == {}
    assert len(list(SCREENSHOTS.glob("*.png"))) >= 2 * (len(pages) + 1)

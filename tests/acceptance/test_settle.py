"""Rendering until settled (issue 11, item 4), through a real worker process and real Chromium: a page is read
once it settled (network quiet, the job's wait_for and wait_ms), and a JavaScript challenge that sets a cookie
and reloads is followed to the final page.

Traffic goes only to 127.0.0.1 (the test site)."""

from __future__ import annotations

import uuid

import pytest

from crawlproject.methods import DEFAULT_ORDER
from tests.acceptance.site import TestSite
from tests.acceptance.site_settle import FETCHED_MARKER, LATE_MARKER, clearance_cookie
from tests.acceptance.system import System

pytestmark = pytest.mark.acceptance

# The cheapest rung of the default ladder (the http engine, or the one that impersonates Chrome).
CHEAP = DEFAULT_ORDER[0].name


def methods(job: dict) -> list[tuple[str, str]]:
    return [(a["method"], a["outcome"]) for a in job["attempts"]]


def test_a_page_taken_without_a_wait_lacks_a_marker_written_after_load(
    system: System, site: TestSite
) -> None:
    """The control of the two below: a script's timer (no request) is not waited for by default."""
    (job,) = system.wait_final([system.submit(site.url("/settle/late-marker?ms=8000&n=plain"), render=True)])
    assert job["status"] == "completed", job["error_message"]
    assert "late-page" in job["html"]
    assert LATE_MARKER not in job["html"]


def test_wait_for_a_selector_takes_the_marker_written_after_load(system: System, site: TestSite) -> None:
    job_id = system.submit(site.url("/settle/late-marker?ms=1500&n=selector"), render=True, wait_for="#late")
    (job,) = system.wait_final([job_id], timeout=90)
    assert job["status"] == "completed", job["error_message"]
    assert LATE_MARKER in job["html"]
    assert methods(job) == [("browser:direct", "ok")]


def test_wait_ms_takes_the_marker_written_after_load(system: System, site: TestSite) -> None:
    job_id = system.submit(site.url("/settle/late-marker?ms=1500&n=ms"), render=True, wait_ms=2500)
    (job,) = system.wait_final([job_id], timeout=90)
    assert job["status"] == "completed", job["error_message"]
    assert LATE_MARKER in job["html"]


def test_data_fetched_after_load_is_waited_for_by_default(system: System, site: TestSite) -> None:
    """Network quiet: the page's fetch after load (answered 1.5 s later) is in flight, so the render waits."""
    (job,) = system.wait_final(
        [system.submit(site.url("/settle/late-fetch?ms=1500"), render=True)], timeout=90
    )
    assert job["status"] == "completed", job["error_message"]
    assert FETCHED_MARKER in job["html"]


def test_a_selector_that_never_matches_fails_the_job_with_a_named_error(
    system: System, site: TestSite
) -> None:
    job_id = system.submit(
        site.url("/settle/late-marker?ms=1500&n=missing"), render=True, wait_for="#never-there", wait_ms=0
    )
    (job,) = system.wait_final([job_id], timeout=120)
    assert job["status"] == "error"
    assert 'wait_for: the selector "#never-there" matched nothing within' in job["error_message"]
    assert methods(job) == [("browser:direct", "permanent")], "not a block: no climb, no retry"


def test_a_selector_chromium_cannot_parse_fails_at_once(system: System, site: TestSite) -> None:
    job_id = system.submit(site.url("/settle/late-marker?ms=0&n=bad"), render=True, wait_for="p[[")
    (job,) = system.wait_final([job_id], timeout=90)
    assert job["status"] == "error"
    assert "is not a CSS selector Chromium accepts" in job["error_message"], job["error_message"]
    assert len(job["attempts"]) == 1


@pytest.mark.parametrize("rounds", [1, 2])
def test_a_javascript_challenge_that_sets_a_cookie_and_reloads_is_passed(
    system: System, site: TestSite, rounds: int
) -> None:
    key = uuid.uuid4().hex
    path = f"/settle/protected/{key}/first?reloads={rounds}&delay=500"
    (job,) = system.wait_final([system.submit(site.url(path), render=True)], timeout=90)
    assert job["status"] == "completed", job["error_message"]
    assert f"protected-ok:{key}:first" in job["html"]
    assert job["http_status"] == 200, "the status of the last document, not the challenge's 403"
    assert methods(job) == [("browser:direct", "ok")]
    hits = site.hits(f"/settle/protected/{key}/first")
    assert [hit.status for hit in hits] == [403] * rounds + [200]
    assert clearance_cookie(key) not in hits[0].headers.get("cookie", "")
    assert clearance_cookie(key) in hits[-1].headers["cookie"]


def test_the_challenge_page_is_a_block_for_plain_http(system: System, site: TestSite) -> None:
    """Without the cookie the http engine gets the 403 challenge, which the block rules recognise: the job
    climbs to the browser, which passes it."""
    key = uuid.uuid4().hex
    (job,) = system.wait_final(
        [system.submit(site.url(f"/settle/protected/{key}/plain?delay=300"))], timeout=90
    )
    assert job["status"] == "completed", job["error_message"]
    assert methods(job) == [(CHEAP, "blocked"), ("browser:direct", "ok")]
    assert "signature: cloudflare challenge" in job["attempts"][0]["error"]
    assert f"protected-ok:{key}:plain" in job["html"]

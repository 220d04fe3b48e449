"""Rendering until settled, its bounds (issue 11, item 4): each test runs a worker of its own with its own
render settings (a module of its own: a module's shared worker and sweeper would take these jobs too).

Traffic goes only to 127.0.0.1 (the test site)."""

from __future__ import annotations

import uuid

import pytest

from crawlproject.methods import DEFAULT_ORDER
from tests.acceptance.site import TestSite
from tests.acceptance.site_settle import LATE_MARKER
from tests.acceptance.system import System

pytestmark = pytest.mark.acceptance

# The cheapest rung of the default ladder (the http engine, or the one that impersonates Chrome).
CHEAP = DEFAULT_ORDER[0].name


def methods(job: dict) -> list[tuple[str, str]]:
    return [(a["method"], a["outcome"]) for a in job["attempts"]]


def test_waits_end_in_time_for_the_page_to_be_read_within_the_render_deadline(
    fresh: System, site: TestSite
) -> None:
    """A wait longer than what is left of CRAWLJOBS_RENDER_TIMEOUT is cut short: the page is taken (completed),
    not closed at the deadline."""
    fresh.start_worker(CRAWLJOBS_RENDER_TIMEOUT="12")
    job_id = fresh.submit(site.url("/settle/late-marker?ms=1000&n=deadline"), render=True, wait_ms=25_000)
    (job,) = fresh.wait_final([job_id], timeout=120)
    assert job["status"] == "completed", job["error_message"]
    assert LATE_MARKER in job["html"]
    (attempt,) = job["attempts"]
    assert attempt["duration_ms"] < 25_000, "the wait was cut at the deadline, not waited out"


def test_a_challenge_that_reloads_more_often_than_the_bound_is_taken_as_the_block_it_is(
    fresh: System, site: TestSite
) -> None:
    fresh.start_worker(CRAWLJOBS_RENDER_MAX_RELOADS="1", CRAWLJOBS_LADDER=f"{CHEAP},browser:direct")
    key = uuid.uuid4().hex
    job_id = fresh.submit(site.url(f"/settle/protected/{key}/loop?reloads=4&delay=1500"), render=True)
    (job,) = fresh.wait_final([job_id], timeout=120)
    assert job["status"] == "error"
    assert methods(job) == [("browser:direct", "blocked")]
    assert "signature: cloudflare challenge" in job["error_message"], job["error_message"]
    # The first document and the one reload that was followed (the page's next reload is not waited for).
    assert [hit.status for hit in site.hits(f"/settle/protected/{key}/loop")][:2] == [403, 403]
    assert len(site.hits(f"/settle/protected/{key}/loop")) <= 3

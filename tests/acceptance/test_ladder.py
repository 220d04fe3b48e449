"""Every ladder step and failure class, through a real worker process, real Chromium and the test proxies.

Traffic goes only to 127.0.0.1 (the site, the proxies) — and, for the network-rule cases, to a second site on
127.0.0.2, the loopback address the configuration does not allow, which must receive nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from tests.acceptance.site import TestSite, start_site
from tests.acceptance.system import System

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def forbidden_site() -> Iterator[TestSite]:
    with start_site("127.0.0.2") as running:
        yield running


def methods(job: dict) -> list[tuple[str, str]]:
    return [(a["method"], a["outcome"]) for a in job["attempts"]]


def test_plain_page_completes_with_the_first_rung(system: System, site: TestSite) -> None:
    job_id = system.submit(site.url("/ok/1"))
    (job,) = system.wait_final([job_id])
    assert job["status"] == "completed", job["error_message"]
    assert job["success_method"] == "impersonate:direct"
    assert "ok-page:1" in job["html"]
    assert job["html_length"] == len(job["html"])
    assert job["http_status"] == 200
    assert job["content_type"].startswith("text/html")
    # Measured from the claim to the result: at least the attempt's own time, at most what the database saw
    # between the claim and the write.
    claim_to_write = (job["completed_at"] - job["started_at"]) / timedelta(milliseconds=1)
    assert job["attempts"][0]["duration_ms"] <= job["processing_time_ms"] <= claim_to_write + 5
    assert job["cost"] > 0
    assert methods(job) == [("impersonate:direct", "ok")]
    assert job["attempt"] == 1


def test_user_agent_block_is_passed_with_a_real_browser_agent(system: System, site: TestSite) -> None:
    (job,) = system.wait_final([system.submit(site.url("/ua-block"))])
    assert job["status"] == "completed", job["error_message"]
    assert "Mozilla/5.0" in site.hits("/ua-block")[-1].user_agent


def test_page_blocked_without_a_proxy_escalates_to_the_premium_tier(system: System, site: TestSite) -> None:
    site.reset()
    (job,) = system.wait_final([system.submit(site.url("/needs-proxy"))])
    assert job["status"] == "completed", job["error_message"]
    assert job["success_method"] == "impersonate:premium"
    assert methods(job) == [
        ("impersonate:direct", "blocked"),
        ("browser:direct", "blocked"),
        ("impersonate:premium", "ok"),
    ]
    assert [h.proxy for h in site.hits("/needs-proxy")][-1] == "premium"


def test_premium_flag_starts_at_the_premium_tier_and_ultra_escalates(system: System, site: TestSite) -> None:
    (job,) = system.wait_final([system.submit(site.url("/needs-ultra-proxy"), premium=True)])
    assert job["status"] == "completed", job["error_message"]
    assert job["success_method"] == "impersonate:ultra_premium"
    assert methods(job)[0] == ("impersonate:premium", "blocked")
    assert methods(job)[-1] == ("impersonate:ultra_premium", "ok")


def test_page_that_needs_javascript_goes_to_the_browser(system: System, site: TestSite) -> None:
    (job,) = system.wait_final([system.submit(site.url("/js-only"))], timeout=90)
    assert job["status"] == "completed", job["error_message"]
    assert job["success_method"] == "browser:direct"
    assert "Rendered by JavaScript" in job["html"]
    assert methods(job) == [("impersonate:direct", "blocked"), ("browser:direct", "ok")]


def test_render_flag_starts_in_the_browser(system: System, site: TestSite) -> None:
    (job,) = system.wait_final([system.submit(site.url("/ok/render"), render=True)], timeout=90)
    assert job["status"] == "completed", job["error_message"]
    assert job["success_method"] == "browser:direct"
    assert [a["method"] for a in job["attempts"]] == ["browser:direct"]
    assert "ok-page:render" in job["html"]


def test_429_then_success_honours_retry_after(system: System, site: TestSite) -> None:
    key = uuid.uuid4().hex
    (job,) = system.wait_final([system.submit(site.url(f"/flaky/{key}?fail=2"))])
    assert job["status"] == "completed", job["error_message"]
    assert methods(job) == [
        ("impersonate:direct", "transient"),
        ("impersonate:direct", "transient"),
        ("impersonate:direct", "ok"),
    ]
    hits = site.hits(f"/flaky/{key}")
    assert len(hits) == 3
    assert hits[1].time - hits[0].time >= 0.9  # Retry-After: 1


def test_permanent_500_is_attempted_exactly_the_limit(system: System, site: TestSite) -> None:
    key = uuid.uuid4().hex
    (job,) = system.wait_final([system.submit(site.url(f"/always500/{key}"), max_retries=2)], timeout=90)
    assert job["status"] == "error"
    assert len(site.hits(f"/always500/{key}")) == 3
    assert job["attempt"] == 3 and job["max_attempts"] == 3
    assert "500" in job["error_message"]


def test_not_found_fails_at_once(system: System, site: TestSite) -> None:
    (job,) = system.wait_final([system.submit(site.url("/notfound"))])
    assert job["status"] == "error"
    assert job["http_status"] == 404
    assert len(job["attempts"]) == 1


def test_redirect_chain_is_followed(system: System, site: TestSite) -> None:
    (job,) = system.wait_final([system.submit(site.url("/redirect/3"))])
    assert job["status"] == "completed", job["error_message"]
    assert job["final_url"] == site.url("/ok/final")


def test_redirect_to_a_forbidden_address_is_refused(
    system: System, site: TestSite, forbidden_site: TestSite
) -> None:
    target = forbidden_site.url("/ok/secret")
    (job,) = system.wait_final([system.submit(site.url(f"/redirect-to?url={target}"))])
    assert job["status"] == "error"
    assert "network rules" in job["error_message"]
    assert forbidden_site.hits() == []


def test_slow_page_does_not_hold_up_others(system: System, site: TestSite) -> None:
    slow = system.submit(site.url("/slow?delay=3"))
    fast = system.submit(site.url("/ok/while-slow"))
    fast_job = system.wait_final([fast], timeout=30)[0]
    assert fast_job["status"] == "completed"
    assert system.job(slow)["status"] != "completed"  # still fetching
    (slow_job,) = system.wait_final([slow])
    assert slow_job["status"] == "completed", slow_job["error_message"]


def test_huge_body_is_a_permanent_error(system: System, site: TestSite) -> None:
    (job,) = system.wait_final([system.submit(site.url("/huge?mb=3"))])
    assert job["status"] == "error"
    assert "larger than" in job["error_message"]
    assert len(job["attempts"]) == 1


def test_binary_content_cannot_be_stored(system: System, site: TestSite) -> None:
    (job,) = system.wait_final([system.submit(site.url("/binary"))])
    assert job["status"] == "error"
    assert "image/png" in job["error_message"]


def test_browser_subrequests_to_forbidden_addresses_are_aborted(
    system: System, site: TestSite, forbidden_site: TestSite
) -> None:
    target = forbidden_site.url("/ok/from-browser")
    (job,) = system.wait_final(
        [system.submit(site.url(f"/js-subrequest?target={target}"), render=True)], timeout=90
    )
    assert job["status"] == "completed", job["error_message"]
    assert "subrequest-failed" in job["html"]
    assert forbidden_site.hits() == []


def test_a_batch_completes(system: System, site: TestSite) -> None:
    ids = system.submit_batch([site.url(f"/ok/b{i}") for i in range(50)])
    jobs = system.wait_final(ids)
    assert [j["status"] for j in jobs] == ["completed"] * 50


def test_browser_redirect_to_a_forbidden_address_is_refused(
    system: System, site: TestSite, forbidden_site: TestSite
) -> None:
    target = forbidden_site.url("/ok/browser-redirect")
    (job,) = system.wait_final(
        [system.submit(site.url(f"/redirect-to?url={target}"), render=True)], timeout=90
    )
    assert forbidden_site.hits() == []
    assert job["status"] == "error", job["html"]
    assert "network rules" in job["error_message"]
    assert [a["method"] for a in job["attempts"]] == ["browser:direct"]  # refused, not climbed


def test_robots_txt_is_obeyed_only_when_the_job_asks(system: System, site: TestSite) -> None:
    obeying = system.submit(site.url("/private/page"), obey_robots=True)
    ignoring = system.submit(site.url("/private/other"))
    jobs = {j["id"]: j for j in system.wait_final([obeying, ignoring])}
    assert jobs[obeying]["status"] == "error"
    assert "robots.txt" in jobs[obeying]["error_message"]
    assert jobs[obeying]["obey_robots"] is True
    assert site.hits("/private/page") == []
    assert jobs[ignoring]["status"] == "error"  # fetched: the site has no such page (404)
    assert jobs[ignoring]["http_status"] == 404

"""Sessions per domain (issue 11, item 5), through real worker processes, real Chromium and Redis: a challenge
passed once in the browser lets the tenant's later jobs of the domain through at the cheaper http rung, a
session the site stops honouring is retired, and another tenant's jobs never get the cookie.

Each test runs its own system (its own Redis prefix: the sessions of 127.0.0.1 are its own), with the domain
memory on, as a deployment has it. Traffic goes only to 127.0.0.1 (the test site)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from crawljobs.manager import JobManager
from crawljobs.models import SubmitOptions
from crawljobs.queue import SESSION_KEY
from crawlproject.methods import DEFAULT_ORDER
from crawlproject.sessions import Session, session_key
from tests.acceptance.site import TestSite
from tests.acceptance.site_settle import clearance, clearance_cookie, revoke
from tests.acceptance.system import System

pytestmark = pytest.mark.acceptance

# The cheapest rung of the default ladder (the http engine, or the one that impersonates Chrome).
CHEAP = DEFAULT_ORDER[0].name

MEMORY_ON = {"CRAWLJOBS_DOMAIN_MEMORY": "true"}


def methods(job: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["method"], a["outcome"]) for a in job["attempts"]]


def stored_session(system: System, tenant: str, tier: str = "direct") -> Session | None:
    client = redis.Redis.from_url(system.settings.redis_url or "")
    try:
        key = session_key(SESSION_KEY.format(prefix=system.settings.queue_prefix), tenant, tier, "127.0.0.1")
        value = client.get(key)
        ttl = client.ttl(key)
    finally:
        client.close()
    if value is None:
        return None
    assert 0 < ttl <= 1800, "kept with the configured expiry"
    return Session.from_json(value)


def submit_as(system: System, tenant: str, url: str) -> uuid.UUID:
    async def body(manager: JobManager) -> uuid.UUID:
        return (await manager.submit_job(tenant=tenant, url=url, options=SubmitOptions())).job.id

    job_id: uuid.UUID = system.with_manager(body)
    return job_id


def pass_the_challenge(system: System, site: TestSite, key: str) -> dict[str, Any]:
    (job,) = system.wait_final(
        [system.submit(site.url(f"/settle/protected/{key}/first?delay=300"))], timeout=120
    )
    assert job["status"] == "completed", job["error_message"]
    assert methods(job) == [(CHEAP, "blocked"), ("browser:direct", "ok")]
    return job


def test_a_passed_challenge_lets_the_rest_of_the_batch_through_over_http(
    fresh: System, site: TestSite
) -> None:
    fresh.start_worker(**MEMORY_ON)
    key = uuid.uuid4().hex
    pass_the_challenge(fresh, site, key)
    session = stored_session(fresh, "acceptance")
    assert session is not None, fresh.logs_text()
    assert any(c["name"] == clearance_cookie(key) and c["value"] == clearance(key) for c in session.cookies)
    browser_agent = site.hits(f"/settle/protected/{key}/first")[-1].user_agent
    assert session.user_agent == browser_agent

    urls = [site.url(f"/settle/protected/{key}/page-{i}?delay=300") for i in range(4)]
    jobs = fresh.wait_final(fresh.submit_batch(urls), timeout=120)
    for i, job in enumerate(jobs):
        assert job["status"] == "completed", job["error_message"]
        assert f"protected-ok:{key}:page-{i}" in job["html"]
        assert methods(job) == [(CHEAP, "ok")], "the session's cookie, at the http rung's cost"
        assert job["cost"] == 1
    for i in range(4):
        (hit,) = site.hits(f"/settle/protected/{key}/page-{i}")
        assert f"{clearance_cookie(key)}={clearance(key)}" in hit.headers["cookie"]
        assert hit.user_agent == browser_agent, "the profile that earned the cookie"


def test_a_session_the_site_stops_honouring_is_retired(fresh: System, site: TestSite) -> None:
    worker = fresh.start_worker(**MEMORY_ON)
    key = uuid.uuid4().hex
    pass_the_challenge(fresh, site, key)
    first = stored_session(fresh, "acceptance")
    assert first is not None
    revoke(key)  # the site no longer honours the cookies it gave

    (job,) = fresh.wait_final([fresh.submit(site.url(f"/settle/protected/{key}/after"))], timeout=120)
    assert job["status"] == "completed", job["error_message"]
    assert methods(job) == [(CHEAP, "blocked"), ("browser:direct", "ok")]
    (blocked, *_rest) = site.hits(f"/settle/protected/{key}/after")
    assert f"{clearance_cookie(key)}={clearance(key, 0)}" in blocked.headers["cookie"], (
        "the old session was sent"
    )
    assert "retired the session for 127.0.0.1" in worker.output()
    second = stored_session(fresh, "acceptance")
    assert second is not None and second.id != first.id, "retired, and a new one kept by the browser"
    assert any(c["value"] == clearance(key) for c in second.cookies)

    (later,) = fresh.wait_final([fresh.submit(site.url(f"/settle/protected/{key}/later"))], timeout=120)
    assert methods(later) == [(CHEAP, "ok")]


def test_another_tenants_jobs_never_get_the_cookie(fresh: System, site: TestSite) -> None:
    fresh.start_worker(**MEMORY_ON)
    key = uuid.uuid4().hex
    pass_the_challenge(fresh, site, key)
    assert stored_session(fresh, "acceptance") is not None
    assert stored_session(fresh, "someone-else") is None

    job_id = submit_as(fresh, "someone-else", site.url(f"/settle/protected/{key}/theirs?delay=300"))
    (job,) = fresh.wait_final([job_id], timeout=120)
    assert job["status"] == "completed", job["error_message"]
    assert methods(job) == [(CHEAP, "blocked"), ("browser:direct", "ok")], "it pays for its own"
    hits = site.hits(f"/settle/protected/{key}/theirs")
    assert [hit.status for hit in hits] == [403, 403, 200]
    for hit in hits[:2]:  # its http request, and its browser's first navigation (a context of its own)
        assert clearance_cookie(key) not in hit.headers.get("cookie", ""), hit.headers
    theirs = stored_session(fresh, "someone-else")
    assert theirs is not None and theirs.id != stored_session(fresh, "acceptance").id  # type: ignore[union-attr]

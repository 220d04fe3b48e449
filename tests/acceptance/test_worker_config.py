"""Worker behaviour that depends on configuration: domain memory, tiers without proxies, on-demand runs."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crawljobs.keys import create_key
from crawljobs.manager import JobManager
from crawljobs.models import SubmitOptions
from service.app import create_app
from tests.acceptance.conftest import drop_prefix, system_settings_for
from tests.acceptance.proxies import TestProxy
from tests.acceptance.site import TestSite
from tests.acceptance.system import System, running_system

pytestmark = pytest.mark.acceptance


@pytest.fixture
def make_system(
    database_url: str, redis_url: str, premium_proxy: TestProxy, ultra_proxy: TestProxy, tmp_path: Path
) -> Iterator[Callable[..., System]]:
    """Systems with their own settings (and queue prefix), all stopped after the test."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> System:
            settings = system_settings_for(database_url, redis_url, premium_proxy, ultra_proxy, **overrides)
            stack.callback(drop_prefix, redis_url, settings.queue_prefix)
            return stack.enter_context(
                running_system(settings, tmp_path / settings.queue_prefix.replace(":", "-"))
            )

        yield make


def test_domain_memory_starts_the_next_job_where_the_last_one_succeeded(
    make_system: Callable[..., System], site: TestSite
) -> None:
    system = make_system(domain_memory=True)
    system.start_worker()
    (first,) = system.wait_final([system.submit(site.url("/needs-proxy"))])
    assert first["success_method"] == "impersonate:premium"
    (second,) = system.wait_final([system.submit(site.url("/ok/remembered"))])
    assert second["status"] == "completed"
    assert [a["method"] for a in second["attempts"]] == ["impersonate:premium"]
    assert site.hits("/ok/remembered")[-1].proxy == "premium"


def test_domain_memory_is_kept_per_tenant(make_system: Callable[..., System], site: TestSite) -> None:
    """Issue 10, finding 10: one tenant's escalation made another tenant's plain jobs of that host start (and
    pay) at the premium tier, and told it that someone else had crawled the host."""
    system = make_system(domain_memory=True)
    system.start_worker(CRAWLJOBS_LADDER="http:direct,http:premium,http:ultra_premium")  # no browser needed

    def submit(tenant: str, path: str) -> uuid.UUID:
        async def body(manager: JobManager) -> uuid.UUID:
            return (
                await manager.submit_job(tenant=tenant, url=site.url(path), options=SubmitOptions())
            ).job.id

        job_id: uuid.UUID = system.with_manager(body)
        return job_id

    (escalated,) = system.wait_final([submit("tenant-a", "/needs-proxy")])
    assert escalated["success_method"] == "http:premium", escalated["error_message"]
    (other,) = system.wait_final([submit("tenant-b", "/ok/other-tenant")])
    assert other["status"] == "completed", other["error_message"]
    assert [a["method"] for a in other["attempts"]] == ["http:direct"]  # tenant-a's memory is not tenant-b's
    assert site.hits("/ok/other-tenant")[-1].proxy is None
    (again,) = system.wait_final([submit("tenant-a", "/ok/same-tenant")])
    assert [a["method"] for a in again["attempts"]] == ["http:premium"]  # tenant-a's own memory still works


def test_a_tier_without_proxies_is_skipped_and_a_job_demanding_it_fails_clearly(
    make_system, site: TestSite
) -> None:
    system = make_system(ultra_premium_proxies=[])
    system.start_worker()
    demanding, ordinary = (
        system.submit(site.url("/ok/ultra"), ultra_premium=True),
        system.submit(site.url("/needs-ultra-proxy")),
    )
    jobs = {j["id"]: j for j in system.wait_final([demanding, ordinary])}
    assert jobs[demanding]["status"] == "error"
    assert "CRAWLJOBS_ULTRA_PREMIUM_PROXIES" in jobs[demanding]["error_message"]
    assert jobs[demanding]["attempts"] == []
    assert jobs[ordinary]["status"] == "error"
    assert "ultra_premium" not in {a["method"].split(":")[1] for a in jobs[ordinary]["attempts"]}
    assert site.hits("/ok/ultra") == []


def test_process_crawl_jobs_runs_a_bounded_worker(
    make_system: Callable[..., System], site: TestSite, database_url: str
) -> None:
    system = make_system()
    key = create_key(database_url, name="processing")
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(system.settings), raise_server_exceptions=False) as client:
        body = client.post(
            "/functions/v1/submit-crawl-jobs-batch",
            json={"urls": [site.url("/ok/p1"), site.url("/ok/p2"), site.url("/notfound")]},
            headers=auth,
        ).json()
        assert body["successCount"] == 3
        processed = client.post("/functions/v1/process-crawl-jobs", json={"batchSize": 5}, headers=auth)
        assert processed.status_code == 200, processed.text
        assert processed.json() == {
            "success": True,
            "processed": 3,
            "message": "Processed 3 jobs (2 completed, 1 failed)",
        }
        again = client.post("/v1/jobs/process", json={"batch_size": 5}, headers=auth).json()
        assert again["processed"] == 0
        status = client.get(
            "/functions/v1/get-crawl-jobs-batch", params={"batchId": body["batchId"]}, headers=auth
        )
        assert status.json()["counts"] == {
            "pending": 0,
            "processing": 0,
            "completed": 2,
            "error": 1,
            "total": 3,
        }

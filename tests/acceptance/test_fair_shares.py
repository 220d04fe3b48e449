"""Fair shares with real Scrapy workers on the test site's fast pages: a small batch of another tenant is taken
within a few hundred fetches of its arrival, not after the large batch in front of it.

(The issue's full scale, 20,000 behind 20, runs in ``tests/integration/test_fairness.py`` with lifecycle workers:
a Scrapy worker fetches a few hundred pages a second on an idle machine, far fewer on a shared one.) Order is
the attempts' ids, never time.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from crawljobs.manager import JobManager
from tests.acceptance.site import TestSite
from tests.acceptance.system import System

pytestmark = pytest.mark.acceptance

BIG, SMALL = 1500, 20


def submit(system: System, tenant: str, urls: list[str]) -> list[uuid.UUID]:
    async def body(manager: JobManager) -> list[uuid.UUID]:
        submission = await manager.submit_batch(tenant=tenant, urls=urls)
        return [i for i in submission.job_ids if i is not None]

    ids: list[uuid.UUID] = system.with_manager(body)
    return ids


def query(system: System, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    assert system.settings.database_url is not None
    with psycopg.connect(system.settings.database_url) as conn:
        return conn.execute(sql, params).fetchall()


def finished(system: System, ids: list[uuid.UUID]) -> int:
    rows = query(
        system, "SELECT count(*) FROM crawl_jobs WHERE id = ANY(%s) AND status IN ('completed', 'error')", ids
    )
    return int(rows[0][0])


@pytest.mark.timeout(400)
def test_a_small_batch_is_taken_within_a_few_hundred_fetches_of_its_arrival(
    fresh: System, site: TestSite
) -> None:
    fresh.start_worker()
    fresh.start_worker()
    big = submit(fresh, "tenant-a", [site.url(f"/fast/a-{i}") for i in range(BIG)])
    fresh.wait_for(lambda: finished(fresh, big) >= 200, "A's batch under way", timeout=120)
    (mark,) = query(fresh, "SELECT coalesce(max(id), 0) FROM crawl_attempts")[0]
    small = submit(fresh, "tenant-b", [site.url(f"/fast/b-{i}") for i in range(SMALL)])
    fresh.wait_for(lambda: finished(fresh, small) == SMALL, "B's batch done", timeout=120)
    a_left_when_b_done = BIG - finished(fresh, big)
    fresh.wait_for(lambda: finished(fresh, big) == BIG, "A's batch done", timeout=300)

    rows = query(
        fresh,
        "SELECT a.job_id, j.tenant, j.status FROM crawl_attempts a JOIN crawl_jobs j ON j.id = a.job_id"
        " WHERE a.job_id = ANY(%s) ORDER BY a.id",
        big + small,
    )
    # Nothing lost or doubled: every job completed after exactly one fetch.
    assert sorted(row[0] for row in rows) == sorted(big + small)
    assert {row[2] for row in rows} == {"completed"}
    after = [row for row in query(fresh, "SELECT id FROM crawl_attempts WHERE id > %s ORDER BY id", mark)]
    order = {attempt_id: n for n, (attempt_id,) in enumerate(after)}
    small_ids = query(
        fresh, "SELECT a.id FROM crawl_attempts a WHERE a.job_id = ANY(%s) ORDER BY a.id", small
    )
    last = max(order[attempt_id] for (attempt_id,) in small_ids)
    # Two workers hold a few dozen of A's jobs each when B arrives; FIFO would take B after all of A's rest.
    assert last < 600, f"B's last job was fetch {last} after B's arrival"
    assert a_left_when_b_done > 400, "A still had much of its batch to go when B was done"


CAP = 2


def peak_overlap(system: System, tenant: str) -> int:
    """The most fetches of `tenant` that ran at once, from the attempts' starts and durations (a fetch runs
    inside its job's claim, so this is never above the jobs processing at once)."""
    rows = query(
        system,
        "SELECT a.started_at, a.started_at + make_interval(secs => a.duration_ms / 1000.0)"
        " FROM crawl_attempts a JOIN crawl_jobs j ON j.id = a.job_id WHERE j.tenant = %s",
        tenant,
    )
    edges = sorted([(start, 1) for start, _ in rows] + [(end, -1) for _, end in rows])
    running = peak = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.timeout(300)
def test_a_tenant_at_its_limit_waits_while_other_tenants_go_on(fresh: System, site: TestSite) -> None:
    for _ in range(2):  # two workers: the limit holds over all of them, not per worker
        fresh.start_worker(CRAWLJOBS_TENANT_MAX_IN_FLIGHT=str(CAP))
    a = submit(fresh, "capped-a", [site.url(f"/slow?delay=1&n=a{i}") for i in range(8)])

    async def single(manager: JobManager) -> uuid.UUID:
        return (await manager.submit_job(tenant="capped-a", url=site.url("/slow?delay=1&n=a-single"))).job.id

    a.append(fresh.with_manager(single))  # a single job of a full tenant waits too, and holds up nobody
    b = submit(fresh, "capped-b", [site.url(f"/slow?delay=1&n=b{i}") for i in range(4)])
    peaks = {"capped-a": 0, "capped-b": 0}

    def sample() -> bool:
        for tenant, count in query(
            fresh,
            "SELECT tenant, count(*) FROM crawl_jobs WHERE tenant = ANY(%s) AND status = 'processing'"
            " GROUP BY tenant",
            list(peaks),
        ):
            peaks[tenant] = max(peaks[tenant], int(count))
        return finished(fresh, a + b) == len(a + b)

    fresh.wait_for(sample, "every job final", timeout=240)
    rows = query(fresh, "SELECT status, count(*) FROM crawl_jobs WHERE id = ANY(%s) GROUP BY status", a + b)
    assert rows == [("completed", len(a + b))]  # over the limit they waited, none failed
    attempts = query(
        fresh, "SELECT count(*), count(DISTINCT job_id) FROM crawl_attempts WHERE job_id = ANY(%s)", a + b
    )
    assert attempts == [(len(a + b), len(a + b))]
    assert max(peaks.values()) <= CAP, peaks
    assert peak_overlap(fresh, "capped-a") == CAP  # A's nine ran two at a time, never three
    assert peak_overlap(fresh, "capped-b") <= CAP

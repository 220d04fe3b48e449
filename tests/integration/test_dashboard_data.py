"""What the dashboard reads through the manager: a tenant's overview, its batches (searched by id), and a
batch's jobs page by page (keyset, filtered by status, searched by URL), on real PostgreSQL and Redis."""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis

from crawljobs.config import Settings
from crawljobs.exceptions import BatchNotFound, InvalidCursor, InvalidRequest, InvalidStatus
from crawljobs.lifecycle import Leases
from crawljobs.manager import JobManager
from crawljobs.metrics import MetricKeys, publish_worker
from crawljobs.models import STATUSES, Job
from crawljobs.testing import FakeWorker
from tests.integration.conftest import run_with_manager


def _urls(run: str, n: int) -> list[str]:
    hosts = ["example.com", "www.example.com", "shop.example.org"]
    return [f"https://{hosts[i % 3]}/Products/{run}/{i}" for i in range(n)]


async def _walk(
    manager: JobManager, tenant: str, batch_id: str, limit: int, *, full: bool = True, **filters: str | None
) -> list[Job]:
    """Every page of a batch's jobs, following the cursors; each page but the last one is full (unless a
    search's window ended first: `full=False`)."""
    jobs: list[Job] = []
    after: str | None = None
    while True:
        page = await manager.batch_jobs_page(
            tenant=tenant, batch_id=batch_id, after=after, limit=limit, **filters
        )
        jobs += page.jobs
        if page.next_after is None:
            return jobs
        assert len(page.jobs) == limit or not full
        assert after is None or int(page.next_after) > int(after)
        after = page.next_after


def test_a_batchs_jobs_page_by_page_by_status_and_by_url(settings: Settings) -> None:
    run = uuid.uuid4().hex[:8]

    async def body(manager: JobManager) -> None:
        submission = await manager.submit_batch(tenant="pages", urls=_urls(run, 120))
        ids = [i for i in submission.job_ids if i is not None]
        worker = FakeWorker(manager.pool)
        await worker.complete(ids[10:40])
        await worker.fail(ids[50:53])
        batch_id = submission.batch_id

        every = await _walk(manager, "pages", batch_id, 25)
        assert [job.id for job in every] == ids  # submission order, each once
        assert [job.batch_index for job in every] == list(range(120))
        assert all(job.html is None and job.attempts == () for job in every)

        failed = await _walk(manager, "pages", batch_id, 2, status="error")
        assert [job.id for job in failed] == ids[50:53]
        completed = await _walk(manager, "pages", batch_id, 7, status="completed")
        assert [job.id for job in completed] == ids[10:40]

        # A URL's part, whatever its case: a host, a path.
        shop = await _walk(manager, "pages", batch_id, 10, search="SHOP.example.org")
        assert [job.id for job in shop] == ids[2::3]
        one = await _walk(manager, "pages", batch_id, 10, search=f"products/{run}/7")
        assert {job.url for job in one} == {u for u in _urls(run, 120) if f"/{run}/7" in u}
        both = await _walk(manager, "pages", batch_id, 5, search="www.example.com", status="completed")
        assert [job.id for job in both] == [i for n, i in enumerate(ids) if 10 <= n < 40 and n % 3 == 1]
        none = await manager.batch_jobs_page(tenant="pages", batch_id=batch_id, search="nowhere.example")
        assert none.jobs == [] and none.next_after is None

        # A search reads a window of the batch per page: a short page may still name a next one.
        manager.search_window = 50
        windows = [await manager.batch_jobs_page(tenant="pages", batch_id=batch_id, search="nowhere")]
        while windows[-1].next_after is not None:
            windows.append(
                await manager.batch_jobs_page(
                    tenant="pages", batch_id=batch_id, search="nowhere", after=windows[-1].next_after
                )
            )
        assert [(w.jobs, w.next_after) for w in windows] == [([], "49"), ([], "99"), ([], None)]
        shop_again = await _walk(manager, "pages", batch_id, 30, full=False, search="shop.example.org")
        assert [job.id for job in shop_again] == ids[2::3]
        manager.search_window = JobManager.search_window

        # A page after the last job is empty; the cursor of a page is its last job's.
        page = await manager.batch_jobs_page(tenant="pages", batch_id=batch_id, limit=50)
        assert page.next_after is not None
        deeper = await manager.batch_jobs_page(
            tenant="pages", batch_id=batch_id, after=page.next_after, limit=50
        )
        assert deeper.jobs[0].id == ids[50]
        end = await manager.batch_jobs_page(tenant="pages", batch_id=batch_id, after="119")
        assert end.jobs == [] and end.next_after is None

        # Refusals, typed (4xx at the edge), before any read.
        with pytest.raises(InvalidStatus):
            await manager.batch_jobs_page(tenant="pages", batch_id=batch_id, status="done")
        for cursor in ("-1", "abc", "1e3", "9" * 11, "٣"):
            with pytest.raises(InvalidCursor):
                await manager.batch_jobs_page(tenant="pages", batch_id=batch_id, after=cursor)
        for limit in (0, 1001):
            with pytest.raises(InvalidRequest):
                await manager.batch_jobs_page(tenant="pages", batch_id=batch_id, limit=limit)
        with pytest.raises(BatchNotFound):
            await manager.batch_jobs_page(tenant="pages", batch_id="no-such-batch")
        with pytest.raises(BatchNotFound):  # another tenant's batch is no batch of this one
            await manager.batch_jobs_page(tenant="someone-else", batch_id=batch_id)

    run_with_manager(settings, body)


def test_batches_searched_by_id_prefix(settings: Settings) -> None:
    async def body(manager: JobManager) -> None:
        for name in ("shop-1", "shop-2", "blog-1", "shop_x"):
            await manager.submit_batch(tenant="search", urls=_urls(name, 3), batch_id=name)
        batches, total = await manager.list_batches(tenant="search", limit=10, offset=0, search="shop-")
        assert ([b.batch_id for b in batches], total) == (["shop-2", "shop-1"], 2)
        batches, total = await manager.list_batches(tenant="search", limit=1, offset=1, search="shop")
        assert ([b.batch_id for b in batches], total) == (["shop-2"], 3)
        # `_` and `%` are no wildcards.
        assert (await manager.list_batches(tenant="search", limit=10, offset=0, search="shop_"))[1] == 1
        assert (await manager.list_batches(tenant="search", limit=10, offset=0, search="%"))[1] == 0
        _, total = await manager.list_batches(tenant="search", limit=10, offset=0, search="")
        assert total == 4
        batch = (await manager.list_batches(tenant="search", limit=1, offset=0, search="blog"))[0][0]
        assert (batch.counts.pending, batch.counts.total, batch.cost) == (3, 3, 0.0)

    run_with_manager(settings, body)


def test_the_overview_of_a_tenant(settings: Settings, redis_client: redis.Redis) -> None:
    async def body(manager: JobManager) -> None:
        submission = await manager.submit_batch(tenant="ov", urls=_urls("ov", 10))
        ids = [i for i in submission.job_ids if i is not None]
        await manager.submit_job(tenant="ov", url="https://example.com/single")
        await manager.submit_batch(tenant="ov-other", urls=_urls("other", 4))
        worker = FakeWorker(manager.pool)
        await worker.complete(ids[:4], success_method="http:direct", cost=1.0)
        await worker.complete(ids[4:5], success_method="browser:premium", cost=3.0, attempt=2)
        await worker.fail(ids[5:7], cost=0.5)
        await manager.cancel_job(tenant="ov", job_id=ids[7])

        # A live worker, as a real one announces itself: its liveness lock, its jobs, its heartbeat in Redis.
        leases = Leases(manager.pool, lease_seconds=30)
        assert await leases.announce()
        try:
            await leases.claim(ids[8:10])
            assert manager.redis is not None
            beat = time.time()
            await publish_worker(
                manager.redis,
                MetricKeys.for_prefix(settings.queue_prefix),
                leases.worker_id,
                in_flight=2,
                stats={},
                interval=5,
                now=beat,
            )
            before = datetime.now(UTC)
            seen = await manager.overview(tenant="ov")
            later = datetime.now(UTC)
        finally:
            await leases.withdraw()

        assert seen.counts == {"pending": 1, "processing": 2, "completed": 5, "error": 2, "cancelled": 1}
        assert list(seen.counts) == list(STATUSES) and seen.total == 11
        assert seen.cost_today == {"browser:premium": 3.0, "http:direct": 4.0, "none": 1.0}
        assert seen.cost_total == 8.0

        minutes = [b.start for b in seen.per_minute]
        assert len(minutes) == 60
        assert minutes[-1] in {t.replace(second=0, microsecond=0) for t in (before, later)}
        assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(minutes))
        hours = [b.start for b in seen.per_hour]
        assert len(hours) == 24
        assert hours[-1] in {t.replace(minute=0, second=0, microsecond=0) for t in (before, later)}
        assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(hours))
        assert (sum(b.completed for b in seen.per_minute), sum(b.errors for b in seen.per_minute)) == (5, 2)
        assert (sum(b.completed for b in seen.per_hour), sum(b.errors for b in seen.per_hour)) == (5, 2)
        assert sum(b.completed + b.errors for b in seen.per_minute[:-2]) == 0  # all of it just now

        keys = manager.keys
        assert seen.queue_depth == {
            "priority": redis_client.llen(keys.priority),
            "bulk": redis_client.llen(keys.bulk)
            + redis_client.llen(keys.backlog),  # fair shares' batch lists
        }
        assert seen.queue_depth["bulk"] >= 4  # the other tenant's batch is waiting there too

        mine = [w for w in seen.workers if w.worker_id == leases.worker_id]
        assert len(mine) == 1
        info = mine[0]
        assert (info.alive, info.jobs_held, info.in_flight) == (True, 2, 2)
        assert info.heartbeat is not None and abs(info.heartbeat.timestamp() - beat) < 0.001
        assert info.started_at <= info.last_seen

        # Once it is gone (unregistered), it is no longer listed.
        after = await manager.overview(tenant="ov")
        assert leases.worker_id not in {w.worker_id for w in after.workers}
        assert (await manager.overview(tenant="nobody")).counts == dict.fromkeys(STATUSES, 0)

    run_with_manager(settings, body)

"""The counts the database keeps (migration 0007) against a full recount of the jobs, after many transitions
driven through the real lifecycle by concurrent writers: claims, completions, failures, retries, escalations,
lost leases, a SIGKILLed worker, releases, cancels, the explicit retry and the retention purge.

Each test has a database of its own: the counts and the recount cover every row of it.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from crawljobs.config import Settings
from crawljobs.manager import JobManager
from crawljobs.migrate import load_migrations, migrate
from crawljobs.models import STATUSES
from crawljobs.store.pool import open_pool
from crawljobs.sweeper import Sweeper
from crawljobs.testing import FakeWorker
from tests.conftest import database_url_for
from tests.integration.conftest import run_with_manager
from tests.integration.test_leases_and_sweeper import (
    database_url as database_url,  # a fresh database per test
)
from tests.integration.test_leases_and_sweeper import start_holder

# -- the recount -----------------------------------------------------------------------------------------

RECOUNT_BATCHES = """
SELECT tenant, batch_id,
       count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'processing'),
       count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'error'),
       count(*) FILTER (WHERE status = 'cancelled'), sum(cost), max(updated_at)
FROM crawl_jobs WHERE batch_id IS NOT NULL GROUP BY tenant, batch_id ORDER BY tenant, batch_id
"""
KEPT_BATCHES = """
SELECT tenant, batch_id, sum(pending), sum(processing), sum(completed), sum(error), sum(cancelled), sum(cost),
       max(last_updated)
FROM crawl_batch_counts GROUP BY tenant, batch_id
HAVING sum(pending) + sum(processing) + sum(completed) + sum(error) + sum(cancelled) <> 0
ORDER BY tenant, batch_id
"""
RECOUNT_TENANTS = """
SELECT tenant, count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'processing'),
       count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'error'),
       count(*) FILTER (WHERE status = 'cancelled'), sum(cost)
FROM crawl_jobs GROUP BY tenant ORDER BY tenant
"""
KEPT_TENANTS = """
SELECT tenant, sum(pending), sum(processing), sum(completed), sum(error), sum(cancelled), sum(cost)
FROM crawl_tenant_counts GROUP BY tenant
HAVING sum(pending) + sum(processing) + sum(completed) + sum(error) + sum(cancelled) <> 0
ORDER BY tenant
"""
RECOUNT_BATCHES_OF_TENANTS = "SELECT tenant, count(*) FROM crawl_batches GROUP BY tenant ORDER BY tenant"
KEPT_BATCHES_OF_TENANTS = """
SELECT tenant, sum(batches) FROM crawl_tenant_counts GROUP BY tenant HAVING sum(batches) <> 0 ORDER BY tenant
"""


def _normal(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Counts as ints and costs rounded (a float sum depends on its order), for comparing."""
    return [tuple(round(float(v), 6) if isinstance(v, float) else v for v in row) for row in rows]


def assert_counts_equal_a_recount(database_url: str, *, exact_last_updated: bool = True) -> None:
    """The kept counts and costs equal the recount. `last_updated` is the latest `updated_at` any of the batch's
    jobs has had: the recount's max of the current values, or later when a transaction that began earlier wrote
    a job after one that began later (a cancel that waited for a worker's row lock writes its older now()),
    which moves the recount's max back but not the kept one (`exact_last_updated=False`)."""
    with psycopg.connect(database_url) as conn:
        recount_batches = conn.execute(RECOUNT_BATCHES).fetchall()
        kept_batches = conn.execute(KEPT_BATCHES).fetchall()
        recount_tenants = conn.execute(RECOUNT_TENANTS).fetchall()
        kept_tenants = conn.execute(KEPT_TENANTS).fetchall()
        batches_of_tenants = conn.execute(RECOUNT_BATCHES_OF_TENANTS).fetchall()
        kept_batches_of_tenants = conn.execute(KEPT_BATCHES_OF_TENANTS).fetchall()
        now = conn.execute("SELECT now()").fetchone()
    assert recount_batches, "nothing was counted"
    assert _normal([row[:-1] for row in kept_batches]) == _normal([row[:-1] for row in recount_batches])
    assert _normal(kept_tenants) == _normal(recount_tenants)
    assert kept_batches_of_tenants == batches_of_tenants
    for kept, recount in zip(kept_batches, recount_batches, strict=True):
        assert now is not None and recount[-1] <= kept[-1] <= now[0], (kept, recount)
        if exact_last_updated:
            assert kept[-1] == recount[-1], (kept, recount)


def overview(settings: Settings, tenant: str) -> Any:
    return run_with_manager(settings, lambda manager: manager.overview(tenant=tenant))


# -- many transitions, many writers ----------------------------------------------------------------------

WRITERS = 6
ROUNDS = 12


async def _submit(manager: JobManager, tenant: str, n: int) -> tuple[str, list[uuid.UUID]]:
    submission = await manager.submit_batch(
        tenant=tenant, urls=[f"https://example.com/{uuid.uuid4()}" for _ in range(n)]
    )
    return submission.batch_id, [i for i in submission.job_ids if i is not None]


class Tally:
    """What the test did that the stats count: jobs completed, jobs failed (each failure an event), and the
    cost written, by the method of the result that wrote it ('none' for a failure)."""

    def __init__(self) -> None:
        self.completed = 0
        self.errors = 0
        self.cost: dict[str, float] = {}

    def spent(self, method: str, cost: float, written: list[uuid.UUID]) -> None:
        if written:
            self.cost[method] = self.cost.get(method, 0.0) + cost * len(written)


async def _unless_cancelled(step: Coroutine[Any, Any, list[uuid.UUID]]) -> list[uuid.UUID]:
    """A step that fetches again first finds its job gone when a cancel came in between: nothing written."""
    try:
        return await step
    except RuntimeError as exc:
        assert "no longer held" in str(exc)
        return []


async def _writer(database_url: str, number: int, jobs: list[uuid.UUID], tally: Tally) -> None:
    """One worker on a connection of its own (so a shard of its own, most likely): claims a handful of jobs at
    a time and ends each as the dice say."""
    rng = random.Random(number)
    pool = await open_pool(database_url, max_size=1)
    try:
        worker = FakeWorker(pool, worker=f"writer-{number}", lease_seconds=30)
        for _ in range(ROUNDS):
            chosen = rng.sample(jobs, 8)
            claimed = await worker.claim(chosen)
            ids = [job.id for job in claimed]
            if not ids:
                continue
            third = max(1, len(ids) // 3)
            first, second, rest = ids[:third], ids[third : 2 * third], ids[2 * third :]
            roll = rng.random()
            method = rng.choice(["http:direct", "browser:premium"])
            done = await worker.complete(first, cost=1.0, success_method=method)
            tally.completed += len(done)
            tally.spent(method, 1.0, done)
            if roll < 0.5:
                failed = await _unless_cancelled(worker.fail(second, cost=2.0, attempt=2))  # a retry first
                tally.errors += len(failed)
                tally.spent("none", 2.0, failed)
            else:
                await worker.die(second)  # its leases run out: the sweeper takes them back
            if rest:
                if roll < 0.3:
                    await worker.leases.release_all()  # a worker stopping gives them back
                else:
                    # Escalated twice on the way (next_attempt without a retry spent), then completed.
                    done = await _unless_cancelled(
                        worker.complete(rest, cost=0.5, success_method="http:premium", attempt=3)
                    )
                    tally.completed += len(done)
                    tally.spent("http:premium", 0.5, done)
    finally:
        await pool.close()


def test_counts_equal_a_recount_after_concurrent_transitions_through_the_lifecycle(
    database_url: str, redis_url: str, redis_prefix: str
) -> None:
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        queue_prefix=redis_prefix,
        allowed_networks=[],
        max_lost_leases=1,  # a job that loses its worker twice ends in error: another kind of failure
        result_ttl=1,
    )
    tally = Tally()
    day = datetime.now(UTC).date()

    async def scenario(manager: JobManager) -> None:
        a = [await _submit(manager, "tenant-a", 40) for _ in range(3)]
        b_id, b = await _submit(manager, "tenant-b", 30)
        singles = [
            (await manager.submit_job(tenant="tenant-a", url=f"https://example.com/single/{i}")).job.id
            for i in range(10)
        ]
        jobs_a = [job for _, batch in a for job in batch] + singles
        sweeper = Sweeper(manager)

        async def sweeping() -> None:
            for _ in range(ROUNDS):
                reclaimed = await manager.reclaim_expired_leases(limit=1000)
                tally.errors += len(reclaimed.lost)
                await asyncio.sleep(0.05)

        # Writers of every batch at once, the sweeper among them, a cancel and a batch cancel mid-way.
        async def cancelling() -> None:
            await asyncio.sleep(0.1)
            await manager.cancel_job(tenant="tenant-a", job_id=singles[0])
            await manager.cancel_batch(tenant="tenant-a", batch_id=a[2][0])

        await asyncio.gather(
            *(_writer(database_url, n, jobs_a if n % 2 else b + jobs_a, tally) for n in range(WRITERS)),
            sweeping(),
            cancelling(),
        )
        # A worker SIGKILLed while it holds jobs: the liveness check takes them back.
        pending = [
            job.id for job in await manager.batch_jobs(tenant="tenant-b", batch_id=b_id, status="pending")
        ]
        if pending:
            holder, _ = start_holder(database_url, pending[:3])
            holder.kill()
            holder.wait(10)
            dead = await sweeper.check_workers()
            tally.errors += len(dead.lost)
        for _ in range(3):
            reclaimed = await manager.reclaim_expired_leases(limit=1000)
            tally.errors += len(reclaimed.lost)
        # The explicit retry of every failed job, and a second round of failures for some of them.
        retried = await manager.retry_failed(tenant="tenant-b", batch_id=b_id)
        for batch_id, _ in a:
            retried += await manager.retry_failed(tenant="tenant-a", batch_id=batch_id)
        assert retried > 0
        worker = FakeWorker(manager.pool, worker="after-retry")
        again = [
            j.id for j in await manager.batch_jobs(tenant="tenant-a", batch_id=a[0][0], status="pending")
        ]
        failed = await worker.fail(again[:5], cost=2.0)
        assert failed
        tally.errors += len(failed)
        tally.spent("none", 2.0, failed)
        # Retention: the HTML of jobs finished over a second ago goes (an UPDATE of crawl_jobs too).
        await asyncio.sleep(1.1)
        assert await manager.purge_expired_html(limit=1000) > 0

    run_with_manager(settings, scenario)
    assert_counts_equal_a_recount(database_url, exact_last_updated=False)
    with psycopg.connect(database_url) as conn:
        shards = conn.execute("SELECT count(DISTINCT shard) FROM crawl_batch_counts").fetchone()
    assert shards is not None and shards[0] > 1, "the writers' changes were not spread over shards"

    # The events: every completion and failure of this run is in the last hour's minutes and the last day's
    # hours; today's cost by method is the jobs' cost by method (the run did not cross midnight UTC).
    with psycopg.connect(database_url) as conn:
        completed_by_tenant = dict(
            conn.execute("SELECT tenant, count(*) FROM crawl_jobs WHERE status = 'completed' GROUP BY tenant")
        )
        counts_a = dict(
            conn.execute("SELECT status, count(*) FROM crawl_jobs WHERE tenant = 'tenant-a' GROUP BY 1")
        )
    seen_a, seen_b = overview(settings, "tenant-a"), overview(settings, "tenant-b")
    assert sum(b.completed for b in seen_a.per_minute) == completed_by_tenant["tenant-a"]
    assert sum(b.completed for b in seen_b.per_minute) == completed_by_tenant["tenant-b"]
    assert sum(b.completed for b in seen_a.per_hour) == completed_by_tenant["tenant-a"]
    errors = sum(b.errors for o in (seen_a, seen_b) for b in o.per_minute)
    assert errors == tally.errors
    assert sum(b.completed for o in (seen_a, seen_b) for b in o.per_minute) == tally.completed
    assert seen_a.counts == {s: counts_a.get(s, 0) for s in STATUSES}
    if datetime.now(UTC).date() == day:
        today = {m: seen_a.cost_today.get(m, 0) + seen_b.cost_today.get(m, 0) for m in tally.cost}
        assert today == pytest.approx(tally.cost)


# -- deletions, TRUNCATE, the migration's backfill -------------------------------------------------------


def test_deleting_jobs_takes_them_out_of_the_counts(settings: Settings, database_url: str) -> None:
    """Nothing in crawljobs deletes jobs (retention drops HTML only), but an operator may: the counts follow."""

    async def scenario(manager: JobManager) -> tuple[str, str]:
        (kept, kept_ids), (gone, gone_ids) = await _submit(manager, "t", 5), await _submit(manager, "t", 4)
        worker = FakeWorker(manager.pool)
        await worker.complete(kept_ids[:2] + gone_ids[:2])
        return kept, gone

    _, gone = run_with_manager(settings, scenario)
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM crawl_jobs WHERE batch_id = %s AND status = 'completed'", (gone,))
    # (The batch's last change stays when its latest jobs go: a deletion is no change of a job.)
    assert_counts_equal_a_recount(database_url, exact_last_updated=False)
    batch = run_with_manager(settings, lambda manager: manager.get_batch(tenant="t", batch_id=gone))
    assert (batch.counts.pending, batch.counts.completed, batch.counts.total) == (2, 0, 2)
    _, total = run_with_manager(settings, lambda m: m.list_batches(tenant="t", limit=1, offset=0))
    assert total == 2
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM crawl_batches WHERE batch_id = %s", (gone,))
    _, total = run_with_manager(settings, lambda m: m.list_batches(tenant="t", limit=1, offset=0))
    assert total == 1
    with psycopg.connect(database_url) as conn:
        conn.execute("TRUNCATE crawl_jobs CASCADE")
        left = conn.execute("SELECT count(*) FROM crawl_batch_counts").fetchone()
        conn.execute("TRUNCATE crawl_batches")
    assert left == (0,)
    assert run_with_manager(settings, lambda m: m.list_batches(tenant="t", limit=1, offset=0)) == ([], 0)
    assert overview(settings, "t").counts == dict.fromkeys(STATUSES, 0)


def test_the_migration_backfills_the_counts_of_the_jobs_already_there(
    pg_admin_url: str, redis_url: str, redis_prefix: str
) -> None:
    """Jobs written before migration 0007 (no counts yet) are counted once it is applied. (Every other migration
    is applied first: today's statements write the columns of the later ones, which do not touch the counts.)"""
    name = f"cjtest_{secrets.token_hex(4)}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = database_url_for(pg_admin_url, name)
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for migration in load_migrations():
                if migration.version != 7:
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
        settings = Settings(
            database_url=database_url, redis_url=redis_url, queue_prefix=redis_prefix, allowed_networks=[]
        )

        async def before(manager: JobManager) -> None:
            _, ids = await _submit(manager, "t", 12)
            await manager.submit_job(tenant="t", url="https://example.com/single")
            worker = FakeWorker(manager.pool)
            await worker.complete(ids[:5], success_method="http:direct", cost=1.5)
            await worker.fail(ids[5:8], cost=1.0)
            await worker.claim(ids[8:10])

        run_with_manager(settings, before)
        assert migrate(database_url) == ["0007_counts.sql"]
        assert_counts_equal_a_recount(database_url)
        seen = overview(settings, "t")
        assert seen.counts == {"pending": 3, "processing": 2, "completed": 5, "error": 3, "cancelled": 0}
        assert sum(b.completed for b in seen.per_minute) == 5
        assert sum(b.errors for b in seen.per_hour) == 3
        assert seen.cost_today == {"http:direct": 7.5, "none": 3.0}
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

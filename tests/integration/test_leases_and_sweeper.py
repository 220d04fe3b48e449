"""Claim, fencing, heartbeat and the sweeper against real PostgreSQL and Redis (DESIGN rules 1-4, 6).

The sweeper acts on every row of its database, so each test here has a database of its own (``database_url``
below): what a sweep reports is about that test's jobs alone, whatever ran before it.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

from crawljobs import store
from crawljobs.config import Settings
from crawljobs.embedded import start_redis
from crawljobs.lifecycle import ResultRecord
from crawljobs.manager import JobManager
from crawljobs.queue import QueueKeys
from crawljobs.sweeper import Sweeper
from crawljobs.testing import batch_queue, drop_queue, queue_depth, queued_ids
from tests.conftest import database_url_for
from tests.integration.conftest import run_with_manager


@pytest.fixture
def database_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    """A fresh migrated database for this test alone (the module-wide one of tests/conftest.py, per test)."""
    name = f"cjtest_{secrets.token_hex(4)}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    try:
        yield database_url_for(pg_admin_url, name)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def _submit(manager: JobManager, n: int, tenant: str = "t") -> list[uuid.UUID]:
    submission = await manager.submit_batch(
        tenant=tenant, urls=[f"https://example.com/{uuid.uuid4()}" for _ in range(n)]
    )
    return [i for i in submission.job_ids if i is not None]


def status_of(database_url: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, int]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, status, attempt FROM crawl_jobs WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def test_claim_is_exclusive_and_duplicates_are_harmless(settings: Settings) -> None:
    async def body(manager: JobManager) -> None:
        ids = await _submit(manager, 3)
        async with manager.pool.connection() as conn:
            first = await store.claim_jobs(conn, ids=ids + ids, worker="w1", lease_seconds=30)
            second = await store.claim_jobs(conn, ids=ids, worker="w2", lease_seconds=30)
        assert sorted(r["id"] for r in first) == sorted(ids)
        assert all(r["attempt"] == 1 for r in first)
        assert second == []

    run_with_manager(settings, body)


def test_writes_are_fenced_by_attempt_and_owner(settings: Settings, database_url: str) -> None:
    def result(job_id: uuid.UUID, attempt: int, html: str) -> ResultRecord:
        return ResultRecord(
            id=job_id, attempt=attempt, status="completed", processing_time_ms=5, cost=1.0, html=html,
            http_status=200, final_url="https://example.com/", content_type="text/html", success_method="http:direct",
        )  # fmt: skip

    async def body(manager: JobManager) -> uuid.UUID:
        (job_id,) = await _submit(manager, 1)
        async with manager.pool.connection() as conn:
            await store.claim_jobs(conn, ids=[job_id], worker="old", lease_seconds=1)
            # The old worker's lease expires; the sweeper gives the job back; a new worker claims attempt 2.
            await conn.execute(
                "UPDATE crawl_jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
                (job_id,),
            )
            await Sweeper(manager).sweep_once()
            claimed = await store.claim_jobs(conn, ids=[job_id], worker="new", lease_seconds=30)
            assert claimed[0]["attempt"] == 2
            stale = await store.finish_jobs(
                conn, worker="old", results=[result(job_id, 1, "stale")], attempts=[]
            )
            assert stale == []
            assert (
                await store.next_attempt(
                    conn, job_id=job_id, attempt=1, retry=True, worker="old", lease_seconds=30
                )
                is None
            )
            fresh = await store.finish_jobs(
                conn, worker="new", results=[result(job_id, 2, "fresh")], attempts=[]
            )
            assert fresh == [job_id]
            again = await store.finish_jobs(
                conn, worker="new", results=[result(job_id, 2, "twice")], attempts=[]
            )
            assert again == []  # completion is idempotent: done once
        return job_id

    job_id = run_with_manager(settings, body)
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status, html, attempt FROM crawl_jobs WHERE id = %s", (job_id,)).fetchone()
    assert row == ("completed", "fresh", 2)


def test_heartbeat_renews_every_held_lease_in_one_statement(settings: Settings, database_url: str) -> None:
    async def body(manager: JobManager) -> list[uuid.UUID]:
        ids = await _submit(manager, 6)
        async with manager.pool.connection() as conn:
            await store.claim_jobs(conn, ids=ids, worker="w", lease_seconds=2)
            # The worker still holds five; the sixth it let go of (its result could not be written).
            renewed = await store.renew_leases(conn, worker="w", ids=ids[:5], lease_seconds=300)
            assert sorted(r["id"] for r in renewed) == sorted(ids[:5])
            assert await store.renew_leases(conn, worker="someone-else", ids=ids, lease_seconds=300) == []
        return ids

    ids = run_with_manager(settings, body)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, lease_expires_at - now() FROM crawl_jobs WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    left = {row[0]: row[1].total_seconds() for row in rows}
    assert all(left[i] > 250 for i in ids[:5])
    assert left[ids[5]] < 3  # not renewed: the sweeper takes it back once it expires


def test_the_heartbeat_names_the_held_jobs_it_could_not_renew(settings: Settings) -> None:
    """A cancelled job and one another worker took over are reported to ``Leases.on_gone`` (the worker closes
    their renders); the jobs still held are renewed and not reported."""

    async def body(manager: JobManager) -> None:
        ids = await _submit(manager, 4, tenant="gone")
        leases = manager.leases(worker_id="w-gone")
        reported: list[set[uuid.UUID]] = []
        leases.on_gone = reported.append
        assert sorted(job.id for job in await leases.claim(ids)) == sorted(ids)
        await manager.cancel_job(tenant="gone", job_id=ids[0])
        async with manager.pool.connection() as conn:
            # The lease of ids[1] expired and another worker holds it now.
            await conn.execute("UPDATE crawl_jobs SET lease_owner = 'w-other' WHERE id = %s", (ids[1],))
        assert await leases.renew() == 2
        assert reported == [{ids[0], ids[1]}]

    run_with_manager(settings, body)


def test_sweeper_reclaims_expired_leases_and_fails_spent_ones(settings: Settings, database_url: str) -> None:
    async def body(manager: JobManager) -> tuple[list[uuid.UUID], Any]:
        ids = await _submit(manager, 2)
        async with manager.pool.connection() as conn:
            await store.claim_jobs(conn, ids=ids, worker="dead", lease_seconds=30)
            await conn.execute(
                "UPDATE crawl_jobs SET lease_expires_at = now() - interval '1 second' WHERE id = ANY(%s)",
                (ids,),
            )
            # The second has lost its worker as often as it may already: this loss fails it.
            await conn.execute(
                "UPDATE crawl_jobs SET lost_leases = %s WHERE id = %s", (settings.max_lost_leases, ids[1])
            )
        report = await Sweeper(manager).sweep_once()
        return ids, report

    ids, report = run_with_manager(settings, body)
    assert (report.reclaimed, report.failed_lost) == (1, 1)
    # Dispatched again by the reclaim itself, to the head of its list (it was due already), not as undispatched.
    assert report.dispatched == 0
    client = redis.Redis.from_url(settings.redis_url or "")
    try:
        keys = QueueKeys.for_prefix(settings.queue_prefix)
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT batch_id FROM crawl_jobs WHERE id = %s", (ids[0],)).fetchone()
        assert row is not None
        head = batch_queue(client, keys, "t", row[0])[0]
    finally:
        client.close()
    assert head == ids[0]
    states = status_of(database_url, ids)
    assert states[ids[0]] == ("pending", 1)
    assert states[ids[1]] == ("error", 1)
    with psycopg.connect(database_url) as conn:
        message = conn.execute("SELECT error_message FROM crawl_jobs WHERE id = %s", (ids[1],)).fetchone()
    assert message is not None and "worker lost" in message[0]


def test_sweeper_dispatches_jobs_submitted_while_redis_was_down(
    settings: Settings, database_url: str, redis_server_factory: Any
) -> None:
    server = redis_server_factory()
    local = Settings(**{**settings.model_dump(), "redis_url": server.url})
    server.stop()

    async def submit_while_down(manager: JobManager) -> list[uuid.UUID]:
        return await _submit(manager, 4)

    ids = run_with_manager(local, submit_while_down)
    assert all(s == ("pending", 0) for s in status_of(database_url, ids).values())
    restarted = redis_server_factory()
    local = Settings(**{**settings.model_dump(), "redis_url": restarted.url})

    async def sweep(manager: JobManager) -> int:
        return (await Sweeper(manager).sweep_once()).dispatched

    assert run_with_manager(local, sweep) == 4
    queued = queued_ids(redis.Redis.from_url(restarted.url), QueueKeys.for_prefix(local.queue_prefix))
    assert sorted(queued) == sorted(ids)


def test_sweeper_replaces_lost_messages_only(
    settings: Settings, database_url: str, redis_client: Any
) -> None:
    async def body(manager: JobManager) -> tuple[int, int]:
        ids = await _submit(manager, 3)
        async with manager.pool.connection() as conn:
            await conn.execute(
                "UPDATE crawl_jobs SET dispatched_at = now() - interval '1 hour' WHERE id = ANY(%s)", (ids,)
            )
        # All three messages are still queued: nothing to replace.
        kept = (await Sweeper(manager, stale_seconds=60).sweep_once()).redispatched
        drop_queue(redis_client, QueueKeys.for_prefix(settings.queue_prefix))  # FLUSHALL, in small
        replaced = (await Sweeper(manager, stale_seconds=60).sweep_once()).redispatched
        return kept, replaced

    kept, replaced = run_with_manager(settings, body)
    assert kept == 0
    assert replaced == 3
    assert len(queued_ids(redis_client, QueueKeys.for_prefix(settings.queue_prefix))) == 3
    assert queue_depth(redis_client, QueueKeys.for_prefix(settings.queue_prefix)) == 3


def test_two_sweepers_at_once_dispatch_each_job_once(settings: Settings, redis_client: Any) -> None:
    async def body(manager: JobManager) -> int:
        ids = await _submit(manager, 50)
        async with manager.pool.connection() as conn:
            await conn.execute("UPDATE crawl_jobs SET dispatched_at = NULL WHERE id = ANY(%s)", (ids,))
        drop_queue(redis_client, QueueKeys.for_prefix(settings.queue_prefix))
        reports = await asyncio.gather(*(Sweeper(manager, batch_limit=10).sweep_once() for _ in range(2)))
        return sum(r.dispatched for r in reports)

    assert run_with_manager(settings, body) == 50
    assert len(queued_ids(redis_client, QueueKeys.for_prefix(settings.queue_prefix))) == 50


# -- the liveness check: a worker's advisory lock dies with its process --------------------------------------

# A worker in small: announces itself, claims the given jobs, says so, and holds them until it is killed.
HOLDER = """
import asyncio, sys, uuid
from crawljobs.lifecycle import Leases
from crawljobs.store.pool import open_pool

async def main():
    pool = await open_pool(sys.argv[1], max_size=2)
    leases = Leases(pool, lease_seconds=60)
    assert await leases.announce()
    jobs = await leases.claim([uuid.UUID(i) for i in sys.argv[2:]])
    print(leases.worker_id, len(jobs), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def start_holder(database_url: str, ids: list[uuid.UUID]) -> tuple[subprocess.Popen[str], str]:
    """A process holding `ids` (each claimed, its lease 60 s); its worker id."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, database_url, *map(str, ids)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    worker_id, claimed = holder.stdout.readline().split()
    assert int(claimed) == len(ids)
    return holder, worker_id


def registered(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        return [row[0] for row in conn.execute("SELECT worker_id FROM crawl_workers").fetchall()]


def check_workers(settings: Settings) -> Any:
    return run_with_manager(settings, lambda manager: Sweeper(manager).check_workers())


def test_the_jobs_of_a_killed_worker_come_back_at_once_not_after_their_lease(
    settings: Settings, database_url: str
) -> None:
    ids = run_with_manager(settings, lambda manager: _submit(manager, 3))
    holder, worker_id = start_holder(database_url, ids)
    try:
        assert registered(database_url) == [worker_id]
        assert check_workers(settings).pending == ()  # alive: its lock is held
        holder.kill()  # SIGKILL: nothing of the worker runs again, no goodbye
        holder.wait(10)
        reclaimed = check_workers(settings)
    finally:
        holder.kill()
    # Its leases still had most of a minute to run: the lock, not the lease, gave them back.
    assert sorted(reclaimed.pending) == sorted(ids)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT status, lost_leases, lease_owner, lease_expires_at FROM crawl_jobs WHERE id = ANY(%s)",
            (ids,),
        ).fetchall()
    assert rows == [("pending", 1, None, None)] * 3
    assert registered(database_url) == []
    # To the head of their batch's list, ahead of the batch's own messages.
    client = redis.Redis.from_url(settings.redis_url or "")
    try:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT batch_id FROM crawl_jobs WHERE id = %s", (ids[0],)).fetchone()
        assert row is not None
        head = batch_queue(client, QueueKeys.for_prefix(settings.queue_prefix), "t", row[0])[:3]
    finally:
        client.close()
    assert sorted(head) == sorted(ids)


def test_a_stopped_worker_keeps_its_jobs_until_its_lease_ends(settings: Settings, database_url: str) -> None:
    """SIGSTOP: the process is frozen but alive, its session open, its lock held. It is only slow: the
    liveness check must not take its jobs (its lease is the only thing that may)."""
    ids = run_with_manager(settings, lambda manager: _submit(manager, 2))
    holder, _ = start_holder(database_url, ids)
    try:
        holder.send_signal(signal.SIGSTOP)
        assert check_workers(settings).pending == ()
        holder.send_signal(signal.SIGCONT)
        assert check_workers(settings).pending == ()
        assert set(status_of(database_url, ids).values()) == {("processing", 1)}
    finally:
        holder.kill()
        holder.wait(10)


def test_a_worker_whose_session_was_cut_takes_its_lock_again(settings: Settings, database_url: str) -> None:
    """The liveness session ends while the worker lives (the connection was cut, a server restart): its jobs
    are taken back (the fence keeps its late writes out), and its next heartbeat holds a new lock."""

    async def body(manager: JobManager) -> tuple[bool, bool, int]:
        (job_id,) = await _submit(manager, 1)
        leases = manager.leases()
        assert await leases.announce()
        await leases.claim([job_id])
        async with manager.pool.connection() as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN crawl_workers w"
                " ON l.objid = w.lock_key::oid WHERE l.locktype = 'advisory' AND l.classid = %s::oid",
                (store.WORKER_LOCK_NAMESPACE,),
            )
        await asyncio.sleep(0.2)  # the backend exits
        reclaimed = await Sweeper(manager).check_workers()
        kept = await leases.keep_alive()
        alive_again = not (await Sweeper(manager).check_workers()).pending
        await leases.withdraw()
        return bool(reclaimed.pending), kept and alive_again, len(registered(database_url))

    taken_back, holds_again, left = run_with_manager(settings, body)
    assert taken_back
    assert holds_again
    assert left == 0  # withdrawn: unregistered and unlocked


def test_after_a_redis_restart_every_pending_job_is_dispatched_again_at_once(
    settings: Settings, database_url: str, redis_server_factory: Any
) -> None:
    """A restarted Redis holds none of the messages of before: the sweeper sees its new run id and dispatches
    every pending job again, without waiting CRAWLJOBS_DISPATCH_STALE_SECONDS for them to look lost."""
    server = redis_server_factory()
    local = Settings(**{**settings.model_dump(), "redis_url": server.url, "dispatch_stale_seconds": 3600})
    keys = QueueKeys.for_prefix(local.queue_prefix)

    async def body(manager: JobManager) -> tuple[int, int, int]:
        ids = await _submit(manager, 5)
        sweeper = Sweeper(manager)
        before = (await sweeper.sweep_once()).redispatched  # Redis holds their messages; its run id is noted
        server.stop()
        restarted = start_redis(server.directory, persistent=False)  # the same socket, nothing in it
        try:
            after = 0
            for _ in range(3):  # the first command on the old connection may fail: the next reconnects
                after += (await sweeper.sweep_once()).redispatched
            queued = await manager.redis.llen(keys.backlog) if manager.redis else 0
        finally:
            restarted.stop()
        assert len(ids) == 5
        return before, after, int(queued)

    before, after, queued = run_with_manager(local, body)
    assert before == 0
    assert after == 5 and queued == 5  # dispatched an hour before they would have looked lost

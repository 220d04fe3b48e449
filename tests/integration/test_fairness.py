"""Fair shares at the issue's scale: tenant A submits 20,000 URLs, then tenant B submits 20; B's batch is taken
within the first few hundred fetches after it arrives and finishes long before A's, with nothing lost or
doubled.

The workers are ``crawljobs.testing.QueueWorker``s: the real pop (the fair scheduler's script, as the Scrapy
worker's reader calls it), the real claim and the real finish with its attempt row, but no fetch — 20,000 Scrapy
fetches of the test site would take minutes on a shared machine; ``tests/acceptance/test_fair_shares.py`` runs
the same scenario smaller with real Scrapy workers. Order is measured by the attempts' ids (the order their rows
were written), never by time.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import psycopg

from crawljobs.config import Settings
from crawljobs.manager import JobManager
from crawljobs.queue import redis_client
from crawljobs.testing import QueueWorker
from tests.integration.conftest import run_with_manager

BIG, SMALL, WORKERS = 20_000, 20, 3


def attempt_counts(database_url: str, tenants: tuple[str, str]) -> dict[str, Any]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT j.tenant, a.id, a.job_id FROM crawl_attempts a JOIN crawl_jobs j ON j.id = a.job_id"
            " WHERE j.tenant = ANY(%s) ORDER BY a.id",
            (list(tenants),),
        ).fetchall()
        statuses = conn.execute(
            "SELECT tenant, status, count(*) FROM crawl_jobs WHERE tenant = ANY(%s) GROUP BY tenant, status",
            (list(tenants),),
        ).fetchall()
    return {"attempts": rows, "statuses": {(t, s): n for t, s, n in statuses}}


def test_a_small_batch_is_not_stuck_behind_another_tenants_large_one(
    settings: Settings, database_url: str, redis_url: str
) -> None:
    tag = secrets.token_hex(3)
    a, b = f"fair-a-{tag}", f"fair-b-{tag}"

    async def body(manager: JobManager) -> int:
        stop = asyncio.Event()
        clients = [redis_client(redis_url) for _ in range(WORKERS)]
        workers = [
            QueueWorker(manager.pool, client, manager.keys, worker=f"queue-worker-{n}")
            for n, client in enumerate(clients)
        ]
        running = [asyncio.create_task(worker.run(stop)) for worker in workers]
        try:
            await manager.submit_batch(tenant=a, urls=[f"https://example.com/a/{i}" for i in range(BIG)])
            while sum(w.done for w in workers) < 1000:  # noqa: ASYNC110 (A's batch is well under way)
                await asyncio.sleep(0.01)
            # The workers pause while B's batch is submitted, so that "after it arrived" is one exact point of
            # the attempts' order: the mark, taken once they have finished what they held.
            for worker in workers:
                worker.going.clear()
            while not all(w.held for w in workers):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            async with manager.pool.connection() as conn:
                row = await (await conn.execute("SELECT coalesce(max(id), 0) FROM crawl_attempts")).fetchone()
            before = int(row[0]) if row else 0
            await manager.submit_batch(tenant=b, urls=[f"https://example.com/b/{i}" for i in range(SMALL)])
            for worker in workers:
                worker.going.set()
            async with asyncio.timeout(300):
                while sum(w.done for w in workers) < BIG + SMALL:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(*running, return_exceptions=True)
            for client in clients:
                await client.aclose()
        return before

    before = run_with_manager(settings, body)
    seen = attempt_counts(database_url, (a, b))
    # Nothing lost, nothing doubled: every job completed, each with exactly one attempt.
    assert seen["statuses"] == {(a, "completed"): BIG, (b, "completed"): SMALL}
    job_ids = [job_id for _, _, job_id in seen["attempts"]]
    assert len(job_ids) == len(set(job_ids)) == BIG + SMALL
    # B's jobs were taken within the first few hundred fetches after B's batch arrived (FIFO: after the
    # rest of A's 20,000), and B finished long before A.
    after = [(tenant, job_id) for tenant, attempt_id, job_id in seen["attempts"] if attempt_id > before]
    b_positions = [n for n, (tenant, _) in enumerate(after) if tenant == b]
    assert len(b_positions) == SMALL
    assert max(b_positions) < 300, f"B's last job was fetch {max(b_positions)} after its arrival"
    assert len(after) - max(b_positions) > 10_000  # A still had most of its batch to go
    assert all(isinstance(job_id, uuid.UUID) for job_id in job_ids)

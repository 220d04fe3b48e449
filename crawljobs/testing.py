"""A worker without Scrapy, for tests and benchmarks that need jobs to end: every step goes through the real lifecycle
(``crawljobs.lifecycle.Leases`` and the store's named statements), so a job claimed, completed, failed or lost
here is written exactly as a Scrapy worker writes it — the fence, the attempts, the webhook outbox, the NOTIFYs
that wake waiters, and the transition trigger that refuses what DESIGN rule 6 forbids. No test writes a job's
status by hand.

``FakeWorker`` works on an open pool (a test's ``JobManager.pool``); ``complete`` and ``fail`` do the same from
synchronous code given a database URL (a pool of their own for the call).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis

from crawljobs.lifecycle import AttemptRecord, ClaimedJob, Leases, ResultRecord
from crawljobs.queue import QUEUED_SCRIPT, QueueKeys, Scheduler, decode_message
from crawljobs.store.pool import Pool, open_pool

JobIds = Sequence[uuid.UUID | str]


def _uuids(ids: JobIds) -> list[uuid.UUID]:
    return [job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(job_id) for job_id in ids]


class FakeWorker:
    """Claims jobs and ends them as a worker would, with fixed, readable results."""

    def __init__(self, pool: Pool, *, worker: str = "fake-worker", lease_seconds: int = 30) -> None:
        self.leases = Leases(pool, worker_id=worker, lease_seconds=lease_seconds)

    async def claim(self, ids: JobIds) -> list[ClaimedJob]:
        """Claim pending jobs (those not pending are not returned); jobs already held are returned too."""
        wanted = _uuids(ids)
        fresh = await self.leases.claim([i for i in wanted if i not in self.leases.held])
        held = {job.id: job for job in fresh} | self.leases.held
        return [held[i] for i in wanted if i in held]

    async def _at_attempt(self, ids: JobIds, attempt: int) -> list[ClaimedJob]:
        """Claim the jobs and fetch them again after transient failures until they are at `attempt`."""
        jobs = await self.claim(ids)
        for job in jobs:
            while job.attempt < attempt:
                if not await self.leases.next_attempt(job, retry=True):
                    raise RuntimeError(f"job {job.id} is no longer held by {self.leases.worker_id}")
        return jobs

    async def complete(
        self,
        ids: JobIds,
        *,
        html: str | Callable[[ClaimedJob], str | None] | None = "<p>ok</p>",
        http_status: int = 200,
        content_type: str = "text/html",
        final_url: str | None = None,
        success_method: str = "http:direct",
        processing_time_ms: int = 42,
        cost: float = 1.0,
        attempt: int = 1,
    ) -> list[uuid.UUID]:
        """Claim (if not held) and complete the jobs at `attempt` (earlier ones transient failures), with `html`
        (or the page `html(job)` makes of each); the ids whose result was written."""
        jobs = await self._at_attempt(ids, attempt)
        return await self._finish(
            jobs,
            lambda job: ResultRecord(
                id=job.id,
                attempt=job.attempt,
                status="completed",
                processing_time_ms=processing_time_ms,
                cost=cost,
                html=html(job) if callable(html) else html,
                http_status=http_status,
                final_url=final_url or job.url,
                content_type=content_type,
                success_method=success_method,
            ),
            method=success_method,
        )

    async def fail(
        self,
        ids: JobIds,
        *,
        error: str = "HTTP 500",
        http_status: int | None = None,
        html: str | None = None,
        processing_time_ms: int = 42,
        cost: float = 1.0,
        attempt: int = 1,
    ) -> list[uuid.UUID]:
        """Claim (if not held) and fail the jobs with `error` at `attempt`; the ids whose result was written."""
        jobs = await self._at_attempt(ids, attempt)
        return await self._finish(
            jobs,
            lambda job: ResultRecord(
                id=job.id,
                attempt=job.attempt,
                status="error",
                processing_time_ms=processing_time_ms,
                cost=cost,
                http_status=http_status,
                html=html,
                error_message=error,
            ),
            method="http:direct",
        )

    async def _finish(
        self, jobs: list[ClaimedJob], result: Callable[[ClaimedJob], ResultRecord], *, method: str
    ) -> list[uuid.UUID]:
        """Write each job's result with the one attempt that made it, as a worker's pipeline does."""
        results = [result(job) for job in jobs]
        attempts = [
            AttemptRecord(
                job_id=r.id,
                attempt=r.attempt,
                method=method,
                worker=self.leases.worker_id,
                started_at=datetime.now(UTC),
                duration_ms=5,
                http_status=r.http_status,
                outcome="ok" if r.status == "completed" else "permanent",
                error=r.error_message,
            )
            for r in results
        ]
        return await self.leases.finish(results, attempts)

    async def die(self, ids: JobIds) -> list[ClaimedJob]:
        """Claim the jobs and vanish: nothing renews their leases, which run out now (time passing is the one
        thing a test writes by hand); the sweeper's next reclaim finds them."""
        jobs = await self.claim(ids)
        async with self.leases.pool.connection() as conn:
            await conn.execute(
                "UPDATE crawl_jobs SET lease_expires_at = now() - interval '1 second' "
                "WHERE id = ANY(%s) AND lease_owner = %s",
                ([job.id for job in jobs], self.leases.worker_id),
            )
        self.leases.let_go([job.id for job in jobs])
        return jobs


class QueueWorker:
    """A lifecycle worker fed by the queue, for tests and benchmarks of scheduling at scale: it pops through the
    fair scheduler's script (``crawljobs.queue.Scheduler.pop``, the very call the Scrapy worker's reader makes),
    claims what it popped (those no longer pending are dropped, as a worker drops them) and completes each job at
    once, with its one attempt recorded. No fetch: thousands of jobs a second, where a Scrapy worker on the test
    site does a few hundred."""

    def __init__(
        self, pool: Pool, redis: aioredis.Redis, keys: QueueKeys, *, worker: str, want: int = 100
    ) -> None:
        self.fake = FakeWorker(pool, worker=worker)
        self.scheduler = Scheduler(redis, keys)
        self.want = want
        self.done = 0
        # Cleared, the worker pops nothing more (`held` tells when it has finished what it took).
        self.going = asyncio.Event()
        self.going.set()
        self.held = False

    async def run(self, stop: asyncio.Event, *, idle_seconds: float = 0.02) -> int:
        """Pop, claim and complete until `stop` is set; how many jobs this worker completed."""
        while not stop.is_set():
            if not self.going.is_set():
                self.held = True
                await self.going.wait()
                self.held = False
            groups = await self.scheduler.pop(self.want)
            ids = [job_id for g in groups for job_id in map(decode_message, g.messages) if job_id is not None]
            if not ids:
                await asyncio.sleep(idle_seconds)
                continue
            self.done += len(await self.fake.complete(ids))
        return self.done


async def _with_worker(
    database_url: str, action: str, ids: JobIds, kwargs: dict[str, Any]
) -> list[uuid.UUID]:
    pool = await open_pool(database_url, max_size=1)
    try:
        written: list[uuid.UUID] = await getattr(FakeWorker(pool), action)(ids, **kwargs)
        return written
    finally:
        await pool.close()


def complete(database_url: str, ids: JobIds, **kwargs: Any) -> list[uuid.UUID]:
    """`FakeWorker.complete` from synchronous code (a test's thread, a TestClient test)."""
    return asyncio.run(_with_worker(database_url, "complete", ids, kwargs))


def fail(database_url: str, ids: JobIds, **kwargs: Any) -> list[uuid.UUID]:
    """`FakeWorker.fail` from synchronous code."""
    return asyncio.run(_with_worker(database_url, "fail", ids, kwargs))


# -- what the queue holds (a synchronous Redis client) -------------------------------------------------------


def queued_ids(client: redis.Redis, keys: QueueKeys) -> list[uuid.UUID]:
    """Every job id queued in Redis, read in one script: the priority list's, each batch's (through the fair
    scheduler's rotations: a list no rotation names would never be popped), the bulk list's."""
    raw: list[bytes] = client.eval(QUEUED_SCRIPT, 3, keys.priority, keys.bulk, keys.tenants)
    return [job_id for job_id in map(decode_message, raw) if job_id is not None]


def batch_queue(client: redis.Redis, keys: QueueKeys, tenant: str, batch_id: str | None) -> list[uuid.UUID]:
    """The ids queued in one batch's list of the fair scheduler, head first."""
    raw: list[bytes] = client.lrange(keys.batch(tenant, batch_id), 0, -1)  # type: ignore[assignment]
    return [job_id for job_id in map(decode_message, raw) if job_id is not None]


def queue_depth(client: redis.Redis, keys: QueueKeys) -> int:
    """The queued work as an outside scaler reads it: the lengths of `QueueKeys.depth` added up."""
    return sum(int(client.llen(key)) for key in keys.depth)


def drop_queue(client: redis.Redis, keys: QueueKeys) -> None:
    """Every queue key of the prefix gone (a FLUSHALL in small, for one test's prefix)."""
    found = list(client.scan_iter(match=f"{keys.prefix}:queue:*", count=1000))
    if found:
        client.delete(*found)

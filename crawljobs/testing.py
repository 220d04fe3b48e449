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

from crawljobs.lifecycle import AttemptRecord, ClaimedJob, Leases, ResultRecord
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

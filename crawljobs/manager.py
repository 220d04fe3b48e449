"""The job manager: the one entrance for the routes, the CLI, the workers and the sweeper.

It submits (``crawljobs.submission``: checked, committed to PostgreSQL, the truth), dispatches
(``crawljobs.dispatch``: job ids pushed to Redis, a hint), reads, cancels and exports jobs and batches, finds
the tenant of an API key, and owns the webhook outbox (``crawljobs.outbox``). Rows become models
(``crawljobs.models``) here: no caller sees a row.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence

import redis.asyncio as aioredis

from crawljobs import store
from crawljobs.config import Settings
from crawljobs.dispatch import PRIORITY_SINGLE, Dispatcher
from crawljobs.exceptions import BatchNotFound, JobNotFound
from crawljobs.keys import hash_key
from crawljobs.lifecycle import Leases, Reclaimed, reclaim_dead_workers, reclaim_expired_leases
from crawljobs.logs import job_fields
from crawljobs.metrics import MetricsBuffer
from crawljobs.models import (
    Attempt,
    Batch,
    BatchCounts,
    Delivery,
    Job,
)
from crawljobs.outbox import WebhookOutbox
from crawljobs.queue import QueueKeys
from crawljobs.ratelimit import RateLimiter
from crawljobs.submission import Submitter
from crawljobs.urls import NetworkPolicy, Resolver, system_resolver

__all__ = ["PRIORITY_SINGLE", "JobManager"]

logger = logging.getLogger(__name__)

# Longest a readiness check waits for one dependency.
READY_TIMEOUT_SECONDS = 3.0


class JobManager:
    def __init__(
        self,
        *,
        pool: store.Pool,
        redis: aioredis.Redis | None,
        settings: Settings,
        resolver: Resolver = system_resolver,
        meter: MetricsBuffer | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.settings = settings
        self.policy = NetworkPolicy.from_settings(settings)
        self.keys = QueueKeys.for_prefix(settings.queue_prefix)
        self.resolver = resolver
        # What this process counts for /metrics (crawljobs.metrics); its owner flushes it.
        self.meter = meter if meter is not None else MetricsBuffer(redis, settings.queue_prefix)
        self.dispatcher = Dispatcher(pool=pool, redis=redis, keys=self.keys, fair=settings.fair_shares)
        self.submitter = Submitter(
            pool=pool, settings=settings, policy=self.policy, resolver=resolver, dispatcher=self.dispatcher
        )
        # Submitting is the submitter's (checks, idempotency, one transaction, dispatch): its two calls are the
        # manager's own, ``submit_job(tenant=, url=, options=, idempotency_key=)`` and ``submit_batch(tenant=,
        # urls=, options=, batch_id=, idempotency_key=)``.
        self.submit_job = self.submitter.submit_job
        self.submit_batch = self.submitter.submit_batch
        self.webhooks = WebhookOutbox(pool)
        self.rate_limiter = (
            RateLimiter(
                redis,
                settings.queue_prefix,
                rate=settings.rate_limit_per_second,
                burst=settings.rate_limit_burst,
            )
            if settings.rate_limit_per_second is not None
            else None
        )

    # -- tenants, readiness, counts --------------------------------------------------------------

    async def tenant_of_key(self, keys: Sequence[str]) -> str | None:
        """The tenant of the first of `keys` that is a valid (not revoked) API key, or None."""
        found = await self.key_owner(keys)
        return found[0] if found is not None else None

    async def key_owner(self, keys: Sequence[str]) -> tuple[str, str] | None:
        """(tenant, the key's hash in hex) of the first of `keys` that is a valid (not revoked) API key, or None."""
        async with self.pool.connection() as conn:
            for key in keys:
                key_hash = hash_key(key)
                tenant = await store.find_tenant_by_key(conn, key_hash=key_hash)
                if tenant is not None:
                    return tenant, key_hash.hex()
        return None

    async def spend_request(self, key_hash: str) -> None:
        """One request of this API key under CRAWLJOBS_RATE_LIMIT_PER_SECOND, or RateLimited."""
        if self.rate_limiter is not None:
            await self.rate_limiter.take(key_hash)

    async def readiness(self) -> dict[str, str]:
        """Whether PostgreSQL and Redis answer: ``ok`` or ``error: <exception class>`` for each."""
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                async with self.pool.connection() as conn:
                    await conn.execute("SELECT 1")
            checks["postgres"] = "ok"
        except Exception as exc:  # any failure means "not ready"; the reason is reported
            checks["postgres"] = f"error: {type(exc).__name__}"
        try:
            if self.redis is None:
                raise ConnectionError("not configured")
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                await self.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        return checks

    async def live_job_counts(self) -> dict[str, int]:
        """How many jobs are pending and processing, over every tenant (cheap whatever the table's size)."""
        async with self.pool.connection() as conn:
            return await store.count_live_jobs(conn)

    # -- reading ---------------------------------------------------------------------------------

    async def get_job(
        self, *, tenant: str, job_id: uuid.UUID, with_html: bool = False, with_attempts: bool = True
    ) -> Job:
        async with self.pool.connection() as conn:
            row = await store.get_job(conn, tenant=tenant, job_id=job_id, with_html=with_html)
            if row is None:
                raise JobNotFound(f"job {job_id} not found")
            attempts: tuple[Attempt, ...] = ()
            if with_attempts:
                attempts = tuple(Attempt.from_row(r) for r in await store.list_attempts(conn, job_id=job_id))
        return Job.from_row(row, attempts)

    async def jobs_by_id(
        self, ids: Sequence[uuid.UUID], *, with_attempts: Sequence[uuid.UUID] = ()
    ) -> dict[uuid.UUID, Job]:
        """Jobs by id without their HTML, whatever their tenant (the caller checks it: the waiters' coalesced
        re-reads), with their attempts for the ids in `with_attempts`."""
        async with self.pool.connection() as conn:
            rows = await store.get_jobs_meta(conn, ids=ids)
            attempt_rows = await store.list_attempts_of_jobs(conn, ids=with_attempts) if with_attempts else []
        attempts: dict[uuid.UUID, list[Attempt]] = {}
        for row in attempt_rows:
            attempts.setdefault(row["job_id"], []).append(Attempt.from_row(row))
        return {row["id"]: Job.from_row(row, tuple(attempts.get(row["id"], ()))) for row in rows}

    async def get_batch(self, *, tenant: str, batch_id: str) -> Batch:
        async with self.pool.connection() as conn:
            row = await store.find_batch(conn, tenant=tenant, batch_id=batch_id)
            if row is None:
                raise BatchNotFound(f"batch {batch_id!r} not found")
            counts = BatchCounts.from_rows(await store.batch_counts(conn, tenant=tenant, batch_id=batch_id))
        return Batch.from_row(row, counts)

    async def batch_jobs(
        self, *, tenant: str, batch_id: str, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Job]:
        async with self.pool.connection() as conn:
            rows = await store.batch_jobs(
                conn, tenant=tenant, batch_id=batch_id, status=status, limit=limit, offset=offset
            )
        return [Job.from_row(row) for row in rows]

    async def list_batches(self, *, tenant: str, limit: int, offset: int) -> tuple[list[Batch], int]:
        async with self.pool.connection() as conn:
            rows = await store.list_batches(conn, tenant=tenant, limit=limit, offset=offset)
            total = await store.count_batches(conn, tenant=tenant)
        return [Batch.from_row(row) for row in rows], total

    async def retry_failed(self, *, tenant: str, batch_id: str) -> int:
        """Put a batch's failed jobs back to pending (attempt history kept) and dispatch them."""
        async with self.pool.connection() as conn:
            if await store.find_batch(conn, tenant=tenant, batch_id=batch_id) is None:
                raise BatchNotFound(f"batch {batch_id!r} not found")
            ids = await store.retry_failed_jobs(conn, tenant=tenant, batch_id=batch_id)
        await self.dispatcher.dispatch_batch(tenant, batch_id, ids)
        return len(ids)

    # -- cancel and export -----------------------------------------------------------------------

    async def cancel_job(self, *, tenant: str, job_id: uuid.UUID) -> Job:
        """Cancel a pending or processing job and return it; a final job is returned unchanged (idempotent).

        A worker fetching the job finds its fence gone (the status is no longer 'processing'): its result is
        never written.
        """
        async with self.pool.connection() as conn:
            cancelled = await store.cancel_job(conn, tenant=tenant, job_id=job_id)
        job = await self.get_job(tenant=tenant, job_id=job_id)
        if cancelled:
            logger.info(
                "job %s cancelled", job_id, extra={"action": "cancel", **job_fields(job_id, job.batch_id)}
            )
            self.meter.count("jobs_finished", "cancelled")
            self.meter.flush_soon()
        return job

    async def cancel_batch(self, *, tenant: str, batch_id: str) -> int:
        """Cancel every pending or processing job of a batch; how many were cancelled."""
        async with self.pool.connection() as conn:
            if await store.find_batch(conn, tenant=tenant, batch_id=batch_id) is None:
                raise BatchNotFound(f"batch {batch_id!r} not found")
            ids = await store.cancel_batch_jobs(conn, tenant=tenant, batch_id=batch_id)
        self.meter.count("jobs_finished", "cancelled", n=len(ids))
        self.meter.flush_soon()
        logger.info(
            "batch %s: %d jobs cancelled",
            batch_id,
            len(ids),
            extra={"action": "cancel_batch", "batch_id": batch_id},
        )
        return len(ids)

    async def export_batch(
        self, *, tenant: str, batch_id: str, with_html: bool, page_size: int = 100
    ) -> AsyncIterator[list[tuple[int, Job]]]:
        """A batch's jobs as pages of (index in the submitted list, job), in submission order.

        Pages are read by keyset on the batch index, each on a connection taken only for that query: a
        50,000-job batch never sits in memory, and a slow reader holds no connection. Check that the batch
        exists first (``get_batch``): an unknown batch yields nothing.
        """
        after = -1
        while True:
            async with self.pool.connection() as conn:
                rows = await store.export_batch_jobs(
                    conn,
                    tenant=tenant,
                    batch_id=batch_id,
                    with_html=with_html,
                    limit=page_size,
                    after_index=after,
                )
            if not rows:
                return
            yield [(row["batch_index"], Job.from_row(row)) for row in rows]
            if len(rows) < page_size:
                return
            after = rows[-1]["batch_index"]

    async def export_batch_page(
        self, *, tenant: str, batch_id: str, limit: int, offset: int
    ) -> list[tuple[int, Job]]:
        """One page of a batch's jobs with their HTML, as (index in the submitted list, job)."""
        async with self.pool.connection() as conn:
            rows = await store.export_batch_jobs(
                conn, tenant=tenant, batch_id=batch_id, with_html=True, limit=limit, offset=offset
            )
        return [(row["batch_index"], Job.from_row(row)) for row in rows]

    # -- workers and the sweeper -----------------------------------------------------------------

    def leases(self, *, worker_id: str | None = None) -> Leases:
        """The lifecycle of the jobs one worker holds (claim, heartbeat, next attempt, finish, release)."""
        return Leases(
            self.pool,
            worker_id=worker_id,
            lease_seconds=self.settings.lease_seconds,
            tenant_max_in_flight=self.settings.tenant_max_in_flight,
        )

    async def reclaim_expired_leases(self, *, limit: int) -> Reclaimed:
        """Expired leases back to pending (and to the head of the queue), or to error past
        ``CRAWLJOBS_MAX_LOST_LEASES`` losses."""
        reclaimed = await reclaim_expired_leases(
            self.pool, limit=limit, max_lost_leases=self.settings.max_lost_leases
        )
        await self._dispatch_again(reclaimed)
        return reclaimed

    async def reclaim_dead_workers(self, *, limit: int) -> Reclaimed:
        """The jobs of workers whose process or connection died (their liveness lock is gone) back to pending
        (and to the head of the queue) at once, or to error past ``CRAWLJOBS_MAX_LOST_LEASES`` losses."""
        reclaimed = await reclaim_dead_workers(
            self.pool,
            limit=limit,
            max_lost_leases=self.settings.max_lost_leases,
            forget_seconds=self.settings.lease_seconds,
        )
        await self._dispatch_again(reclaimed)
        return reclaimed

    async def _dispatch_again(self, reclaimed: Reclaimed) -> None:
        """Jobs taken back from a lost worker to the head of their lists (a failed push marks them undispatched
        and the sweeper dispatches them later)."""
        await self.dispatcher.dispatch_jobs(reclaimed.queued, front=True)

    async def purge_expired_html(self, *, limit: int) -> int:
        """Retention: drop the HTML of up to `limit` jobs finished more than ``CRAWLJOBS_RESULT_TTL`` ago."""
        async with self.pool.connection() as conn:
            return await store.purge_expired_html(conn, ttl_seconds=self.settings.result_ttl, limit=limit)

    # -- webhooks --------------------------------------------------------------------------------

    async def webhook_secret(self, *, tenant: str) -> str:
        """The tenant's webhook signing secret, made on first use."""
        return await self.webhooks.secret(tenant=tenant)

    async def webhook_deliveries(
        self, *, tenant: str, job_id: uuid.UUID | None, batch_id: str | None, limit: int, offset: int
    ) -> list[Delivery]:
        """A page of the tenant's webhook delivery log, newest first."""
        return await self.webhooks.log(
            tenant=tenant, job_id=job_id, batch_id=batch_id, limit=limit, offset=offset
        )

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
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from crawljobs import store
from crawljobs.config import Settings
from crawljobs.dispatch import PRIORITY_SINGLE, Dispatcher
from crawljobs.exceptions import (
    BatchNotFound,
    DeliveryNotFound,
    InvalidCursor,
    InvalidRequest,
    InvalidStatus,
    JobNotFound,
)
from crawljobs.keys import hash_key
from crawljobs.lifecycle import Leases, Reclaimed, reclaim_dead_workers, reclaim_expired_leases
from crawljobs.logs import job_fields
from crawljobs.metrics import MetricKeys, MetricsBuffer
from crawljobs.models import (
    STATUSES,
    Attempt,
    Batch,
    BatchCounts,
    Delivery,
    Job,
    JobsPage,
    Overview,
    StatsBucket,
    WorkerInfo,
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
# Most jobs in one page of `batch_jobs_page`.
MAX_PAGE = 1000
# A search of a batch's jobs reads at most this many of them per page (by batch index).
SEARCH_WINDOW = 5000
# A batch's jobs cursor: a batch index, which a 50,000-job batch keeps below this.
_MAX_CURSOR = 2**31 - 1


def _parse_cursor(after: str | None) -> int:
    """The batch index a `batch_jobs_page` cursor names (-1: the first page); InvalidCursor for anything else."""
    if after is None or after == "":
        return -1
    if not (after.isascii() and after.isdigit() and len(after) <= 10 and int(after) <= _MAX_CURSOR):
        raise InvalidCursor(
            "not a cursor of this listing: pass back the previous page's next_after", after=after
        )
    return int(after)


class JobManager:
    # Jobs of a batch a search reads at most per page (`batch_jobs_page`).
    search_window = SEARCH_WINDOW

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

    async def tenant_of_key_hash(self, key_hash: bytes) -> str | None:
        """The tenant of the API key with this hash if it is not revoked (the dashboard's session holds only the
        hash of the key it was opened with, and asks this on every request)."""
        async with self.pool.connection() as conn:
            return await store.find_tenant_by_key(conn, key_hash=key_hash)

    async def dashboard_secret(self, *, new_secret: str) -> str:
        """The dashboard's signing key kept in the database; `new_secret` becomes it on first use."""
        async with self.pool.connection() as conn:
            return await store.dashboard_secret(conn, new_secret=new_secret)

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
            sums = await store.batch_counts(conn, tenant=tenant, batch_id=batch_id)
        counts = BatchCounts(**{s: int(sums[s] or 0) for s in STATUSES}, last_updated=sums["last_updated"])
        return Batch.from_row({**row, "cost": sums["cost"]}, counts)

    async def batch_jobs(
        self, *, tenant: str, batch_id: str, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Job]:
        async with self.pool.connection() as conn:
            rows = await store.batch_jobs(
                conn, tenant=tenant, batch_id=batch_id, status=status, limit=limit, offset=offset
            )
        return [Job.from_row(row) for row in rows]

    async def list_batches(
        self, *, tenant: str, limit: int, offset: int, search: str | None = None
    ) -> tuple[list[Batch], int]:
        """A page of the tenant's batches, newest first, with their counts, and how many there are; with
        `search`, only the batches whose id starts with it (and how many of those there are)."""
        search = search or None
        async with self.pool.connection() as conn:
            rows = await store.list_batches(conn, tenant=tenant, limit=limit, offset=offset, search=search)
            total = await store.count_batches(conn, tenant=tenant, search=search)
        return [Batch.from_row(row) for row in rows], total

    async def batch_jobs_page(
        self,
        *,
        tenant: str,
        batch_id: str,
        status: str | None = None,
        search: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> JobsPage:
        """A page of a batch's jobs in submission order (without HTML or attempts), by keyset: `after` is the
        previous page's `next_after` (None: the first page). `status` keeps one status; `search` keeps the
        jobs whose URL contains it, case-insensitively (a domain, a path, any part of it). Each page costs the
        same however deep it is.

        A search reads at most `search_window` jobs of the batch per page, so that a string no URL contains
        costs a bounded read even on a 50,000-job batch: such a page may hold fewer jobs than `limit` (none,
        even) and still have a `next_after`, where the next window starts. Without a search, a page is short
        only at the end of the batch.

        Raises ``BatchNotFound``, ``InvalidStatus``, ``InvalidCursor``, ``InvalidRequest`` (a limit outside
        1..``MAX_PAGE``)."""
        if status is not None and status not in STATUSES:
            raise InvalidStatus(f"unknown status {status!r}: one of {', '.join(STATUSES)}", status=status)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}", limit=limit)
        after_index = _parse_cursor(after)
        needle = search.strip().lower() if search else ""
        until = min(after_index + self.search_window, _MAX_CURSOR) if needle else _MAX_CURSOR
        async with self.pool.connection() as conn:
            if await store.find_batch(conn, tenant=tenant, batch_id=batch_id) is None:
                raise BatchNotFound(f"batch {batch_id!r} not found")
            rows = await store.batch_jobs_page(
                conn,
                tenant=tenant,
                batch_id=batch_id,
                status=status,
                search=needle or None,
                after=after_index,
                until=until,
                limit=limit + 1,  # one more: is there a next page?
            )
            next_after: str | None = None
            if len(rows) > limit:
                next_after = str(rows[limit - 1]["batch_index"])
            elif until < _MAX_CURSOR and await store.batch_has_jobs_after(
                conn, tenant=tenant, batch_id=batch_id, after=until
            ):
                next_after = str(until)  # the window ended before the batch did
        return JobsPage(jobs=[Job.from_row(row) for row in rows[:limit]], next_after=next_after)

    async def overview(self, *, tenant: str) -> Overview:
        """The dashboard's first page for a tenant: its jobs by status, completions and errors per minute (last
        hour) and per hour (last day), today's cost by method, the queue depth and the workers. Every part is
        read from the counts the database keeps (migration 0007) or from small tables: its cost does not grow
        with the number of jobs. Redis down leaves `queue_depth` empty and the workers' heartbeats unknown."""

        async def read() -> dict[str, list[store.Row]]:
            async with self.pool.connection() as conn:
                return await store.overview_rows(conn, tenant=tenant)

        # PostgreSQL and Redis at once; the workers' heartbeats are read for every worker Redis knows.
        rows, (depth, all_beats) = await asyncio.gather(read(), self._queue_and_heartbeats())
        counts = rows["tenant_counts"][0]
        per_minute, per_hour = rows["stats_per_minute"], rows["stats_per_hour"]
        cost_rows, worker_rows = rows["cost_today"], rows["list_workers"]
        beats = {
            row["worker_id"]: all_beats[row["worker_id"]]
            for row in worker_rows
            if row["worker_id"] in all_beats
        }
        workers = [
            WorkerInfo(
                worker_id=row["worker_id"],
                host=row["host"],
                pid=row["pid"],
                started_at=row["started_at"],
                last_seen=row["seen_at"],
                alive=bool(row["alive"]),
                jobs_held=int(row["jobs_held"]),
                heartbeat=beats.get(row["worker_id"], (None, None))[0],
                in_flight=beats.get(row["worker_id"], (None, None))[1],
            )
            for row in worker_rows
        ]
        return Overview(
            counts={s: int(counts[s]) for s in STATUSES},
            per_minute=[StatsBucket.from_row(row) for row in per_minute],
            per_hour=[StatsBucket.from_row(row) for row in per_hour],
            cost_today={row["method"]: float(row["cost"]) for row in cost_rows},
            queue_depth=depth,
            workers=workers,
            cost_total=float(counts["cost"]),
        )

    async def _queue_and_heartbeats(
        self,
    ) -> tuple[dict[str, int], dict[str, tuple[datetime | None, int | None]]]:
        """The Redis lists' lengths and the last heartbeat (time, jobs in flight) of every worker that published
        one, in two round trips; nothing when Redis cannot be read."""
        if self.redis is None:
            return {}, {}
        metric_keys = MetricKeys.for_prefix(self.settings.queue_prefix)
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.llen(self.keys.priority)
                    pipe.llen(self.keys.bulk)
                    pipe.llen(self.keys.backlog)
                    pipe.smembers(metric_keys.workers)
                    priority, bulk, backlog, members = await pipe.execute()
                workers = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
                replies: list[Any] = []
                if workers:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for worker in workers:
                            pipe.hmget(metric_keys.worker(worker), ["heartbeat", "in_flight"])
                        replies = await pipe.execute()
        except Exception as exc:  # Redis is a hint: the overview still answers without it
            logger.warning("overview: cannot read Redis: %s", exc)
            return {}, {}
        beats: dict[str, tuple[datetime | None, int | None]] = {}
        for worker, (beat, in_flight) in zip(workers, replies, strict=True):
            if beat is None:
                continue
            try:
                when: datetime | None = datetime.fromtimestamp(float(beat), UTC)
                held: int | None = int(float(in_flight)) if in_flight is not None else None
            except (ValueError, OverflowError, OSError):
                when, held = None, None
            beats[worker] = (when, held)
        # Batch jobs wait in the bulk list (fair shares off) or the fair scheduler's batch lists, counted by its
        # backlog list: both are "bulk", as on /metrics.
        return {"priority": int(priority), "bulk": int(bulk) + int(backlog)}, beats

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

    async def redeliver(self, *, tenant: str, delivery_id: uuid.UUID) -> Delivery:
        """Send one of the tenant's webhook deliveries again, now, with a fresh series of attempts (delivered,
        given up or pending alike: the receiver may have lost it). DeliveryNotFound if it is not the tenant's."""
        delivery = await self.webhooks.redeliver(tenant=tenant, delivery_id=delivery_id)
        if delivery is None:
            raise DeliveryNotFound(f"webhook delivery {delivery_id} not found")
        logger.info(
            "webhook delivery %s redelivered",
            delivery_id,
            extra={"action": "redeliver", "delivery_id": str(delivery_id)},
        )
        return delivery

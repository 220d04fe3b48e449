"""The job manager: what the routes, the CLI and the workers call to submit, read and manage jobs.

It checks input, writes through ``crawljobs.store`` (PostgreSQL is the truth), then dispatches committed job ids
to Redis (a hint). A push that fails leaves the jobs pending and undispatched for the sweeper.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from crawljobs import store
from crawljobs.config import Settings
from crawljobs.exceptions import (
    BatchAlreadyExists,
    BatchNotFound,
    BatchTooLarge,
    IdempotencyConflict,
    JobNotFound,
    NoValidUrls,
    UrlRejected,
)
from crawljobs.ids import new_job_id, new_job_ids
from crawljobs.logs import job_fields
from crawljobs.metrics import MetricsBuffer
from crawljobs.models import Attempt, Batch, BatchCounts, BatchSubmission, Job, JobSubmission, Rejection
from crawljobs.queue import QueueKeys, chunks
from crawljobs.urls import NetworkPolicy, Resolver, UrlCheck, check_urls, system_resolver

logger = logging.getLogger(__name__)

PRIORITY_SINGLE = 1
PRIORITY_BATCH = 0


def new_batch_id() -> str:
    """A generated batch id in the legacy style (``batch-`` and 16 hex digits)."""
    return f"batch-{secrets.token_hex(8)}"


def new_webhook_secret() -> str:
    """A tenant's webhook signing secret (256 random bits)."""
    return f"whsec_{secrets.token_hex(32)}"


def request_hash(payload: dict[str, Any]) -> str:
    """A stable digest of a submission, to tell an idempotent replay from a different request."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class JobManager:
    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any],
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

    # -- dispatch --------------------------------------------------------------------------------

    async def dispatch(self, ids: Sequence[uuid.UUID | str], *, priority: bool) -> bool:
        """Push job ids to Redis; on failure mark them undispatched. True when the push succeeded."""
        if not ids:
            return True
        key = self.keys.priority if priority else self.keys.bulk
        try:
            if self.redis is None:
                raise ConnectionError("no Redis configured")
            async with self.redis.pipeline(transaction=False) as pipe:
                for chunk in chunks(ids):
                    pipe.rpush(key, *chunk)
                await pipe.execute()
        except (aioredis.RedisError, OSError) as exc:
            logger.warning(
                "could not dispatch %d jobs to Redis, the sweeper will: %s",
                len(ids),
                exc,
                extra={"action": "dispatch_failed"},
            )
            async with self.pool.connection() as conn:
                await store.mark_undispatched(conn, ids=ids)
            return False
        return True

    # -- submission ------------------------------------------------------------------------------

    async def check_urls(self, urls: Sequence[object]) -> UrlCheck:
        """Normalise and check submitted URLs under this deployment's network rules and limits."""
        return await check_urls(
            urls,
            self.policy,
            max_length=self.settings.max_url_length,
            resolver=self.resolver,
            dns_timeout=self.settings.dns_timeout_seconds,
        )

    async def check_callback_url(self, callback_url: object | None, *, field: str) -> str | None:
        """The normalised callback URL (same network rules as crawl URLs), or UrlRejected naming `field`."""
        if callback_url is None:
            return None
        check = await self.check_urls([callback_url])
        if check.rejected:
            raise UrlRejected(f"{field}: {check.rejected[0][2]}", field=field)
        return check.accepted[0][1]

    def _max_retries(self, max_retries: int | None) -> int:
        return self.settings.max_retries if max_retries is None else max_retries

    async def submit_job(
        self,
        *,
        tenant: str,
        url: object,
        render: bool = False,
        premium: bool = False,
        ultra_premium: bool = False,
        obey_robots: bool = False,
        max_retries: int | None = None,
        idempotency_key: str | None = None,
        callback_url: object | None = None,
        callback_field: str = "callback_url",
    ) -> JobSubmission:
        """Check one URL, commit its job, dispatch it on the priority list.

        The same Idempotency-Key with the same request answers the original job; with another request, 409.
        """
        check = await self.check_urls([url])
        if check.rejected:
            raise UrlRejected(check.rejected[0][2], field="url")
        callback = await self.check_callback_url(callback_url, field=callback_field)
        wanted: dict[str, object] = {
            "url": check.accepted[0][1],
            "render": render,
            "premium": premium,
            "ultra_premium": ultra_premium,
            "obey_robots": obey_robots,
            "max_retries": self._max_retries(max_retries),
            "callback_url": callback,
        }
        if idempotency_key is not None:
            replay = await self._replay_job(tenant=tenant, idempotency_key=idempotency_key, wanted=wanted)
            if replay is not None:
                return replay
        try:
            async with self.pool.connection() as conn:
                row = await store.insert_job(
                    conn,
                    job_id=new_job_id(),
                    tenant=tenant,
                    url=check.accepted[0][1],
                    render=render,
                    premium=premium,
                    ultra_premium=ultra_premium,
                    obey_robots=obey_robots,
                    max_retries=self._max_retries(max_retries),
                    priority=PRIORITY_SINGLE,
                    idempotency_key=idempotency_key,
                    callback_url=callback,
                )
        except IdempotencyConflict:
            # Two requests with one key raced: the winner's job is the answer.
            assert idempotency_key is not None
            replay = await self._replay_job(tenant=tenant, idempotency_key=idempotency_key, wanted=wanted)
            if replay is None:
                raise
            return replay
        job = Job.from_row(row)
        dispatched = await self.dispatch([job.id], priority=True)
        if not dispatched:
            job = dataclasses.replace(job, dispatched_at=None)
        logger.info("job %s accepted", job.id, extra={"action": "submit_job", **job_fields(job.id)})
        return JobSubmission(job=job, dispatched=dispatched)

    async def _replay_job(
        self, *, tenant: str, idempotency_key: str, wanted: dict[str, object]
    ) -> JobSubmission | None:
        async with self.pool.connection() as conn:
            row = await store.find_job_by_idempotency_key(
                conn, tenant=tenant, idempotency_key=idempotency_key
            )
        if row is None:
            return None
        if any(row[name] != value for name, value in wanted.items()):
            raise IdempotencyConflict(
                "this Idempotency-Key was already used for a different job", job_id=str(row["id"])
            )
        return JobSubmission(
            job=Job.from_row(row), dispatched=row["dispatched_at"] is not None, replayed=True
        )

    async def submit_batch(
        self,
        *,
        tenant: str,
        urls: Sequence[object],
        render: bool = False,
        premium: bool = False,
        ultra_premium: bool = False,
        obey_robots: bool = False,
        max_retries: int | None = None,
        batch_id: str | None = None,
        idempotency_key: str | None = None,
        callback_url: object | None = None,
        callback_field: str = "callback_url",
    ) -> BatchSubmission:
        """Check a batch's URLs, commit the good ones in one transaction (COPY), then dispatch them.

        Bad URLs are reported by index; a batch with no good URL raises NoValidUrls and writes nothing.
        """
        retries = self._max_retries(max_retries)
        hashed: dict[str, Any] = {
            "urls": list(urls),
            "render": render,
            "premium": premium,
            "ultra_premium": ultra_premium,
            "obey_robots": obey_robots,
            "max_retries": retries,
            "batch_id": batch_id,
        }
        if callback_url is not None:  # only when given: the hashes of earlier batches stay as they were
            hashed["callback_url"] = callback_url
        fingerprint = request_hash(hashed)
        if idempotency_key is not None:
            replay = await self._replay_batch(
                tenant=tenant, idempotency_key=idempotency_key, fingerprint=fingerprint
            )
            if replay is not None:
                return replay
        if len(urls) > self.settings.max_batch_size:
            raise BatchTooLarge(
                f"a batch may hold at most {self.settings.max_batch_size} URLs; this one has {len(urls)}",
                limit=self.settings.max_batch_size,
            )
        if batch_id is not None:
            async with self.pool.connection() as conn:
                if await store.find_batch(conn, tenant=tenant, batch_id=batch_id) is not None:
                    raise BatchAlreadyExists(f"batch {batch_id!r} already exists", batch_id=batch_id)
        callback = await self.check_callback_url(callback_url, field=callback_field)
        check = await self.check_urls(urls)
        failures = tuple(Rejection(index, raw, reason) for index, raw, reason in check.rejected)
        if not check.accepted:
            raise NoValidUrls(
                "none of the batch's URLs was accepted",
                failures=[{"index": f.index, "url": f.url, "reason": f.reason} for f in failures],
            )
        batch_id = batch_id or new_batch_id()
        ids = new_job_ids(len(check.accepted))
        id_texts = [str(job_id) for job_id in ids]
        job_ids: list[uuid.UUID | None] = [None] * len(urls)
        for job_id, (index, _url) in zip(ids, check.accepted, strict=True):
            job_ids[index] = job_id
        submission = BatchSubmission(
            batch_id=batch_id, total=len(urls), job_ids=tuple(job_ids), failures=failures, dispatched=True
        )
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await store.insert_batch(
                    conn,
                    tenant=tenant,
                    batch_id=batch_id,
                    total=len(check.accepted),
                    render=render,
                    premium=premium,
                    ultra_premium=ultra_premium,
                    obey_robots=obey_robots,
                    max_retries=retries,
                    idempotency_key=idempotency_key,
                    request_hash=fingerprint,
                    response=_stored_response(submission),
                    callback_url=callback,
                )
                await store.copy_jobs(
                    conn,
                    tenant=tenant,
                    batch_id=batch_id,
                    jobs=[
                        (text, index, url)
                        for text, (index, url) in zip(id_texts, check.accepted, strict=True)
                    ],
                    render=render,
                    premium=premium,
                    ultra_premium=ultra_premium,
                    obey_robots=obey_robots,
                    max_retries=retries,
                    dispatched_at=datetime.now(UTC),
                )
        except BatchAlreadyExists:
            if idempotency_key is not None:
                replay = await self._replay_batch(
                    tenant=tenant, idempotency_key=idempotency_key, fingerprint=fingerprint
                )
                if replay is not None:
                    return replay
            raise
        if not await self.dispatch(id_texts, priority=False):
            submission = BatchSubmission(
                batch_id=batch_id,
                total=len(urls),
                job_ids=tuple(job_ids),
                failures=failures,
                dispatched=False,
            )
        logger.info(
            "batch %s accepted: %d jobs, %d refused",
            batch_id,
            len(ids),
            len(failures),
            extra={"action": "submit_batch", "batch_id": batch_id},
        )
        return submission

    async def _replay_batch(
        self, *, tenant: str, idempotency_key: str, fingerprint: str
    ) -> BatchSubmission | None:
        async with self.pool.connection() as conn:
            row = await store.find_batch_by_idempotency_key(
                conn, tenant=tenant, idempotency_key=idempotency_key
            )
            if row is None:
                return None
            if row["request_hash"] != fingerprint:
                raise IdempotencyConflict(
                    "this Idempotency-Key was already used for a different batch", batch_id=row["batch_id"]
                )
            id_rows = await store.batch_job_ids(conn, tenant=tenant, batch_id=row["batch_id"])
        stored = row["response"]
        job_ids: list[uuid.UUID | None] = [None] * int(stored["total"])
        for id_row in id_rows:
            job_ids[id_row["batch_index"]] = id_row["id"]
        failures = tuple(Rejection(f["index"], f["url"], f["reason"]) for f in stored["failures"])
        return BatchSubmission(
            batch_id=row["batch_id"],
            total=int(stored["total"]),
            job_ids=tuple(job_ids),
            failures=failures,
            dispatched=True,
            replayed=True,
        )

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
        await self.dispatch(ids, priority=False)
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

    # -- webhooks --------------------------------------------------------------------------------

    async def webhook_secret(self, *, tenant: str) -> str:
        """The tenant's webhook signing secret, made on first use."""
        async with self.pool.connection() as conn:
            return await store.tenant_secret(conn, tenant=tenant, new_secret=new_webhook_secret())

    async def webhook_deliveries(
        self, *, tenant: str, job_id: uuid.UUID | None, batch_id: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        """A page of the tenant's webhook delivery log, newest first."""
        async with self.pool.connection() as conn:
            return await store.list_deliveries(
                conn, tenant=tenant, job_id=job_id, batch_id=batch_id, limit=limit, offset=offset
            )


def _stored_response(submission: BatchSubmission) -> dict[str, Any]:
    """What is kept to answer an idempotent replay (the job ids are read back from the rows)."""
    return {
        "batchId": submission.batch_id,
        "total": submission.total,
        "failures": [{"index": f.index, "url": f.url, "reason": f.reason} for f in submission.failures],
    }

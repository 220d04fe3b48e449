"""Every change of a job's status (DESIGN rule 6, held by the trigger of migration 0005): claim, heartbeat,
next attempt, finish, release, reclaim, cancel and the explicit retry. ``crawljobs.lifecycle`` is their caller.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection

from crawljobs.queries import query
from crawljobs.store.events import job_events, notify, record_batch_events
from crawljobs.store.presence import WORKER_LOCK_NAMESPACE
from crawljobs.store.rows import Row, fetch_all, fetch_one

if TYPE_CHECKING:
    from crawljobs.lifecycle import AttemptRecord, ResultRecord


async def retry_failed_jobs(conn: AsyncConnection[Any], *, tenant: str, batch_id: str) -> list[uuid.UUID]:
    """A batch's failed jobs back to pending; its event streams are told (its counts changed)."""
    async with conn.transaction():
        rows = await fetch_all(conn, "retry_failed_jobs", {"tenant": tenant, "batch_id": batch_id})
        if rows:
            async with conn.cursor() as cur:
                await notify(cur, [], [batch_id])
    return [row["id"] for row in rows]


async def claim_jobs(
    conn: AsyncConnection[Any], *, ids: Sequence[uuid.UUID | str], worker: str, lease_seconds: int
) -> list[Row]:
    params = {"ids": [str(i) for i in ids], "worker": worker, "lease_seconds": lease_seconds}
    return await fetch_all(conn, "claim_jobs", params)


# The advisory lock namespace of the per-tenant claim lock (CRAWLJOBS_TENANT_MAX_IN_FLIGHT): 'crjt'.
TENANT_CLAIM_NAMESPACE = 0x63726A74


async def claim_jobs_within(
    conn: AsyncConnection[Any], *, ids: Sequence[uuid.UUID | str], worker: str, lease_seconds: int, cap: int
) -> tuple[list[Row], list[Row]]:
    """Claim like `claim_jobs`, keeping each tenant at most at `cap` jobs in 'processing': (the claimed rows,
    the rows left pending because their tenant was full). One transaction, under each tenant's claim lock,
    so two workers claiming for one tenant at once cannot both take its last place."""
    params = {"ids": [str(i) for i in ids], "worker": worker, "lease_seconds": lease_seconds, "cap": cap}
    async with conn.transaction():
        await fetch_one(
            conn, "lock_claim_tenants", {"ids": params["ids"], "namespace": TENANT_CLAIM_NAMESPACE}
        )
        claimed = await fetch_all(conn, "claim_jobs_within", params)
        waiting = await fetch_all(conn, "waiting_jobs", {"ids": params["ids"]})
    return claimed, waiting


async def claim_pending_jobs(
    conn: AsyncConnection[Any],
    *,
    worker: str,
    lease_seconds: int,
    limit: int,
    tenant: str | None = None,
    batch_id: str | None = None,
) -> list[Row]:
    params = {
        "worker": worker,
        "lease_seconds": lease_seconds,
        "limit": limit,
        "tenant": tenant,
        "batch_id": batch_id,
    }
    return await fetch_all(conn, "claim_pending_jobs", params)


async def renew_leases(
    conn: AsyncConnection[Any], *, worker: str, ids: Sequence[uuid.UUID | str], lease_seconds: int
) -> list[Row]:
    params = {"worker": worker, "ids": [str(i) for i in ids], "lease_seconds": lease_seconds}
    return await fetch_all(conn, "renew_leases", params)


async def next_attempt(
    conn: AsyncConnection[Any],
    *,
    job_id: uuid.UUID,
    attempt: int,
    retry: bool,
    worker: str,
    lease_seconds: int,
) -> tuple[int, int] | None:
    """The new (attempt, retries), or None when this worker no longer holds the job (fenced)."""
    params = {
        "id": job_id,
        "attempt": attempt,
        "retry": retry,
        "worker": worker,
        "lease_seconds": lease_seconds,
    }
    row = await fetch_one(conn, "next_attempt", params)
    return (int(row["attempt"]), int(row["retries"])) if row else None


# The result fields `finish_jobs` writes, in the order of its unnest(); each a field of `ResultRecord`.
FINISH_COLUMNS = (
    "id",
    "attempt",
    "status",
    "html",
    "html_length",
    "processing_time_ms",
    "success_method",
    "http_status",
    "final_url",
    "content_type",
    "error_message",
    "cost",
)


async def finish_jobs(
    conn: AsyncConnection[Any],
    *,
    worker: str,
    results: Sequence[ResultRecord],
    attempts: Sequence[AttemptRecord],
) -> list[uuid.UUID]:
    """Write results (fenced, in one statement) and attempts in one transaction, then NOTIFY the written ids.

    Returns the ids whose result was written; a result whose fence failed (the lease was lost, the job
    cancelled) is skipped.
    """
    params: dict[str, Any] = {name: [getattr(result, name) for result in results] for name in FINISH_COLUMNS}
    params["worker"] = worker
    async with conn.transaction(), conn.cursor() as cur:
        if attempts:
            await cur.executemany(query("insert_attempt"), [dataclasses.asdict(a) for a in attempts])
        rows: list[tuple[Any, ...]] = []
        if results:
            await cur.execute(query("finish_jobs"), params)
            rows = await cur.fetchall()
        written: list[uuid.UUID] = [row[0] for row in rows]
        await job_events(cur, written, [row[1] for row in rows])
    return written


async def release_jobs(
    conn: AsyncConnection[Any], *, worker: str, ids: Sequence[uuid.UUID | str]
) -> list[Row]:
    return await fetch_all(conn, "release_jobs", {"worker": worker, "ids": [str(i) for i in ids]})


async def reclaim_expired_leases(
    conn: AsyncConnection[Any], *, limit: int, max_lost_leases: int
) -> list[Row]:
    """Expired leases back to pending, or to error past `max_lost_leases` losses: those end like any other
    failed job (webhooks, waiters woken), in the same transaction."""
    return await _take_back(
        conn, "reclaim_expired_leases", {"limit": limit, "max_lost_leases": max_lost_leases}
    )


async def reclaim_dead_workers(
    conn: AsyncConnection[Any], *, limit: int, max_lost_leases: int, forget_seconds: int
) -> list[Row]:
    """The jobs of registered workers whose liveness lock is gone, back to pending (or to error past
    `max_lost_leases` losses), like `reclaim_expired_leases`; their registrations are dropped."""
    params = {
        "limit": limit,
        "max_lost_leases": max_lost_leases,
        "forget_seconds": forget_seconds,
        "namespace": WORKER_LOCK_NAMESPACE,
    }
    return await _take_back(conn, "reclaim_dead_workers", params)


async def _take_back(conn: AsyncConnection[Any], name: str, params: dict[str, Any]) -> list[Row]:
    async with conn.transaction():
        rows = await fetch_all(conn, name, params)
        lost = [row for row in rows if row["status"] == "error"]
        if lost:
            async with conn.cursor() as cur:
                await job_events(cur, [row["id"] for row in lost], [row["batch_id"] for row in lost])
    return rows


async def cancel_job(conn: AsyncConnection[Any], *, tenant: str, job_id: uuid.UUID) -> bool:
    """Cancel a pending or processing job and NOTIFY it; False when there was nothing to cancel."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(query("cancel_job"), {"tenant": tenant, "id": job_id})
        rows = await cur.fetchall()
        ids = [row[0] for row in rows]
        if ids:
            await record_batch_events(cur, ids)
        await notify(cur, ids, [row[1] for row in rows])
    return bool(ids)


async def cancel_batch_jobs(conn: AsyncConnection[Any], *, tenant: str, batch_id: str) -> list[uuid.UUID]:
    """Cancel every pending or processing job of a batch in one transaction and NOTIFY their ids."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(query("cancel_batch_jobs"), {"tenant": tenant, "batch_id": batch_id})
        ids = [row[0] for row in await cur.fetchall()]
        if ids:
            await record_batch_events(cur, ids[:1])  # one id names the batch
        await notify(cur, ids, [batch_id] if ids else [])
    return ids

"""Reading jobs and batches: one job, a batch's counts and pages, listings, exports, the waiters' re-reads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from crawljobs.queries import query
from crawljobs.store.presence import WORKER_LOCK_NAMESPACE
from crawljobs.store.rows import Row, fetch_all, fetch_one


async def get_job(
    conn: AsyncConnection[Any], *, tenant: str, job_id: uuid.UUID, with_html: bool
) -> Row | None:
    return await fetch_one(conn, "get_job" if with_html else "get_job_meta", {"tenant": tenant, "id": job_id})


async def list_attempts(conn: AsyncConnection[Any], *, job_id: uuid.UUID) -> list[Row]:
    return await fetch_all(conn, "list_attempts", {"job_id": job_id})


async def batch_counts(conn: AsyncConnection[Any], *, tenant: str, batch_id: str) -> Row:
    """A batch's counts by status, its cost and last update (one row, kept by the triggers of migration 0007;
    nulls for a batch of no jobs)."""
    row = await fetch_one(conn, "batch_counts", {"tenant": tenant, "batch_id": batch_id})
    assert row is not None  # an aggregate always answers one row
    return row


async def batch_jobs(
    conn: AsyncConnection[Any], *, tenant: str, batch_id: str, status: str | None, limit: int, offset: int
) -> list[Row]:
    params = {"tenant": tenant, "batch_id": batch_id, "status": status, "limit": limit, "offset": offset}
    return await fetch_all(conn, "batch_jobs", params)


async def list_batches(
    conn: AsyncConnection[Any], *, tenant: str, limit: int, offset: int, search: str | None = None
) -> list[Row]:
    """A page of a tenant's batches (those whose id starts with `search`, if given), newest first, with counts."""
    params = {"tenant": tenant, "limit": limit, "offset": offset, "search": search}
    return await fetch_all(conn, "list_batches" if search is None else "list_batches_search", params)


async def count_batches(conn: AsyncConnection[Any], *, tenant: str, search: str | None = None) -> int:
    name = "count_batches" if search is None else "count_batches_search"
    row = await fetch_one(conn, name, {"tenant": tenant, "search": search})
    return int(row["count"]) if row else 0


async def export_batch_jobs(
    conn: AsyncConnection[Any],
    *,
    tenant: str,
    batch_id: str,
    with_html: bool,
    limit: int,
    after_index: int = -1,
    offset: int = 0,
) -> list[Row]:
    """A page of a batch's jobs in submission order: by keyset (`after_index`) or by `offset`."""
    params = {
        "tenant": tenant,
        "batch_id": batch_id,
        "with_html": with_html,
        "after_index": after_index,
        "limit": limit,
        "offset": offset,
    }
    return await fetch_all(conn, "export_batch_jobs", params)


async def get_jobs_meta(conn: AsyncConnection[Any], *, ids: Sequence[uuid.UUID]) -> list[Row]:
    """Jobs by id without their HTML, whatever their tenant (the caller checks it)."""
    return await fetch_all(conn, "get_jobs_meta", {"ids": list(ids)})


async def list_attempts_of_jobs(conn: AsyncConnection[Any], *, ids: Sequence[uuid.UUID]) -> list[Row]:
    """The fetch attempts of several jobs, oldest first per job."""
    return await fetch_all(conn, "list_attempts_of_jobs", {"ids": list(ids)})


async def count_live_jobs(conn: AsyncConnection[Any]) -> dict[str, int]:
    """How many jobs are pending and processing over every tenant (the counts of migration 0007: cheap whatever
    the table's size)."""
    row = await fetch_one(conn, "count_live_jobs", {})
    assert row is not None
    return {"pending": int(row["pending"]), "processing": int(row["processing"])}


# -- the dashboard ---------------------------------------------------------------------------------------


async def tenant_counts(conn: AsyncConnection[Any], *, tenant: str) -> Row:
    """All of a tenant's jobs by status, and their cost (one row)."""
    row = await fetch_one(conn, "tenant_counts", {"tenant": tenant})
    assert row is not None
    return row


async def stats_per_minute(conn: AsyncConnection[Any], *, tenant: str) -> list[Row]:
    """Completions and errors in each of the last 60 minutes, oldest first, every minute present."""
    return await fetch_all(conn, "stats_per_minute", {"tenant": tenant})


async def stats_per_hour(conn: AsyncConnection[Any], *, tenant: str) -> list[Row]:
    """Completions and errors in each of the last 24 hours, oldest first, every hour present."""
    return await fetch_all(conn, "stats_per_hour", {"tenant": tenant})


async def cost_today(conn: AsyncConnection[Any], *, tenant: str) -> list[Row]:
    """Today's (UTC) cost by method."""
    return await fetch_all(conn, "cost_today", {"tenant": tenant})


async def overview_rows(conn: AsyncConnection[Any], *, tenant: str) -> dict[str, list[Row]]:
    """What the overview reads, five small queries sent at once (psycopg's pipeline: one round trip, not five),
    by query name: tenant_counts, stats_per_minute, stats_per_hour, cost_today, list_workers."""
    params = {"tenant": tenant, "namespace": WORKER_LOCK_NAMESPACE}
    names = ("tenant_counts", "stats_per_minute", "stats_per_hour", "cost_today", "list_workers")
    async with conn.pipeline():
        cursors = []
        for name in names:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query(name), params)
            cursors.append(cur)
        rows = {name: await cur.fetchall() for name, cur in zip(names, cursors, strict=True)}
    for cur in cursors:
        await cur.close()
    return rows


async def list_workers(conn: AsyncConnection[Any]) -> list[Row]:
    """The registered workers, whether their liveness lock is held, and the jobs each holds."""
    return await fetch_all(conn, "list_workers", {"namespace": WORKER_LOCK_NAMESPACE})


async def batch_jobs_page(
    conn: AsyncConnection[Any],
    *,
    tenant: str,
    batch_id: str,
    status: str | None,
    search: str | None,
    after: int,
    until: int,
    limit: int,
) -> list[Row]:
    """Up to `limit` jobs of a batch with a batch index in (`after`, `until`], in submission order, of one status
    if given, whose URL contains `search` (lower case) if given."""
    params = {
        "tenant": tenant,
        "batch_id": batch_id,
        "status": status,
        "search": search,
        "after": after,
        "until": until,
        "limit": limit,
    }
    name = "batch_jobs_page" if status is None else "batch_jobs_page_of_status"
    return await fetch_all(conn, name, params)


async def batch_has_jobs_after(conn: AsyncConnection[Any], *, tenant: str, batch_id: str, after: int) -> bool:
    row = await fetch_one(
        conn, "batch_has_jobs_after", {"tenant": tenant, "batch_id": batch_id, "after": after}
    )
    return bool(row and row["more"])

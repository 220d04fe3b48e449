"""Reading jobs and batches: one job, a batch's counts and pages, listings, exports, the waiters' re-reads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from crawljobs.store.rows import Row, fetch_all, fetch_one


async def get_job(
    conn: AsyncConnection[Any], *, tenant: str, job_id: uuid.UUID, with_html: bool
) -> Row | None:
    return await fetch_one(conn, "get_job" if with_html else "get_job_meta", {"tenant": tenant, "id": job_id})


async def list_attempts(conn: AsyncConnection[Any], *, job_id: uuid.UUID) -> list[Row]:
    return await fetch_all(conn, "list_attempts", {"job_id": job_id})


async def batch_counts(conn: AsyncConnection[Any], *, tenant: str, batch_id: str) -> list[Row]:
    return await fetch_all(conn, "batch_counts", {"tenant": tenant, "batch_id": batch_id})


async def batch_jobs(
    conn: AsyncConnection[Any], *, tenant: str, batch_id: str, status: str | None, limit: int, offset: int
) -> list[Row]:
    params = {"tenant": tenant, "batch_id": batch_id, "status": status, "limit": limit, "offset": offset}
    return await fetch_all(conn, "batch_jobs", params)


async def list_batches(conn: AsyncConnection[Any], *, tenant: str, limit: int, offset: int) -> list[Row]:
    return await fetch_all(conn, "list_batches", {"tenant": tenant, "limit": limit, "offset": offset})


async def count_batches(conn: AsyncConnection[Any], *, tenant: str) -> int:
    row = await fetch_one(conn, "count_batches", {"tenant": tenant})
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
    """How many jobs are pending and processing (from partial indexes: cheap whatever the table's size)."""
    row = await fetch_one(conn, "count_live_jobs", {})
    assert row is not None
    return {"pending": int(row["pending"]), "processing": int(row["processing"])}

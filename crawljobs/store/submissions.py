"""Writing what clients submit: API key look-up, single jobs, batches by COPY, idempotent replays."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from crawljobs.exceptions import BatchAlreadyExists, IdempotencyConflict
from crawljobs.queries import query
from crawljobs.store.rows import Row, fetch_all, fetch_one


async def find_tenant_by_key(conn: AsyncConnection[Any], *, key_hash: bytes) -> str | None:
    row = await fetch_one(conn, "find_tenant_by_key", {"key_hash": key_hash})
    return row["tenant"] if row else None


async def insert_job(
    conn: AsyncConnection[Any],
    *,
    job_id: uuid.UUID,
    tenant: str,
    url: str,
    render: bool,
    premium: bool,
    ultra_premium: bool,
    obey_robots: bool,
    max_retries: int,
    priority: int,
    idempotency_key: str | None,
    callback_url: str | None = None,
    wait_for: str | None = None,
    wait_ms: int | None = None,
) -> Row:
    """Insert a single job, marked dispatched (the caller undoes that if the push to Redis fails)."""
    params = {
        "id": job_id,
        "tenant": tenant,
        "url": url,
        "render": render,
        "premium": premium,
        "ultra_premium": ultra_premium,
        "obey_robots": obey_robots,
        "max_retries": max_retries,
        "priority": priority,
        "idempotency_key": idempotency_key,
        "callback_url": callback_url,
        "wait_for": wait_for,
        "wait_ms": wait_ms,
    }
    try:
        row = await fetch_one(conn, "insert_job", params)
    except psycopg.errors.UniqueViolation as exc:
        raise IdempotencyConflict("a job with this Idempotency-Key already exists") from exc
    assert row is not None
    return row


async def find_job_by_idempotency_key(
    conn: AsyncConnection[Any], *, tenant: str, idempotency_key: str
) -> Row | None:
    return await fetch_one(
        conn, "find_job_by_idempotency_key", {"tenant": tenant, "idempotency_key": idempotency_key}
    )


async def insert_batch(
    conn: AsyncConnection[Any],
    *,
    tenant: str,
    batch_id: str,
    total: int,
    render: bool,
    premium: bool,
    ultra_premium: bool,
    obey_robots: bool,
    max_retries: int,
    idempotency_key: str | None,
    request_hash: str,
    response: dict[str, Any],
    callback_url: str | None = None,
) -> None:
    """Insert a batch row. Raises BatchAlreadyExists when the id or the Idempotency-Key is taken."""
    params = {
        "tenant": tenant,
        "batch_id": batch_id,
        "total": total,
        "render": render,
        "premium": premium,
        "ultra_premium": ultra_premium,
        "obey_robots": obey_robots,
        "max_retries": max_retries,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash,
        "response": Jsonb(response),
        "callback_url": callback_url,
    }
    try:
        async with conn.cursor() as cur:
            await cur.execute(query("insert_batch"), params)
    except psycopg.errors.UniqueViolation as exc:
        raise BatchAlreadyExists(f"batch {batch_id!r} already exists", batch_id=batch_id) from exc


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def copy_text(value: str) -> str:
    """A value for COPY's text format (backslash, tab, newline and carriage return escaped)."""
    if _COPY_SPECIAL.search(value) is None:
        return value
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


async def copy_jobs(
    conn: AsyncConnection[Any],
    *,
    tenant: str,
    batch_id: str,
    jobs: Sequence[tuple[str, int, str]],
    render: bool,
    premium: bool,
    ultra_premium: bool,
    obey_robots: bool,
    max_retries: int,
    dispatched_at: datetime | None,
    wait_for: str | None = None,
    wait_ms: int | None = None,
) -> None:
    """COPY a batch's jobs, given as (id, index in the submitted list, normalised URL).

    The rows are written as one buffer in COPY's text format: per-row calls cost more than the COPY itself.
    """
    flags = "\t".join("t" if flag else "f" for flag in (render, premium, ultra_premium, obey_robots))
    shared = f"\t{copy_text(tenant)}\t{copy_text(batch_id)}\t"
    stamp = dispatched_at.isoformat() if dispatched_at else "\\N"
    null = "\\N"
    waits = (
        f"{copy_text(wait_for) if wait_for is not None else null}\t{wait_ms if wait_ms is not None else null}"
    )
    tail = f"\t{flags}\t{max_retries}\t{max_retries + 1}\t{stamp}\t{waits}\n"
    buffer = "".join(f"{job_id}{shared}{index}\t{copy_text(url)}{tail}" for job_id, index, url in jobs)
    async with conn.cursor() as cur, cur.copy(query("copy_jobs")) as copy:
        await copy.write(buffer.encode())


async def find_batch(conn: AsyncConnection[Any], *, tenant: str, batch_id: str) -> Row | None:
    return await fetch_one(conn, "find_batch", {"tenant": tenant, "batch_id": batch_id})


async def find_batch_by_idempotency_key(
    conn: AsyncConnection[Any], *, tenant: str, idempotency_key: str
) -> Row | None:
    return await fetch_one(
        conn, "find_batch_by_idempotency_key", {"tenant": tenant, "idempotency_key": idempotency_key}
    )


async def batch_job_ids(conn: AsyncConnection[Any], *, tenant: str, batch_id: str) -> list[Row]:
    return await fetch_all(conn, "batch_job_ids", {"tenant": tenant, "batch_id": batch_id})


async def mark_undispatched(conn: AsyncConnection[Any], *, ids: Sequence[uuid.UUID | str]) -> None:
    async with conn.cursor() as cur:
        await cur.execute(query("mark_undispatched"), {"ids": [str(job_id) for job_id in ids]})


def insert_api_key(
    conninfo: str, *, key_id: uuid.UUID, tenant: str, name: str, key_hash: bytes, key_prefix: str
) -> None:
    """Store a new API key (only its hash), on a connection of its own (the CLI and the zero-setup start)."""
    params = {"id": key_id, "tenant": tenant, "name": name, "key_hash": key_hash, "key_prefix": key_prefix}
    with psycopg.connect(conninfo) as conn:
        conn.execute(query("insert_api_key"), params)

"""The job store: the only module that talks to PostgreSQL for jobs, batches and keys.

Every function takes an open async connection and keyword-only arguments, runs named queries from
``sql/queries.sql`` and returns plain rows; ``crawljobs.manager`` turns them into models. Database errors that
mean something to a caller are wrapped here into typed exceptions.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from crawljobs.exceptions import BatchAlreadyExists, IdempotencyConflict
from crawljobs.queries import query

Row = dict[str, Any]


async def _one(conn: AsyncConnection[Any], name: str, params: dict[str, Any]) -> Row | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query(name), params)
        return await cur.fetchone()


async def _all(conn: AsyncConnection[Any], name: str, params: dict[str, Any]) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query(name), params)
        return await cur.fetchall()


async def find_tenant_by_key(conn: AsyncConnection[Any], *, key_hash: bytes) -> str | None:
    row = await _one(conn, "find_tenant_by_key", {"key_hash": key_hash})
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
    }
    try:
        row = await _one(conn, "insert_job", params)
    except psycopg.errors.UniqueViolation as exc:
        raise IdempotencyConflict("a job with this Idempotency-Key already exists") from exc
    assert row is not None
    return row


async def find_job_by_idempotency_key(
    conn: AsyncConnection[Any], *, tenant: str, idempotency_key: str
) -> Row | None:
    return await _one(
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
) -> None:
    """COPY a batch's jobs, given as (id, index in the submitted list, normalised URL).

    The rows are written as one buffer in COPY's text format: per-row calls cost more than the COPY itself.
    """
    flags = "\t".join("t" if flag else "f" for flag in (render, premium, ultra_premium, obey_robots))
    shared = f"\t{copy_text(tenant)}\t{copy_text(batch_id)}\t"
    stamp = dispatched_at.isoformat() if dispatched_at else "\\N"
    tail = f"\t{flags}\t{max_retries}\t{max_retries + 1}\t{stamp}\n"
    buffer = "".join(f"{job_id}{shared}{index}\t{copy_text(url)}{tail}" for job_id, index, url in jobs)
    async with conn.cursor() as cur, cur.copy(query("copy_jobs")) as copy:
        await copy.write(buffer.encode())


async def find_batch(conn: AsyncConnection[Any], *, tenant: str, batch_id: str) -> Row | None:
    return await _one(conn, "find_batch", {"tenant": tenant, "batch_id": batch_id})


async def find_batch_by_idempotency_key(
    conn: AsyncConnection[Any], *, tenant: str, idempotency_key: str
) -> Row | None:
    return await _one(
        conn, "find_batch_by_idempotency_key", {"tenant": tenant, "idempotency_key": idempotency_key}
    )


async def batch_job_ids(conn: AsyncConnection[Any], *, tenant: str, batch_id: str) -> list[Row]:
    return await _all(conn, "batch_job_ids", {"tenant": tenant, "batch_id": batch_id})


async def mark_undispatched(conn: AsyncConnection[Any], *, ids: Sequence[uuid.UUID | str]) -> None:
    async with conn.cursor() as cur:
        await cur.execute(query("mark_undispatched"), {"ids": [str(job_id) for job_id in ids]})


async def get_job(
    conn: AsyncConnection[Any], *, tenant: str, job_id: uuid.UUID, with_html: bool
) -> Row | None:
    return await _one(conn, "get_job" if with_html else "get_job_meta", {"tenant": tenant, "id": job_id})


async def list_attempts(conn: AsyncConnection[Any], *, job_id: uuid.UUID) -> list[Row]:
    return await _all(conn, "list_attempts", {"job_id": job_id})


async def batch_counts(conn: AsyncConnection[Any], *, tenant: str, batch_id: str) -> list[Row]:
    return await _all(conn, "batch_counts", {"tenant": tenant, "batch_id": batch_id})


async def batch_jobs(
    conn: AsyncConnection[Any], *, tenant: str, batch_id: str, status: str | None, limit: int, offset: int
) -> list[Row]:
    params = {"tenant": tenant, "batch_id": batch_id, "status": status, "limit": limit, "offset": offset}
    return await _all(conn, "batch_jobs", params)


async def list_batches(conn: AsyncConnection[Any], *, tenant: str, limit: int, offset: int) -> list[Row]:
    return await _all(conn, "list_batches", {"tenant": tenant, "limit": limit, "offset": offset})


async def count_batches(conn: AsyncConnection[Any], *, tenant: str) -> int:
    row = await _one(conn, "count_batches", {"tenant": tenant})
    return int(row["count"]) if row else 0


async def retry_failed_jobs(conn: AsyncConnection[Any], *, tenant: str, batch_id: str) -> list[uuid.UUID]:
    """A batch's failed jobs back to pending; its event streams are told (its counts changed)."""
    async with conn.transaction():
        rows = await _all(conn, "retry_failed_jobs", {"tenant": tenant, "batch_id": batch_id})
        if rows:
            async with conn.cursor() as cur:
                await _notify(cur, [], [batch_id])
    return [row["id"] for row in rows]


# -- workers -----------------------------------------------------------------------------------------

NOTIFY_CHANNEL = "crawljobs_jobs"
# NOTIFY payloads must stay under 8000 bytes: 36-character ids joined by commas, or batch marks
# ("batch:" and an id of at most 128 characters).
_NOTIFY_IDS = 200
_NOTIFY_BATCHES = 50
BATCH_MARK = "batch:"


def notify_payloads(ids: Sequence[uuid.UUID | str], batch_ids: Iterable[str | None] = ()) -> list[str]:
    """The NOTIFY payloads announcing that jobs changed: their ids, 200 a payload, then a mark for each batch
    they belong to (``batch:<batch_id>``) so that batch waits and event streams wake only for their batch."""
    payloads = [",".join(str(i) for i in ids[s : s + _NOTIFY_IDS]) for s in range(0, len(ids), _NOTIFY_IDS)]
    marks = sorted({BATCH_MARK + batch_id for batch_id in batch_ids if batch_id})
    payloads += [",".join(marks[s : s + _NOTIFY_BATCHES]) for s in range(0, len(marks), _NOTIFY_BATCHES)]
    return payloads


async def claim_jobs(
    conn: AsyncConnection[Any], *, ids: Sequence[uuid.UUID | str], worker: str, lease_seconds: int
) -> list[Row]:
    params = {"ids": [str(i) for i in ids], "worker": worker, "lease_seconds": lease_seconds}
    return await _all(conn, "claim_jobs", params)


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
    return await _all(conn, "claim_pending_jobs", params)


async def renew_leases(
    conn: AsyncConnection[Any], *, worker: str, ids: Sequence[uuid.UUID | str], lease_seconds: int
) -> list[Row]:
    params = {"worker": worker, "ids": [str(i) for i in ids], "lease_seconds": lease_seconds}
    return await _all(conn, "renew_leases", params)


async def next_attempt(
    conn: AsyncConnection[Any], *, job_id: uuid.UUID, attempt: int, worker: str, lease_seconds: int
) -> int | None:
    """The new attempt number, or None when this worker no longer holds the job (fenced)."""
    params = {"id": job_id, "attempt": attempt, "worker": worker, "lease_seconds": lease_seconds}
    row = await _one(conn, "next_attempt", params)
    return int(row["attempt"]) if row else None


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
    results: Sequence[dict[str, Any]],
    attempts: Sequence[dict[str, Any]],
) -> list[uuid.UUID]:
    """Write results (fenced, in one statement) and attempts in one transaction, then NOTIFY the written ids.

    ``results`` are dicts with the keys of FINISH_COLUMNS. Returns the ids whose result was written; a result
    whose fence failed (the lease was lost, the job cancelled) is skipped.
    """
    params: dict[str, Any] = {name: [result[name] for result in results] for name in FINISH_COLUMNS}
    params["worker"] = worker
    async with conn.transaction(), conn.cursor() as cur:
        if attempts:
            await cur.executemany(query("insert_attempt"), attempts)
        rows: list[tuple[Any, ...]] = []
        if results:
            await cur.execute(query("finish_jobs"), params)
            rows = await cur.fetchall()
        written: list[uuid.UUID] = [row[0] for row in rows]
        await _job_events(cur, written, [row[1] for row in rows])
    return written


async def _job_events(
    cur: psycopg.AsyncCursor[Any], ids: Sequence[uuid.UUID], batch_ids: Sequence[str | None]
) -> None:
    """What follows jobs becoming final, in the writer's transaction: webhook outbox rows (set-based, no
    per-row round trips) and the NOTIFYs that wake their waiters after the commit."""
    if ids:
        await cur.execute(query("record_job_events"), {"ids": list(ids)})
        await _record_batch_events(cur, ids)
    await _notify(cur, ids, batch_ids)


async def _record_batch_events(cur: psycopg.AsyncCursor[Any], ids: Sequence[uuid.UUID]) -> None:
    """batch.completed for the batches of `ids` that are now done, in the caller's transaction.

    The batches are locked first, in a statement of their own: a concurrent writer of the same batch's last
    jobs waits for this transaction, and its next statement (a new snapshot) sees these jobs final.
    """
    await cur.execute(query("lock_callback_batches"), {"ids": list(ids)})
    if await cur.fetchall():
        await cur.execute(query("record_batch_events"), {"ids": list(ids)})


async def release_jobs(
    conn: AsyncConnection[Any], *, worker: str, ids: Sequence[uuid.UUID | str]
) -> list[Row]:
    return await _all(conn, "release_jobs", {"worker": worker, "ids": [str(i) for i in ids]})


async def reclaim_expired_leases(conn: AsyncConnection[Any], *, limit: int) -> list[Row]:
    """Expired leases back to pending, or to error once attempts are spent: those end like any other failed
    job (webhooks, waiters woken), in the same transaction."""
    async with conn.transaction():
        rows = await _all(conn, "reclaim_expired_leases", {"limit": limit})
        lost = [row for row in rows if row["status"] == "error"]
        if lost:
            async with conn.cursor() as cur:
                await _job_events(cur, [row["id"] for row in lost], [row["batch_id"] for row in lost])
    return rows


async def claim_undispatched(conn: AsyncConnection[Any], *, limit: int) -> list[Row]:
    return await _all(conn, "claim_undispatched", {"limit": limit})


async def claim_stale_dispatched(conn: AsyncConnection[Any], *, limit: int, stale_seconds: int) -> list[Row]:
    return await _all(conn, "claim_stale_dispatched", {"limit": limit, "stale_seconds": stale_seconds})


async def count_pending_dispatched(conn: AsyncConnection[Any]) -> int:
    row = await _one(conn, "count_pending_dispatched", {})
    return int(row["count"]) if row else 0


# -- cancel, export, retention -------------------------------------------------------------------------


async def _notify(
    cur: psycopg.AsyncCursor[Any], ids: Sequence[uuid.UUID], batch_ids: Iterable[str | None] = ()
) -> None:
    """The NOTIFYs of `notify_payloads`, sent with the caller's transaction (waiters wake after its commit)."""
    for payload in notify_payloads(ids, batch_ids):
        await cur.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, payload))


async def cancel_job(conn: AsyncConnection[Any], *, tenant: str, job_id: uuid.UUID) -> bool:
    """Cancel a pending or processing job and NOTIFY it; False when there was nothing to cancel."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(query("cancel_job"), {"tenant": tenant, "id": job_id})
        rows = await cur.fetchall()
        ids = [row[0] for row in rows]
        if ids:
            await _record_batch_events(cur, ids)
        await _notify(cur, ids, [row[1] for row in rows])
    return bool(ids)


async def cancel_batch_jobs(conn: AsyncConnection[Any], *, tenant: str, batch_id: str) -> list[uuid.UUID]:
    """Cancel every pending or processing job of a batch in one transaction and NOTIFY their ids."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(query("cancel_batch_jobs"), {"tenant": tenant, "batch_id": batch_id})
        ids = [row[0] for row in await cur.fetchall()]
        if ids:
            await _record_batch_events(cur, ids[:1])  # one id names the batch
        await _notify(cur, ids, [batch_id] if ids else [])
    return ids


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
    return await _all(conn, "export_batch_jobs", params)


async def purge_expired_html(conn: AsyncConnection[Any], *, ttl_seconds: int, limit: int) -> int:
    """Drop the HTML of up to `limit` jobs finished more than `ttl_seconds` ago; how many were purged."""
    rows = await _all(conn, "purge_expired_html", {"ttl_seconds": ttl_seconds, "limit": limit})
    return len(rows)


async def get_jobs_meta(conn: AsyncConnection[Any], *, ids: Sequence[uuid.UUID]) -> list[Row]:
    """Jobs by id without their HTML, whatever their tenant (the caller checks it)."""
    return await _all(conn, "get_jobs_meta", {"ids": list(ids)})


async def list_attempts_of_jobs(conn: AsyncConnection[Any], *, ids: Sequence[uuid.UUID]) -> list[Row]:
    """The fetch attempts of several jobs, oldest first per job."""
    return await _all(conn, "list_attempts_of_jobs", {"ids": list(ids)})


# -- webhooks ------------------------------------------------------------------------------------------


async def claim_due_deliveries(conn: AsyncConnection[Any], *, limit: int, lease_seconds: int) -> list[Row]:
    """Due webhook deliveries, their next attempt pushed `lease_seconds` ahead and counted (see the SQL)."""
    return await _all(conn, "claim_due_deliveries", {"limit": limit, "lease_seconds": lease_seconds})


async def mark_delivered(conn: AsyncConnection[Any], *, delivery_id: uuid.UUID, status: int) -> None:
    async with conn.cursor() as cur:
        await cur.execute(query("mark_delivered"), {"id": delivery_id, "status": status})


async def mark_delivery_failed(
    conn: AsyncConnection[Any],
    *,
    delivery_id: uuid.UUID,
    status: int | None,
    error: str,
    retry_in: float | None,
) -> None:
    """Record a failed attempt; try again in `retry_in` seconds, or give up when it is None."""
    params = {"id": delivery_id, "status": status, "error": error, "retry_in": retry_in}
    async with conn.cursor() as cur:
        await cur.execute(query("mark_delivery_failed"), params)


async def list_deliveries(
    conn: AsyncConnection[Any],
    *,
    tenant: str,
    job_id: uuid.UUID | None,
    batch_id: str | None,
    limit: int,
    offset: int,
) -> list[Row]:
    params = {"tenant": tenant, "job_id": job_id, "batch_id": batch_id, "limit": limit, "offset": offset}
    return await _all(conn, "list_deliveries", params)


async def tenant_secret(conn: AsyncConnection[Any], *, tenant: str, new_secret: str) -> str:
    """The tenant's webhook signing secret; `new_secret` becomes it when the tenant has none yet."""
    for _ in range(2):  # a concurrent first use: the other insert wins, read it on the second pass
        row = await _one(conn, "tenant_secret", {"tenant": tenant, "secret": new_secret})
        if row is not None:
            return str(row["secret"])
    raise RuntimeError(f"no webhook secret for tenant {tenant!r}")


async def count_live_jobs(conn: AsyncConnection[Any]) -> dict[str, int]:
    """How many jobs are pending and processing (from partial indexes: cheap whatever the table's size)."""
    row = await _one(conn, "count_live_jobs", {})
    assert row is not None
    return {"pending": int(row["pending"]), "processing": int(row["processing"])}


# -- added by the manager split --

from psycopg_pool import AsyncConnectionPool  # noqa: E402 (kept with the manager split's additions)

# The pool the manager and the objects it owns hold: they name the store's type, never the driver's.
Pool = AsyncConnectionPool[Any]


def insert_api_key(
    conninfo: str, *, key_id: uuid.UUID, tenant: str, name: str, key_hash: bytes, key_prefix: str
) -> None:
    """Store a new API key (only its hash), on a connection of its own (the CLI and the zero-setup start)."""
    params = {"id": key_id, "tenant": tenant, "name": name, "key_hash": key_hash, "key_prefix": key_prefix}
    with psycopg.connect(conninfo) as conn:
        conn.execute(query("insert_api_key"), params)

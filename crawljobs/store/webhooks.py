"""The webhook outbox: due deliveries, their outcomes, the delivery log, each tenant's signing secret."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from crawljobs.queries import query
from crawljobs.store.rows import Row, fetch_all, fetch_one


async def claim_due_deliveries(
    conn: AsyncConnection[Any], *, limit: int, lease_seconds: int, busy: Sequence[str] = ()
) -> list[Row]:
    """Due webhook deliveries of tenants not in `busy`, their next attempt pushed `lease_seconds` ahead and
    counted (see the SQL)."""
    params = {"limit": limit, "lease_seconds": lease_seconds, "busy": list(busy)}
    return await fetch_all(conn, "claim_due_deliveries", params)


async def unclaim_deliveries(conn: AsyncConnection[Any], *, ids: Sequence[uuid.UUID]) -> None:
    async with conn.cursor() as cur:
        await cur.execute(query("unclaim_deliveries"), {"ids": list(ids)})


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
    return await fetch_all(conn, "list_deliveries", params)


async def tenant_secret(conn: AsyncConnection[Any], *, tenant: str, new_secret: str) -> str:
    """The tenant's webhook signing secret; `new_secret` becomes it when the tenant has none yet."""
    for _ in range(2):  # a concurrent first use: the other insert wins, read it on the second pass
        row = await fetch_one(conn, "tenant_secret", {"tenant": tenant, "secret": new_secret})
        if row is not None:
            return str(row["secret"])
    raise RuntimeError(f"no webhook secret for tenant {tenant!r}")


async def redeliver_delivery(
    conn: AsyncConnection[Any], *, tenant: str, delivery_id: uuid.UUID
) -> Row | None:
    """A delivery of `tenant` made due again now with a fresh series of attempts; None if it is not theirs."""
    return await fetch_one(conn, "redeliver_delivery", {"id": delivery_id, "tenant": tenant})


async def dashboard_secret(conn: AsyncConnection[Any], *, new_secret: str) -> str:
    """The dashboard's signing key; `new_secret` becomes it when there is none yet."""
    for _ in range(2):  # a concurrent first use: the other insert wins, read it on the second pass
        row = await fetch_one(conn, "dashboard_secret", {"secret": new_secret})
        if row is not None:
            return str(row["secret"])
    raise RuntimeError("no dashboard secret")

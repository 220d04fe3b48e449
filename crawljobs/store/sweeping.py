"""What the sweeper marks and counts besides leases: jobs to dispatch again, and HTML past its retention."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from crawljobs.store.rows import Row, fetch_all, fetch_one


async def claim_undispatched(conn: AsyncConnection[Any], *, limit: int) -> list[Row]:
    return await fetch_all(conn, "claim_undispatched", {"limit": limit})


async def claim_stale_dispatched(conn: AsyncConnection[Any], *, limit: int, stale_seconds: int) -> list[Row]:
    return await fetch_all(conn, "claim_stale_dispatched", {"limit": limit, "stale_seconds": stale_seconds})


async def count_pending_dispatched(conn: AsyncConnection[Any]) -> int:
    row = await fetch_one(conn, "count_pending_dispatched", {})
    return int(row["count"]) if row else 0


async def purge_expired_html(conn: AsyncConnection[Any], *, ttl_seconds: int, limit: int) -> int:
    """Drop the HTML of up to `limit` jobs finished more than `ttl_seconds` ago; how many were purged."""
    rows = await fetch_all(conn, "purge_expired_html", {"ttl_seconds": ttl_seconds, "limit": limit})
    return len(rows)

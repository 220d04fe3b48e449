"""How a store function runs a named query of ``sql/queries.sql`` and what it gets back."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from crawljobs.queries import query

Row = dict[str, Any]


async def fetch_one(conn: AsyncConnection[Any], name: str, params: dict[str, Any]) -> Row | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query(name), params)
        return await cur.fetchone()


async def fetch_all(conn: AsyncConnection[Any], name: str, params: dict[str, Any]) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query(name), params)
        return await cur.fetchall()

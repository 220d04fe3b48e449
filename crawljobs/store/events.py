"""What follows a change of jobs, in the writer's transaction: webhook outbox rows and the NOTIFYs that wake
their waiters after the commit (``crawljobs_jobs``: job ids, 200 a payload, and ``batch:<id>`` marks).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from crawljobs.queries import query

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


async def notify(
    cur: psycopg.AsyncCursor[Any], ids: Sequence[uuid.UUID], batch_ids: Iterable[str | None] = ()
) -> None:
    """The NOTIFYs of `notify_payloads`, in one statement of the caller's transaction (waiters wake after its
    commit)."""
    payloads = notify_payloads(ids, batch_ids)
    if payloads:
        await cur.execute(query("notify_jobs"), {"channel": NOTIFY_CHANNEL, "payloads": payloads})


async def job_events(
    cur: psycopg.AsyncCursor[Any], ids: Sequence[uuid.UUID], batch_ids: Sequence[str | None]
) -> None:
    """What follows jobs becoming final, in the writer's transaction: webhook outbox rows (set-based, no
    per-row round trips) and the NOTIFYs that wake their waiters after the commit."""
    if ids:
        await cur.execute(query("record_job_events"), {"ids": list(ids)})
        await record_batch_events(cur, ids)
    await notify(cur, ids, batch_ids)


async def record_batch_events(cur: psycopg.AsyncCursor[Any], ids: Sequence[uuid.UUID]) -> None:
    """batch.completed for the batches of `ids` that are now done, in the caller's transaction.

    The batches are locked first, in a statement of their own: a concurrent writer of the same batch's last
    jobs waits for this transaction, and its next statement (a new snapshot) sees these jobs final.
    """
    await cur.execute(query("lock_callback_batches"), {"ids": list(ids)})
    if await cur.fetchall():
        await cur.execute(query("record_batch_events"), {"ids": list(ids)})

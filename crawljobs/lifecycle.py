"""The lease and attempt lifecycle of a job, for whoever fetches jobs (the Scrapy worker, a test's fake worker).

A worker **announces** itself (a liveness lock that dies with its process, below), **claims** a pending job
(DESIGN rule 2: ``pending → processing``, a lease, attempt + 1), renews the leases of everything it holds in one
statement (**heartbeat**, rule 4), starts each further fetch as the job's **next attempt** (fenced by the attempt
it held, rule 3), **finishes** jobs in batches of typed results, and **releases** what it still holds when it
stops. The sweeper **reclaims** the jobs of dead workers and expired leases. Every status change is one named
statement of ``sql/queries.sql``, and the database refuses any move rule 6 forbids (a trigger, see migration
0005), so no caller can break it.

How a lost worker is noticed, stated once:

- a worker that **dies** (killed, crashed, its connection gone) loses its liveness lock, a PostgreSQL
  session-level advisory lock on a connection of its own (``store.LivenessSession``), the moment its session
  ends; the sweeper's liveness check (every ``CRAWLJOBS_WORKER_CHECK_SECONDS``) takes its jobs back within about
  a second (`reclaim_dead_workers`);
- a worker that is **alive but stuck or cut off** from the database still holds its lock (a stopped process
  keeps its sockets): only its lease ends its hold, ``CRAWLJOBS_LEASE_SECONDS`` after its last heartbeat
  (`reclaim_expired_leases`). A worker that is only slow is never taken over early;
- either way the jobs go to the head of their queue (they were due already), and every write stays fenced by
  (id, attempt, owner): a worker taken over that still fetches can never overwrite the next attempt.

The retry budget, stated once:

- every fetch is an attempt; ``attempt`` numbers them and fences every write, and is not a budget;
- a **transient** failure is fetched again while ``retries < max_retries`` (the job's ``maxRetries``): a page
  that always answers 500 is fetched exactly ``max_retries + 1`` times;
- a **block** escalates to the next method while the job's ladder has one: bounded by the ladder (six methods
  at most), spending no retry;
- a **lost lease** (the worker died or hung) returns the job to pending while ``lost_leases <
  CRAWLJOBS_MAX_LOST_LEASES``; the loss after that ends it in ``error`` ("worker lost"). Neither retries nor
  escalations count against it;
- an explicit retry of a failed job (``retry-failed``) gives it a fresh budget: both counters back to 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from crawljobs import store
from crawljobs.dispatch import PRIORITY_SINGLE, queued_rows
from crawljobs.queue import Queued
from crawljobs.store.pool import Pool

logger = logging.getLogger(__name__)


def new_worker_id() -> str:
    """A worker's name in leases and attempts: host, process and a random tail (a restarted pid differs)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class AttemptRecord:
    """One fetch of a job, as ``crawl_attempts`` keeps it."""

    job_id: uuid.UUID
    attempt: int
    method: str
    worker: str
    started_at: datetime
    duration_ms: int | None
    http_status: int | None
    outcome: str
    error: str | None


@dataclass(frozen=True)
class ResultRecord:
    """How a job ended (``completed`` or ``error``), written only while (id, attempt, worker) still hold."""

    id: uuid.UUID
    attempt: int
    status: Literal["completed", "error"]
    processing_time_ms: int
    cost: float
    html: str | None = None
    http_status: int | None = None
    final_url: str | None = None
    content_type: str | None = None
    success_method: str | None = None
    error_message: str | None = None

    @property
    def html_length(self) -> int | None:
        return len(self.html) if self.html is not None else None


@dataclass
class ClaimedJob:
    """A job a worker holds: what it fetches, the attempt that fences its writes, and its retry budget."""

    id: uuid.UUID
    tenant: str
    batch_id: str | None
    url: str
    render: bool
    premium: bool
    ultra_premium: bool
    obey_robots: bool
    attempt: int
    retries: int
    lost_leases: int
    max_retries: int
    wait_for: str | None = None
    wait_ms: int | None = None
    started: float = field(default_factory=time.monotonic)
    # When its first fetch started (its page's turn, or the download handler's): processing time counts from it.
    fetch_started: float | None = None
    cost: float = 0.0
    attempts: list[AttemptRecord] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ClaimedJob:
        """From a row of the ``claimed_job_columns`` fragment (its columns are this class's first fields)."""
        return cls(**row)

    @property
    def tries(self) -> int:
        """Which try of the transient budget the current fetch is (1-based): escalations do not count."""
        return self.retries + 1

    @property
    def max_tries(self) -> int:
        """The tries a transient failure gets in all: the first and `max_retries` more."""
        return self.max_retries + 1

    @property
    def elapsed_ms(self) -> int:
        """From the start of its first fetch (from the claim, if none started), not the wait before it."""
        start = self.fetch_started if self.fetch_started is not None else self.started
        return int((time.monotonic() - start) * 1000)

    def fetch_starting(self) -> None:
        if self.fetch_started is None:
            self.fetch_started = time.monotonic()


class Leases:
    """The jobs one worker holds, and every lifecycle step it takes on them."""

    def __init__(
        self,
        pool: Pool,
        *,
        worker_id: str | None = None,
        lease_seconds: int,
        tenant_max_in_flight: int | None = None,
    ) -> None:
        self.pool = pool
        self.worker_id = worker_id or new_worker_id()
        self.lease_seconds = lease_seconds
        # CRAWLJOBS_TENANT_MAX_IN_FLIGHT: `claim_within` keeps each tenant at most at this many jobs processing.
        self.tenant_max_in_flight = tenant_max_in_flight
        self.held: dict[uuid.UUID, ClaimedJob] = {}
        # Told by the heartbeat which held jobs it could not renew (cancelled, or taken over after the lease
        # expired): the worker stops working on them.
        self.on_gone: Callable[[set[uuid.UUID]], None] | None = None
        self._liveness: store.LivenessSession | None = None

    async def announce(self) -> bool:
        """Take this worker's liveness lock and register it, before it claims anything; from then on the
        heartbeat keeps it (and takes it again after a database restart). False when the database cannot be
        reached now: the heartbeat tries again, and until then only the leases guard this worker's jobs."""
        if self._liveness is None:
            self._liveness = store.LivenessSession(self.pool, self.worker_id)
        return await self._liveness.keep()

    async def keep_alive(self) -> bool:
        """Hold the liveness lock (the heartbeat's part): a new session if the old one ended. False when not
        announced, or when the database cannot be reached now."""
        return await self._liveness.keep() if self._liveness is not None else False

    async def withdraw(self) -> None:
        """Unregister and release the liveness lock (after `release_all`: a stopping worker)."""
        if self._liveness is not None:
            await self._liveness.close()

    async def claim(self, ids: Sequence[uuid.UUID]) -> list[ClaimedJob]:
        """Claim dispatched jobs; those no longer pending (taken, cancelled, done) are simply not returned."""
        async with self.pool.connection() as conn:
            rows = await store.claim_jobs(
                conn, ids=ids, worker=self.worker_id, lease_seconds=self.lease_seconds
            )
        return self._hold(rows)

    async def claim_within(self, ids: Sequence[uuid.UUID]) -> tuple[list[ClaimedJob], list[Queued]]:
        """Claim dispatched jobs as `claim` does, but with CRAWLJOBS_TENANT_MAX_IN_FLIGHT set, no more of a
        tenant than keeps its jobs processing (over all workers) at that limit: (the jobs claimed, those left
        pending because their tenant was full, to be queued again — they wait, they do not fail)."""
        if self.tenant_max_in_flight is None:
            return await self.claim(ids), []
        async with self.pool.connection() as conn:
            rows, waiting = await store.claim_jobs_within(
                conn,
                ids=ids,
                worker=self.worker_id,
                lease_seconds=self.lease_seconds,
                cap=self.tenant_max_in_flight,
            )
        return self._hold(rows), queued_rows(waiting)

    async def claim_pending(
        self, limit: int, *, tenant: str | None = None, batch_id: str | None = None
    ) -> list[ClaimedJob]:
        """Claim up to `limit` pending jobs straight from the table (single jobs first)."""
        async with self.pool.connection() as conn:
            rows = await store.claim_pending_jobs(
                conn,
                worker=self.worker_id,
                lease_seconds=self.lease_seconds,
                limit=limit,
                tenant=tenant,
                batch_id=batch_id,
            )
        return self._hold(rows)

    def _hold(self, rows: list[dict[str, Any]]) -> list[ClaimedJob]:
        jobs = [ClaimedJob.from_row(row) for row in rows]
        for job in jobs:
            self.held[job.id] = job
        return jobs

    async def next_attempt(self, job: ClaimedJob, *, retry: bool) -> bool:
        """Start the job's next fetch: a retry after a transient failure (``retry``, spends one of its retries)
        or an escalation (spends none). False when this worker no longer holds it (lease reclaimed, cancelled)."""
        async with self.pool.connection() as conn:
            moved = await store.next_attempt(
                conn,
                job_id=job.id,
                attempt=job.attempt,
                retry=retry,
                worker=self.worker_id,
                lease_seconds=self.lease_seconds,
            )
        if moved is None:
            self.held.pop(job.id, None)
            return False
        job.attempt, job.retries = moved
        return True

    async def renew(self) -> int:
        """The heartbeat: extend every held lease in one statement; how many were renewed. The held jobs it
        could not renew go to ``on_gone``."""
        if not self.held:
            return 0
        ids = list(self.held)
        async with self.pool.connection() as conn:
            rows = await store.renew_leases(
                conn, worker=self.worker_id, ids=ids, lease_seconds=self.lease_seconds
            )
        gone = set(ids) - {row["id"] for row in rows}
        if gone and self.on_gone is not None:
            self.on_gone(gone)
        return len(rows)

    async def heartbeat(self) -> None:
        """Renew every third of the lease until cancelled; a failed renewal is logged and tried again."""
        interval = max(1.0, self.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew()
            except Exception as exc:
                logger.warning("heartbeat failed: %s", exc, extra={"action": "heartbeat"})
            await self.keep_alive()

    async def finish(
        self, results: Sequence[ResultRecord], attempts: Sequence[AttemptRecord]
    ) -> list[uuid.UUID]:
        """Write results and attempts in one transaction (fenced) and let go of those jobs; the ids written.

        A result whose fence failed (the lease was reclaimed, the job cancelled) changes nothing. Raises when
        the database cannot be written; the caller keeps the results, tries again, or lets go (`let_go`)."""
        async with self.pool.connection() as conn:
            written = await store.finish_jobs(conn, worker=self.worker_id, results=results, attempts=attempts)
        self.let_go([result.id for result in results])
        return written

    def let_go(self, job_ids: Sequence[uuid.UUID]) -> None:
        """Stop renewing these jobs: unwritten, their leases expire and the sweeper gives them back."""
        for job_id in job_ids:
            self.held.pop(job_id, None)

    async def release_all(self) -> int:
        """A worker stopping: give back every job still held (pending, to be dispatched again)."""
        if not self.held:
            return 0
        ids = list(self.held)
        async with self.pool.connection() as conn:
            rows = await store.release_jobs(conn, worker=self.worker_id, ids=ids)
        self.held.clear()
        if rows:
            logger.info("released %d jobs on shutdown", len(rows), extra={"action": "release"})
        return len(rows)


@dataclass(frozen=True)
class Reclaimed:
    """What one reclaim did: the jobs back to pending (``urgent``: those of single submissions, among them;
    ``queued``: each with its tenant and batch, as the dispatcher pushes them), and those that lost their
    worker once too often (now ``error``)."""

    pending: tuple[uuid.UUID, ...]
    lost: tuple[uuid.UUID, ...]
    urgent: frozenset[uuid.UUID] = frozenset()
    queued: tuple[Queued, ...] = ()

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> Reclaimed:
        pending = [row for row in rows if row["status"] == "pending"]
        queued = tuple(queued_rows(pending))
        return cls(
            pending=tuple(row["id"] for row in pending),
            lost=tuple(row["id"] for row in rows if row["status"] == "error"),
            urgent=frozenset(row["id"] for row in pending if row["priority"] >= PRIORITY_SINGLE),
            queued=queued,
        )


async def reclaim_expired_leases(pool: Pool, *, limit: int, max_lost_leases: int) -> Reclaimed:
    """The sweeper's step: expired leases back to pending, or to error ("worker lost") past the limit."""
    async with pool.connection() as conn:
        rows = await store.reclaim_expired_leases(conn, limit=limit, max_lost_leases=max_lost_leases)
    return Reclaimed.from_rows(rows)


async def reclaim_dead_workers(
    pool: Pool, *, limit: int, max_lost_leases: int, forget_seconds: int
) -> Reclaimed:
    """The liveness check: the jobs of workers whose liveness lock is gone back to pending (or to error past
    the limit), without waiting for their leases."""
    async with pool.connection() as conn:
        rows = await store.reclaim_dead_workers(
            conn, limit=limit, max_lost_leases=max_lost_leases, forget_seconds=forget_seconds
        )
    return Reclaimed.from_rows(rows)

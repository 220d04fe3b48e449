"""Rows turned into typed objects: what the manager hands to the routes, the CLI and the workers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

JobStatus = Literal["pending", "processing", "completed", "error", "cancelled"]
STATUSES: tuple[JobStatus, ...] = ("pending", "processing", "completed", "error", "cancelled")
FINAL_STATUSES = frozenset({"completed", "error", "cancelled"})


@dataclass(frozen=True)
class Attempt:
    attempt: int
    method: str
    started_at: datetime
    duration_ms: int | None
    http_status: int | None
    outcome: str
    error: str | None
    worker: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Attempt:
        return cls(**{f.name: row[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Job:
    id: uuid.UUID
    tenant: str
    batch_id: str | None
    url: str
    status: JobStatus
    render: bool
    premium: bool
    ultra_premium: bool
    obey_robots: bool
    attempt: int
    max_retries: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    dispatched_at: datetime | None
    html: str | None
    html_length: int | None
    processing_time_ms: int | None
    success_method: str | None
    http_status: int | None
    final_url: str | None
    content_type: str | None
    error_message: str | None
    cost: float
    # Its place in its batch's submitted list (None for a single job): the cursor of a batch's pages of jobs.
    batch_index: int | None = None
    # What a render waits for after the page loaded (crawlproject/settling.py); None: the default settling.
    wait_for: str | None = None
    wait_ms: int | None = None
    attempts: tuple[Attempt, ...] = field(default=())

    @classmethod
    def from_row(cls, row: dict[str, Any], attempts: tuple[Attempt, ...] = ()) -> Job:
        values = {f.name: row[f.name] for f in fields(cls) if f.name != "attempts"}
        return cls(**values, attempts=attempts)

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class BatchCounts:
    pending: int = 0
    processing: int = 0
    completed: int = 0
    error: int = 0
    cancelled: int = 0
    last_updated: datetime | None = None

    @property
    def total(self) -> int:
        return self.pending + self.processing + self.completed + self.error + self.cancelled

    @property
    def finished(self) -> int:
        return self.completed + self.error + self.cancelled

    @property
    def progress(self) -> int:
        """Percent of jobs in a final state, rounded down: 100 only when every job is done."""
        return (self.finished * 100) // self.total if self.total else 0

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> BatchCounts:
        counts = {row["status"]: int(row["n"]) for row in rows}
        stamps = [row["last_updated"] for row in rows if row["last_updated"] is not None]
        return cls(**{s: counts.get(s, 0) for s in STATUSES}, last_updated=max(stamps) if stamps else None)


@dataclass(frozen=True)
class Batch:
    batch_id: str
    created_at: datetime
    total: int
    render: bool
    premium: bool
    ultra_premium: bool
    counts: BatchCounts
    cost: float = 0.0  # the sum of its jobs' cost

    @property
    def last_updated(self) -> datetime:
        return self.counts.last_updated or self.created_at

    @classmethod
    def from_row(cls, row: dict[str, Any], counts: BatchCounts | None = None) -> Batch:
        if counts is None:
            counts = BatchCounts(**{s: int(row[s]) for s in STATUSES}, last_updated=row.get("last_updated"))
        return cls(
            batch_id=row["batch_id"],
            created_at=row["created_at"],
            total=row["total"],
            render=row["render"],
            premium=row["premium"],
            ultra_premium=row["ultra_premium"],
            counts=counts,
            cost=float(row.get("cost") or 0.0),
        )


@dataclass(frozen=True)
class Rejection:
    """A batch URL that was not accepted."""

    index: int
    url: str
    reason: str


@dataclass(frozen=True)
class BatchSubmission:
    """What a batch submission produced: the legacy response fields plus the job ids in input order."""

    batch_id: str
    total: int
    job_ids: tuple[uuid.UUID | None, ...]
    failures: tuple[Rejection, ...]
    dispatched: bool
    replayed: bool = False

    @property
    def success_count(self) -> int:
        return self.total - len(self.failures)

    @property
    def failed_count(self) -> int:
        return len(self.failures)


@dataclass(frozen=True)
class JobSubmission:
    job: Job
    dispatched: bool
    replayed: bool = False


@dataclass(frozen=True)
class SubmitOptions:
    """How the jobs of one submission are fetched and reported: one object for the routes, the CLI and the
    workers alike (``max_retries`` None takes ``CRAWLJOBS_MAX_RETRIES``)."""

    render: bool = False
    premium: bool = False
    ultra_premium: bool = False
    obey_robots: bool = False
    max_retries: int | None = None
    callback_url: str | None = None
    # When the job is rendered: wait for this CSS selector, then this many milliseconds (both capped by
    # CRAWLJOBS_RENDER_MAX_WAIT_MS, checked at submission).
    wait_for: str | None = None
    wait_ms: int | None = None


DeliveryStatus = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True)
class Delivery:
    """One entry of a tenant's webhook delivery log."""

    id: uuid.UUID
    event: str
    job_id: uuid.UUID | None
    batch_id: str | None
    url: str
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    gave_up_at: datetime | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Delivery:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    @property
    def status(self) -> DeliveryStatus:
        return "delivered" if self.delivered_at else "failed" if self.gave_up_at else "pending"

    @property
    def next_attempt(self) -> datetime | None:
        """When it is tried again; None once it is delivered or given up."""
        return None if self.delivered_at or self.gave_up_at else self.next_attempt_at


@dataclass(frozen=True)
class DueDelivery:
    """A webhook delivery claimed for sending (its attempt already counted)."""

    id: uuid.UUID
    tenant: str
    event: str
    url: str
    payload: dict[str, Any]
    attempts: int
    job_id: uuid.UUID | None
    batch_id: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DueDelivery:
        return cls(**{f.name: row[f.name] for f in fields(cls)})


# -- the dashboard (JobManager.overview, batch_jobs_page) --------------------------------------------------


@dataclass(frozen=True)
class StatsBucket:
    """Jobs that became completed and error in one minute (or hour) starting at `start` (UTC)."""

    start: datetime
    completed: int
    errors: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StatsBucket:
        return cls(start=row["start"], completed=int(row["completed"]), errors=int(row["errors"]))


@dataclass(frozen=True)
class WorkerInfo:
    """A registered worker (``crawl_workers``) and what its heartbeat in Redis says.

    `alive`: its liveness lock is held now (a dead worker's row goes with the sweeper's next liveness check).
    `jobs_held`: jobs processing under its lease, counted in PostgreSQL. `heartbeat` and `in_flight`: its last
    heartbeat in Redis (None when Redis has none: not published yet, expired, or Redis down).
    """

    worker_id: str
    host: str
    pid: int
    started_at: datetime
    last_seen: datetime
    alive: bool
    jobs_held: int
    heartbeat: datetime | None = None
    in_flight: int | None = None


@dataclass(frozen=True)
class Overview:
    """What the dashboard's first page shows of one tenant, each part cheap to read whatever the jobs' number.

    `counts`: all the tenant's jobs by status (every status present). `per_minute`: the last 60 minutes, oldest
    first, the current minute last; `per_hour`: the last 24 hours likewise. `cost_today`: cost written today
    (UTC) by `success_method` (``none``: jobs that ended without one). `queue_depth`: the Redis lists' lengths
    (``priority``, ``bulk``; empty when Redis cannot be read), shared by every tenant. `workers`: the registered
    workers, shared by every tenant.
    """

    counts: dict[str, int]
    per_minute: list[StatsBucket]
    per_hour: list[StatsBucket]
    cost_today: dict[str, float]
    queue_depth: dict[str, int]
    workers: list[WorkerInfo]
    cost_total: float = 0.0  # the cost of all the tenant's jobs

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class JobsPage:
    """A page of a batch's jobs in submission order; `next_after` is the cursor of the next page (None: the last
    page). The cursor is opaque to callers: pass it back as `after`."""

    jobs: list[Job]
    next_after: str | None

"""The /v1 response bodies, each built from the core's models (``crawljobs.models``) by a ``from_*`` method.

The routes return these models and FastAPI validates them against ``response_model``; a field a rendering
leaves unset (a job's ``attempts`` or ``html`` when they were not asked for) is left out of the answer
(``response_model_exclude_unset``). Timestamps are written as JavaScript's ``Date.toISOString()`` does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, overload

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from crawljobs.models import Attempt, Batch, BatchCounts, BatchSubmission, Delivery, Job, Rejection


@overload
def timestamp(value: datetime) -> str: ...
@overload
def timestamp(value: None) -> None: ...
@overload
def timestamp(value: datetime | None) -> str | None: ...


def timestamp(value: datetime | None) -> str | None:
    """UTC, ISO 8601 with milliseconds and a Z, as JavaScript's Date.toISOString() writes it."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class Failure(BaseModel):
    index: int
    url: str
    reason: str

    @classmethod
    def from_rejection(cls, rejection: Rejection) -> Failure:
        return cls(index=rejection.index, url=rejection.url, reason=rejection.reason)


class BatchCreated(BaseModel):
    batch_id: str
    total: int
    accepted: int
    rejected: int
    failures: list[Failure]
    job_ids: list[str | None] = Field(description="One per submitted URL, in order; null where refused.")
    dispatched: bool

    @classmethod
    def from_submission(cls, submission: BatchSubmission) -> BatchCreated:
        return cls(
            batch_id=submission.batch_id,
            total=submission.total,
            accepted=submission.success_count,
            rejected=submission.failed_count,
            failures=[Failure.from_rejection(f) for f in submission.failures],
            job_ids=[str(i) if i is not None else None for i in submission.job_ids],
            dispatched=submission.dispatched,
        )


class AttemptOut(BaseModel):
    attempt: int
    method: str
    started_at: str
    duration_ms: int | None
    http_status: int | None
    outcome: str
    error: str | None
    worker: str | None

    @classmethod
    def from_attempt(cls, item: Attempt) -> AttemptOut:
        return cls(
            attempt=item.attempt,
            method=item.method,
            started_at=timestamp(item.started_at),
            duration_ms=item.duration_ms,
            http_status=item.http_status,
            outcome=item.outcome,
            error=item.error,
            worker=item.worker,
        )


def job_fields(item: Job, *, with_attempts: bool, with_html: bool) -> dict[str, Any]:
    """The fields of a job's /v1 rendering (`attempts` and `html` only when asked for)."""
    values: dict[str, Any] = {
        "id": str(item.id),
        "url": item.url,
        "status": item.status,
        "batch_id": item.batch_id,
        "render": item.render,
        "premium": item.premium,
        "ultra_premium": item.ultra_premium,
        "obey_robots": item.obey_robots,
        "attempt": item.attempt,
        "max_attempts": item.max_attempts,
        "max_retries": item.max_retries,
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
        "started_at": timestamp(item.started_at),
        "completed_at": timestamp(item.completed_at),
        "dispatched": item.dispatched_at is not None,
        "html_length": item.html_length,
        "processing_time_ms": item.processing_time_ms,
        "success_method": item.success_method,
        "http_status": item.http_status,
        "final_url": item.final_url,
        "content_type": item.content_type,
        "error_message": item.error_message,
        "cost": item.cost,
        "wait_for": item.wait_for,
        "wait_ms": item.wait_ms,
    }
    if with_attempts:
        values["attempts"] = [AttemptOut.from_attempt(a) for a in item.attempts]
    if with_html:
        values["html"] = item.html
    return values


class JobOut(BaseModel):
    id: str
    url: str
    status: str
    batch_id: str | None
    render: bool
    premium: bool
    ultra_premium: bool
    obey_robots: bool
    attempt: int
    max_attempts: int
    max_retries: int
    created_at: str
    updated_at: str
    started_at: str | None
    completed_at: str | None
    dispatched: bool
    html_length: int | None
    processing_time_ms: int | None
    success_method: str | None
    http_status: int | None
    final_url: str | None
    content_type: str | None
    error_message: str | None
    cost: float
    wait_for: str | None = Field(default=None, description="The CSS selector a render waits for, if any.")
    wait_ms: int | None = Field(default=None, description="The milliseconds a render waits on, if any.")
    attempts: list[AttemptOut] = Field(
        default_factory=list, description="Every fetch attempt; left out of a batch's page and of exports."
    )
    html: str | None = Field(default=None, description="Only when asked for (`include_html`, exports).")

    @classmethod
    def from_job(cls, item: Job, *, with_attempts: bool = True, with_html: bool = False) -> JobOut:
        return cls(**job_fields(item, with_attempts=with_attempts, with_html=with_html))


class Counts(BaseModel):
    pending: int
    processing: int
    completed: int
    error: int
    cancelled: int
    total: int

    @classmethod
    def from_counts(cls, value: BatchCounts) -> Counts:
        return cls(
            pending=value.pending,
            processing=value.processing,
            completed=value.completed,
            error=value.error,
            cancelled=value.cancelled,
            total=value.total,
        )


def batch_fields(item: Batch) -> dict[str, Any]:
    """The fields of a batch's /v1 rendering."""
    return {
        "batch_id": item.batch_id,
        "created_at": timestamp(item.created_at),
        "last_updated": timestamp(item.last_updated),
        "render": item.render,
        "premium": item.premium,
        "ultra_premium": item.ultra_premium,
        "counts": Counts.from_counts(item.counts),
        "progress": item.counts.progress,
    }


class BatchOut(BaseModel):
    batch_id: str
    created_at: str
    last_updated: str
    render: bool
    premium: bool
    ultra_premium: bool
    counts: Counts
    progress: int = Field(description="Percent of jobs in a final state, rounded down.")

    @classmethod
    def from_batch(cls, item: Batch) -> BatchOut:
        return cls(**batch_fields(item))


class BatchDetail(BatchOut):
    jobs: list[JobOut]
    limit: int
    offset: int

    @classmethod
    def from_page(cls, item: Batch, jobs: list[Job], *, limit: int, offset: int) -> BatchDetail:
        page = [JobOut.from_job(j, with_attempts=False) for j in jobs]
        return cls(**batch_fields(item), jobs=page, limit=limit, offset=offset)


class BatchList(BaseModel):
    batches: list[BatchOut]
    total: int
    limit: int
    offset: int


class RetryResult(BaseModel):
    batch_id: str
    retried: int


class CancelResult(BaseModel):
    batch_id: str
    cancelled: int = Field(
        description="Jobs cancelled now (pending or processing); final jobs are left alone."
    )


class ExportedJob(JobOut):
    """A job of an NDJSON or JSON export: the /v1 job with its HTML, and first its index in the batch."""

    index: int = Field(description="The job's index in the submitted list.")

    @classmethod
    def from_exported(cls, index: int, item: Job) -> ExportedJob:
        return cls(index=index, **job_fields(item, with_attempts=False, with_html=True))

    @model_serializer(mode="wrap")
    def _index_first(
        self, handler: SerializerFunctionWrapHandler
    ):  # no return type: the schema stays the fields
        data = handler(self)
        return {"index": data.pop("index"), **data}


class BatchExportPage(BaseModel):
    batch_id: str
    total: int
    limit: int
    offset: int
    jobs: list[ExportedJob]


class ProcessResult(BaseModel):
    processed: int
    completed: int
    failed: int
    message: str


class ErrorOut(BaseModel):
    success: bool = False
    code: str
    error: str
    details: Any = None


# -- webhooks --------------------------------------------------------------------------------------


class DeliveryOut(BaseModel):
    id: str
    event: str
    job_id: str | None
    batch_id: str | None
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: str | None = Field(
        description="When it is tried again; null once delivered or given up."
    )
    delivered_at: str | None
    gave_up_at: str | None
    created_at: str
    payload: dict[str, Any] = Field(description="The JSON body POSTed (without its `id`).")

    @classmethod
    def from_delivery(cls, item: Delivery) -> DeliveryOut:
        return cls(
            id=str(item.id),
            event=item.event,
            job_id=str(item.job_id) if item.job_id is not None else None,
            batch_id=item.batch_id,
            url=item.url,
            status=item.status,
            attempts=item.attempts,
            last_status=item.last_status,
            last_error=item.last_error,
            next_attempt_at=timestamp(item.next_attempt),
            delivered_at=timestamp(item.delivered_at),
            gave_up_at=timestamp(item.gave_up_at),
            created_at=timestamp(item.created_at),
            payload=item.payload,
        )


class DeliveryLog(BaseModel):
    deliveries: list[DeliveryOut]
    limit: int
    offset: int


class WebhookSecret(BaseModel):
    secret: str = Field(description="Signs every webhook of the tenant (HMAC-SHA256, see the README).")


# -- waiting ---------------------------------------------------------------------------------------


class JobWaited(JobOut):
    timed_out: bool = Field(description="True when the wait ended before the job was final.")
    waited_ms: int


class BatchWaited(BatchOut):
    timed_out: bool = Field(description="True when the wait ended before every job was final.")
    waited_ms: int

"""The /functions/v1 response bodies (the legacy contract, field for field), built from the core's models.

The legacy field names (``jobId``, ``batchId``, ``successCount``, ...) live here and in the legacy routes only.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from crawljobs.models import Batch, BatchCounts, BatchSubmission, Job
from service.schemas.v1 import Counts, Failure, timestamp


class LegacySubmitted(BaseModel):
    success: bool
    jobId: str
    status: str
    message: str

    @classmethod
    def from_job(cls, job: Job) -> LegacySubmitted:
        return cls(success=True, jobId=str(job.id), status=job.status, message="Job submitted successfully")


class LegacyBatchSubmitted(BaseModel):
    success: bool
    batchId: str
    total: int
    successCount: int
    failedCount: int
    failures: list[Failure]

    @classmethod
    def from_submission(cls, submission: BatchSubmission) -> LegacyBatchSubmitted:
        return cls(
            success=True,
            batchId=submission.batch_id,
            total=submission.total,
            successCount=submission.success_count,
            failedCount=submission.failed_count,
            failures=[Failure.from_rejection(f) for f in submission.failures],
        )


class LegacyJob(BaseModel):
    id: str
    url: str
    status: str
    created_at: str
    updated_at: str
    completed_at: str | None
    html_length: int | None
    processing_time_ms: int | None
    success_method: str | None
    # Extensions after the contract's nine fields (its clients read those by name and ignore the rest): why a
    # job failed, which the old system promised as "detailed error messages", and how many fetches it took.
    error_message: str | None = Field(description="Why the job failed; null unless its status is error.")
    attempts: int = Field(description="How many fetches the job has taken so far (an extension).")

    @classmethod
    def from_job(cls, job: Job) -> LegacyJob:
        """Some of the /v1 job's fields, in the legacy contract's order, then the extensions."""
        return cls(
            id=str(job.id),
            url=job.url,
            status=job.status,
            created_at=timestamp(job.created_at),
            updated_at=timestamp(job.updated_at),
            completed_at=timestamp(job.completed_at),
            html_length=job.html_length,
            processing_time_ms=job.processing_time_ms,
            success_method=job.success_method,
            error_message=job.error_message if job.status == "error" else None,
            attempts=job.attempt,
        )


class LegacyJobResult(BaseModel):
    success: bool
    job: LegacyJob
    html: str | None


class LegacyCounts(BaseModel):
    pending: int
    processing: int
    completed: int
    error: int
    total: int

    @classmethod
    def from_counts(cls, counts: BatchCounts) -> LegacyCounts:
        """The /v1 counts without ``cancelled`` (which ``total`` still counts)."""
        return cls(**Counts.from_counts(counts).model_dump(include=set(cls.model_fields)))


class LegacyBatchStatus(BaseModel):
    success: bool
    counts: LegacyCounts
    progress: int
    urls: list[LegacyJob]


class LegacyBatchSummary(BaseModel):
    batch_id: str
    total: int
    pending: int
    processing: int
    completed: int
    error: int
    progress: int
    created_at: str
    last_updated: str

    @classmethod
    def from_batch(cls, batch: Batch) -> LegacyBatchSummary:
        counts = batch.counts
        return cls(
            batch_id=batch.batch_id,
            total=counts.total,
            pending=counts.pending,
            processing=counts.processing,
            completed=counts.completed,
            error=counts.error,
            progress=counts.progress,
            created_at=timestamp(batch.created_at),
            last_updated=timestamp(batch.last_updated),
        )


class LegacyBatchList(BaseModel):
    batches: list[LegacyBatchSummary]
    total: int
    limit: int
    offset: int


class LegacyRetried(BaseModel):
    success: bool
    count: int
    message: str


class LegacyProcessed(BaseModel):
    success: bool
    processed: int
    message: str


class LegacyWaited(BaseModel):
    success: bool
    job: LegacyJob
    waitTime: int
    timedOut: bool | None = Field(default=None, description="Present (true) only when the wait timed out.")
    message: str | None = Field(default=None, description="Present only when the wait timed out.")

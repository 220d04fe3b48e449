"""Models turned into response bodies: the REST shape (/v1) and the legacy shape (/functions/v1)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from crawljobs.models import Attempt, Batch, BatchCounts, BatchSubmission, Job

# The job fields of the legacy contract, in its order.
LEGACY_JOB_FIELDS = (
    "id",
    "url",
    "status",
    "created_at",
    "updated_at",
    "completed_at",
    "html_length",
    "processing_time_ms",
    "success_method",
)


def timestamp(value: datetime | None) -> str | None:
    """UTC, ISO 8601 with milliseconds and a Z, as JavaScript's Date.toISOString() writes it."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def legacy_job(job: Job) -> dict[str, Any]:
    return {
        "id": str(job.id),
        "url": job.url,
        "status": job.status,
        "created_at": timestamp(job.created_at),
        "updated_at": timestamp(job.updated_at),
        "completed_at": timestamp(job.completed_at),
        "html_length": job.html_length,
        "processing_time_ms": job.processing_time_ms,
        "success_method": job.success_method,
    }


def legacy_counts(counts: BatchCounts) -> dict[str, int]:
    return {
        "pending": counts.pending,
        "processing": counts.processing,
        "completed": counts.completed,
        "error": counts.error,
        "total": counts.total,
    }


def legacy_batch_summary(batch: Batch) -> dict[str, Any]:
    counts = batch.counts
    return {
        "batch_id": batch.batch_id,
        "total": counts.total,
        "pending": counts.pending,
        "processing": counts.processing,
        "completed": counts.completed,
        "error": counts.error,
        "progress": counts.progress,
        "created_at": timestamp(batch.created_at),
        "last_updated": timestamp(batch.last_updated),
    }


def attempt(item: Attempt) -> dict[str, Any]:
    return {
        "attempt": item.attempt,
        "method": item.method,
        "started_at": timestamp(item.started_at),
        "duration_ms": item.duration_ms,
        "http_status": item.http_status,
        "outcome": item.outcome,
        "error": item.error,
        "worker": item.worker,
    }


def job(item: Job, *, with_attempts: bool = True, with_html: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
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
    }
    if with_attempts:
        body["attempts"] = [attempt(a) for a in item.attempts]
    if with_html:
        body["html"] = item.html
    return body


def counts(value: BatchCounts) -> dict[str, int]:
    return {
        "pending": value.pending,
        "processing": value.processing,
        "completed": value.completed,
        "error": value.error,
        "cancelled": value.cancelled,
        "total": value.total,
    }


def batch(item: Batch) -> dict[str, Any]:
    return {
        "batch_id": item.batch_id,
        "created_at": timestamp(item.created_at),
        "last_updated": timestamp(item.last_updated),
        "render": item.render,
        "premium": item.premium,
        "ultra_premium": item.ultra_premium,
        "counts": counts(item.counts),
        "progress": item.counts.progress,
    }


def failures(submission: BatchSubmission) -> list[dict[str, Any]]:
    return [{"index": f.index, "url": f.url, "reason": f.reason} for f in submission.failures]


def batch_submission(submission: BatchSubmission) -> dict[str, Any]:
    return {
        "batch_id": submission.batch_id,
        "total": submission.total,
        "accepted": submission.success_count,
        "rejected": submission.failed_count,
        "failures": failures(submission),
        "job_ids": [str(i) if i is not None else None for i in submission.job_ids],
        "dispatched": submission.dispatched,
    }


def legacy_batch_submission(submission: BatchSubmission) -> dict[str, Any]:
    return {
        "success": True,
        "batchId": submission.batch_id,
        "total": submission.total,
        "successCount": submission.success_count,
        "failedCount": submission.failed_count,
        "failures": failures(submission),
    }


# -- export ------------------------------------------------------------------------------------------

# The columns of a batch's CSV export (metadata only), in order.
EXPORT_CSV_FIELDS = (
    "index",
    "id",
    "url",
    "status",
    "success_method",
    "http_status",
    "html_length",
    "processing_time_ms",
    "final_url",
    "error_message",
    "created_at",
    "completed_at",
    "cost",
    "attempt",
)


def exported_job(index: int, item: Job) -> dict[str, Any]:
    """A job of an NDJSON or JSON export: the REST job body with its HTML and its index in the batch."""
    return {"index": index, **job(item, with_attempts=False, with_html=True)}


def export_csv_row(index: int, item: Job) -> tuple[Any, ...]:
    """A job's row of a CSV export (empty cells for nulls), in the order of EXPORT_CSV_FIELDS."""
    return (
        index,
        str(item.id),
        item.url,
        item.status,
        item.success_method,
        item.http_status,
        item.html_length,
        item.processing_time_ms,
        item.final_url,
        item.error_message,
        timestamp(item.created_at),
        timestamp(item.completed_at),
        item.cost,
        item.attempt,
    )


async def ndjson_lines(pages: AsyncIterator[list[tuple[int, Job]]]) -> AsyncIterator[bytes]:
    """An export as NDJSON: one JSON object per job and line, a page of jobs per chunk."""
    async for page in pages:
        yield "".join(
            json.dumps(exported_job(index, item), ensure_ascii=False, separators=(",", ":")) + "\n"
            for index, item in page
        ).encode()


async def csv_lines(pages: AsyncIterator[list[tuple[int, Job]]]) -> AsyncIterator[bytes]:
    """An export as CSV: a header row, then one row per job, a page of jobs per chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_CSV_FIELDS)
    yield buffer.getvalue().encode()
    async for page in pages:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(export_csv_row(index, item) for index, item in page)
        yield buffer.getvalue().encode()

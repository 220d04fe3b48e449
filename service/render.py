"""What is not a response model: a batch's export streamed as NDJSON or CSV, and the dict renderings that the
waiting routes and the event stream still build (thin wrappers over the models of ``service.schemas``)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

from crawljobs.models import Batch, BatchCounts, Job
from service.schemas import BatchOut, Counts, ExportedJob, JobOut, LegacyBatchSummary, LegacyCounts, LegacyJob
from service.schemas import timestamp as timestamp

# The job fields of the legacy contract, in its order.
LEGACY_JOB_FIELDS = tuple(LegacyJob.model_fields)


def job(item: Job, *, with_attempts: bool = True, with_html: bool = False) -> dict[str, Any]:
    return JobOut.from_job(item, with_attempts=with_attempts, with_html=with_html).model_dump(
        exclude_unset=True
    )


def batch(item: Batch) -> dict[str, Any]:
    return BatchOut.from_batch(item).model_dump()


def counts(value: BatchCounts) -> dict[str, Any]:
    return Counts.from_counts(value).model_dump()


def legacy_job(item: Job) -> dict[str, Any]:
    return LegacyJob.from_job(item).model_dump()


def legacy_counts(value: BatchCounts) -> dict[str, Any]:
    return LegacyCounts.from_counts(value).model_dump()


def legacy_batch_summary(item: Batch) -> dict[str, Any]:
    return LegacyBatchSummary.from_batch(item).model_dump()


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
    """An export as NDJSON: one `ExportedJob` per line, a page of jobs per chunk."""
    async for page in pages:
        yield b"".join(
            ExportedJob.from_exported(index, item).model_dump_json(exclude_unset=True).encode() + b"\n"
            for index, item in page
        )


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

"""/v1/batches: submit many URLs, follow a batch, list batches, retry its failed jobs, cancel, export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import StreamingResponse

from crawljobs.manager import JobManager
from service import render
from service.deps import IdempotencyKeyDep, ManagerDep, TenantDep
from service.metering import MeterDep, counted
from service.routes.common import ERRORS, NOT_FOUND, SUBMIT_ERRORS
from service.schemas import (
    BATCH_ID_PATTERN,
    BatchCreate,
    BatchCreated,
    BatchDetail,
    BatchExportPage,
    BatchList,
    BatchOut,
    CancelResult,
    ExportedJob,
    RetryResult,
)

router = APIRouter(prefix="/v1/batches", tags=["batches"])

BatchIdPath = Annotated[str, Path(pattern=BATCH_ID_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
ExportFormat = Annotated[
    Literal["ndjson", "csv", "json"],
    Query(
        alias="format",
        description="`ndjson` (streamed, with HTML), `csv` (streamed, metadata), `json` (paged).",
    ),
]
ExportLimit = Annotated[
    int, Query(ge=1, le=500, description="`json` only: jobs per page (each with its HTML).")
]
# Jobs per database read while streaming: with HTML (up to CRAWLJOBS_MAX_BODY_BYTES each) and without.
EXPORT_PAGE_WITH_HTML = 100
EXPORT_PAGE_METADATA = 1000


def export_stream(
    manager: JobManager, *, tenant: str, batch_id: str, export_format: str
) -> tuple[AsyncIterator[bytes], str]:
    """A batch's export streamed as ``ndjson`` (every job with its HTML) or ``csv`` (their metadata), and its
    media type: the API's export and the dashboard's download are this one stream."""
    with_html = export_format == "ndjson"
    pages = manager.export_batch(
        tenant=tenant,
        batch_id=batch_id,
        with_html=with_html,
        page_size=EXPORT_PAGE_WITH_HTML if with_html else EXPORT_PAGE_METADATA,
    )
    if with_html:
        return render.ndjson_lines(pages), "application/x-ndjson"
    return render.csv_lines(pages), "text/csv; charset=utf-8"


@router.post(
    "",
    status_code=201,
    response_model=BatchCreated,
    responses={
        200: {
            "model": BatchCreated,
            "description": "A replay (the same Idempotency-Key and body): the original submission.",
        },
        **ERRORS,
        **SUBMIT_ERRORS,
    },
)
async def submit_batch(
    body: BatchCreate,
    manager: ManagerDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKeyDep,
    meter: MeterDep,
    response: Response,
) -> BatchCreated:
    """Submit up to 50,000 URLs in one transaction. Refused URLs are listed by index; the rest are queued."""
    submission = await counted(
        meter,
        "v1",
        "batch",
        manager.submit_batch(
            tenant=tenant,
            urls=body.urls,
            options=body.options(),
            batch_id=body.batch_id,
            idempotency_key=idempotency_key,
        ),
    )
    if submission.replayed:
        response.status_code = 200
    return BatchCreated.from_submission(submission)


@router.get("", response_model=BatchList, responses=ERRORS)
async def list_batches(
    manager: ManagerDep, tenant: TenantDep, limit: Limit = 25, offset: Offset = 0
) -> BatchList:
    """The tenant's batches, newest first, with their counts."""
    batches, total = await manager.list_batches(tenant=tenant, limit=limit, offset=offset)
    return BatchList(
        batches=[BatchOut.from_batch(b) for b in batches], total=total, limit=limit, offset=offset
    )


@router.get(
    "/{batch_id}",
    response_model=BatchDetail,
    response_model_exclude_unset=True,
    responses={**ERRORS, **NOT_FOUND},
)
async def get_batch(
    batch_id: BatchIdPath,
    manager: ManagerDep,
    tenant: TenantDep,
    status: Literal["pending", "processing", "completed", "error", "cancelled"] | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> BatchDetail:
    """A batch's counts and progress, and a page of its jobs in submission order."""
    found = await manager.get_batch(tenant=tenant, batch_id=batch_id)
    jobs = await manager.batch_jobs(
        tenant=tenant, batch_id=batch_id, status=status, limit=limit, offset=offset
    )
    return BatchDetail.from_page(found, jobs, limit=limit, offset=offset)


@router.post("/{batch_id}/retry-failed", response_model=RetryResult, responses={**ERRORS, **NOT_FOUND})
async def retry_failed(batch_id: BatchIdPath, manager: ManagerDep, tenant: TenantDep) -> RetryResult:
    """Put the batch's failed jobs back to pending (their attempts stay recorded) and dispatch them."""
    count = await manager.retry_failed(tenant=tenant, batch_id=batch_id)
    return RetryResult(batch_id=batch_id, retried=count)


@router.post("/{batch_id}/cancel", response_model=CancelResult, responses={**ERRORS, **NOT_FOUND})
async def cancel_batch(batch_id: BatchIdPath, manager: ManagerDep, tenant: TenantDep) -> CancelResult:
    """Cancel the batch's pending and processing jobs at once; its final jobs are left as they are."""
    count = await manager.cancel_batch(tenant=tenant, batch_id=batch_id)
    return CancelResult(batch_id=batch_id, cancelled=count)


@router.get(
    "/{batch_id}/export",
    response_model=BatchExportPage,
    response_model_exclude_unset=True,
    responses={
        200: {"content": {"application/x-ndjson": {}, "text/csv": {}}},
        **ERRORS,
        **NOT_FOUND,
    },
)
async def export_batch(
    batch_id: BatchIdPath,
    manager: ManagerDep,
    tenant: TenantDep,
    response: Response,
    export_format: ExportFormat = "ndjson",
    limit: ExportLimit = 100,
    offset: Offset = 0,
) -> Any:
    """Every job of the batch in submission order, as a download.

    `ndjson`: one job per line with its HTML, streamed. `csv`: the metadata of every job, streamed. `json`: a
    page (`limit`, `offset`) of jobs with their HTML. Each job carries `index`, its place in the submitted list.
    """
    found = await manager.get_batch(tenant=tenant, batch_id=batch_id)  # 404 before any byte is sent
    filename = batch_id.replace(":", "_")
    if export_format == "json":
        jobs = await manager.export_batch_page(tenant=tenant, batch_id=batch_id, limit=limit, offset=offset)
        response.headers["Content-Disposition"] = f'attachment; filename="{filename}-{offset}.json"'
        return BatchExportPage(
            batch_id=batch_id,
            total=found.counts.total,
            limit=limit,
            offset=offset,
            jobs=[ExportedJob.from_exported(index, job) for index, job in jobs],
        )
    stream, media_type = export_stream(manager, tenant=tenant, batch_id=batch_id, export_format=export_format)
    disposition = f'attachment; filename="{filename}.{export_format}"'
    return StreamingResponse(stream, media_type=media_type, headers={"Content-Disposition": disposition})

"""/functions/v1: the routes of the serverless system crawljobs replaces, with its bodies field for field.

Each route is a thin layer over the same manager calls as /v1. See ../shared/LEGACY-SYSTEM.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from crawljobs.processing import process_pending
from service import render
from service.deps import IdempotencyKeyDep, ManagerDep, TenantDep
from service.metering import MeterDep, counted
from service.routes.common import ERRORS, NOT_FOUND, SUBMIT_ERRORS, parse_job_id
from service.schemas import (
    BATCH_ID_PATTERN,
    LegacyBatchList,
    LegacyBatchStatus,
    LegacyBatchSubmitted,
    LegacyJobResult,
    LegacyProcess,
    LegacyProcessed,
    LegacyRetried,
    LegacyRetryFailed,
    LegacySubmitBatch,
    LegacySubmitJob,
    LegacySubmitted,
)

router = APIRouter(prefix="/functions/v1", tags=["legacy"])

# The legacy batch status lists every job of the batch; a batch holds at most this many.
ALL_JOBS = 1_000_000


@router.post("/submit-crawl-job", response_model=LegacySubmitted, responses={**ERRORS, **SUBMIT_ERRORS})
async def submit_crawl_job(
    body: LegacySubmitJob,
    manager: ManagerDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKeyDep,
    meter: MeterDep,
) -> Any:
    """Submit a single URL for processing."""
    submission = await counted(
        meter,
        "legacy",
        "job",
        manager.submit_job(
            tenant=tenant,
            url=body.url,
            render=body.render,
            premium=body.premium,
            ultra_premium=body.ultraPremium,
            obey_robots=body.obeyRobots,
            max_retries=body.maxRetries,
            idempotency_key=idempotency_key,
            callback_url=body.callbackUrl,
            callback_field="callbackUrl",
        ),
    )
    return JSONResponse(
        {
            "success": True,
            "jobId": str(submission.job.id),
            "status": submission.job.status,
            "message": "Job submitted successfully",
        }
    )


@router.post(
    "/submit-crawl-jobs-batch", response_model=LegacyBatchSubmitted, responses={**ERRORS, **SUBMIT_ERRORS}
)
async def submit_crawl_jobs_batch(
    body: LegacySubmitBatch,
    manager: ManagerDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKeyDep,
    meter: MeterDep,
) -> Any:
    """Submit multiple URLs as a batch; refused URLs are listed in `failures` by index."""
    submission = await counted(
        meter,
        "legacy",
        "batch",
        manager.submit_batch(
            tenant=tenant,
            urls=body.urls,
            render=body.render,
            premium=body.premium,
            ultra_premium=body.ultraPremium,
            obey_robots=body.obeyRobots,
            max_retries=body.maxRetries,
            batch_id=body.batchId,
            idempotency_key=idempotency_key,
            callback_url=body.callbackUrl,
            callback_field="callbackUrl",
        ),
    )
    return JSONResponse(render.legacy_batch_submission(submission))


@router.get("/get-crawl-job", response_model=LegacyJobResult, responses={**ERRORS, **NOT_FOUND})
async def get_crawl_job(jobId: Annotated[str, Query()], manager: ManagerDep, tenant: TenantDep) -> Any:
    """Status and result of a single job."""
    job = await manager.get_job(
        tenant=tenant, job_id=parse_job_id(jobId), with_html=True, with_attempts=False
    )
    return JSONResponse({"success": True, "job": render.legacy_job(job), "html": job.html})


@router.get("/get-crawl-jobs-batch", response_model=LegacyBatchStatus, responses={**ERRORS, **NOT_FOUND})
async def get_crawl_jobs_batch(
    batchId: Annotated[str, Query(pattern=BATCH_ID_PATTERN)],
    manager: ManagerDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=ALL_JOBS)] = ALL_JOBS,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Any:
    """Counts, progress and the jobs of one batch (all of them unless `limit`/`offset` page them)."""
    batch = await manager.get_batch(tenant=tenant, batch_id=batchId)
    jobs = await manager.batch_jobs(tenant=tenant, batch_id=batchId, limit=limit, offset=offset)
    return JSONResponse(
        {
            "success": True,
            "counts": render.legacy_counts(batch.counts),
            "progress": batch.counts.progress,
            "urls": [render.legacy_job(j) for j in jobs],
        }
    )


@router.get("/list-crawl-job-batches", response_model=LegacyBatchList, responses=ERRORS)
async def list_crawl_job_batches(
    manager: ManagerDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 25,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Any:
    """All batches with pagination, newest first."""
    batches, total = await manager.list_batches(tenant=tenant, limit=limit, offset=offset)
    return JSONResponse(
        {
            "batches": [render.legacy_batch_summary(b) for b in batches],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )


@router.post("/retry-failed-batch-jobs", response_model=LegacyRetried, responses={**ERRORS, **NOT_FOUND})
async def retry_failed_batch_jobs(body: LegacyRetryFailed, manager: ManagerDep, tenant: TenantDep) -> Any:
    """Reset a batch's failed jobs to pending."""
    count = await manager.retry_failed(tenant=tenant, batch_id=body.batchId)
    return JSONResponse(
        {"success": True, "count": count, "message": f"Reset {count} failed jobs to pending status"}
    )


@router.post("/process-crawl-jobs", response_model=LegacyProcessed, responses=ERRORS)
async def process_crawl_jobs(body: LegacyProcess, manager: ManagerDep, tenant: TenantDep) -> Any:
    """Process up to `batchSize` of the tenant's pending jobs now (a bounded worker run) and report."""
    summary = await process_pending(manager.settings, batch_size=body.batchSize, tenant=tenant)
    return JSONResponse({"success": True, "processed": summary.processed, "message": summary.message})

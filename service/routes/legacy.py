"""/functions/v1: the routes of the serverless system crawljobs replaces, with its bodies field for field.

Each route is a thin layer over the same manager calls as /v1. The legacy field names live here and in
``service.schemas.legacy`` only. See ../shared/LEGACY-SYSTEM.md.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Request

from crawljobs.exceptions import UrlRejected
from service.deps import IdempotencyKeyDep, ManagerDep, TenantDep
from service.metering import MeterDep, counted
from service.routes.common import (
    ERRORS,
    NOT_FOUND,
    RUN_ERRORS,
    SUBMIT_ERRORS,
    ProcessingRunsDep,
    parse_job_id,
    run_worker,
)
from service.schemas import (
    BATCH_ID_PATTERN,
    LegacyBatchList,
    LegacyBatchStatus,
    LegacyBatchSubmitted,
    LegacyBatchSummary,
    LegacyCounts,
    LegacyJob,
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

T = TypeVar("T")


async def legacy_names(submission: Awaitable[T]) -> T:
    """The submission, a refused callback URL named as the legacy body names it (``callbackUrl``)."""
    try:
        return await submission
    except UrlRejected as exc:
        if exc.details.get("field") != "callback_url":
            raise
        message = "callbackUrl" + exc.message.removeprefix("callback_url")
        raise UrlRejected(message, field="callbackUrl") from None


@router.post("/submit-crawl-job", response_model=LegacySubmitted, responses={**ERRORS, **SUBMIT_ERRORS})
async def submit_crawl_job(
    body: LegacySubmitJob,
    manager: ManagerDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKeyDep,
    meter: MeterDep,
) -> LegacySubmitted:
    """Submit a single URL for processing."""
    submitting = manager.submit_job(
        tenant=tenant, url=body.url, options=body.options(), idempotency_key=idempotency_key
    )
    submission = await counted(meter, "legacy", "job", legacy_names(submitting))
    return LegacySubmitted.from_job(submission.job)


@router.post(
    "/submit-crawl-jobs-batch", response_model=LegacyBatchSubmitted, responses={**ERRORS, **SUBMIT_ERRORS}
)
async def submit_crawl_jobs_batch(
    body: LegacySubmitBatch,
    manager: ManagerDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKeyDep,
    meter: MeterDep,
) -> LegacyBatchSubmitted:
    """Submit multiple URLs as a batch; refused URLs are listed in `failures` by index."""
    submitting = manager.submit_batch(
        tenant=tenant,
        urls=body.urls,
        options=body.options(),
        batch_id=body.batchId,
        idempotency_key=idempotency_key,
    )
    submission = await counted(meter, "legacy", "batch", legacy_names(submitting))
    return LegacyBatchSubmitted.from_submission(submission)


@router.get("/get-crawl-job", response_model=LegacyJobResult, responses={**ERRORS, **NOT_FOUND})
async def get_crawl_job(
    jobId: Annotated[str, Query()], manager: ManagerDep, tenant: TenantDep
) -> LegacyJobResult:
    """Status and result of a single job."""
    job = await manager.get_job(
        tenant=tenant, job_id=parse_job_id(jobId), with_html=True, with_attempts=False
    )
    return LegacyJobResult(success=True, job=LegacyJob.from_job(job), html=job.html)


@router.get("/get-crawl-jobs-batch", response_model=LegacyBatchStatus, responses={**ERRORS, **NOT_FOUND})
async def get_crawl_jobs_batch(
    batchId: Annotated[str, Query(pattern=BATCH_ID_PATTERN)],
    manager: ManagerDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=ALL_JOBS)] = ALL_JOBS,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> LegacyBatchStatus:
    """Counts, progress and the jobs of one batch (all of them unless `limit`/`offset` page them)."""
    batch = await manager.get_batch(tenant=tenant, batch_id=batchId)
    jobs = await manager.batch_jobs(tenant=tenant, batch_id=batchId, limit=limit, offset=offset)
    return LegacyBatchStatus(
        success=True,
        counts=LegacyCounts.from_counts(batch.counts),
        progress=batch.counts.progress,
        urls=[LegacyJob.from_job(j) for j in jobs],
    )


@router.get("/list-crawl-job-batches", response_model=LegacyBatchList, responses=ERRORS)
async def list_crawl_job_batches(
    manager: ManagerDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 25,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> LegacyBatchList:
    """All batches with pagination, newest first."""
    batches, total = await manager.list_batches(tenant=tenant, limit=limit, offset=offset)
    return LegacyBatchList(
        batches=[LegacyBatchSummary.from_batch(b) for b in batches], total=total, limit=limit, offset=offset
    )


@router.post("/retry-failed-batch-jobs", response_model=LegacyRetried, responses={**ERRORS, **NOT_FOUND})
async def retry_failed_batch_jobs(
    body: LegacyRetryFailed, manager: ManagerDep, tenant: TenantDep
) -> LegacyRetried:
    """Reset a batch's failed jobs to pending."""
    count = await manager.retry_failed(tenant=tenant, batch_id=body.batchId)
    return LegacyRetried(success=True, count=count, message=f"Reset {count} failed jobs to pending status")


@router.post("/process-crawl-jobs", response_model=LegacyProcessed, responses={**ERRORS, **RUN_ERRORS})
async def process_crawl_jobs(
    body: LegacyProcess, request: Request, tenant: TenantDep, runs: ProcessingRunsDep
) -> LegacyProcessed:
    """Process up to `batchSize` of the tenant's pending jobs now (a bounded worker run) and report.

    A worker run is a whole worker process: a tenant has one at a time and the API process a few
    (CRAWLJOBS_MAX_PROCESSING_RUNS_PER_TENANT, CRAWLJOBS_MAX_PROCESSING_RUNS); beyond that the call is a 429
    with `Retry-After`. A run whose client goes away is stopped.
    """
    summary = await run_worker(request, runs, tenant=tenant, batch_size=body.batchSize)
    return LegacyProcessed(success=True, processed=summary.processed, message=summary.message)

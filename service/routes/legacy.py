"""/functions/v1: the routes of the serverless system crawljobs replaces, with its bodies field for field.

Each route is a thin layer over the same manager calls as /v1. The legacy field names live here and in
``service.schemas.legacy`` only. See ../shared/LEGACY-SYSTEM.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel

from crawljobs.exceptions import UrlRejected
from service.deps import IdempotencyKeyDep, ManagerDep, TenantDep
from service.metering import MeterDep, counted
from service.routes.common import (
    ERRORS,
    NOT_FOUND,
    RUN_ERRORS,
    SUBMIT_ERRORS,
    ProcessingRunsDep,
    legacy_body,
    parse_job_id,
    read_params,
    run_worker,
)
from service.schemas import (
    LegacyBatchList,
    LegacyBatchLookup,
    LegacyBatchPage,
    LegacyBatchStatus,
    LegacyBatchSubmitted,
    LegacyBatchSummary,
    LegacyCounts,
    LegacyJob,
    LegacyJobLookup,
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

T = TypeVar("T")
H = TypeVar("H", bound=Callable[..., Any])


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


def read_route(path: str, model: type[BaseModel], what: str, **route: Any) -> Callable[[H], H]:
    """Register a legacy read for GET and for POST. The old functions took their parameters from the query
    string or the JSON body whatever the method, and a POST is what ``supabase.functions.invoke`` sends by
    default. Documented as GET with the parameters in the query string, and POST with them in a JSON body
    (the query string's may stand in for it; the body's win when both name one)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", []))

    def documented(post: bool) -> dict[str, Any]:
        parameters = [
            {"name": name, "in": "query", "required": not post and name in required, "schema": field}
            for name, field in schema["properties"].items()
        ]
        if not post:
            return {"parameters": parameters}
        body = {
            "required": False,
            "description": f"{what}; the query string may carry them instead (the body's value wins).",
            "content": {"application/json": {"schema": schema}},
        }
        return {"parameters": parameters, "requestBody": body}

    def register(handler: H) -> H:
        for method in ("GET", "POST"):
            router.add_api_route(
                path,
                handler,
                methods=[method],
                name=handler.__name__ if method == "GET" else f"{handler.__name__}_by_post",
                openapi_extra=documented(post=method == "POST"),
                **route,
            )
        return handler

    return register


@read_route(
    "/get-crawl-job",
    LegacyJobLookup,
    "The job's `jobId`",
    response_model=LegacyJobResult,
    responses={**ERRORS, **NOT_FOUND},
)
async def get_crawl_job(request: Request, manager: ManagerDep, tenant: TenantDep) -> LegacyJobResult:
    """Status and result of a single job (`jobId` in the query string or the body)."""
    params = await read_params(request, LegacyJobLookup)
    job = await manager.get_job(
        tenant=tenant, job_id=parse_job_id(params.jobId), with_html=True, with_attempts=False
    )
    return LegacyJobResult(success=True, job=LegacyJob.from_job(job), html=job.html)


@read_route(
    "/get-crawl-jobs-batch",
    LegacyBatchLookup,
    "The batch's `batchId`, and optionally `limit` and `offset`",
    response_model=LegacyBatchStatus,
    responses={**ERRORS, **NOT_FOUND},
)
async def get_crawl_jobs_batch(request: Request, manager: ManagerDep, tenant: TenantDep) -> LegacyBatchStatus:
    """Counts, progress and the jobs of one batch (all of them unless `limit`/`offset` page them)."""
    params = await read_params(request, LegacyBatchLookup)
    batch = await manager.get_batch(tenant=tenant, batch_id=params.batchId)
    jobs = await manager.batch_jobs(
        tenant=tenant, batch_id=params.batchId, limit=params.limit, offset=params.offset
    )
    return LegacyBatchStatus(
        success=True,
        counts=LegacyCounts.from_counts(batch.counts),
        progress=batch.counts.progress,
        urls=[LegacyJob.from_job(j) for j in jobs],
    )


@read_route(
    "/list-crawl-job-batches",
    LegacyBatchPage,
    "`limit` and `offset`",
    response_model=LegacyBatchList,
    responses=ERRORS,
)
async def list_crawl_job_batches(request: Request, manager: ManagerDep, tenant: TenantDep) -> LegacyBatchList:
    """All batches with pagination, newest first."""
    params = await read_params(request, LegacyBatchPage)
    batches, total = await manager.list_batches(tenant=tenant, limit=params.limit, offset=params.offset)
    return LegacyBatchList(
        batches=[LegacyBatchSummary.from_batch(b) for b in batches],
        total=total,
        limit=params.limit,
        offset=params.offset,
    )


RETRY_BODY, RETRY_DOCUMENT = legacy_body(LegacyRetryFailed)


@router.post(
    "/retry-failed-batch-jobs",
    response_model=LegacyRetried,
    responses={**ERRORS, **NOT_FOUND},
    openapi_extra=RETRY_DOCUMENT,
)
async def retry_failed_batch_jobs(
    manager: ManagerDep, tenant: TenantDep, body: Annotated[LegacyRetryFailed, RETRY_BODY]
) -> LegacyRetried:
    """Reset a batch's failed jobs to pending (`batchId` in the body, or in the query string)."""
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

"""/v1/jobs: submit one URL, read a job and its HTML, cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from crawljobs.exceptions import NotFound
from service.crawled import CRAWLED_HTML_HEADERS
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
from service.schemas import JobCreate, JobOut, ProcessRequest, ProcessResult

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    response_model_exclude_unset=True,
    responses={
        200: {
            "model": JobOut,
            "description": "A replay (the same Idempotency-Key and body): the original job.",
        },
        **ERRORS,
        **SUBMIT_ERRORS,
    },
)
async def submit_job(
    body: JobCreate,
    manager: ManagerDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKeyDep,
    meter: MeterDep,
    response: Response,
) -> JobOut:
    """Submit one URL. It is committed, then dispatched ahead of any batch's jobs."""
    submission = await counted(
        meter,
        "v1",
        "job",
        manager.submit_job(
            tenant=tenant, url=body.url, options=body.options(), idempotency_key=idempotency_key
        ),
    )
    if submission.replayed:
        response.status_code = 200
    return JobOut.from_job(submission.job)


@router.post("/process", response_model=ProcessResult, responses={**ERRORS, **RUN_ERRORS})
async def process_jobs(
    body: ProcessRequest, request: Request, tenant: TenantDep, runs: ProcessingRunsDep
) -> ProcessResult:
    """Process up to `batch_size` of the tenant's pending jobs now (a bounded worker run) and report.

    Bounded like `POST /functions/v1/process-crawl-jobs`: a 429 with `Retry-After` beyond the runs allowed.
    """
    summary = await run_worker(request, runs, tenant=tenant, batch_size=body.batch_size)
    return ProcessResult(
        processed=summary.processed,
        completed=summary.completed,
        failed=summary.failed,
        message=summary.message,
    )


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    response_model_exclude_unset=True,
    responses={**ERRORS, **NOT_FOUND},
)
async def cancel_job(job_id: str, manager: ManagerDep, tenant: TenantDep) -> JobOut:
    """Cancel a job: pending or processing, it ends `cancelled` at once (a fetch in flight is not written).

    A job already final (completed, error, cancelled) is left as it is and returned unchanged, so cancelling
    twice is harmless: the answer's `status` says how the job ended.
    """
    found = await manager.cancel_job(tenant=tenant, job_id=parse_job_id(job_id))
    return JobOut.from_job(found)


@router.get(
    "/{job_id}", response_model=JobOut, response_model_exclude_unset=True, responses={**ERRORS, **NOT_FOUND}
)
async def get_job(
    job_id: str,
    manager: ManagerDep,
    tenant: TenantDep,
    include_html: Annotated[bool, Query(description="Include the fetched HTML.")] = False,
) -> JobOut:
    """A job with every fetch attempt, and its HTML if asked."""
    found = await manager.get_job(tenant=tenant, job_id=parse_job_id(job_id), with_html=include_html)
    return JobOut.from_job(found, with_html=include_html)


@router.get(
    "/{job_id}/html",
    response_class=Response,
    responses={200: {"content": {"text/html": {}}}, **ERRORS, **NOT_FOUND},
)
async def get_job_html(job_id: str, manager: ManagerDep, tenant: TenantDep) -> Response:
    """The fetched HTML of a completed job, as it was received.

    Sent as a sandboxed document (`Content-Security-Policy: sandbox; default-src 'none'; img-src data:;
    style-src 'unsafe-inline'`, `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`): opened in a
    browser, a crawled page can run no script, make no request and reach no cookie of this origin.
    """
    found = await manager.get_job(
        tenant=tenant, job_id=parse_job_id(job_id), with_html=True, with_attempts=False
    )
    if found.html is None:
        raise NotFound(f"job {found.id} has no HTML (status {found.status})")
    return Response(
        found.html,
        media_type=found.content_type or "text/html; charset=utf-8",
        headers=CRAWLED_HTML_HEADERS,
    )

"""Waiting for results without polling: a job, a batch, a batch's live counts, and the legacy wait.

Every wait is woken by the job's completion (PostgreSQL LISTEN/NOTIFY through ``crawljobs.hub``), not by a
poll, and is cut to ``CRAWLJOBS_MAX_WAIT_SECONDS``. A wait that runs out answers 200 with the job or batch as
it stands and says so (``timed_out`` / ``timedOut``): a timeout is an answer, not an error.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse

from crawljobs.hub import CompletionHub
from crawljobs.reader import JobReader
from crawljobs.waiting import wait_for_batch, wait_for_job
from service import streams
from service.deps import ManagerDep, TenantDep
from service.routes.common import ERRORS, NOT_FOUND, parse_job_id
from service.schemas import (
    BATCH_ID_PATTERN,
    BatchWaited,
    JobWaited,
    LegacyJob,
    LegacyWaited,
    LegacyWaitForJob,
)
from service.schemas.v1 import batch_fields, job_fields

router = APIRouter(tags=["waiting"])


def get_hub(request: Request) -> CompletionHub:
    hub: CompletionHub = request.app.state.hub
    return hub


def get_job_reader(request: Request) -> JobReader:
    reader: JobReader = request.app.state.job_reader
    return reader


HubDep = Annotated[CompletionHub, Depends(get_hub)]
JobReaderDep = Annotated[JobReader, Depends(get_job_reader)]

BatchIdPath = Annotated[str, Path(pattern=BATCH_ID_PATTERN)]
Timeout = Annotated[
    float,
    Query(
        alias="timeout",
        ge=0,
        description="Seconds to wait at most (cut to CRAWLJOBS_MAX_WAIT_SECONDS); 0 answers at once.",
    ),
]
DEFAULT_TIMEOUT_SECONDS = 30.0


def _cap(manager: ManagerDep, seconds: float) -> float:
    return min(seconds, manager.settings.max_wait_seconds)


@router.get(
    "/v1/jobs/{job_id}/wait",
    response_model=JobWaited,
    response_model_exclude_unset=True,
    responses={**ERRORS, **NOT_FOUND},
)
async def wait_job(
    job_id: str,
    manager: ManagerDep,
    tenant: TenantDep,
    hub: HubDep,
    reader: JobReaderDep,
    wait_seconds: Timeout = DEFAULT_TIMEOUT_SECONDS,
) -> JobWaited:
    """The job once it is final (completed, error, cancelled), or as it stands when `timeout` runs out.

    `timed_out` says which; `waited_ms` is how long the request waited. A job already final answers at once.
    """
    waited = await wait_for_job(
        hub, reader, tenant=tenant, job_id=parse_job_id(job_id), max_seconds=_cap(manager, wait_seconds)
    )
    fields = job_fields(waited.job, with_attempts=True, with_html=False)
    return JobWaited(**fields, timed_out=waited.timed_out, waited_ms=waited.waited_ms)


@router.get("/v1/batches/{batch_id}/wait", response_model=BatchWaited, responses={**ERRORS, **NOT_FOUND})
async def wait_batch(
    batch_id: BatchIdPath,
    manager: ManagerDep,
    tenant: TenantDep,
    hub: HubDep,
    wait_seconds: Timeout = DEFAULT_TIMEOUT_SECONDS,
) -> BatchWaited:
    """The batch's counts once every job is final, or as they stand when `timeout` runs out (`timed_out`)."""
    waited = await wait_for_batch(
        hub, manager, tenant=tenant, batch_id=batch_id, max_seconds=_cap(manager, wait_seconds)
    )
    return BatchWaited(**batch_fields(waited.batch), timed_out=waited.timed_out, waited_ms=waited.waited_ms)


@router.get(
    "/v1/batches/{batch_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **ERRORS, **NOT_FOUND},
)
async def batch_event_stream(
    batch_id: BatchIdPath, manager: ManagerDep, tenant: TenantDep, hub: HubDep
) -> StreamingResponse:
    """Server-sent events of a batch's progress.

    `event: counts` with the counts and progress as JSON at once and whenever they change (at most about ten
    a second), `event: done` with the final counts when every job is final, then the stream ends. A
    `: keep-alive` comment is sent after 15 quiet seconds.
    """
    await manager.get_batch(tenant=tenant, batch_id=batch_id)  # 404 before the stream starts
    return streams.batch_stream(hub, manager, tenant=tenant, batch_id=batch_id)


@router.post(
    "/functions/v1/wait-for-crawl-job",
    response_model=LegacyWaited,
    response_model_exclude_unset=True,
    responses={**ERRORS, **NOT_FOUND},
    tags=["legacy"],
)
async def wait_for_crawl_job(
    body: LegacyWaitForJob, manager: ManagerDep, tenant: TenantDep, hub: HubDep, reader: JobReaderDep
) -> LegacyWaited:
    """Wait until a job is final, woken by its completion (`pollingIntervalMs` is accepted and ignored).

    `maxWaitTimeMs` is cut to CRAWLJOBS_MAX_WAIT_SECONDS. On a timeout the answer is still `success: true`
    with the job as it stands, plus `timedOut: true` and a `message` naming its status.
    """
    limit_ms = min(body.maxWaitTimeMs, manager.settings.max_wait_seconds * 1000)
    waited = await wait_for_job(
        hub,
        reader,
        tenant=tenant,
        job_id=parse_job_id(body.jobId),
        max_seconds=limit_ms / 1000,
        with_attempts=False,
    )
    job = LegacyJob.from_job(waited.job)
    if not waited.timed_out:  # `timedOut` and `message` unset: left out of the answer
        return LegacyWaited(success=True, job=job, waitTime=waited.waited_ms)
    message = f"Timed out after {round(limit_ms)} ms; the job is still {waited.job.status}"
    return LegacyWaited(success=True, job=job, waitTime=waited.waited_ms, timedOut=True, message=message)

"""/v1/batches: submit many URLs, follow a batch, list batches, retry its failed jobs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from service import render
from service.deps import IdempotencyKeyDep, ManagerDep, TenantDep
from service.routes.common import ERRORS, NOT_FOUND, SUBMIT_ERRORS
from service.schemas import BATCH_ID_PATTERN, BatchCreate, BatchCreated, BatchDetail, BatchList, RetryResult

router = APIRouter(prefix="/v1/batches", tags=["batches"])

BatchIdPath = Annotated[str, Path(pattern=BATCH_ID_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


@router.post("", status_code=201, response_model=BatchCreated, responses={**ERRORS, **SUBMIT_ERRORS})
async def submit_batch(
    body: BatchCreate, manager: ManagerDep, tenant: TenantDep, idempotency_key: IdempotencyKeyDep
) -> Any:
    """Submit up to 50,000 URLs in one transaction. Refused URLs are listed by index; the rest are queued."""
    submission = await manager.submit_batch(
        tenant=tenant,
        urls=body.urls,
        render=body.render,
        premium=body.premium,
        ultra_premium=body.ultra_premium,
        obey_robots=body.obey_robots,
        max_retries=body.max_retries,
        batch_id=body.batch_id,
        idempotency_key=idempotency_key,
    )
    return JSONResponse(render.batch_submission(submission), status_code=200 if submission.replayed else 201)


@router.get("", response_model=BatchList, responses=ERRORS)
async def list_batches(manager: ManagerDep, tenant: TenantDep, limit: Limit = 25, offset: Offset = 0) -> Any:
    """The tenant's batches, newest first, with their counts."""
    batches, total = await manager.list_batches(tenant=tenant, limit=limit, offset=offset)
    return JSONResponse(
        {"batches": [render.batch(b) for b in batches], "total": total, "limit": limit, "offset": offset}
    )


@router.get("/{batch_id}", response_model=BatchDetail, responses={**ERRORS, **NOT_FOUND})
async def get_batch(
    batch_id: BatchIdPath,
    manager: ManagerDep,
    tenant: TenantDep,
    status: Literal["pending", "processing", "completed", "error", "cancelled"] | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Any:
    """A batch's counts and progress, and a page of its jobs in submission order."""
    found = await manager.get_batch(tenant=tenant, batch_id=batch_id)
    jobs = await manager.batch_jobs(
        tenant=tenant, batch_id=batch_id, status=status, limit=limit, offset=offset
    )
    body = render.batch(found)
    body.update(jobs=[render.job(j, with_attempts=False) for j in jobs], limit=limit, offset=offset)
    return JSONResponse(body)


@router.post("/{batch_id}/retry-failed", response_model=RetryResult, responses={**ERRORS, **NOT_FOUND})
async def retry_failed(batch_id: BatchIdPath, manager: ManagerDep, tenant: TenantDep) -> Any:
    """Put the batch's failed jobs back to pending (their attempts stay recorded) and dispatch them."""
    count = await manager.retry_failed(tenant=tenant, batch_id=batch_id)
    return JSONResponse({"batch_id": batch_id, "retried": count})

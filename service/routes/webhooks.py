"""/v1/webhooks: the tenant's delivery log and its signing secret."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from service.deps import ManagerDep, TenantDep
from service.routes.common import ERRORS
from service.schemas import BATCH_ID_PATTERN

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _delivery(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "event": row["event"],
        "job_id": str(row["job_id"]) if row["job_id"] is not None else None,
        "batch_id": row["batch_id"],
        "url": row["url"],
        "status": "delivered" if row["delivered_at"] else "failed" if row["gave_up_at"] else "pending",
        "attempts": row["attempts"],
        "last_status": row["last_status"],
        "last_error": row["last_error"],
        "next_attempt_at": None if row["delivered_at"] or row["gave_up_at"] else _iso(row["next_attempt_at"]),
        "delivered_at": _iso(row["delivered_at"]),
        "gave_up_at": _iso(row["gave_up_at"]),
        "created_at": _iso(row["created_at"]),
        "payload": row["payload"],
    }


@router.get("/deliveries", responses=ERRORS)
async def list_deliveries(
    manager: ManagerDep,
    tenant: TenantDep,
    job_id: Annotated[uuid.UUID | None, Query(description="Only this job's deliveries (a job id).")] = None,
    batch_id: Annotated[
        str | None, Query(pattern=BATCH_ID_PATTERN, description="Only this batch's deliveries.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Any:
    """The tenant's webhook deliveries, newest first: each with its attempts, last answer and outcome."""
    rows = await manager.webhook_deliveries(
        tenant=tenant, job_id=job_id, batch_id=batch_id, limit=limit, offset=offset
    )
    return JSONResponse({"deliveries": [_delivery(row) for row in rows], "limit": limit, "offset": offset})


@router.get("/secret", responses=ERRORS)
async def get_secret(manager: ManagerDep, tenant: TenantDep) -> Any:
    """The secret that signs this tenant's webhooks (made on the first call; see Webhooks in the README)."""
    return JSONResponse({"secret": await manager.webhook_secret(tenant=tenant)})

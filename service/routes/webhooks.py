"""/v1/webhooks: the tenant's delivery log and its signing secret."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from service.deps import ManagerDep, TenantDep
from service.routes.common import ERRORS
from service.schemas import BATCH_ID_PATTERN, DeliveryLog, DeliveryOut, WebhookSecret

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


@router.get("/deliveries", response_model=DeliveryLog, responses=ERRORS)
async def list_deliveries(
    manager: ManagerDep,
    tenant: TenantDep,
    job_id: Annotated[uuid.UUID | None, Query(description="Only this job's deliveries (a job id).")] = None,
    batch_id: Annotated[
        str | None, Query(pattern=BATCH_ID_PATTERN, description="Only this batch's deliveries.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> DeliveryLog:
    """The tenant's webhook deliveries, newest first: each with its attempts, last answer and outcome."""
    deliveries = await manager.webhook_deliveries(
        tenant=tenant, job_id=job_id, batch_id=batch_id, limit=limit, offset=offset
    )
    return DeliveryLog(
        deliveries=[DeliveryOut.from_delivery(d) for d in deliveries], limit=limit, offset=offset
    )


@router.get("/secret", response_model=WebhookSecret, responses=ERRORS)
async def get_secret(manager: ManagerDep, tenant: TenantDep) -> WebhookSecret:
    """The secret that signs this tenant's webhooks (made on the first call; see Webhooks in the README)."""
    return WebhookSecret(secret=await manager.webhook_secret(tenant=tenant))

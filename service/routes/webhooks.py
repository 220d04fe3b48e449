"""/v1/webhooks: the tenant's delivery log, redelivery, and its signing secret."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from crawljobs.exceptions import DeliveryNotFound
from service.deps import ManagerDep, TenantDep
from service.routes.common import ERRORS, NOT_FOUND
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


@router.post(
    "/deliveries/{delivery_id}/redeliver", response_model=DeliveryOut, responses={**ERRORS, **NOT_FOUND}
)
async def redeliver(delivery_id: str, manager: ManagerDep, tenant: TenantDep) -> DeliveryOut:
    """Send one of the tenant's deliveries again now, with a fresh series of attempts, whether it was delivered
    (the receiver lost it), given up or is still pending. The answer is the delivery as it now stands."""
    try:
        parsed = uuid.UUID(delivery_id)
    except ValueError:
        raise DeliveryNotFound(f"webhook delivery {delivery_id[:100]!r} not found") from None
    return DeliveryOut.from_delivery(await manager.redeliver(tenant=tenant, delivery_id=parsed))


@router.get("/secret", response_model=WebhookSecret, responses=ERRORS)
async def get_secret(manager: ManagerDep, tenant: TenantDep) -> WebhookSecret:
    """The secret that signs this tenant's webhooks (made on the first call; see Webhooks in the README)."""
    return WebhookSecret(secret=await manager.webhook_secret(tenant=tenant))

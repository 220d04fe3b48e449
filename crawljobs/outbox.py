"""The webhook outbox as the core sees it: tenants' signing secrets, due deliveries and their outcomes.

The rows are written by the store in the same transaction as the state change they report; the sender
(``crawljobs.webhooks``) and the delivery log route read and update them only through this object.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable

from crawljobs import store
from crawljobs.models import Delivery, DueDelivery


def new_webhook_secret() -> str:
    """A tenant's webhook signing secret (256 random bits)."""
    return f"whsec_{secrets.token_hex(32)}"


class WebhookOutbox:
    def __init__(self, pool: store.Pool) -> None:
        self.pool = pool

    async def secret(self, *, tenant: str) -> str:
        """The tenant's webhook signing secret, made on first use."""
        async with self.pool.connection() as conn:
            return await store.tenant_secret(conn, tenant=tenant, new_secret=new_webhook_secret())

    async def secrets(self, tenants: Iterable[str]) -> dict[str, str]:
        """The signing secrets of several tenants, each made on first use."""
        async with self.pool.connection() as conn:
            return {
                tenant: await store.tenant_secret(conn, tenant=tenant, new_secret=new_webhook_secret())
                for tenant in set(tenants)
            }

    async def claim_due(
        self, *, limit: int, lease_seconds: int, busy: Iterable[str] = ()
    ) -> list[DueDelivery]:
        """Up to `limit` due deliveries of tenants not in `busy`, not due again for `lease_seconds` (their
        attempt counted)."""
        async with self.pool.connection() as conn:
            rows = await store.claim_due_deliveries(
                conn, limit=limit, lease_seconds=lease_seconds, busy=sorted(set(busy))
            )
        return [DueDelivery.from_row(row) for row in rows]

    async def unclaim(self, delivery_ids: Iterable[uuid.UUID]) -> None:
        """Claimed deliveries not sent after all: due again at once, their attempt not counted."""
        ids = list(delivery_ids)
        if ids:
            async with self.pool.connection() as conn:
                await store.unclaim_deliveries(conn, ids=ids)

    async def delivered(self, delivery_id: uuid.UUID, *, status: int) -> None:
        async with self.pool.connection() as conn:
            await store.mark_delivered(conn, delivery_id=delivery_id, status=status)

    async def failed(
        self, delivery_id: uuid.UUID, *, status: int | None, error: str, retry_in: float | None
    ) -> None:
        """Record a failed attempt; try again in `retry_in` seconds, or give up when it is None."""
        async with self.pool.connection() as conn:
            await store.mark_delivery_failed(
                conn, delivery_id=delivery_id, status=status, error=error, retry_in=retry_in
            )

    async def redeliver(self, *, tenant: str, delivery_id: uuid.UUID) -> Delivery | None:
        """Send a delivery of `tenant` again, now, with a fresh series of attempts; None if it is not theirs."""
        async with self.pool.connection() as conn:
            row = await store.redeliver_delivery(conn, tenant=tenant, delivery_id=delivery_id)
        return None if row is None else Delivery.from_row(row)

    async def log(
        self, *, tenant: str, job_id: uuid.UUID | None, batch_id: str | None, limit: int, offset: int
    ) -> list[Delivery]:
        """A page of the tenant's webhook delivery log, newest first."""
        async with self.pool.connection() as conn:
            rows = await store.list_deliveries(
                conn, tenant=tenant, job_id=job_id, batch_id=batch_id, limit=limit, offset=offset
            )
        return [Delivery.from_row(row) for row in rows]

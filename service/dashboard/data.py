"""What the dashboard reads, in one place: the manager's calls behind its pages (the counts are kept per batch
and per tenant by the store, so every page costs the same whatever the number of jobs)."""

from __future__ import annotations

from crawljobs.manager import JobManager
from crawljobs.models import Batch, JobsPage, Overview


async def overview(manager: JobManager, *, tenant: str) -> Overview:
    return await manager.overview(tenant=tenant)


async def batches(
    manager: JobManager, *, tenant: str, limit: int, offset: int, search: str | None
) -> tuple[list[Batch], int]:
    return await manager.list_batches(tenant=tenant, limit=limit, offset=offset, search=search)


async def jobs_page(
    manager: JobManager,
    *,
    tenant: str,
    batch_id: str,
    status: str | None,
    search: str | None,
    after: str | None,
    limit: int,
) -> JobsPage:
    return await manager.batch_jobs_page(
        tenant=tenant, batch_id=batch_id, status=status, search=search, after=after, limit=limit
    )

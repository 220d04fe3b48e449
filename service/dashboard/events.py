"""The dashboard's live pages: one server-sent event stream per page, woken by the completion hub
(PostgreSQL LISTEN/NOTIFY, ``crawljobs.hub``), never a poll per row.

- ``/events/batches?id=..`` (the batches page): ``event: counts`` with one batch's counts whenever they change,
  for every batch listed on the page, through ONE subscription to all of them; ``event: done`` once all are
  final.
- ``/events/batches/{id}`` (one batch): the API's own batch stream (``service.streams``).
- ``/events/overview`` (the overview): ``event: overview`` with the jobs by status, the queue depth and the
  number of connected workers whenever they change (read every ``OVERVIEW_SECONDS``: cheap counts).
- ``/events/jobs/{id}`` (one job): ``event: job`` with its status whenever it changes, ``event: done`` once
  it is final (the page then reloads itself to show the result).

A stream outlives the request that checked its session, so it checks again every
``CRAWLJOBS_KEY_RECHECK_SECONDS``: once the session's key is revoked, ``event: error`` ends it, as the API's
streams do.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from crawljobs.exceptions import NotFound
from crawljobs.hub import CompletionHub
from crawljobs.manager import JobManager
from crawljobs.models import Batch
from crawljobs.waiting import BATCH_FALLBACK_SECONDS, batch_done
from service import streams
from service.dashboard.pages import BATCHES_PER_PAGE, _check_batch_id
from service.dashboard.session import Session
from service.dashboard.web import DashboardRoute, ManagerDep, SessionDep
from service.routes.common import parse_job_id

router = APIRouter(include_in_schema=False, route_class=DashboardRoute, prefix="/events")

# The batches page re-reads its rows (up to 25 batches) at most this often, however many notifications arrive.
LIST_REREAD_SECONDS = 0.5

HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"}


def _hub(request: Request) -> CompletionHub:
    hub: CompletionHub = request.app.state.hub
    return hub


def _still_valid(manager: JobManager, session: Session) -> Callable[[], Awaitable[bool]]:
    async def valid() -> bool:
        return await manager.tenant_of_key_hash(session.key_hash) == session.tenant

    return valid


def _event(name: str, body: object) -> str:
    return f"event: {name}\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"


def _counts(batch: Batch) -> dict[str, object]:
    return {"batch_id": batch.batch_id, **json.loads(streams.counts_data(batch))}


@router.get("/batches")
async def batches_events(
    request: Request,
    manager: ManagerDep,
    session: SessionDep,
    ids: Annotated[list[str], Query(alias="id", max_length=BATCHES_PER_PAGE)],
) -> StreamingResponse:
    for batch_id in ids:
        _check_batch_id(batch_id)
    hub = _hub(request)
    valid = _still_valid(manager, session)
    recheck = manager.settings.key_recheck_seconds

    async def read() -> dict[str, Batch]:
        found: dict[str, Batch] = {}
        for batch_id in dict.fromkeys(ids):
            try:
                found[batch_id] = await manager.get_batch(tenant=session.tenant, batch_id=batch_id)
            except NotFound:
                continue  # not the tenant's (or gone): nothing is said of it
        return found

    async def events() -> AsyncIterator[str]:
        with hub.watch_batches(ids) as sub:
            last: dict[str, object] = {}
            checked_at = said_at = time.monotonic()
            while True:
                for batch_id, batch in (await read()).items():
                    counts = _counts(batch)
                    if last.get(batch_id) != counts:
                        yield _event("counts", counts)
                        last[batch_id] = counts
                        said_at = time.monotonic()
                if all(batch_done_counts(c) for c in last.values()) or hub.draining:
                    yield _event("done", {})
                    return
                woken = await sub.wait(min(BATCH_FALLBACK_SECONDS, recheck))
                if time.monotonic() - checked_at >= recheck:
                    if not await valid():
                        yield streams.REVOKED_EVENT
                        return
                    checked_at = time.monotonic()
                if not woken and time.monotonic() - said_at >= streams.KEEPALIVE_SECONDS:
                    yield ": keep-alive\n\n"
                    said_at = time.monotonic()
                await asyncio.sleep(LIST_REREAD_SECONDS)  # many notifications: one re-read

    return StreamingResponse(events(), media_type="text/event-stream", headers=HEADERS)


def batch_done_counts(counts: object) -> bool:
    return isinstance(counts, dict) and counts.get("pending") == 0 and counts.get("processing") == 0


@router.get("/batches/{batch_id}")
async def batch_events(
    request: Request, manager: ManagerDep, session: SessionDep, batch_id: str
) -> StreamingResponse:
    _check_batch_id(batch_id)
    await manager.get_batch(tenant=session.tenant, batch_id=batch_id)  # a 404 page, not a stream
    response = streams.batch_stream(
        _hub(request),
        manager,
        tenant=session.tenant,
        batch_id=batch_id,
        key_valid=_still_valid(manager, session),
        recheck_seconds=manager.settings.key_recheck_seconds,
    )
    response.headers.update(HEADERS)
    return response


@router.get("/jobs/{job_id}")
async def job_events(
    request: Request, manager: ManagerDep, session: SessionDep, job_id: str
) -> StreamingResponse:
    parsed = parse_job_id(job_id)
    reader = request.app.state.job_reader
    await reader.read(tenant=session.tenant, job_id=parsed, with_attempts=False)  # a 404 page, not a stream
    hub = _hub(request)
    valid = _still_valid(manager, session)
    recheck = manager.settings.key_recheck_seconds

    async def events() -> AsyncIterator[str]:
        with hub.watch([parsed]) as sub:
            last = None
            checked_at = time.monotonic()
            while True:
                job = await reader.read(tenant=session.tenant, job_id=parsed, with_attempts=False)
                said = {"status": job.status, "attempt": job.attempt}
                if said != last:
                    yield _event("job", said)
                    last = said
                if job.finished or hub.draining:
                    yield _event("done", said)
                    return
                if not await sub.wait(min(streams.KEEPALIVE_SECONDS, recheck)):
                    yield ": keep-alive\n\n"
                if time.monotonic() - checked_at >= recheck:
                    if not await valid():
                        yield streams.REVOKED_EVENT
                        return
                    checked_at = time.monotonic()

    return StreamingResponse(events(), media_type="text/event-stream", headers=HEADERS)


# The overview's counts are read again this often while its page is open (one cheap read of the counts the
# database keeps, whatever the number of jobs; there is no notification per tenant to wait for).
OVERVIEW_SECONDS = 2.0


@router.get("/overview")
async def overview_events(request: Request, manager: ManagerDep, session: SessionDep) -> StreamingResponse:
    """``event: counts`` with the tenant's jobs by status and the queue depth whenever they change."""
    hub = _hub(request)
    valid = _still_valid(manager, session)
    recheck = manager.settings.key_recheck_seconds

    async def events() -> AsyncIterator[str]:
        last = None
        checked_at = said_at = time.monotonic()
        while not hub.draining:
            found = await manager.overview(tenant=session.tenant)
            said = {
                "counts": found.counts,
                "queue_depth": found.queue_depth,
                "workers": sum(1 for w in found.workers if w.alive),
            }
            if said != last:
                yield _event("overview", said)
                last, said_at = said, time.monotonic()
            elif time.monotonic() - said_at >= streams.KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                said_at = time.monotonic()
            await asyncio.sleep(OVERVIEW_SECONDS)
            if time.monotonic() - checked_at >= recheck:
                if not await valid():
                    yield streams.REVOKED_EVENT
                    return
                checked_at = time.monotonic()

    return StreamingResponse(events(), media_type="text/event-stream", headers=HEADERS)


__all__ = ["batch_done", "router"]

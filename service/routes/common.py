"""What the route modules share: documented error responses, id parsing, and the worker runs on demand."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from crawljobs.exceptions import JobNotFound
from crawljobs.processing import ProcessingFailed, ProcessingRuns, ProcessSummary, process_pending
from service.schemas import ErrorOut

T = TypeVar("T")

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing or invalid API key."},
    422: {"model": ErrorOut, "description": "Invalid input; `details` names the fields."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such job or batch."}
}
RUN_ERRORS: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorOut,
        "description": "Too many worker runs are going, of this tenant or of this API process; `Retry-After` "
        "says when to try again.",
        "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    },
    503: {"model": ErrorOut, "description": "The worker run did not finish."},
}
SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "The batch id or Idempotency-Key is taken."},
    413: {"model": ErrorOut, "description": "The body or the batch is over the limit."},
}


def parse_job_id(value: str) -> uuid.UUID:
    """A job id from a path or query; anything that is not a UUID names no job (404)."""
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        raise JobNotFound(f"job {value[:100]!r} not found") from None


# How often a request running a worker looks whether its client is still there.
DISCONNECT_CHECK_SECONDS = 1.0


async def watched(work: Awaitable[T], *, every: float, check: Callable[[], Awaitable[None]]) -> T:
    """The result of ``work``, with ``check`` awaited every ``every`` seconds while it runs. When ``check``
    raises, ``work`` is cancelled and awaited to its end, and the error goes on."""
    task = asyncio.ensure_future(work)
    try:
        while not (await asyncio.wait({task}, timeout=every))[0]:
            await check()
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})


def get_processing_runs(request: Request) -> ProcessingRuns:
    """The app's bound on worker runs, made on first use (one per app, so one per API process)."""
    state = request.app.state
    runs: ProcessingRuns | None = getattr(state, "processing_runs", None)
    if runs is None:
        runs = state.processing_runs = ProcessingRuns.from_settings(state.settings)
    return runs


ProcessingRunsDep = Annotated[ProcessingRuns, Depends(get_processing_runs)]


async def run_worker(
    request: Request, runs: ProcessingRuns, *, tenant: str, batch_size: int
) -> ProcessSummary:
    """A worker run on ``tenant``'s pending jobs, within the bound of ``runs`` (ProcessingBusy beyond it),
    stopped if the client goes away: nobody would read its answer, and its slot is free again at once
    (``process_pending`` stops its child when it is cancelled)."""

    async def client_still_there() -> None:
        if await request.is_disconnected():
            raise ProcessingFailed("the client went away; the worker run was stopped")

    with runs.slot(tenant):
        run = process_pending(request.app.state.settings, batch_size=batch_size, tenant=tenant)
        return await watched(run, every=DISCONNECT_CHECK_SECONDS, check=client_still_there)

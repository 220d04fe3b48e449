"""Server-sent events of a batch: its progress (``crawljobs.waiting.batch_progress``) framed for the wire."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from fastapi.responses import StreamingResponse

from crawljobs.hub import CompletionHub
from crawljobs.manager import JobManager
from crawljobs.models import Batch
from crawljobs.waiting import BatchProgress, Quiet, batch_progress
from service import render
from service.errors import error_body

# A comment line on an idle event stream, so proxies and clients keep it open.
KEEPALIVE_SECONDS = 15.0

# The last event of a stream whose API key was revoked while it ran.
REVOKED_EVENT = "event: error\ndata: {}\n\n".format(
    json.dumps(error_body("unauthorized", "the API key was revoked; the stream ends"), separators=(",", ":"))
)


def batch_stream(
    hub: CompletionHub,
    manager: JobManager,
    *,
    tenant: str,
    batch_id: str,
    key_valid: Callable[[], Awaitable[bool]],
    recheck_seconds: float,
) -> StreamingResponse:
    """``event: counts`` now and on every change, ``event: done`` when every job is final (then the stream
    ends), and a ``: keep-alive`` comment after every quiet ``KEEPALIVE_SECONDS``. Every
    ``recheck_seconds`` it asks ``key_valid`` whether the request's key still holds; once it does not, the
    stream sends ``event: error`` and ends.

    Check that the batch exists first (``manager.get_batch``): an unknown batch is a 404, not a stream.
    """
    # The progress says something at least every recheck, so that the key is checked on time in quiet streams.
    quiet = min(KEEPALIVE_SECONDS, recheck_seconds)
    progress = batch_progress(hub, manager, tenant=tenant, batch_id=batch_id, quiet_seconds=quiet)
    return StreamingResponse(
        _events(progress, key_valid, recheck_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def counts_data(batch: Batch) -> str:
    """A batch's counts and progress, as the data line of an event."""
    body = {**render.counts(batch.counts), "progress": batch.counts.progress}
    return json.dumps(body, separators=(",", ":"))


async def _events(
    progress: AsyncGenerator[BatchProgress | Quiet],
    key_valid: Callable[[], Awaitable[bool]],
    recheck_seconds: float,
) -> AsyncIterator[str]:
    checked_at = said_at = time.monotonic()  # the key was checked when the request came in
    async with contextlib.aclosing(progress):  # a client gone: the progress lets go of its subscription now
        async for step in progress:
            if time.monotonic() - checked_at >= recheck_seconds:
                if not await key_valid():
                    yield REVOKED_EVENT  # and nothing of the batch after it
                    return
                checked_at = time.monotonic()
            if not isinstance(step, Quiet):
                yield f"event: {'done' if step.final else 'counts'}\ndata: {counts_data(step.batch)}\n\n"
                said_at = time.monotonic()
            elif time.monotonic() - said_at >= KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                said_at = time.monotonic()

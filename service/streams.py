"""Server-sent events of a batch: its progress (``crawljobs.waiting.batch_progress``) framed for the wire."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi.responses import StreamingResponse

from crawljobs.hub import CompletionHub
from crawljobs.manager import JobManager
from crawljobs.models import Batch
from crawljobs.waiting import BatchProgress, Quiet, batch_progress
from service import render

# A comment line on an idle event stream, so proxies and clients keep it open.
KEEPALIVE_SECONDS = 15.0


def batch_stream(hub: CompletionHub, manager: JobManager, *, tenant: str, batch_id: str) -> StreamingResponse:
    """``event: counts`` now and on every change, ``event: done`` when every job is final (then the stream
    ends), and a ``: keep-alive`` comment after every quiet ``KEEPALIVE_SECONDS``.

    Check that the batch exists first (``manager.get_batch``): an unknown batch is a 404, not a stream.
    """
    progress = batch_progress(hub, manager, tenant=tenant, batch_id=batch_id, quiet_seconds=KEEPALIVE_SECONDS)
    return StreamingResponse(
        _events(progress),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def counts_data(batch: Batch) -> str:
    """A batch's counts and progress, as the data line of an event."""
    body = {**render.counts(batch.counts), "progress": batch.counts.progress}
    return json.dumps(body, separators=(",", ":"))


async def _events(progress: AsyncGenerator[BatchProgress | Quiet]) -> AsyncIterator[str]:
    async with contextlib.aclosing(progress):  # a client gone: the progress lets go of its subscription now
        async for step in progress:
            if isinstance(step, Quiet):
                yield ": keep-alive\n\n"
            else:
                yield f"event: {'done' if step.final else 'counts'}\ndata: {counts_data(step.batch)}\n\n"

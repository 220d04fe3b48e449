"""Waiting for a job or a batch, and following a batch's progress: the waits, woken by ``crawljobs.hub``.

A wait registers with the hub first, then reads (``crawljobs.reader`` for jobs, the manager for batches), then
waits, and re-reads on every wake, until its job or batch is final or its time is up; it answers with the
model as it stands either way, and says which. While the hub drains (the server is stopping) a wait answers
at once. Batch waits and progress also re-read every ``BATCH_FALLBACK_SECONDS`` without a notification: a
writer that sends no batch marks (an older worker in a rolling upgrade) delays their news by that much at
most, never until the wait's end. How the answers are put on the wire is the web layer's (``service``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from crawljobs.hub import CompletionHub
from crawljobs.manager import JobManager
from crawljobs.models import Batch, Job
from crawljobs.reader import JobReader

# A batch re-reads its counts at most this often, however many notifications arrive (~10/s).
BATCH_REREAD_SECONDS = 0.1
# A batch wait or progress re-reads at least this often, notified or not.
BATCH_FALLBACK_SECONDS = 5.0


@dataclass(frozen=True)
class JobWait:
    job: Job
    timed_out: bool
    waited_ms: int


@dataclass(frozen=True)
class BatchWait:
    batch: Batch
    timed_out: bool
    waited_ms: int


@dataclass(frozen=True)
class BatchProgress:
    """A batch as it stands: first at once, then on every change of its counts, and once more ``final``
    when every job is final (the last event)."""

    batch: Batch
    final: bool = False


@dataclass(frozen=True)
class Quiet:
    """Nothing was said of the batch for the ``quiet_seconds`` of `batch_progress`."""


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def batch_done(batch: Batch) -> bool:
    """Every job of the batch is final (completed, error or cancelled)."""
    return batch.counts.pending == 0 and batch.counts.processing == 0


async def wait_for_job(
    hub: CompletionHub,
    reader: JobReader,
    *,
    tenant: str,
    job_id: uuid.UUID,
    max_seconds: float,
    with_attempts: bool = True,
) -> JobWait:
    """The job once it is final, or as it stands after ``max_seconds``. Raises JobNotFound at once."""
    started = time.monotonic()
    deadline = started + max_seconds
    with hub.watch([job_id]) as sub:  # registered before the first read: no completion slips between
        while True:
            job = await reader.read(tenant=tenant, job_id=job_id, with_attempts=with_attempts)
            if job.finished:
                return JobWait(job, timed_out=False, waited_ms=_elapsed_ms(started))
            remaining = deadline - time.monotonic()
            if remaining <= 0 or hub.draining:
                return JobWait(job, timed_out=True, waited_ms=_elapsed_ms(started))
            if not await sub.wait(remaining):
                job = await reader.read(tenant=tenant, job_id=job_id, with_attempts=with_attempts)
                return JobWait(job, timed_out=not job.finished, waited_ms=_elapsed_ms(started))


async def wait_for_batch(
    hub: CompletionHub, manager: JobManager, *, tenant: str, batch_id: str, max_seconds: float
) -> BatchWait:
    """The batch once every job is final, or as it stands after ``max_seconds``. Raises BatchNotFound at once."""
    started = time.monotonic()
    deadline = started + max_seconds
    with hub.watch_batch(batch_id) as sub:
        while True:
            read_at = time.monotonic()
            batch = await manager.get_batch(tenant=tenant, batch_id=batch_id)
            if batch_done(batch):
                return BatchWait(batch, timed_out=False, waited_ms=_elapsed_ms(started))
            remaining = deadline - time.monotonic()
            if remaining <= 0 or hub.draining:
                return BatchWait(batch, timed_out=True, waited_ms=_elapsed_ms(started))
            if (
                not await sub.wait(min(remaining, BATCH_FALLBACK_SECONDS))
                and remaining <= BATCH_FALLBACK_SECONDS
            ):
                batch = await manager.get_batch(tenant=tenant, batch_id=batch_id)
                return BatchWait(batch, timed_out=not batch_done(batch), waited_ms=_elapsed_ms(started))
            # Debounce: a batch being finished sends many notifications; re-read at most ~10 times a second.
            pause = min(read_at + BATCH_REREAD_SECONDS, deadline) - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)


async def batch_progress(
    hub: CompletionHub, manager: JobManager, *, tenant: str, batch_id: str, quiet_seconds: float
) -> AsyncGenerator[BatchProgress | Quiet]:
    """A batch's progress: the batch now and on every change of its counts (at most ~10/s), the batch
    ``final`` at the end, and `Quiet` after every ``quiet_seconds`` with nothing said. Ends without ``final``
    when the hub drains (the server is stopping: the client asks the next one).

    Raises BatchNotFound on its first step: check that the batch exists before promising a stream of it.
    """
    with hub.watch_batch(batch_id) as sub:  # subscribed before the first read: a change after it wakes us
        batch = await manager.get_batch(tenant=tenant, batch_id=batch_id)
        read_at = said_at = time.monotonic()
        yield BatchProgress(batch)
        last = batch.counts
        while not batch_done(batch) and not hub.draining:
            now = time.monotonic()
            woken = await sub.wait(
                max(0.0, min(said_at + quiet_seconds - now, read_at + BATCH_FALLBACK_SECONDS - now))
            )
            if time.monotonic() - said_at >= quiet_seconds:
                yield Quiet()
                said_at = time.monotonic()
            if not woken and time.monotonic() - read_at < BATCH_FALLBACK_SECONDS:
                continue  # only the quiet was due
            pause = read_at + BATCH_REREAD_SECONDS - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            batch = await manager.get_batch(tenant=tenant, batch_id=batch_id)
            read_at = time.monotonic()
            if dataclasses.replace(batch.counts, last_updated=None) != dataclasses.replace(
                last, last_updated=None
            ):
                yield BatchProgress(batch)
                last, said_at = batch.counts, time.monotonic()
        if batch_done(batch):
            yield BatchProgress(batch, final=True)

"""Waiting for jobs without polling: one LISTEN per API process, fanned out in memory to every waiter.

The worker's pipeline (``store.finish_jobs``), cancels, retries and the sweeper send
``NOTIFY crawljobs_jobs, '<id>,<id>,...'`` once per committed write, and a payload of batch marks
(``batch:<batch_id>``, see ``store.notify_payloads``) for the batches those jobs belong to. A
:class:`CompletionHub` holds ONE dedicated connection doing ``LISTEN`` and wakes the waiters of the ids and
batches it hears: a job wait wakes for its job, a batch wait or event stream for its batch only. Waiters do not
hold a connection while they wait: they take one from the shared pool only for their short re-reads, so a
thousand waiters cost a thousand asyncio events, not a thousand connections.

A notification is only a hint to re-read: a waiter registers first, then reads its row, then waits, and
re-reads on every wake (a completion between the read and the wait is not missed: the event stays set). When
the listening connection drops, the hub reconnects with backoff and then wakes every waiter, so whatever was
notified while it was deaf is picked up by the re-read. Batch waits and streams also re-read every
``BATCH_FALLBACK_SECONDS`` without a notification: a writer that sends no batch marks (an older worker in a
rolling upgrade) delays their news by that much at most, never until the wait's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from crawljobs import store
from crawljobs.exceptions import JobNotFound
from crawljobs.manager import JobManager
from crawljobs.models import Attempt, Batch, Job
from crawljobs.queries import query
from crawljobs.store import BATCH_MARK, NOTIFY_CHANNEL
from service import render

logger = logging.getLogger(__name__)

# The listening connection: reconnect delays (doubling), and how often a quiet connection is checked.
RECONNECT_MIN_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 5.0
HEALTH_CHECK_SECONDS = 30.0
# A batch re-reads its counts at most this often, however many notifications arrive (~10/s).
BATCH_REREAD_SECONDS = 0.1
# A batch wait or event stream re-reads at least this often, notified or not.
BATCH_FALLBACK_SECONDS = 5.0
# A comment line on an idle event stream, so proxies and clients keep it open.
KEEPALIVE_SECONDS = 15.0
# Job re-reads coalesced into one query: at most this many ids per query.
READ_BATCH = 500


class Subscription:
    """A waiter's wake-up flag. Set by the hub; ``wait`` clears it after waking, before the caller re-reads."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a wake; True when woken (a wake before the call counts)."""
        if not self._event.is_set():
            try:
                await asyncio.wait_for(self._event.wait(), max(seconds, 0))
            except TimeoutError:
                return False
        self._event.clear()
        return True


class CompletionHub:
    """One LISTEN connection per process, its notifications fanned out to subscriptions by job or batch."""

    def __init__(
        self,
        database_url: str,
        *,
        reconnect_min: float = RECONNECT_MIN_SECONDS,
        reconnect_max: float = RECONNECT_MAX_SECONDS,
        health_check: float = HEALTH_CHECK_SECONDS,
    ) -> None:
        self.database_url = database_url
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.health_check = health_check
        # A job id, or a batch mark ("batch:<batch_id>") -> the subscriptions woken by it.
        self._by_key: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[object] | None = None
        self.listening = asyncio.Event()
        self.connects = 0  # how many times LISTEN was (re)established, for tests and logs
        self.draining = False  # the server is stopping: waits answer at once, streams end (drain())

    # -- subscriptions ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def watch(self, job_ids: Iterable[uuid.UUID | str]) -> Iterator[Subscription]:
        """A subscription woken when any of ``job_ids`` is notified (or on a reconnect), for the block."""
        with self._watch([str(job_id) for job_id in job_ids]) as sub:
            yield sub

    @contextlib.contextmanager
    def watch_batch(self, batch_id: str) -> Iterator[Subscription]:
        """A subscription woken when a job of the batch changes (or on a reconnect), for the block. Batch ids
        are per tenant: another tenant's batch of the same name wakes it too, and its re-read finds nothing new."""
        with self._watch([BATCH_MARK + batch_id]) as sub:
            yield sub

    @contextlib.contextmanager
    def _watch(self, keys: list[str]) -> Iterator[Subscription]:
        sub = Subscription()
        for key in keys:
            self._by_key.setdefault(key, set()).add(sub)
        try:
            yield sub
        finally:
            for key in keys:
                subs = self._by_key.get(key)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._by_key[key]

    @property
    def waiters(self) -> int:
        """How many subscriptions are registered (a waiter watching several ids counts once per id)."""
        return sum(len(s) for s in self._by_key.values())

    def dispatch(self, payload: str) -> None:
        """Wake the subscribers of the ids and batch marks in a notification's payload."""
        for key in payload.split(","):
            for sub in self._by_key.get(key.strip(), ()):
                sub.wake()

    def wake_all(self) -> None:
        for subs in self._by_key.values():
            for sub in subs:
                sub.wake()

    def drain(self) -> None:
        """The server is stopping: every wait answers now with its job or batch as it stands (``timed_out``),
        every event stream ends without ``done``, and a wait that starts now does not wait. Their clients ask
        again, of the next process; the server does not stay up for as long as they would have waited."""
        self.draining = True
        self.wake_all()

    # -- the listening connection ----------------------------------------------------------------

    async def start(self) -> None:
        """Start listening in the background (the app starts even while the database is unreachable)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="completion-hub")
            _HUBS.add(self)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.listening.clear()

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection, while there is one."""
        return self._conn.info.backend_pid if self._conn is not None and not self._conn.closed else None

    async def _run(self) -> None:
        delay = self.reconnect_min
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
                    self._conn = conn
                    await conn.execute(
                        sql.SQL(query("listen_jobs")).format(channel=sql.Identifier(NOTIFY_CHANNEL))
                    )
                    self.connects += 1
                    self.listening.set()
                    logger.info("listening on %s", NOTIFY_CHANNEL, extra={"action": "listen"})
                    # Whatever was notified while no LISTEN was active is found by the waiters' re-reads.
                    self.wake_all()
                    delay = self.reconnect_min
                    await self._listen(conn)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                logger.warning(
                    "the LISTEN connection failed, reconnecting in %.1f s: %s",
                    delay,
                    exc,
                    extra={"action": "listen_failed"},
                )
            finally:
                self._conn = None
                self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

    async def _listen(self, conn: psycopg.AsyncConnection[object]) -> None:
        while True:
            async for notify in conn.notifies(timeout=self.health_check):
                self.dispatch(notify.payload)
            await conn.execute("SELECT 1")  # a quiet connection may be a dead one


class JobReader:
    """The waiters' re-reads, coalesced: whoever asks while a read is being prepared or made joins the next one.

    One NOTIFY can wake a thousand waiters at once; each re-reading on its own would queue a thousand
    checkouts of the shared pool (two queries each with the attempts). Here they become one query per
    ``batch_size`` ids (and one for the attempts), on one connection.
    """

    def __init__(self, pool: AsyncConnectionPool[Any], *, batch_size: int = READ_BATCH) -> None:
        self.pool = pool
        self.batch_size = batch_size
        # job id -> (attempts wanted, the futures of the waiters asking)
        self._queue: dict[uuid.UUID, tuple[bool, list[asyncio.Future[tuple[str, Job] | None]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.queries = 0  # read rounds made, for tests

    async def read(self, *, tenant: str, job_id: uuid.UUID, with_attempts: bool) -> Job:
        """The job as it is now; JobNotFound when it does not exist or is another tenant's."""
        future: asyncio.Future[tuple[str, Job] | None] = asyncio.get_running_loop().create_future()
        wanted, futures = self._queue.get(job_id, (False, []))
        futures.append(future)
        self._queue[job_id] = (wanted or with_attempts, futures)
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="job-reader")
        found = await future
        if found is None or found[0] != tenant:
            raise JobNotFound(f"job {job_id} not found")
        return found[1]

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # the other waiters woken by the same notification ask meanwhile
            while self._queue:
                ids = list(itertools.islice(self._queue, self.batch_size))
                batch = {job_id: self._queue.pop(job_id) for job_id in ids}
                try:
                    results = await self._fetch(batch)
                except Exception as exc:  # the waiters raise it (a 503 for a database error)
                    for _wanted, futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for job_id, (_wanted, futures) in batch.items():
                    for future in futures:
                        if not future.done():
                            future.set_result(results.get(job_id))
        finally:
            self._task = None

    async def _fetch(
        self, batch: dict[uuid.UUID, tuple[bool, list[asyncio.Future[tuple[str, Job] | None]]]]
    ) -> dict[uuid.UUID, tuple[str, Job]]:
        self.queries += 1
        with_attempts = [job_id for job_id, (wanted, _f) in batch.items() if wanted]
        async with self.pool.connection() as conn:
            rows = await store.get_jobs_meta(conn, ids=list(batch))
            attempt_rows = await store.list_attempts_of_jobs(conn, ids=with_attempts) if with_attempts else []
        attempts: dict[uuid.UUID, list[Attempt]] = {}
        for row in attempt_rows:
            attempts.setdefault(row["job_id"], []).append(Attempt.from_row(row))
        return {
            row["id"]: (row["tenant"], Job.from_row(row, tuple(attempts.get(row["id"], ())))) for row in rows
        }


# The hubs of this process: a stopping server drains them all (``service.server.ApiServer``).
_HUBS: weakref.WeakSet[CompletionHub] = weakref.WeakSet()


def drain_all() -> None:
    """Drain every hub of this process (see `CompletionHub.drain`)."""
    for hub in list(_HUBS):
        hub.drain()


def get_hub(request: Request) -> CompletionHub:
    hub: CompletionHub = request.app.state.hub
    return hub


HubDep = Annotated[CompletionHub, Depends(get_hub)]


def get_job_reader(request: Request) -> JobReader:
    reader: JobReader = request.app.state.job_reader
    return reader


JobReaderDep = Annotated[JobReader, Depends(get_job_reader)]


# -- waits -------------------------------------------------------------------------------------------


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


def counts_data(batch: Batch) -> str:
    """A batch's counts and progress, as the data line of an event."""
    body = {**render.counts(batch.counts), "progress": batch.counts.progress}
    return json.dumps(body, separators=(",", ":"))


async def batch_events(
    hub: CompletionHub, manager: JobManager, *, tenant: str, batch_id: str
) -> AsyncIterator[str]:
    """Server-sent events of a batch: ``counts`` now and on every change (at most ~10/s), ``done`` at the end,
    and a ``: keep-alive`` comment after every quiet ``KEEPALIVE_SECONDS``.

    Check that the batch exists before streaming (``manager.get_batch``): an unknown batch is a 404, not a
    stream.
    """
    with hub.watch_batch(batch_id) as sub:  # subscribed before the first read: a change after it wakes us
        batch = await manager.get_batch(tenant=tenant, batch_id=batch_id)
        read_at = sent_at = time.monotonic()
        yield f"event: counts\ndata: {counts_data(batch)}\n\n"
        last = batch.counts
        while not batch_done(batch) and not hub.draining:
            now = time.monotonic()
            woken = await sub.wait(
                max(0.0, min(sent_at + KEEPALIVE_SECONDS - now, read_at + BATCH_FALLBACK_SECONDS - now))
            )
            if time.monotonic() - sent_at >= KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                sent_at = time.monotonic()
            if not woken and time.monotonic() - read_at < BATCH_FALLBACK_SECONDS:
                continue  # only the keep-alive was due
            pause = read_at + BATCH_REREAD_SECONDS - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            batch = await manager.get_batch(tenant=tenant, batch_id=batch_id)
            read_at = time.monotonic()
            if dataclasses.replace(batch.counts, last_updated=None) != dataclasses.replace(
                last, last_updated=None
            ):
                yield f"event: counts\ndata: {counts_data(batch)}\n\n"
                last, sent_at = batch.counts, time.monotonic()
        if batch_done(batch):  # else the server is stopping: the client connects again, to the next one
            yield f"event: done\ndata: {counts_data(batch)}\n\n"

"""Waiting for jobs without polling: one LISTEN per API process, fanned out in memory to every waiter.

The worker's pipeline (``store.finish_jobs``), cancels, retries and the sweeper NOTIFY the ids of the jobs they
changed once per committed write, and a payload of batch marks (``batch:<batch_id>``, see
``store.notify_payloads``) for the batches those jobs belong to. A :class:`CompletionHub` holds ONE dedicated
connection doing ``LISTEN`` (``crawljobs.store.listen``) and wakes the waiters of the ids and batches it hears: a
job wait wakes for its job, a batch wait or event stream for its batch only. Waiters do not hold a connection
while they wait: they take one from the shared pool only for their short re-reads (``crawljobs.reader``), so
a thousand waiters cost a thousand asyncio events, not a thousand connections.

A notification is only a hint to re-read: a waiter registers first, then reads its row, then waits, and
re-reads on every wake (a completion between the read and the wait is not missed: the event stays set). When
the listening connection drops, the hub reconnects with backoff and then wakes every waiter, so whatever was
notified while it was deaf is picked up by the re-read. The waits themselves are ``crawljobs.waiting``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Iterator

from crawljobs.exceptions import DatabaseUnavailable
from crawljobs.store import BATCH_MARK, NOTIFY_CHANNEL
from crawljobs.store.listen import JobListener, listen_jobs

logger = logging.getLogger(__name__)

# The listening connection: reconnect delays (doubling), and how often a quiet connection is checked.
RECONNECT_MIN_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 5.0
HEALTH_CHECK_SECONDS = 30.0


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
    """One LISTEN connection per process, its notifications fanned out to subscriptions by job or batch.

    Made with the app, listening between ``start`` and ``stop`` (the app's lifespan); ``drain`` is for the
    server that stops the app (``service.server``).
    """

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
        self._listener: JobListener | None = None
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
    def watch_batches(self, batch_ids: Iterable[str]) -> Iterator[Subscription]:
        """One subscription woken when a job of any of the batches changes (the dashboard's list of batches:
        one stream for the page, not one per row)."""
        with self._watch([BATCH_MARK + batch_id for batch_id in batch_ids]) as sub:
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
        return self._listener.backend_pid if self._listener is not None else None

    async def _run(self) -> None:
        delay = self.reconnect_min
        while True:
            try:
                async with listen_jobs(self.database_url) as listener:
                    self._listener = listener
                    self.connects += 1
                    self.listening.set()
                    logger.info("listening on %s", NOTIFY_CHANNEL, extra={"action": "listen"})
                    # Whatever was notified while no LISTEN was active is found by the waiters' re-reads.
                    self.wake_all()
                    delay = self.reconnect_min
                    async for payload in listener.payloads(health_check=self.health_check):
                        self.dispatch(payload)
            except DatabaseUnavailable as exc:
                logger.warning(
                    "the LISTEN connection failed, reconnecting in %.1f s: %s",
                    delay,
                    exc,
                    extra={"action": "listen_failed"},
                )
            finally:
                self._listener = None
                self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

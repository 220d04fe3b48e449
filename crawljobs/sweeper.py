"""The sweeper: the old cron, minus the minute.

Three loops, each on its own clock, so that none waits for another:

- the **liveness check**, every ``CRAWLJOBS_WORKER_CHECK_SECONDS``: the jobs of workers whose process or
  connection died (their liveness lock is gone: ``crawljobs.lifecycle``) back to pending, at the head of the
  queue;
- the **sweep**, every ``CRAWLJOBS_SWEEP_INTERVAL_SECONDS``: expired leases back to pending (or to ``error``,
  "worker lost", once a job has lost its worker more than ``CRAWLJOBS_MAX_LOST_LEASES`` times), pending jobs
  that were never dispatched dispatched (Redis was down, or an API process died after commit), pending jobs
  dispatched long ago dispatched again when Redis holds fewer messages than there are such jobs (the messages
  were lost: FLUSHALL, a Redis restart without persistence), and the HTML of jobs finished longer ago than
  ``CRAWLJOBS_RESULT_TTL`` dropped (their metadata stays);
- the **webhook sender** (``crawljobs.webhooks``): due deliveries, each in a task of its own with a deadline.

Each step claims its rows with ``FOR UPDATE SKIP LOCKED``, so any number of sweepers can run at once.

After each liveness pass that reached the database, the sweeper touches ``CRAWLJOBS_DATA_DIR/sweeper-heartbeat``
(when that folder exists): ``crawljobs health sweeper``, a container's health check, reads its age.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from crawljobs.config import Settings
from crawljobs.lifecycle import Reclaimed
from crawljobs.manager import JobManager
from crawljobs.queue import redis_client
from crawljobs.store.pool import open_pool
from crawljobs.webhooks import WebhookSender

logger = logging.getLogger(__name__)

# Retention purges this many jobs per statement, and at most this many statements per sweep: a large backlog
# (a first deployment, a TTL made shorter) is worked off over several sweeps without delaying the rest.
PURGE_CHUNK = 1000
PURGE_CHUNKS_PER_SWEEP = 10
HEARTBEAT_FILE = "sweeper-heartbeat"


def heartbeat_path(settings: Settings) -> Path:
    """The file a sweeper touches after each liveness pass (``crawljobs health sweeper`` reads its age)."""
    return settings.data_dir / HEARTBEAT_FILE


def _beat(path: Path) -> None:
    """Touch the heartbeat file, if its folder exists (never made here: tests and CLIs run sweepers too)."""
    if path.parent.is_dir():
        with contextlib.suppress(OSError):
            path.touch()
            os.utime(path)


@dataclass
class SweepReport:
    reclaimed: int = 0
    failed_lost: int = 0
    dispatched: int = 0
    redispatched: int = 0
    purged: int = 0  # jobs whose HTML was dropped by retention (CRAWLJOBS_RESULT_TTL)
    webhooks_delivered: int = 0

    @property
    def busy(self) -> bool:
        return any((self.reclaimed, self.failed_lost, self.dispatched, self.redispatched, self.purged))


class Sweeper:
    def __init__(
        self, manager: JobManager, *, batch_limit: int = 5000, stale_seconds: int | None = None
    ) -> None:
        self.manager = manager
        self.batch_limit = batch_limit
        self.stale_seconds = (
            stale_seconds if stale_seconds is not None else manager.settings.dispatch_stale_seconds
        )
        self.purge_limit = min(batch_limit, PURGE_CHUNK)

    async def check_workers(self) -> Reclaimed:
        """The liveness check: take back the jobs of dead workers (at most `batch_limit` at a time)."""
        reclaimed = await self.manager.reclaim_dead_workers(limit=self.batch_limit)
        self._count_reclaimed(reclaimed, "the worker died")
        return reclaimed

    def _count_reclaimed(self, reclaimed: Reclaimed, why: str) -> None:
        meter = self.manager.meter
        meter.count("leases_reclaimed", "pending", n=len(reclaimed.pending))
        meter.count("leases_reclaimed", "error", n=len(reclaimed.lost))
        meter.count("jobs_finished", "error", n=len(reclaimed.lost))
        if reclaimed.pending or reclaimed.lost:
            logger.warning(
                "took back %d jobs: %s (%d of them lost their worker too often)",
                len(reclaimed.pending) + len(reclaimed.lost),
                why,
                len(reclaimed.lost),
                extra={"action": "reclaim"},
            )

    async def sweep_once(self, *, deliver: bool = True) -> SweepReport:
        """One sweep: the liveness check, expired leases, retention, dispatch, and (with `deliver`, for a
        single sweep; `run` sends them in a loop of its own) the due webhook deliveries."""
        report = SweepReport()
        dead = await self.check_workers()
        reclaimed = await self.manager.reclaim_expired_leases(limit=self.batch_limit)
        self._count_reclaimed(reclaimed, "their leases expired")
        report.failed_lost = len(reclaimed.lost) + len(dead.lost)
        report.reclaimed = len(reclaimed.pending) + len(dead.pending)
        report.purged = await self._purge_expired_html()
        if deliver:
            report.webhooks_delivered = await self._deliver_webhooks()

        dispatcher = self.manager.dispatcher
        while True:  # never dispatched: all of them, in chunks
            dispatched = await dispatcher.dispatch_undispatched(limit=self.batch_limit)
            if dispatched is None:
                return report  # Redis is down: they are marked undispatched again; next sweep
            report.dispatched += dispatched
            if dispatched < self.batch_limit:
                break

        report.redispatched = await dispatcher.dispatch_lost(
            limit=self.batch_limit, stale_seconds=self.stale_seconds
        )
        if report.redispatched:
            logger.warning(
                "dispatched %d jobs again (their messages were lost)",
                report.redispatched,
                extra={"action": "redispatch"},
            )
        return report

    async def _purge_expired_html(self) -> int:
        """Retention: drop expired HTML in chunks, at most `PURGE_CHUNKS_PER_SWEEP` chunks per sweep."""
        ttl = self.manager.settings.result_ttl
        if ttl <= 0:
            return 0
        purged = 0
        for _ in range(PURGE_CHUNKS_PER_SWEEP):
            count = await self.manager.purge_expired_html(limit=self.purge_limit)
            purged += count
            if count < self.purge_limit:
                break
        if purged:
            logger.info(
                "dropped the HTML of %d jobs finished over %d s ago", purged, ttl, extra={"action": "purge"}
            )
        return purged

    async def _deliver_webhooks(self) -> int:
        """Send due webhook deliveries; a failure here never stops the rest of the sweep."""
        try:
            return await WebhookSender(self.manager).deliver_due()
        except Exception:
            logger.exception("webhook delivery failed; trying again next sweep", extra={"action": "webhook"})
            return 0

    async def run(self, stop: asyncio.Event, *, interval: float | None = None) -> None:
        """Run the three loops (see the module) until `stop` is set."""
        async with asyncio.TaskGroup() as loops:
            loops.create_task(self._sweep_loop(stop, interval), name="crawljobs-sweep")
            loops.create_task(self._liveness_loop(stop), name="crawljobs-liveness")
            loops.create_task(WebhookSender(self.manager).run(stop), name="crawljobs-webhooks")

    async def _liveness_loop(self, stop: asyncio.Event) -> None:
        interval = self.manager.settings.worker_check_seconds
        heartbeat = heartbeat_path(self.manager.settings)
        while not stop.is_set():
            try:
                reclaimed = await self.check_workers()
                _beat(heartbeat)
            except Exception as exc:
                logger.warning("liveness check failed: %s", exc, extra={"action": "liveness"})
                reclaimed = Reclaimed(pending=(), lost=())
            if reclaimed.pending or reclaimed.lost:
                await self.manager.meter.flush()
            if len(reclaimed.pending) + len(reclaimed.lost) >= self.batch_limit:
                continue  # more dead workers' jobs may be left
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def _sweep_loop(self, stop: asyncio.Event, interval: float | None) -> None:
        """Sweep until `stop` is set; sweep again at once while there is work."""
        interval = interval if interval is not None else self.manager.settings.sweep_interval_seconds
        while not stop.is_set():
            try:
                report = await self.sweep_once(deliver=False)
            except Exception:
                logger.exception("sweep failed; trying again", extra={"action": "sweep"})
                report = SweepReport()
            await self.manager.meter.flush()  # what this sweep counted, in one round trip
            if report.busy and (
                report.dispatched >= self.batch_limit
                or report.purged >= self.purge_limit * PURGE_CHUNKS_PER_SWEEP
            ):
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)


async def run_sweeper(settings: Settings, stop: asyncio.Event) -> None:
    """Open the database and Redis, sweep until `stop` is set, close them."""
    assert settings.database_url is not None
    pool = await open_pool(settings.database_url, max_size=2)
    redis = redis_client(settings.redis_url) if settings.redis_url else None
    try:
        manager = JobManager(pool=pool, redis=redis, settings=settings)
        try:
            await Sweeper(manager).run(stop)
        finally:
            await manager.meter.close()
    finally:
        if redis is not None:
            await redis.aclose()
        await pool.close()

"""Metrics shared by every process: counters in Redis, worker heartbeats and Scrapy stats (read and exposed by
``crawljobs.exposition``).

API processes, workers and sweepers are separate processes, possibly on many machines, so what they count goes to
Redis under the queue prefix and any API process's ``/metrics`` reads it all:

- ``{prefix}:metrics:counters``: one hash of every shared counter. A field is the counter's family and its label
  values joined by ``|`` (``attempts|http:direct|ok``); fetch-time histograms are counters too (one field per
  bucket, plus a sum). Each process adds what it counted to a `MetricsBuffer` and flushes it in one pipelined
  MULTI: workers once per result batch, the sweeper once per sweep, an API process a second after a submission.
- ``{prefix}:metrics:workers``: the set of worker ids; ``{prefix}:metrics:worker:{id}`` (last heartbeat, jobs in
  flight) and ``{prefix}:metrics:worker:{id}:stats`` (its numeric Scrapy stats), rewritten by each worker every
  ``CRAWLJOBS_METRICS_INTERVAL_SECONDS`` with a TTL of `WORKER_TTL_FACTOR` intervals: a worker that stops
  disappears by itself.

The counters live only in Redis: flushing Redis resets them (Prometheus treats a counter that goes down as a
reset, so ``rate()`` and ``increase()`` stay right). The jobs gauge comes from PostgreSQL, cached by the caller.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

logger = logging.getLogger(__name__)

COUNTERS_KEY = "{prefix}:metrics:counters"
WORKERS_KEY = "{prefix}:metrics:workers"
WORKER_KEY = "{prefix}:metrics:worker:{worker}"
WORKER_STATS_KEY = "{prefix}:metrics:worker:{worker}:stats"

# A worker's heartbeat and stats expire after this many publishing intervals without a new one.
WORKER_TTL_FACTOR = 6
SEPARATOR = "|"

# Upper bounds (seconds) of the fetch-time histogram's buckets; +Inf is added.
FETCH_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FETCH_FAMILY = "fetch_seconds"


@dataclass(frozen=True)
class CounterSpec:
    """A shared counter: its exposed name (``_total`` is added), help text, label names, and label values
    exposed at 0 before anything is counted."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    initial: tuple[tuple[str, ...], ...] = ()


# Every shared counter by family (the first part of its Redis field).
COUNTERS: dict[str, CounterSpec] = {
    "submissions": CounterSpec(
        "crawljobs_submissions",
        "Submit calls handled, by route family (v1, legacy), kind (job, batch) and result (created, replayed, "
        "rejected).",
        ("family", "kind", "result"),
    ),
    "submitted_urls": CounterSpec(
        "crawljobs_submitted_urls",
        "URLs submitted, by route family and result (accepted, refused).",
        ("family", "result"),
        tuple((family, result) for family in ("v1", "legacy") for result in ("accepted", "refused")),
    ),
    "attempts": CounterSpec(
        "crawljobs_attempts",
        "Fetch attempts by method (engine:tier) and outcome (ok, blocked, transient, permanent).",
        ("method", "outcome"),
    ),
    "jobs_finished": CounterSpec(
        "crawljobs_jobs_finished",
        "Jobs that reached a final status: completed or error (workers; the sweeper for leases out of "
        "attempts), cancelled (the API).",
        ("status",),
        (("completed",), ("error",), ("cancelled",)),
    ),
    "leases_reclaimed": CounterSpec(
        "crawljobs_leases_reclaimed",
        "Expired leases reclaimed by the sweeper, by what the job became (pending again, or error when out "
        "of attempts).",
        ("to",),
        (("pending",), ("error",)),
    ),
    "webhook_deliveries": CounterSpec(
        "crawljobs_webhook_deliveries",
        "Webhook delivery attempts by outcome (delivered, failed: tried again later, gave_up).",
        ("outcome",),
        (("delivered",), ("failed",), ("gave_up",)),
    ),
}


@dataclass(frozen=True)
class MetricKeys:
    counters: str
    workers: str
    prefix: str

    @classmethod
    def for_prefix(cls, prefix: str) -> MetricKeys:
        return cls(COUNTERS_KEY.format(prefix=prefix), WORKERS_KEY.format(prefix=prefix), prefix)

    def worker(self, worker: str) -> str:
        return WORKER_KEY.format(prefix=self.prefix, worker=worker)

    def worker_stats(self, worker: str) -> str:
        return WORKER_STATS_KEY.format(prefix=self.prefix, worker=worker)


def counter_field(family: str, *labels: str) -> str:
    return SEPARATOR.join((family, *labels))


def bucket_label(seconds: float) -> str:
    """The ``le`` label of the bucket that holds a fetch of ``seconds``."""
    index = bisect.bisect_left(FETCH_BUCKETS, seconds)
    return repr(FETCH_BUCKETS[index]) if index < len(FETCH_BUCKETS) else "+Inf"


# -- counting ------------------------------------------------------------------------------------------


class MetricsBuffer:
    """Counts of one process, added to the shared Redis hash in one pipelined MULTI per flush.

    Nothing here does I/O but `flush`: counting costs a dict update. A flush that cannot reach Redis keeps the
    counts for the next one; with ``redis`` None (no Redis configured) counts are dropped.
    """

    def __init__(self, redis: aioredis.Redis | None, prefix: str, *, delay: float = 0.0) -> None:
        self.redis = redis
        self.keys = MetricKeys.for_prefix(prefix)
        self.delay = delay
        self.counts: dict[str, int] = defaultdict(int)
        self.sums: dict[str, float] = defaultdict(float)  # fields added with HINCRBYFLOAT
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # Redis is down: said once, not at every flush

    def count(self, family: str, *labels: str, n: int = 1) -> None:
        if n:
            self.counts[counter_field(family, *labels)] += n

    def observe_fetch(self, method: str, seconds: float) -> None:
        self.counts[counter_field(FETCH_FAMILY, method, bucket_label(seconds))] += 1
        self.sums[counter_field(FETCH_FAMILY, method, "sum")] += seconds

    @property
    def empty(self) -> bool:
        return not self.counts and not self.sums

    def flush_soon(self) -> None:
        """Flush in a task of its own after ``delay`` seconds (one at a time): the caller never waits on Redis."""
        if self.redis is None or self.empty:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_later(), name="crawljobs-metrics")

    async def _flush_later(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        await asyncio.shield(self.flush())  # `close` may cancel the wait, never a write half done

    async def flush(self) -> bool:
        """Add the pending counts to Redis; False (counts kept) when Redis could not be reached."""
        async with self._lock:
            if self.redis is None:
                self.counts.clear()
                self.sums.clear()
                return True
            while not self.empty:
                counts, self.counts = self.counts, defaultdict(int)
                sums, self.sums = self.sums, defaultdict(float)
                try:
                    async with self.redis.pipeline(transaction=True) as pipe:
                        for name, count in counts.items():
                            pipe.hincrby(self.keys.counters, name, count)
                        for name, total in sums.items():
                            pipe.hincrbyfloat(self.keys.counters, name, total)
                        await pipe.execute()
                except aioredis.ResponseError as exc:  # Redis answered: retrying would count twice
                    logger.warning("Redis refused metrics (dropped): %s", exc)
                except (aioredis.RedisError, OSError) as exc:
                    for name, count in counts.items():
                        self.counts[name] += count
                    for name, total in sums.items():
                        self.sums[name] += total
                    if not self._failing:
                        logger.warning("cannot write metrics to Redis (kept until it answers): %s", exc)
                    self._failing = True
                    return False
            if self._failing:
                logger.info("metrics written to Redis again")
                self._failing = False
            return True

    async def close(self) -> None:
        """Flush what is left (a last try; what Redis does not take now is lost), after any flush under way."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


# -- workers -------------------------------------------------------------------------------------------


def numeric_stats(stats: Mapping[str, Any]) -> dict[str, float]:
    """The numeric values of a Scrapy stats dict (booleans, dates and texts left out)."""
    return {
        name: float(value)
        for name, value in stats.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


async def publish_worker(
    redis: aioredis.Redis,
    keys: MetricKeys,
    worker: str,
    *,
    in_flight: int,
    stats: Mapping[str, float],
    interval: float,
    now: float | None = None,
) -> None:
    """One worker's heartbeat and Scrapy stats, replaced in one MULTI, expiring after `WORKER_TTL_FACTOR`
    intervals without another."""
    ttl = max(1, math.ceil(interval * WORKER_TTL_FACTOR))
    worker_key, stats_key = keys.worker(worker), keys.worker_stats(worker)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.sadd(keys.workers, worker)
        pipe.hset(
            worker_key,
            mapping={"heartbeat": repr(now if now is not None else time.time()), "in_flight": in_flight},
        )
        pipe.expire(worker_key, ttl)
        pipe.delete(stats_key)
        if stats:
            pipe.hset(stats_key, mapping={name: repr(value) for name, value in stats.items()})
            pipe.expire(stats_key, ttl)
        await pipe.execute()

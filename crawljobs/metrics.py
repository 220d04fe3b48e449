"""Metrics shared by every process: counters in Redis, worker heartbeats and Scrapy stats, the exposition.

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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from crawljobs import __version__
from crawljobs.queue import QueueKeys

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


# -- reading -------------------------------------------------------------------------------------------


@dataclass
class WorkerState:
    heartbeat: float
    in_flight: int
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class Snapshot:
    """What one scrape shows; sources that could not be read are marked down and their metrics left out."""

    live_jobs: dict[str, int] | None = None
    counters: dict[str, float] = field(default_factory=dict)
    queue_depth: dict[str, int] = field(default_factory=dict)
    workers: dict[str, WorkerState] = field(default_factory=dict)
    up: dict[str, bool] = field(default_factory=dict)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _number(value: bytes | str) -> float:
    try:
        number = float(_text(value))
    except ValueError:
        return math.nan
    return number


def _count(value: bytes | str) -> int:
    number = _number(value)
    return int(number) if math.isfinite(number) else 0


async def read_shared(redis: aioredis.Redis, queue: QueueKeys, keys: MetricKeys, snapshot: Snapshot) -> None:
    """Fill ``snapshot`` with what Redis holds: counters, queue depth, live workers (two round trips, plus one
    to forget workers whose keys expired)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.counters)
        pipe.llen(queue.priority)
        pipe.llen(queue.bulk)
        pipe.smembers(keys.workers)
        counters, priority, bulk, members = await pipe.execute()
    snapshot.counters = {_text(name): _number(value) for name, value in counters.items()}
    snapshot.queue_depth = {"priority": int(priority), "bulk": int(bulk)}
    workers = sorted(_text(member) for member in members)
    if not workers:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for worker in workers:
            pipe.hgetall(keys.worker(worker))
            pipe.hgetall(keys.worker_stats(worker))
        replies = await pipe.execute()
    gone = []
    for worker, beat, stats in zip(workers, replies[0::2], replies[1::2], strict=True):
        if not beat:
            gone.append(worker)
            continue
        values = {_text(k): _text(v) for k, v in beat.items()}
        snapshot.workers[worker] = WorkerState(
            heartbeat=_number(values.get("heartbeat", "nan")),
            in_flight=_count(values.get("in_flight", "0")),
            stats={_text(k): _number(v) for k, v in stats.items()},
        )
    if gone:
        await redis.srem(keys.workers, *gone)


# -- exposition ----------------------------------------------------------------------------------------


def _split(name: str) -> tuple[str, list[str]]:
    family, _, rest = name.partition(SEPARATOR)
    return family, rest.split(SEPARATOR) if rest else []


def _counter_families(counters: Mapping[str, float]) -> Iterator[Metric]:
    values: dict[str, dict[tuple[str, ...], float]] = {family: {} for family in COUNTERS}
    for family, spec in COUNTERS.items():
        for initial in spec.initial:
            values[family][initial] = 0.0
    for name, value in counters.items():
        family, labels = _split(name)
        known = COUNTERS.get(family)
        if known is not None and len(labels) == len(known.labels):
            values[family][tuple(labels)] = value
    for family, spec in COUNTERS.items():
        metric = CounterMetricFamily(spec.name, spec.documentation, labels=list(spec.labels))
        for label_values, value in sorted(values[family].items()):
            metric.add_metric(list(label_values), value)
        yield metric


def _fetch_histogram(counters: Mapping[str, float]) -> Metric:
    counts: dict[str, dict[str, float]] = defaultdict(dict)
    sums: dict[str, float] = defaultdict(float)
    for name, value in counters.items():
        family, labels = _split(name)
        if family != FETCH_FAMILY or len(labels) != 2:
            continue
        method, bucket = labels
        if bucket == "sum":
            sums[method] = value
        else:
            counts[method][bucket] = value
    metric = HistogramMetricFamily(
        "crawljobs_fetch_duration_seconds", "Time of each fetch attempt, by method.", labels=["method"]
    )
    for method in sorted(set(counts) | set(sums)):
        cumulative, buckets = 0.0, []
        for bound in (*map(repr, FETCH_BUCKETS), "+Inf"):
            cumulative += counts[method].get(bound, 0.0)
            buckets.append((bound, cumulative))
        metric.add_metric([method], buckets, sum_value=sums.get(method, 0.0))
    return metric


def metric_families(snapshot: Snapshot) -> Iterable[Metric]:
    info = GaugeMetricFamily(
        "crawljobs_info", "The crawljobs version serving this scrape.", labels=["version"]
    )
    info.add_metric([__version__], 1)
    yield info
    up = GaugeMetricFamily(
        "crawljobs_metrics_source_up",
        "1 when this scrape could read the source (postgres, redis); its metrics are missing otherwise.",
        labels=["source"],
    )
    for source, ok in sorted(snapshot.up.items()):
        up.add_metric([source], 1 if ok else 0)
    yield up
    if snapshot.live_jobs is not None:
        jobs = GaugeMetricFamily(
            "crawljobs_jobs",
            "Jobs not final yet, by status (pending, processing), counted in PostgreSQL (cached a few seconds).",
            labels=["status"],
        )
        for status, count in sorted(snapshot.live_jobs.items()):
            jobs.add_metric([status], count)
        yield jobs
    if not snapshot.up.get("redis"):
        return
    depth = GaugeMetricFamily(
        "crawljobs_queue_depth", "Job messages waiting in Redis, by list (priority, bulk).", labels=["queue"]
    )
    for queue, length in sorted(snapshot.queue_depth.items()):
        depth.add_metric([queue], length)
    yield depth
    yield from _counter_families(snapshot.counters)
    yield _fetch_histogram(snapshot.counters)
    workers = GaugeMetricFamily("crawljobs_workers", "Workers whose heartbeat has not expired.")
    workers.add_metric([], len(snapshot.workers))
    yield workers
    heartbeat = GaugeMetricFamily(
        "crawljobs_worker_last_heartbeat_timestamp_seconds",
        "When each worker last published its state (Unix time, the worker's clock).",
        labels=["worker"],
    )
    in_flight = GaugeMetricFamily(
        "crawljobs_worker_in_flight_jobs", "Jobs each worker holds right now.", labels=["worker"]
    )
    scrapy = GaugeMetricFamily(
        "crawljobs_worker_scrapy_stat",
        "Each worker's numeric Scrapy stats (since the worker started), by stat name.",
        labels=["worker", "stat"],
    )
    for worker, state in sorted(snapshot.workers.items()):
        heartbeat.add_metric([worker], state.heartbeat)
        in_flight.add_metric([worker], state.in_flight)
        for stat, value in sorted(state.stats.items()):
            scrapy.add_metric([worker, stat], value)
    yield heartbeat
    yield in_flight
    yield scrapy


class _SnapshotCollector:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        return metric_families(self.snapshot)


def exposition(snapshot: Snapshot) -> bytes:
    """The Prometheus text exposition of ``snapshot``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)

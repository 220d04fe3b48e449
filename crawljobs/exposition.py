"""The reading side of the shared metrics: a `Snapshot` of what Redis holds (`read_shared`) and its
Prometheus text exposition (`exposition`). What is counted, and where, is ``crawljobs.metrics``."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from crawljobs import __version__
from crawljobs.exceptions import CrawlJobsError
from crawljobs.metrics import COUNTERS, FETCH_BUCKETS, FETCH_FAMILY, SEPARATOR, MetricKeys
from crawljobs.queue import QueueKeys


class MetricsClosed(CrawlJobsError):
    """/metrics is closed: set CRAWLJOBS_METRICS_TOKEN (and scrape with `Authorization: Bearer <token>`), or
    CRAWLJOBS_METRICS_OPEN=true to open it to anyone who can reach the API."""

    code = "metrics_closed"


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
        pipe.llen(queue.backlog)
        pipe.smembers(keys.workers)
        counters, priority, bulk, backlog, members = await pipe.execute()
    snapshot.counters = {_text(name): _number(value) for name, value in counters.items()}
    # Batch jobs wait in the bulk list (fair shares off) or the fair scheduler's batch lists (counted by its
    # backlog list): both are "bulk".
    snapshot.queue_depth = {"priority": int(priority), "bulk": int(bulk) + int(backlog)}
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

"""Fair shares: a small batch behind a large one, FIFO beside the fair scheduler; and what fairness costs.

    python -m bench.fairness [--big 5000] [--small 20] [--pages 4000] [--tenants 4] [--workers 1]
                             [--concurrency 64] [--repeat 3] [--pops 50000] [--logs DIR]

One test site process (``/fast/<n>`` pages on 127.0.0.1), one scratch database, one queue prefix, ``--workers``
worker processes (``scrapy crawl crawl_jobs``) started once and warmed up, and two API processes on the same
database and Redis: one with ``CRAWLJOBS_FAIR_SHARES=true`` (the fair scheduler), one with ``false`` (today's one
FIFO bulk list). Workers read both structures, so the same workers serve both modes; the mode is the
dispatcher's (the API's), and every run alternates FIFO and fair so that other load on the machine falls on both.

1. **Small behind large**: tenant A POSTs a batch of ``--big`` URLs, then at once tenant B one of ``--small``;
   the clock runs from B's submit until all of B's jobs are completed (PostgreSQL polled every 20 ms). Also
   printed: how many of A's jobs were fetched before B's last (by the attempts' ids: order, not time), and when
   A finished. Each run waits for A to finish before the next.
2. **Throughput**: ``--tenants`` tenants each POST a batch of ``--pages / --tenants`` URLs at once (the fair
   scheduler's busiest case: a turn per id); the clock runs from the first submit to the last completion, and
   the workers' CPU time is read from /proc. The ratio fair / FIFO must stay above 0.95.
3. **The scheduler alone** (Redis only, no workers): ``--pops`` ids queued, popped 100 at a time until none is
   left: LPOP on one list (FIFO) beside the fair pop script, with one batch of one tenant and with 10 tenants of
   5 batches each; microseconds per id.

Medians of ``--repeat`` runs. Services: CRAWLJOBS_BENCH_DATABASE_URL and CRAWLJOBS_BENCH_REDIS_URL, else
embedded ones. Everything listens on 127.0.0.1; every child process is stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.common import api_process, median, scratch_database, services
from bench.crawl import Child, children, cpu_seconds, drop_prefix, site_process, spawn, wait_for_spiders
from crawljobs.config import Settings
from crawljobs.keys import create_key
from crawljobs.queue import Queued, QueueKeys, Scheduler, redis_client
from tests.acceptance.system import worker_env

POLL_SECONDS = 0.02
TIMEOUT = 900.0
MODES = ("fifo", "fair")


def log(message: str) -> None:
    print(f"[bench.fairness] {message}", file=sys.stderr, flush=True)


@dataclass
class Results:
    small_seconds: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    a_before_b: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    big_seconds: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    crawl_seconds: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    crawl_cpu: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})


def submit(http: httpx.Client, key: str, urls: list[str]) -> str:
    response = http.post("/v1/batches", json={"urls": urls}, headers={"Authorization": f"Bearer {key}"})
    response.raise_for_status()
    body = response.json()
    if body["accepted"] != len(urls):
        raise RuntimeError(f"the API refused some URLs: {body['failures'][:3]}")
    return str(body["batch_id"])


def completed(conn: psycopg.Connection[Any], batch_ids: list[str]) -> int:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status IN ('error', 'cancelled'))"
        " FROM crawl_jobs WHERE batch_id = ANY(%s)",
        (batch_ids,),
    ).fetchone()
    assert row is not None
    if row[1]:
        raise RuntimeError(f"{row[1]} jobs of {batch_ids} failed")
    return int(row[0])


def wait_done(conn: psycopg.Connection[Any], batch_ids: list[str], count: int, workers: list[Child]) -> float:
    deadline = time.monotonic() + TIMEOUT
    while True:
        now = time.monotonic()
        if completed(conn, batch_ids) == count:
            return now
        for worker in workers:
            if worker.popen.poll() is not None:
                raise RuntimeError(f"a worker exited ({worker.popen.returncode}):\n{worker.tail()}")
        if now > deadline:
            raise RuntimeError(f"{batch_ids} not completed after {TIMEOUT:.0f} s")
        time.sleep(POLL_SECONDS)


def fetched_before(conn: psycopg.Connection[Any], big: str, small: str) -> int:
    """How many of the big batch's jobs were fetched (attempt rows written) before the small batch's last."""
    row = conn.execute(
        "SELECT count(*) FROM crawl_attempts a JOIN crawl_jobs j ON j.id = a.job_id WHERE j.batch_id = %s"
        " AND a.id < (SELECT max(a2.id) FROM crawl_attempts a2 JOIN crawl_jobs j2 ON j2.id = a2.job_id"
        " WHERE j2.batch_id = %s)",
        (big, small),
    ).fetchone()
    return int(row[0]) if row else 0


def check_once(conn: psycopg.Connection[Any], batch_ids: list[str], count: int) -> None:
    """Nothing lost or doubled: exactly one attempt per job."""
    row = conn.execute(
        "SELECT count(*), count(DISTINCT a.job_id) FROM crawl_attempts a JOIN crawl_jobs j ON j.id = a.job_id"
        " WHERE j.batch_id = ANY(%s)",
        (batch_ids,),
    ).fetchone()
    if row != (count, count):
        raise RuntimeError(f"{row} attempts/jobs for {count} jobs of {batch_ids}")


@contextlib.contextmanager
def workers_running(settings: Settings, count: int, concurrency: int, logs: Path) -> Iterator[list[Child]]:
    env = worker_env(
        settings,
        CRAWLJOBS_WORKER_CONCURRENCY=str(concurrency),
        CRAWLJOBS_PER_DOMAIN_CONCURRENCY=str(concurrency),
    )
    argv = [sys.executable, "-m", "scrapy", "crawl", "crawl_jobs"]
    with children() as running:
        for index in range(count):
            spawn(running, argv, env, logs / f"worker-{index}.log")
        wait_for_spiders(running)
        yield running


def small_behind_large(
    apis: dict[str, str],
    keys: dict[str, str],
    conn: psycopg.Connection[Any],
    base: str,
    workers: list[Child],
    mode: str,
    tag: str,
    big: int,
    small: int,
    results: Results,
) -> None:
    with httpx.Client(base_url=apis[mode], timeout=300) as http:
        started = time.monotonic()
        a = submit(http, keys["tenant-a"], [f"{base}/fast/{tag}-a-{i}" for i in range(big)])
        b_sent = time.monotonic()
        b = submit(http, keys["tenant-b"], [f"{base}/fast/{tag}-b-{i}" for i in range(small)])
        b_done = wait_done(conn, [b], small, workers)
        a_done = wait_done(conn, [a], big, workers)
    check_once(conn, [a, b], big + small)
    results.small_seconds[mode].append(b_done - b_sent)
    results.a_before_b[mode].append(fetched_before(conn, a, b))
    results.big_seconds[mode].append(a_done - started)
    log(
        f"{tag}: {mode} B done {b_done - b_sent:.2f} s after its submit, A done after {a_done - started:.2f} s"
    )


def throughput(
    apis: dict[str, str],
    keys: dict[str, str],
    conn: psycopg.Connection[Any],
    base: str,
    workers: list[Child],
    mode: str,
    tag: str,
    pages: int,
    tenants: int,
    results: Results,
) -> None:
    share = pages // tenants
    with httpx.Client(base_url=apis[mode], timeout=300) as http:
        cpu_before = sum(cpu_seconds(w.popen.pid) for w in workers)
        started = time.monotonic()
        batch_ids = [
            submit(http, keys[f"tenant-{n}"], [f"{base}/fast/{tag}-{n}-{i}" for i in range(share)])
            for n in range(tenants)
        ]
        done = wait_done(conn, batch_ids, share * tenants, workers)
        cpu = sum(cpu_seconds(w.popen.pid) for w in workers) - cpu_before
    check_once(conn, batch_ids, share * tenants)
    results.crawl_seconds[mode].append(done - started)
    results.crawl_cpu[mode].append(cpu)
    log(f"{tag}: {mode} {share * tenants} pages in {done - started:.2f} s ({cpu:.1f} CPU s)")


# -- the scheduler alone -----------------------------------------------------------------------------------


async def scheduler_alone(redis_url: str, pops: int) -> dict[str, float]:
    """Microseconds per id to drain `pops` ids, 100 a pop: FIFO LPOP, the fair script (one batch; 10x5)."""
    client = redis_client(redis_url)
    out: dict[str, float] = {}
    try:
        for shape, tenants, batches in (
            ("fifo", 1, 1),
            ("fair, 1 tenant x 1 batch", 1, 1),
            ("fair, 10 tenants x 5 batches", 10, 5),
        ):
            keys = QueueKeys.for_prefix(f"benchfair{uuid.uuid4().hex[:6]}")
            scheduler = Scheduler(client, keys)
            ids = [str(uuid.uuid4()) for _ in range(pops)]
            if shape == "fifo":
                for start in range(0, pops, 5000):
                    await client.rpush(keys.bulk, *ids[start : start + 5000])
            else:
                per = pops // (tenants * batches)
                jobs = [
                    Queued(ids[(t * batches + b) * per + i], f"t{t}", f"b{b}")
                    for t in range(tenants)
                    for b in range(batches)
                    for i in range(per)
                ]
                await scheduler.push_all(jobs)
            started = time.perf_counter()
            taken = 0
            if shape == "fifo":
                while got := await client.lpop(keys.bulk, 100):
                    taken += len(got)
            else:
                while groups := await scheduler.pop(100):
                    taken += sum(len(g.messages) for g in groups)
            seconds = time.perf_counter() - started
            if taken != pops - (pops % (tenants * batches)):
                raise RuntimeError(f"{shape}: popped {taken} of {pops}")
            out[shape] = seconds / taken * 1e6
            found = [k async for k in client.scan_iter(match=f"{keys.prefix}:*")]
            if found:
                await client.delete(*found)
    finally:
        await client.aclose()
    return out


# -- the run -----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big", type=int, default=5000)
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--pages", type=int, default=4000)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pops", type=int, default=50_000)
    parser.add_argument("--logs", type=Path, default=None)
    args = parser.parse_args()
    if min(args.big, args.small, args.pages, args.tenants, args.workers, args.repeat, args.pops) < 1:
        parser.error("every size must be at least 1")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logs: Path = args.logs or Path(tempfile.mkdtemp(prefix="bench-fairness-", dir="/tmp"))
    logs.mkdir(parents=True, exist_ok=True)
    log(f"logs in {logs}")
    prefix = f"benchfair{uuid.uuid4().hex[:6]}"
    results = Results()
    with (
        services() as (admin_url, redis_url),
        scratch_database(admin_url) as database_url,
        site_process(logs) as base,
    ):
        names = ["tenant-a", "tenant-b", *(f"tenant-{n}" for n in range(args.tenants))]
        keys = {name: create_key(database_url, name=name) for name in names}
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            queue_prefix=prefix,
            allowed_networks=["127.0.0.1/32"],
            domain_memory=False,
        )
        try:
            with (
                api_process(
                    database_url,
                    redis_url,
                    fair_shares="true",
                    allowed_networks="127.0.0.1/32",
                    queue_prefix=prefix,
                ) as (fair_api, _),
                api_process(
                    database_url,
                    redis_url,
                    fair_shares="false",
                    allowed_networks="127.0.0.1/32",
                    queue_prefix=prefix,
                ) as (fifo_api, _),
                workers_running(settings, args.workers, args.concurrency, logs) as workers,
                psycopg.connect(database_url, autocommit=True) as conn,
            ):
                apis = {"fair": fair_api, "fifo": fifo_api}
                for mode in MODES:  # warm-up: the whole path once in each mode, before any clock
                    with httpx.Client(base_url=apis[mode], timeout=120) as http:
                        warm = submit(
                            http, keys["tenant-a"], [f"{base}/fast/warm-{mode}-{i}" for i in range(200)]
                        )
                    wait_done(conn, [warm], 200, workers)
                for rep in range(args.repeat):
                    order = MODES if rep % 2 == 0 else tuple(reversed(MODES))
                    for mode in order:
                        small_behind_large(
                            apis,
                            keys,
                            conn,
                            base,
                            workers,
                            mode,
                            f"r{rep}-{mode}-s",
                            args.big,
                            args.small,
                            results,
                        )
                    for mode in order:
                        throughput(
                            apis,
                            keys,
                            conn,
                            base,
                            workers,
                            mode,
                            f"r{rep}-{mode}-t",
                            args.pages,
                            args.tenants,
                            results,
                        )
        finally:
            drop_prefix(redis_url, prefix)
        alone = asyncio.run(scheduler_alone(redis_url, args.pops))
    report(args, results, alone)


def report(args: argparse.Namespace, results: Results, alone: dict[str, float]) -> None:
    print(
        f"{args.workers} worker process(es), concurrency {args.concurrency}, medians of {args.repeat} run(s);"
        " FIFO = CRAWLJOBS_FAIR_SHARES=false, fair = true, same workers"
    )
    print()
    print(f"small behind large: tenant A submits {args.big} URLs, then tenant B {args.small}")
    print(f"{'mode':<6} {'B done after (s)':>17} {'A fetched before B done':>24} {'A done after (s)':>17}")
    for mode in MODES:
        print(
            f"{mode:<6} {median(results.small_seconds[mode]):>17.2f} {median(results.a_before_b[mode]):>24.0f}"
            f" {median(results.big_seconds[mode]):>17.2f}"
        )
    speedup = median(results.small_seconds["fifo"]) / median(results.small_seconds["fair"])
    print(f"B's batch done {speedup:.1f}x sooner with fair shares")
    print()
    share = args.pages // args.tenants
    pages = share * args.tenants
    print(f"throughput: {args.tenants} tenants each submit {share} URLs at once ({pages} pages)")
    print(f"{'mode':<6} {'seconds':>9} {'pages/s':>9} {'worker CPU ms/page':>19}")
    rates = {}
    for mode in MODES:
        seconds = median(results.crawl_seconds[mode])
        rates[mode] = pages / seconds
        cpu = median(results.crawl_cpu[mode]) / pages * 1000
        print(f"{mode:<6} {seconds:>9.2f} {rates[mode]:>9.1f} {cpu:>19.2f}")
    print(f"fair / FIFO throughput = {rates['fair'] / rates['fifo']:.3f} (aim >= 0.95)")
    print()
    print(f"the scheduler alone: {args.pops} ids queued, popped 100 at a time")
    for shape, micros in alone.items():
        print(f"{shape:<30} {micros:>8.2f} us/id")


if __name__ == "__main__":
    main()

"""What the dashboard reads, at a million jobs: before (today's queries, which count a batch's jobs from the index)
and after (the counts the database keeps, migration 0007), in one run.

    python -m bench.dashboard [--jobs 1000000] [--big 50000] [--batch-size 100] [--repeat 40] [--quick]

The fill: ``--jobs`` jobs of one tenant, COPYed straight into a scratch database (the counts' triggers run, as for
any insert): one ``--big``-job batch, the third newest, among batches of ``--batch-size`` jobs spread over a
week; the newest tenth of the jobs pending, a few hundred processing, the older ones completed (90 %), failed (8 %)
or cancelled; the big batch part done. The stats rings (per minute, per hour, cost per day) are filled to their
full size with synthetic rows (a week of traffic would leave them so; their size, not their values, sets the
cost of a read), and sixteen workers are registered. Then VACUUM ANALYZE, so that every query runs on fresh
statistics and an all-visible map.

Measured, each the median of ``--repeat`` calls after a warm-up:

1. **SQL, in-process** (psycopg, one connection; before and after take turns, call by call): today's queries, kept here as they were (``OLD_*``, with the
   index they read, ``crawl_jobs_batch_status``, created again for them), against the new ones: a page of 25
   batches with their counts, one batch's counts (the 50,000-job batch), the live job counts of /metrics, and an
   overview derived from ``crawl_jobs`` at read time (what it would cost without the kept counts) against
   ``JobManager.overview``'s reads.
2. **Through a real API process** (its ``Server-Timing: app``): ``GET /v1/batches`` (first page of 25), the legacy
   ``list-crawl-job-batches`` (25), ``GET /v1/batches/{big}`` (its counts and first 100 jobs) and ``/metrics``
   uncached (``CRAWLJOBS_METRICS_CACHE_SECONDS=0``).
3. **Manager methods, in-process** (wall time of the call, pool and Redis warm): ``overview`` and
   ``batch_jobs_page`` on the big batch: the first page, a deep page (after index 4/5 of the batch), filtered by status
   (``error``), and searched by URL.
4. **The write side**: a ``--big``-job COPY with the counts' triggers and without; and workers finishing the jobs
   of one batch at once (``FakeWorker``: claim and finish through the lifecycle), the counts over 8 shards, over 1
   (every writer on one row: the hot row) and without the triggers.

Services: CRAWLJOBS_BENCH_DATABASE_URL and CRAWLJOBS_BENCH_REDIS_URL, else embedded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg.conninfo import make_conninfo

from bench.common import api_process, median, scratch_database, server_ms, services
from crawljobs.config import Settings
from crawljobs.ids import new_job_ids
from crawljobs.manager import JobManager
from crawljobs.queue import redis_client
from crawljobs.store.pool import open_pool
from crawljobs.testing import FakeWorker

TENANT = "bench"
PAGE = 25
SHARDS = 8
PAGE_BYTES = 50_000  # the HTML of each job the write side's workers finish
WARM_UP = 5  # calls before the clock of each measurement (pools, caches, prepared statements)

# -- today's queries (before migration 0007), kept as they were ----------------------------------------------

OLD_INDEX = (
    "CREATE INDEX IF NOT EXISTS crawl_jobs_batch_status ON crawl_jobs (tenant, batch_id, status) "
    "INCLUDE (updated_at) WHERE batch_id IS NOT NULL"
)
OLD_LIST_BATCHES = """
SELECT b.batch_id, b.created_at, b.total, b.render, b.premium, b.ultra_premium,
       coalesce(c.pending, 0) AS pending, coalesce(c.processing, 0) AS processing,
       coalesce(c.completed, 0) AS completed, coalesce(c.error, 0) AS error,
       coalesce(c.cancelled, 0) AS cancelled, coalesce(c.last_updated, b.created_at) AS last_updated
FROM (SELECT * FROM crawl_batches WHERE tenant = %(tenant)s
      ORDER BY created_at DESC, batch_id DESC LIMIT %(limit)s OFFSET %(offset)s) AS b
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE j.status = 'pending') AS pending,
           count(*) FILTER (WHERE j.status = 'processing') AS processing,
           count(*) FILTER (WHERE j.status = 'completed') AS completed,
           count(*) FILTER (WHERE j.status = 'error') AS error,
           count(*) FILTER (WHERE j.status = 'cancelled') AS cancelled,
           max(j.updated_at) AS last_updated
    FROM crawl_jobs j WHERE j.tenant = b.tenant AND j.batch_id = b.batch_id
) AS c ON true
ORDER BY b.created_at DESC, b.batch_id DESC
"""
OLD_BATCH_COUNTS = """
SELECT status, count(*) AS n, max(updated_at) AS last_updated
FROM crawl_jobs WHERE tenant = %(tenant)s AND batch_id = %(batch_id)s
GROUP BY status
"""
OLD_COUNT_LIVE_JOBS = """
SELECT (SELECT count(*) FROM crawl_jobs WHERE status = 'pending' AND dispatched_at IS NULL)
     + (SELECT count(*) FROM crawl_jobs WHERE status = 'pending' AND dispatched_at IS NOT NULL) AS pending,
       (SELECT count(*) FROM crawl_jobs WHERE status = 'processing') AS processing
"""
# No overview existed: this is what it costs derived from the jobs at read time.
DERIVED_OVERVIEW = (
    "SELECT status, count(*) FROM crawl_jobs WHERE tenant = %(tenant)s GROUP BY status",
    "SELECT date_trunc('minute', completed_at), count(*) FILTER (WHERE status = 'completed'),"
    " count(*) FILTER (WHERE status = 'error') FROM crawl_jobs WHERE tenant = %(tenant)s"
    " AND completed_at >= now() - interval '1 hour' GROUP BY 1",
    "SELECT date_trunc('hour', completed_at), count(*) FILTER (WHERE status = 'completed'),"
    " count(*) FILTER (WHERE status = 'error') FROM crawl_jobs WHERE tenant = %(tenant)s"
    " AND completed_at >= now() - interval '1 day' GROUP BY 1",
    "SELECT success_method, sum(cost) FROM crawl_jobs WHERE tenant = %(tenant)s"
    " AND completed_at >= date_trunc('day', now()) GROUP BY 1",
)
NEW_LIST_BATCHES = "list_batches"  # the named queries of crawljobs/sql/queries.sql

# -- the dashboard's own pages ----------------------------------------------------------------------------


def dashboard_page_rows(http: httpx.Client, key: str, big: str, repeat: int) -> list[tuple[str, float]]:
    """The server time of the dashboard's pages (each the median of `repeat` requests through the same API
    process), signed in as a person is: the sign-in form's token, the key posted, the session cookie kept."""
    form = http.get("/sign-in")
    form.raise_for_status()
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    if token is None:
        raise RuntimeError("the sign-in page has no csrf_token field")
    signed_in = http.post(
        "/sign-in", data={"api_key": key, "csrf_token": token.group(1), "next": "/"}, follow_redirects=False
    )
    if signed_in.status_code != 303:
        raise RuntimeError(f"sign-in answered {signed_in.status_code}: {signed_in.text[:200]}")
    paths = [
        ("GET / (overview page)", "/"),
        ("GET /batches", "/batches"),
        ("GET /batches/{big}", f"/batches/{big}"),
        ("GET /batches/{big}?status=error", f"/batches/{big}?status=error"),
        ("GET /batches/{big}?after=40000", f"/batches/{big}?after=40000"),
        ("GET /batches/{big}?q=shop", f"/batches/{big}?q=shop"),
    ]
    return [(label, timed_http(http, path, repeat)) for label, path in paths]


# -- the fill ---------------------------------------------------------------------------------------------

JOB_COLUMNS = (
    "id, tenant, batch_id, batch_index, url, status, priority, attempt, max_retries, max_attempts, lease_owner, "
    "lease_expires_at, dispatched_at, created_at, updated_at, started_at, completed_at, html_length, "
    "processing_time_ms, success_method, http_status, cost, error_message"
)
METHODS = ("http:direct", "http:premium", "browser:direct", "browser:premium", "http:ultra_premium")
HOSTS = ("example.com", "shop.example.org", "news.example.net", "www.example.com", "api.example.io")
NULL = "\\N"


def _ts(value: datetime | None) -> str:
    return value.isoformat() if value is not None else NULL


def _job_line(
    rng: random.Random, job_id: uuid.UUID, batch_id: str, index: int, status: str, created: datetime
) -> str:
    host = HOSTS[index % len(HOSTS)]
    url = f"https://{host}/products/{batch_id}/{index}?page={index % 50}"
    finished = status in ("completed", "error", "cancelled")
    started = created + timedelta(seconds=rng.uniform(1, 60)) if status != "pending" else None
    done = started + timedelta(seconds=rng.uniform(0.2, 20)) if finished and started else None
    method = rng.choice(METHODS) if status == "completed" else None
    lease = f"bench-host:{1000 + index % 16}:abc" if status == "processing" else None
    values = [
        str(job_id),
        TENANT,
        batch_id,
        str(index),
        url,
        status,
        "0",
        "1" if status != "pending" else "0",
        "3",
        "4",
        lease or NULL,
        _ts(datetime.now(UTC) + timedelta(minutes=5)) if lease else NULL,
        _ts(created),
        _ts(created),
        _ts(done or started or created),
        _ts(started),
        _ts(done),
        str(rng.randint(2_000, 200_000)) if status == "completed" else NULL,
        str(rng.randint(100, 9_000)) if finished else NULL,
        method or NULL,
        "200" if status == "completed" else ("503" if status == "error" else NULL),
        f"{rng.choice((1.0, 1.0, 1.0, 5.0, 25.0)) if finished else 0.0}",
        "HTTP 503" if status == "error" else ("cancelled" if status == "cancelled" else NULL),
    ]
    return "\t".join(values) + "\n"


def _statuses(rng: random.Random, n: int, rank: int, newest_live: int) -> list[str]:
    """The statuses of a batch of `n` jobs, the `rank`-th newest: the newest pending (the first few also
    processing), the older ones done."""
    if rank < newest_live:
        return ["processing" if rank < 20 and i < 20 else "pending" for i in range(n)]
    return [rng.choices(("completed", "error", "cancelled"), (90, 8, 2))[0] for _ in range(n)]


def fill(database_url: str, *, jobs: int, big: int, batch_size: int) -> str:
    """Fill the scratch database (see the module's docstring); the big batch's id."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    batches = max(1, (jobs - big) // batch_size)
    live = max(1, batches // 10)
    big_rank = 2
    big_id = "big-batch-50k"
    order: list[tuple[str, int]] = []  # (batch id, size), newest first
    for rank in range(batches + 1):
        if rank == big_rank:
            order.append((big_id, big))
        else:
            order.append((f"b{rank:06d}", batch_size))
    span = timedelta(days=7)
    with psycopg.connect(database_url, autocommit=True) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY crawl_batches (tenant, batch_id, created_at, total, max_retries) FROM STDIN"
            ) as copy,
        ):
            for rank, (batch_id, size) in enumerate(order):
                created = now - span * (rank / len(order)) - timedelta(seconds=30)
                copy.write(f"{TENANT}\t{batch_id}\t{created.isoformat()}\t{size}\t3\n")
        buffer: list[str] = []
        written = 0

        def flush() -> None:
            nonlocal buffer
            if buffer:
                with conn.cursor() as cur, cur.copy(f"COPY crawl_jobs ({JOB_COLUMNS}) FROM STDIN") as copy:
                    copy.write("".join(buffer))
                buffer = []

        for rank, (batch_id, size) in enumerate(order):
            created = now - span * (rank / len(order)) - timedelta(seconds=30)
            if batch_id == big_id:
                statuses = (
                    ["completed"] * (big * 6 // 10) + ["error"] * (big // 25) + ["processing"] * (big // 50)
                )
                statuses += ["pending"] * (big - len(statuses))
                rng.shuffle(statuses)
            else:
                statuses = _statuses(rng, size, rank, live)
            for index, (job_id, status) in enumerate(zip(new_job_ids(size), statuses, strict=True)):
                buffer.append(_job_line(rng, job_id, batch_id, index, status, created))
            written += size
            if len(buffer) >= 50_000:
                flush()
                print(f"filled {written:,} jobs", file=sys.stderr, flush=True)
        flush()
        fill_rings(conn, now)
        for n in range(16):
            conn.execute(
                "INSERT INTO crawl_workers (worker_id, lock_key, host, pid) VALUES (%s, %s, %s, %s)",
                (f"bench-host:{1000 + n}:abc", 10_000 + n, "bench-host", 1000 + n),
            )
        print("VACUUM ANALYZE", file=sys.stderr, flush=True)
        conn.execute("VACUUM ANALYZE")
    return big_id


def fill_rings(conn: psycopg.Connection[Any], now: datetime) -> None:
    """The stats rings at their full size: every minute of the last hour and hour of the last day, on every
    shard, and today's cost of every method on every shard (synthetic values: only their number matters)."""
    conn.execute("TRUNCATE crawl_stats_minutes, crawl_stats_hours, crawl_cost_days")
    minute = now.replace(second=0, microsecond=0)
    hour = now.replace(minute=0, second=0, microsecond=0)
    today = now.date()
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO crawl_stats_minutes (tenant, slot, shard, minute, completed, errors)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (TENANT, int(t.timestamp()) // 60 % 60, shard, t, 50, 3)
                for t in (minute - timedelta(minutes=m) for m in range(60))
                for shard in range(SHARDS)
            ],
        )
        cur.executemany(
            "INSERT INTO crawl_stats_hours (tenant, slot, shard, hour, completed, errors)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (TENANT, int(t.timestamp()) // 3600 % 24, shard, t, 3000, 180)
                for t in (hour - timedelta(hours=h) for h in range(24))
                for shard in range(SHARDS)
            ],
        )
        epoch_day = (today - datetime(1970, 1, 1, tzinfo=UTC).date()).days
        cur.executemany(
            "INSERT INTO crawl_cost_days (tenant, slot, method, shard, day, cost, jobs)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [
                (TENANT, (epoch_day - d) % 7, method, shard, today - timedelta(days=d), 100.0, 100)
                for d in range(7)
                for method in (*METHODS, "none")
                for shard in range(SHARDS)
            ],
        )


# -- measuring --------------------------------------------------------------------------------------------


def timed_pair(
    conn: psycopg.Connection[Any],
    before: tuple[str, ...],
    after: tuple[str, ...],
    params: dict[str, Any],
    repeat: int,
    before_repeat: int | None = None,
) -> tuple[float, float]:
    """Median ms of running each set of statements (one after the other, fetching their rows), after a warm-up;
    the two take turns, so that a busy moment of the machine weighs on both alike."""
    samples: tuple[list[float], list[float]] = ([], [])
    before_repeat = repeat if before_repeat is None else before_repeat
    for n in range(repeat + WARM_UP):
        for which, statements in enumerate((before, after)):
            if which == 0 and n >= before_repeat + WARM_UP:
                continue
            started = time.perf_counter()
            for statement in statements:
                conn.execute(statement, params).fetchall()
            if n >= WARM_UP:
                samples[which].append((time.perf_counter() - started) * 1000)
    return median(samples[0]), median(samples[1])


def timed_http(http: httpx.Client, path: str, repeat: int) -> float:
    """Median server time (ms, Server-Timing) of `repeat` GETs of `path`, after a warm-up."""
    samples = []
    for n in range(repeat + WARM_UP):
        response = http.get(path)
        response.raise_for_status()
        if n >= WARM_UP:
            samples.append(server_ms(response))
    return median(samples)


async def timed_call(call: Callable[[], Awaitable[Any]], repeat: int) -> float:
    samples = []
    for n in range(repeat + WARM_UP):
        started = time.perf_counter()
        await call()
        if n >= WARM_UP:
            samples.append((time.perf_counter() - started) * 1000)
    return median(samples)


def overview_sql() -> tuple[str, ...]:
    from crawljobs.queries import query

    return tuple(
        query(name) for name in ("tenant_counts", "stats_per_minute", "stats_per_hour", "cost_today")
    )


def print_table(title: str, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    print()
    print(title)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for line in (header, *rows):
        print(
            "  ".join(
                str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )


def ms(value: float) -> str:
    return f"{value:.1f}"


def ratio(before: float, after: float) -> str:
    return f"{before / after:.0f}x" if after > 0 else "-"


# -- the write side -----------------------------------------------------------------------------------------


def copy_batch(database_url: str, size: int, tag: str) -> float:
    """Seconds to insert a batch row and COPY `size` pending jobs (as the store does)."""
    from crawljobs.queries import query

    batch_id = f"copy-{tag}-{uuid.uuid4().hex[:8]}"
    stamp = datetime.now(UTC).isoformat()
    buffer = "".join(
        f"{job_id}\t{TENANT}w\t{batch_id}\t{i}\thttps://example.com/w/{i}\tf\tf\tf\tf\t3\t4\t{stamp}\t\\N\t\\N\n"
        for i, job_id in enumerate(new_job_ids(size))
    )
    with psycopg.connect(database_url) as conn:
        started = time.perf_counter()
        conn.execute(
            "INSERT INTO crawl_batches (tenant, batch_id, total, max_retries) VALUES (%s, %s, %s, 3)",
            (f"{TENANT}w", batch_id, size),
        )
        with conn.cursor() as cur, cur.copy(query("copy_jobs")) as copy:
            copy.write(buffer.encode())
        conn.commit()
        return time.perf_counter() - started


COUNT_TRIGGERS = ("crawl_jobs_count_insert", "crawl_jobs_count_update", "crawl_jobs_count_delete")


@contextlib.contextmanager
def without_count_triggers(database_url: str) -> Iterator[None]:
    """The counts' triggers dropped for the duration (and created again as they were): the baseline. (A disabled
    trigger with a transition table would still have its rows captured.)"""
    with psycopg.connect(database_url, autocommit=True) as conn:
        definitions = [
            row[0]
            for row in conn.execute(
                "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = ANY(%s)",
                (list(COUNT_TRIGGERS),),
            )
        ]
        assert len(definitions) == len(COUNT_TRIGGERS), definitions
        for name in COUNT_TRIGGERS:
            conn.execute(f"DROP TRIGGER {name} ON crawl_jobs")
        try:
            yield
        finally:
            for definition in definitions:
                conn.execute(definition)


async def finish_rate(database_url: str, *, writers: int, per_writer: int, shards: int, html: str) -> float:
    """Jobs a second that `writers` workers (a connection each) finish, all of them jobs of one new batch,
    claiming and finishing 10 at a time through the lifecycle; the counts spread over `shards` shards."""
    from crawljobs.queries import query

    batch_id = f"finish-{uuid.uuid4().hex[:8]}"
    ids = new_job_ids(writers * per_writer)
    stamp = datetime.now(UTC).isoformat()
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO crawl_batches (tenant, batch_id, total, max_retries) VALUES (%s, %s, %s, 3)",
            (f"{TENANT}w", batch_id, len(ids)),
        )
        with conn.cursor() as cur, cur.copy(query("copy_jobs")) as copy:
            copy.write(
                "".join(
                    f"{job_id}\t{TENANT}w\t{batch_id}\t{i}\thttps://example.com/f/{i}\tf\tf\tf\tf\t3\t4\t{stamp}\t\\N\t\\N\n"
                    for i, job_id in enumerate(ids)
                ).encode()
            )
        conn.commit()
    conninfo = make_conninfo(database_url, options=f"-c crawljobs.count_shards={shards}")
    pools = [await open_pool(conninfo, max_size=1) for _ in range(writers)]
    try:

        async def work(n: int) -> None:
            worker = FakeWorker(pools[n], worker=f"finisher-{n}")
            mine = ids[n * per_writer : (n + 1) * per_writer]
            for start in range(0, len(mine), 10):
                await worker.complete(mine[start : start + 10], html=html)

        started = time.perf_counter()
        await asyncio.gather(*(work(n) for n in range(writers)))
        return len(ids) / (time.perf_counter() - started)
    finally:
        for pool in pools:
            await pool.close()


# -- the run ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--big", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="100,000 jobs, a 10,000-job batch, 10 repeats")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.big, args.repeat = 100_000, 10_000, 10
    with services() as (admin_url, redis_url), scratch_database(admin_url) as database_url:
        started = time.perf_counter()
        big = fill(database_url, jobs=args.jobs, big=args.big, batch_size=args.batch_size)
        print(
            f"filled {args.jobs:,} jobs ({args.big:,} in one batch, the rest in batches of {args.batch_size}) "
            f"by COPY, then VACUUM ANALYZE, in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        run(database_url, redis_url, big, args)


def run(database_url: str, redis_url: str, big: str, args: argparse.Namespace) -> None:
    from crawljobs.queries import query

    repeat = args.repeat
    params = {"tenant": TENANT, "limit": PAGE, "offset": 0, "search": None, "batch_id": big}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(OLD_INDEX)  # what today's queries read
        conn.execute("ANALYZE crawl_jobs")
        sql_rows = [
            (
                f"page of {PAGE} batches with counts",
                *timed_pair(conn, (OLD_LIST_BATCHES,), (query(NEW_LIST_BATCHES),), params, repeat),
            ),
            (
                f"one batch's counts ({args.big:,} jobs)",
                *timed_pair(conn, (OLD_BATCH_COUNTS,), (query("batch_counts"),), params, repeat),
            ),
            (
                "live job counts (/metrics)",
                *timed_pair(conn, (OLD_COUNT_LIVE_JOBS,), (query("count_live_jobs"),), params, repeat),
            ),
            (
                "overview: counts, per minute, per hour, cost today",
                *timed_pair(conn, DERIVED_OVERVIEW, overview_sql(), params, repeat, max(3, repeat // 8)),
            ),
        ]
        conn.execute("DROP INDEX crawl_jobs_batch_status")
    print_table(
        f"SQL in-process, median of {repeat} (ms) — before: today's queries; after: the kept counts (0007)",
        ("query", "before ms", "after ms", "ratio"),
        [(name, ms(b), ms(a), ratio(b, a)) for name, b, a in sql_rows],
    )

    prefix = f"benchdash{uuid.uuid4().hex[:6]}"
    with (
        api_process(
            database_url, redis_url, queue_prefix=prefix, metrics_open="true", metrics_cache_seconds="0"
        ) as (base, key),
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http,
    ):
        # The key's tenant is "bench", the fill's.
        http_rows = [
            (f"GET /v1/batches?limit={PAGE}", timed_http(http, f"/v1/batches?limit={PAGE}", repeat)),
            (
                f"GET /functions/v1/list-crawl-job-batches?limit={PAGE}",
                timed_http(http, f"/functions/v1/list-crawl-job-batches?limit={PAGE}", repeat),
            ),
            ("GET /v1/batches/{big}?limit=100", timed_http(http, f"/v1/batches/{big}?limit=100", repeat)),
            ("GET /metrics (uncached)", timed_http(http, "/metrics", repeat)),
        ]
        http_rows += dashboard_page_rows(http, key, big, repeat)
    print_table(
        f"Through the API process, server time (Server-Timing app), median of {repeat}",
        ("request", "after ms"),
        [(name, ms(value)) for name, value in http_rows],
    )

    manager_rows = asyncio.run(manager_times(database_url, redis_url, prefix, big, args.big, repeat))
    print_table(
        f"Manager methods in-process, median of {repeat}",
        ("call", "after ms"),
        [(name, ms(value)) for name, value in manager_rows],
    )

    write_rows = write_side(database_url, args)
    print_table(
        "The write side (the counts' cost)",
        ("what", "with counts", "without", "ratio"),
        write_rows,
    )


async def manager_times(
    database_url: str, redis_url: str, prefix: str, big: str, big_size: int, repeat: int
) -> list[tuple[str, float]]:
    settings = Settings(database_url=database_url, redis_url=redis_url, queue_prefix=prefix)
    pool = await open_pool(database_url, max_size=2)
    client = redis_client(redis_url)
    try:
        manager = JobManager(pool=pool, redis=client, settings=settings)
        first = await manager.batch_jobs_page(tenant=TENANT, batch_id=big, limit=50)
        assert first.next_after is not None and len(first.jobs) == 50
        errors = await manager.batch_jobs_page(tenant=TENANT, batch_id=big, status="error", limit=50)
        assert errors.jobs and all(job.status == "error" for job in errors.jobs)
        overview = await manager.overview(tenant=TENANT)
        assert len(overview.per_minute) == 60 and overview.total > 0

        def page(**kwargs: Any) -> Callable[[], Awaitable[Any]]:
            return lambda: manager.batch_jobs_page(tenant=TENANT, batch_id=big, limit=50, **kwargs)

        deep = str(big_size * 4 // 5)
        return [
            ("JobManager.overview", await timed_call(lambda: manager.overview(tenant=TENANT), repeat)),
            ("batch_jobs_page: first page (50)", await timed_call(page(), repeat)),
            (f"batch_jobs_page: after index {int(deep):,}", await timed_call(page(after=deep), repeat)),
            ("batch_jobs_page: status=error", await timed_call(page(status="error"), repeat)),
            (
                "batch_jobs_page: status=error, deep",
                await timed_call(page(status="error", after=deep), repeat),
            ),
            (
                "batch_jobs_page: search 'shop.example.org'",
                await timed_call(page(search="shop.example.org"), repeat),
            ),
            (
                "batch_jobs_page: search, no match",
                await timed_call(page(search="nowhere"), max(3, repeat // 4)),
            ),
        ]
    finally:
        await client.aclose()
        await pool.close()


def write_side(database_url: str, args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    rows = []
    rounds = 4  # each configuration first in half of the rounds: no order favours one
    copy_batch(database_url, args.big, "warm")
    with_counts, without = [], []
    for n in range(rounds):
        for first in (True, False) if n % 2 == 0 else (False, True):
            if first:
                with_counts.append(copy_batch(database_url, args.big, f"on{n}"))
            else:
                with without_count_triggers(database_url):
                    without.append(copy_batch(database_url, args.big, f"off{n}"))
    on, off = median(with_counts) * 1000, median(without) * 1000
    rows.append(
        (f"COPY of a {args.big:,}-job batch (ms, median of {rounds})", ms(on), ms(off), f"{on / off:.2f}x")
    )

    per_writer = 100 if args.quick else 300
    html = "<p>" + "x" * (PAGE_BYTES - 8) + "</p>"
    what = (
        f"{args.writers} workers finishing one batch's jobs, {PAGE_BYTES // 1000} KB pages "
        f"(jobs/s, median of {rounds})"
    )
    configs = {"8 shards": SHARDS, "1 shard (hot row)": 1}
    rates: dict[str, list[float]] = {name: [] for name in (*configs, "off")}
    order = [*configs, "off"]
    for n in range(rounds):
        for name in order[n % len(order) :] + order[: n % len(order)]:  # each first in turn
            shards = configs.get(name, 1)
            run = finish_rate(
                database_url, writers=args.writers, per_writer=per_writer, shards=shards, html=html
            )
            if name == "off":
                with without_count_triggers(database_url):
                    rates[name].append(asyncio.run(run))
            else:
                rates[name].append(asyncio.run(run))
    off_rate = statistics.median(rates["off"])
    for name in configs:
        rate = statistics.median(rates[name])
        rows.append((f"{what}, {name}", f"{rate:.0f}", f"{off_rate:.0f}", f"{rate / off_rate:.2f}x"))
    return rows


if __name__ == "__main__":
    main()

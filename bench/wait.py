"""From a job's completion to its waiter's answer, with 1 and with 1,000 concurrent waiters.

    python -m bench.wait [--single 200] [--many 1000] [--one-by-one 200] [--rounds 3] [--pool-size 10]

A real API process serves `GET /v1/jobs/{id}/wait`. The benchmark holds the waits open, then plays the worker
through the real lifecycle (``crawljobs.testing.FakeWorker``: the jobs claimed first, then finished in one
transaction that NOTIFYs their ids, 200 per NOTIFY, as a worker's pipeline does). Each sample is the time from
that finishing commit returning to the waiter's response arriving in the client. Three
ways, each printed as a row:

- ``1``: one waiter, its job completed alone;
- ``1000 held``: 1,000 waiters held open while their jobs complete one at a time (``--one-by-one`` of them per
  round, each commit after the previous answer arrived), so every sample is taken with 800+ other waiters
  waiting — the API's cost of holding a crowd;
- ``1000 at once``: 1,000 waiters whose jobs all complete in one transaction — the API answers 1,000 requests
  at the same moment, so the median is dominated by answering the 500 ahead of it.

Prints the median and the 99th percentile, and the database connections the API held while the waiters waited.
Services: CRAWLJOBS_BENCH_DATABASE_URL and CRAWLJOBS_BENCH_REDIS_URL, else embedded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import psycopg

from bench.common import api_process, median, scratch_database, services
from crawljobs.store.pool import open_pool
from crawljobs.testing import FakeWorker

# A request answered this fast found no backlog in the API.
QUIET_SECONDS = 0.02


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def complete(worker: FakeWorker, ids: list[str]) -> float:
    """Finish the jobs as a worker does (claimed first, untimed); the perf_counter when the commit returned."""
    await worker.claim(ids)
    await worker.complete(ids)
    return time.perf_counter()


def api_backends(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchone()
    assert row is not None
    return int(row[0])


async def submit(http: httpx.AsyncClient, count: int) -> list[str]:
    urls = [f"http://127.0.0.1:8999/wait/{uuid.uuid4().hex}/{i}" for i in range(count)]
    response = await http.post("/v1/batches", json={"urls": urls})
    response.raise_for_status()
    return [str(i) for i in response.json()["job_ids"]]


async def held(http: httpx.AsyncClient, canary: str) -> None:
    """Return once the API has taken in every wait sent before: a wait on a final job (the canary) is answered
    quickly only when no request is queued ahead of it."""
    deadline = time.perf_counter() + 60
    while True:
        started = time.perf_counter()
        response = await http.get(f"/v1/jobs/{canary}/wait", params={"timeout": 0})
        response.raise_for_status()
        if time.perf_counter() - started < QUIET_SECONDS:
            break
        if time.perf_counter() > deadline:
            raise RuntimeError(
                f"the API never answered within {QUIET_SECONDS * 1000:.0f} ms in 60 s: the machine is too busy "
                "to measure (requests would still be queued when the jobs complete)"
            )
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)


async def raw_get(base: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One GET on its own connection, with asyncio streams: a thousand of them cost the client little (an
    httpx pool of a thousand busy connections costs it seconds, which would be measured as the API's)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, await reader.readexactly(length)
    finally:
        writer.close()


async def round_trip(
    http: httpx.AsyncClient,
    conn: psycopg.Connection[tuple[Any, ...]],
    worker: FakeWorker,
    ids: list[str],
    canary: str,
) -> tuple[list[float], int]:
    """Open a wait per id, complete them all at once; the latency of each (ms) and the API's connections."""
    answered: dict[str, float] = {}

    async def wait(job_id: str) -> None:
        status, raw = await raw_get(
            str(http.base_url).rstrip("/"), f"/v1/jobs/{job_id}/wait?timeout=120", headers
        )
        answered[job_id] = time.perf_counter()
        body = json.loads(raw)
        if status != 200 or body["status"] != "completed" or body["timed_out"]:
            raise RuntimeError(f"unexpected answer: {status} {body}")

    headers = {"Authorization": http.headers["Authorization"]}

    tasks = [asyncio.create_task(wait(job_id)) for job_id in ids]
    await held(http, canary)
    if any(t.done() for t in tasks):
        await asyncio.gather(*tasks)
        raise RuntimeError("a wait was answered before its job completed")
    connections = api_backends(conn)
    committed = await complete(worker, ids)
    await asyncio.gather(*tasks)
    return [(answered[job_id] - committed) * 1000 for job_id in ids], connections


async def one_by_one(
    http: httpx.AsyncClient,
    conn: psycopg.Connection[tuple[Any, ...]],
    worker: FakeWorker,
    ids: list[str],
    canary: str,
    count: int,
) -> tuple[list[float], int]:
    """Open a wait per id; complete `count` of them one at a time (each after the previous answer), then the
    rest at once. The latencies (ms) of the one-at-a-time answers and the API's connections."""
    answered: dict[str, float] = {}
    headers = {"Authorization": http.headers["Authorization"]}
    base = str(http.base_url).rstrip("/")

    async def wait(job_id: str) -> None:
        status, raw = await raw_get(base, f"/v1/jobs/{job_id}/wait?timeout=120", headers)
        answered[job_id] = time.perf_counter()
        if status != 200 or json.loads(raw)["status"] != "completed":
            raise RuntimeError(f"unexpected answer: {status} {raw[:200]!r}")

    tasks = {job_id: asyncio.create_task(wait(job_id)) for job_id in ids}
    await held(http, canary)
    if any(t.done() for t in tasks.values()):
        await asyncio.gather(*tasks.values())
        raise RuntimeError("a wait was answered before its job completed")
    connections = api_backends(conn)
    latencies: list[float] = []
    for job_id in ids[:count]:
        committed = await complete(worker, [job_id])
        await tasks[job_id]
        latencies.append((answered[job_id] - committed) * 1000)
    await complete(worker, ids[count:])
    await asyncio.gather(*tasks.values())
    return latencies, connections


async def run(base: str, key: str, database_url: str, args: argparse.Namespace) -> None:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    headers = {"Authorization": f"Bearer {key}"}
    pool = await open_pool(database_url, max_size=2)
    worker = FakeWorker(pool, worker="bench-wait")
    with psycopg.connect(database_url, autocommit=True) as conn:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=180, limits=limits) as http:
            canary = (await submit(http, 1))[0]
            await complete(worker, [canary])
            print(
                f"{'waiters':>14} {'samples':>8} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} {'API conns':>10}"
            )
            ways = (
                ("1", 1, args.single, None),
                (f"{args.many} held", args.many, args.rounds, args.one_by_one),
                (f"{args.many} at once", args.many, args.rounds, None),
            )
            for label, waiters, rounds, count in ways:
                samples: list[float] = []
                peak = 0
                # One warm-up round, not counted.
                for index in range(rounds + 1):
                    ids = await submit(http, waiters)
                    if count is None:
                        latencies, connections = await round_trip(http, conn, worker, ids, canary)
                    else:
                        latencies, connections = await one_by_one(http, conn, worker, ids, canary, count)
                    if index:
                        samples.extend(latencies)
                        peak = max(peak, connections)
                print(
                    f"{label:>14} {len(samples):>8} {median(samples):>10.1f} "
                    f"{percentile(samples, 0.99):>8.1f} {max(samples):>8.1f} {peak:>10}"
                )
    await pool.close()
    print(f"(API pool size {args.pool_size}, plus one LISTEN connection; 'API conns' sampled while waiting)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--single", type=int, default=200, help="rounds with one waiter")
    parser.add_argument("--many", type=int, default=1000, help="concurrent waiters in the crowded rounds")
    parser.add_argument(
        "--one-by-one", type=int, default=200, help="jobs completed one at a time per 'held' round"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each way with --many waiters")
    parser.add_argument("--pool-size", type=int, default=10)
    args = parser.parse_args()
    with (
        services() as (admin_url, redis_url),
        scratch_database(admin_url) as database_url,
        api_process(
            database_url,
            redis_url,
            allowed_networks="127.0.0.1/32",
            queue_prefix=f"bench{uuid.uuid4().hex[:6]}",
            db_pool_size=str(args.pool_size),
        ) as (base, key),
    ):
        asyncio.run(run(base, key, database_url, args))


if __name__ == "__main__":
    main()

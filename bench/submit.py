"""Batch submission through the HTTP API, next to a bare COPY of the same rows, in one run.

    python -m bench.submit [--sizes 10000,50000] [--repeat 3]

For each size: the batch is POSTed to /v1/batches of a real API process (URL checks, one transaction with
COPY, the push of every id to Redis, the JSON response with every job id); the baseline COPYs the same rows
(same columns, same values, one text buffer) into crawl_jobs with psycopg and nothing else. Prints the medians and the ratio.
Services: CRAWLJOBS_BENCH_DATABASE_URL and CRAWLJOBS_BENCH_REDIS_URL, else embedded ones.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime

import httpx
import psycopg

from bench.common import api_process, median, scratch_database, server_ms, services
from crawljobs.ids import new_job_ids
from crawljobs.queries import query


def make_urls(count: int, run: str) -> list[str]:
    return [f"http://127.0.0.1:8999/products/{run}/{i}?page={i % 50}&sort=price" for i in range(count)]


def bare_copy(database_url: str, urls: list[str]) -> float:
    """Seconds to insert a batch row and COPY its jobs (one text buffer, as the store does), with nothing else."""
    batch_id = f"copy-{uuid.uuid4().hex[:12]}"
    started = time.perf_counter()
    ids = new_job_ids(len(urls))
    stamp = datetime.now(UTC).isoformat()
    buffer = "".join(
        f"{job_id}\tbench\t{batch_id}\t{index}\t{url}\tf\tf\tf\tf\t3\t4\t{stamp}\t\\N\t\\N\n"
        for index, (job_id, url) in enumerate(zip(ids, urls, strict=True))
    )
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO crawl_batches (tenant, batch_id, total, max_retries) VALUES ('bench', %s, %s, 3)",
            (batch_id, len(urls)),
        )
        with conn.cursor() as cur, cur.copy(query("copy_jobs")) as copy:
            copy.write(buffer.encode())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,50000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    with (
        services() as (admin_url, redis_url),
        scratch_database(admin_url) as database_url,
        api_process(
            database_url,
            redis_url,
            allowed_networks="127.0.0.1/32",
            queue_prefix=f"bench{uuid.uuid4().hex[:6]}",
        ) as (base, key),
    ):
        headers = {"Authorization": f"Bearer {key}"}
        print(f"{'URLs':>7} {'API server ms':>14} {'API client ms':>14} {'bare COPY ms':>13} {'ratio':>7}")
        with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
            # One small batch first, so connection pools and imports are warm in both paths.
            http.post("/v1/batches", json={"urls": make_urls(10, "warm")}).raise_for_status()
            bare_copy(database_url, make_urls(10, "warm"))
            for size in sizes:
                server, client, copy = [], [], []
                for rep in range(args.repeat):
                    urls = make_urls(size, f"api{rep}")
                    started = time.perf_counter()
                    response = http.post("/v1/batches", json={"urls": urls})
                    client.append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
                    body = response.json()
                    assert body["accepted"] == size, body
                    server.append(server_ms(response))
                    copy.append(bare_copy(database_url, make_urls(size, f"copy{rep}")) * 1000)
                s, c, b = median(server), median(client), median(copy)
                print(f"{size:>7} {s:>14.1f} {c:>14.1f} {b:>13.1f} {s / b:>6.2f}x")
        print(f"(medians of {args.repeat} runs; ratio = API server time / bare COPY time)")


if __name__ == "__main__":
    main()

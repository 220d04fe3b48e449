"""Browser capacity that is real (issue 11, item 6): a worker claims only the render jobs its browser can start
soon, and a job's processing time counts from the start of its fetch, not its wait for a page.

Before: a worker claimed up to 128 jobs whatever its browser's pages, so render jobs waited inside it holding
their leases, and their ``processing_time_ms`` counted the wait.
"""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from tests.acceptance.site import TestSite
from tests.acceptance.system import System

pytestmark = pytest.mark.acceptance

JOBS = 10


def test_a_worker_holds_only_the_renders_it_can_start_and_counts_time_from_the_fetch(
    fresh: System, site: TestSite
) -> None:
    fresh.start_worker(CRAWLJOBS_BROWSER_CONCURRENCY="1")
    fresh.start_sweeper()
    key = uuid.uuid4().hex
    ids = fresh.submit_batch([site.url(f"/slow?delay=0.5&n={key}-{i}") for i in range(JOBS)], render=True)
    held: list[int] = []
    done = threading.Event()

    def watch() -> None:
        assert fresh.settings.database_url is not None
        with psycopg.connect(fresh.settings.database_url) as conn:
            while not done.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM crawl_jobs WHERE id = ANY(%s) AND status = 'processing'", (ids,)
                ).fetchone()
                held.append(int(row[0]) if row else 0)
                time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        jobs = fresh.wait_final(ids, timeout=240)
    finally:
        done.set()
        watcher.join(5)
    assert [job["status"] for job in jobs] == ["completed"] * JOBS
    # One page: the one rendering and one more round claimed, never the whole batch.
    assert max(held) <= 3, f"the worker held up to {max(held)} render jobs for 1 page"
    for job in jobs:
        fetched_ms = sum(attempt["duration_ms"] for attempt in job["attempts"])
        # The processing time is the fetch's and the result's writing, not the wait for the page before it.
        assert job["processing_time_ms"] <= fetched_ms + 1500, (job["processing_time_ms"], fetched_ms)

"""Workers killed for real, drained, fed duplicates, and run in their bounded modes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis

from crawljobs.config import Settings
from crawljobs.manager import JobManager
from crawljobs.queue import QueueKeys
from tests.acceptance.site import TestSite
from tests.acceptance.system import ROOT, System, worker_env

pytestmark = pytest.mark.acceptance


def crawl(settings: Settings, *spider_args: str) -> subprocess.CompletedProcess[str]:
    """`scrapy crawl crawl_jobs -a ...` run to its end, as an operator would."""
    argv = [sys.executable, "-m", "scrapy", "crawl", "crawl_jobs"]
    for arg in spider_args:
        argv += ["-a", arg]
    return subprocess.run(
        argv, env=worker_env(settings), cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def held_by(settings: Settings, ids: list) -> int:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM crawl_jobs WHERE id = ANY(%s) AND status = 'processing'", (ids,)
        ).fetchone()
    return row[0] if row else 0


def test_sigkill_mid_job_completes_through_lease_expiry(fresh: System, site: TestSite) -> None:
    worker = fresh.start_worker()
    ids = fresh.submit_batch([site.url(f"/slow?delay=6&n={i}") for i in range(3)])
    fresh.wait_for(lambda: held_by(fresh.settings, ids) == 3, "the worker held the three jobs")
    worker.signal(signal.SIGKILL)
    worker.wait(10)
    killed_at = time.monotonic()
    # A new worker and the sweeper: the leases expire, the jobs go back to pending and are done again.
    fresh.start_sweeper()
    fresh.start_worker()
    jobs = fresh.wait_final(ids, timeout=90)
    assert [j["status"] for j in jobs] == ["completed"] * 3, [j["error_message"] for j in jobs]
    assert all(j["attempt"] == 2 for j in jobs)
    recovery = time.monotonic() - killed_at
    assert recovery > fresh.settings.lease_seconds - 1  # not before the lease ran out


def test_sigterm_drains_cleanly_and_exits_zero(fresh: System, site: TestSite) -> None:
    worker = fresh.start_worker()
    ids = fresh.submit_batch([site.url(f"/slow?delay=1&n={i}") for i in range(4)])
    fresh.wait_for(lambda: held_by(fresh.settings, ids) > 0, "the worker held a job")
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.output()[-3000:]
    # Every job is finished or given back: none is left held by the stopped worker.
    assert held_by(fresh.settings, ids) == 0
    fresh.start_sweeper()
    fresh.start_worker()
    jobs = fresh.wait_final(ids, timeout=60)
    assert [j["status"] for j in jobs] == ["completed"] * 4


def test_the_same_job_dispatched_twice_completes_once(fresh: System, site: TestSite) -> None:
    job_id = fresh.submit(site.url("/ok/twice"))
    keys = QueueKeys.for_prefix(fresh.settings.queue_prefix)
    client = redis.Redis.from_url(fresh.settings.redis_url or "")
    try:
        for _ in range(3):
            client.rpush(keys.priority, str(job_id))
        client.rpush(keys.priority, "not-a-job-id", '{"url": "http://127.0.0.2/"}')
        worker = fresh.start_worker()
        fresh.wait_final([job_id])
        # Every message taken (the duplicates and the junk too); then the worker drains and stops, so that
        # whatever it made of them is done before the job and the site are read.
        fresh.wait_for(
            lambda: sum(int(client.llen(key)) for key in keys.in_order) == 0, "the worker took every message"
        )
    finally:
        client.close()
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.output()[-3000:]
    job = fresh.job(job_id)
    assert job["status"] == "completed"
    assert job["attempt"] == 1
    assert len(job["attempts"]) == 1
    assert len(site.hits("/ok/twice")) == 1


def test_max_jobs_mode_processes_n_and_exits(fresh: System, site: TestSite) -> None:
    ids = fresh.submit_batch([site.url(f"/ok/m{i}") for i in range(5)] + [site.url("/notfound")])
    result = crawl(fresh.settings, "max_jobs=6")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Processed 6 jobs (5 completed, 1 failed)" in result.stdout
    assert [j["status"] for j in fresh.wait_final(ids, timeout=5)] == ["completed"] * 5 + ["error"]


def test_url_mode_makes_a_batch_and_crawls_it(fresh: System, site: TestSite, tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text(f"{site.url('/ok/u1')}\n{site.url('/ok/u2')}\nftp://refused.example/\n")
    result = crawl(fresh.settings, f"urls={listing}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Processed 2 jobs (2 completed, 0 failed)" in result.stdout
    single = crawl(fresh.settings, f"url={site.url('/ok/u3')}")
    assert "Processed 1 jobs (1 completed, 0 failed)" in single.stdout, single.stderr[-3000:]


@pytest.mark.parametrize("engine", ["http", "impersonate"])
def test_cancel_during_a_fetch_writes_no_result(fresh: System, site: TestSite, engine: str) -> None:
    """The http engine finishes the fetch and its write is fenced out; the impersonate engine stops the
    transfer as soon as the heartbeat finds the job gone, and writes nothing either."""
    worker = fresh.start_worker(CRAWLJOBS_LOG_FORMAT="json", CRAWLJOBS_LADDER=f"{engine}:direct")
    job_id = fresh.submit(site.url(f"/slow?delay=3&n=cancel-{engine}"))
    fresh.wait_for(lambda: held_by(fresh.settings, [job_id]) == 1, "the worker held the job")

    async def cancel(manager: JobManager) -> str:
        return (await manager.cancel_job(tenant="acceptance", job_id=job_id)).status

    assert fresh.with_manager(cancel) == "cancelled"
    site.wait_for_hits(f"/slow?delay=3&n=cancel-{engine}", 1, timeout=10)

    def result_refused() -> bool:  # the worker got the page and tried to write it: its fence failed
        return any(
            line.get("action") == "fenced_out" and line.get("job_id") == str(job_id)
            for line in worker.json_lines()
        )

    def transfer_stopped() -> bool:
        return any(
            str(job_id) in line.get("message", "") and "transfer is stopped" in line.get("message", "")
            for line in worker.json_lines()
        )

    if engine == "http":
        fresh.wait_for(result_refused, "the worker's result for the cancelled job was refused")
    else:
        fresh.wait_for(transfer_stopped, "the cancelled job's transfer to stop")
        time.sleep(4)  # past the page's 3 s: nothing comes to write
        assert not result_refused()
    job = fresh.job(job_id)
    assert job["status"] == "cancelled"
    assert job["html"] is None
    assert job["success_method"] is None


def _node_children(pid: int) -> list[str]:
    """The Node processes (Playwright's driver) under a worker process."""
    import psutil

    names = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "node" in child.name() or any("playwright" in part for part in child.cmdline()[:2]):
                names.append(" ".join(child.cmdline()[:3]))
        except psutil.NoSuchProcess:
            continue
    return names


def test_playwright_starts_with_the_first_render_not_with_the_worker(fresh: System, site: TestSite) -> None:
    """A worker started in a dead one's place must take plain jobs at once (issue 10): Playwright's driver and
    Chromium start with the first render, never for a worker that has only fetched plainly."""
    worker = fresh.start_worker()
    (plain,) = fresh.wait_final([fresh.submit(site.url("/ok/plain-first"))])
    assert plain["status"] == "completed" and plain["success_method"] == "impersonate:direct"
    assert _node_children(worker.popen.pid) == [], "Playwright started for a worker that rendered nothing"
    (rendered,) = fresh.wait_final([fresh.submit(site.url("/ok/rendered"), render=True)], timeout=120)
    assert rendered["status"] == "completed" and rendered["success_method"] == "browser:direct"
    assert _node_children(worker.popen.pid), "the first render started no Playwright driver"
    # And our configuration draws no deprecation warning from Scrapy at start (DNS_RESOLVER was one, issue 12).
    assert "Deprecat" not in worker.output(), worker.output()[-3000:]

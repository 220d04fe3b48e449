"""The running system of an acceptance test: real worker, sweeper and API processes on the test database and
Redis.

Jobs are submitted through the job manager (the same code the API runs) and watched in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from crawljobs.config import Settings
from crawljobs.manager import JobManager
from crawljobs.models import SubmitOptions
from crawljobs.queue import redis_client

ROOT = Path(__file__).resolve().parents[2]


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CRAWLJOBS_")}
    env.update(
        {
            "CRAWLJOBS_DATABASE_URL": settings.database_url or "",
            "CRAWLJOBS_REDIS_URL": settings.redis_url or "",
            "CRAWLJOBS_QUEUE_PREFIX": settings.queue_prefix,
            "CRAWLJOBS_ALLOWED_NETWORKS": ",".join(settings.allowed_networks),
            "CRAWLJOBS_PREMIUM_PROXIES": ",".join(settings.premium_proxies),
            "CRAWLJOBS_ULTRA_PREMIUM_PROXIES": ",".join(settings.ultra_premium_proxies),
            "CRAWLJOBS_LEASE_SECONDS": str(settings.lease_seconds),
            "CRAWLJOBS_SWEEP_INTERVAL_SECONDS": str(settings.sweep_interval_seconds),
            "CRAWLJOBS_DISPATCH_STALE_SECONDS": str(settings.dispatch_stale_seconds),
            "CRAWLJOBS_MAX_BODY_BYTES": str(settings.max_body_bytes),
            "CRAWLJOBS_DOWNLOAD_TIMEOUT": str(settings.download_timeout),
            "CRAWLJOBS_EXPLORE_RATE": str(settings.explore_rate),
            "CRAWLJOBS_DOMAIN_MEMORY": str(settings.domain_memory).lower(),
            "SCRAPY_SETTINGS_MODULE": "crawlproject.settings",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class Process:
    """A child process of the system (worker, sweeper, API) with its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._handle = log.open("wb")
        self.popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._handle, stderr=subprocess.STDOUT)

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._handle.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        """Every line the process wrote, each parsed as JSON (its logs in CRAWLJOBS_LOG_FORMAT=json; any line
        that is not JSON fails the test)."""
        text = self.output()
        lines = []
        # Complete lines only: the process may be writing the last one now.
        for number, line in enumerate(text[: text.rfind("\n") + 1].splitlines(), 1):
            if line.strip():
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    raise AssertionError(f"line {number} of {self.log.name} is not JSON: {line!r}") from None
        return lines


class System:
    """Workers, sweepers and API processes on the settings' database and Redis; submit, wait and inspect jobs."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.processes: list[Process] = []

    def start_worker(self, *args: str, **env: str) -> Process:
        argv = [sys.executable, "-m", "scrapy", "crawl", "crawl_jobs", *args]
        log = self.logs / f"worker-{len(self.processes)}.log"
        process = Process(argv, worker_env(self.settings, **env), log)
        self.processes.append(process)
        return process

    def start_sweeper(self) -> Process:
        argv = [sys.executable, "-m", "crawljobs.cli", "sweeper"]
        process = Process(argv, worker_env(self.settings), self.logs / f"sweeper-{len(self.processes)}.log")
        self.processes.append(process)
        return process

    def start_api(self, port: int) -> Process:
        """An API process (``crawljobs api``) on 127.0.0.1:``port``, its log beside the others'; returned once
        it answers ready."""
        argv = [sys.executable, "-m", "crawljobs.cli", "api", "--host", "127.0.0.1", "--port", str(port)]
        process = Process(argv, worker_env(self.settings), self.logs / f"api-{len(self.processes)}.log")
        self.processes.append(process)

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return process.popen.poll() is not None  # it exited: fail below, without waiting on

        self.wait_for(ready, f"the API process on port {port} ready", timeout=60)
        assert process.popen.poll() is None, f"the API process exited\n{process.output()[-3000:]}"
        return process

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def logs_text(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.output()[-4000:]}" for p in self.processes)

    def wait_for(self, condition: Callable[[], object], what: str, timeout: float = 30) -> None:
        """Poll until ``condition()`` holds, or fail with ``what`` and the processes' logs after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout:.0f} s: {what}\n{self.logs_text()}")
            time.sleep(0.05)

    # -- jobs ------------------------------------------------------------------------------------

    def with_manager(self, body: Callable[[JobManager], Coroutine[Any, Any, Any]]) -> Any:
        async def main() -> Any:
            assert self.settings.database_url is not None
            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                self.settings.database_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
            )
            await pool.open()
            redis = redis_client(self.settings.redis_url) if self.settings.redis_url else None
            try:
                return await body(JobManager(pool=pool, redis=redis, settings=self.settings))
            finally:
                if redis is not None:
                    await redis.aclose()
                await pool.close()

        return asyncio.run(main())

    def submit(self, url: str, **flags: Any) -> uuid.UUID:
        async def body(manager: JobManager) -> uuid.UUID:
            return (
                await manager.submit_job(tenant="acceptance", url=url, options=SubmitOptions(**flags))
            ).job.id

        job_id: uuid.UUID = self.with_manager(body)
        return job_id

    def submit_batch(self, urls: list[str], **flags: Any) -> list[uuid.UUID]:
        async def body(manager: JobManager) -> list[uuid.UUID]:
            submission = await manager.submit_batch(
                tenant="acceptance", urls=urls, options=SubmitOptions(**flags)
            )
            return [i for i in submission.job_ids if i is not None]

        ids: list[uuid.UUID] = self.with_manager(body)
        return ids

    def job(self, job_id: uuid.UUID) -> dict[str, Any]:
        assert self.settings.database_url is not None
        with psycopg.connect(self.settings.database_url, row_factory=dict_row) as conn:
            row = conn.execute("SELECT * FROM crawl_jobs WHERE id = %s", (job_id,)).fetchone()
            assert row is not None
            row["attempts"] = conn.execute(
                "SELECT * FROM crawl_attempts WHERE job_id = %s ORDER BY id", (job_id,)
            ).fetchall()
        return row

    def wait_final(self, job_ids: list[uuid.UUID], timeout: float = 60) -> list[dict[str, Any]]:
        """Every job in a final state (or an AssertionError with the workers' logs)."""
        assert self.settings.database_url is not None
        deadline = time.monotonic() + timeout
        while True:
            with psycopg.connect(self.settings.database_url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM crawl_jobs WHERE id = ANY(%s) AND status IN ('completed','error','cancelled')",
                    (job_ids,),
                ).fetchone()
            if row is not None and row[0] == len(job_ids):
                return [self.job(i) for i in job_ids]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(job_ids) - (row[0] if row else 0)} of {len(job_ids)} jobs not final after {timeout}s\n"
                    + self.logs_text()
                )
            time.sleep(0.1)


@contextmanager
def running_system(settings: Settings, logs: Path) -> Iterator[System]:
    system = System(settings, logs)
    try:
        yield system
    finally:
        system.stop()

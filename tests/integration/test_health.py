"""`crawljobs health worker|sweeper|api`: the containers' health checks, against real processes and servers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crawljobs.config import Settings
from crawljobs.health import Unhealthy, check_api, check_sweeper, check_worker
from crawljobs.manager import JobManager
from crawljobs.sweeper import HEARTBEAT_FILE, Sweeper
from tests.integration.conftest import run_with_manager
from tests.integration.test_leases_and_sweeper import start_holder

ROOT = Path(__file__).resolve().parents[2]


def health(settings: Settings, role: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command a container's health check runs, with the role's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLJOBS_")}
    env.update(
        CRAWLJOBS_DATABASE_URL=settings.database_url or "",
        CRAWLJOBS_REDIS_URL=settings.redis_url or "",
        CRAWLJOBS_QUEUE_PREFIX=settings.queue_prefix,
        CRAWLJOBS_DATA_DIR=str(settings.data_dir),
    )
    return subprocess.run(
        [sys.executable, "-m", "crawljobs.cli", "health", role, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_live_worker_of_this_host_is_healthy_and_a_dead_one_is_not(settings: Settings) -> None:
    assert settings.database_url is not None
    with pytest.raises(Unhealthy, match="no worker of host"):
        check_worker(settings)
    refused = health(settings, "worker")
    assert refused.returncode == 1 and "unhealthy: no worker of host" in refused.stderr

    holder, _worker_id = start_holder(settings.database_url, [])  # holds its liveness lock, registered
    try:
        assert "1 worker(s) of host" in check_worker(settings)
        assert health(settings, "worker").returncode == 0
        with pytest.raises(Unhealthy):  # another machine's check does not count this one
            check_worker(settings, host=f"not-{socket.gethostname()}")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    # Its session ended with it: the lock is gone at once, so the check fails though the row is still there.
    with pytest.raises(Unhealthy, match="holds its liveness lock"):
        check_worker(settings)


def test_the_worker_check_fails_without_a_database(settings: Settings) -> None:
    closed = settings.model_copy(update={"database_url": "postgresql://postgres@127.0.0.1:1/none"})
    with pytest.raises(Unhealthy, match="cannot read the worker registry"):
        check_worker(closed)


def test_the_sweeper_touches_its_heartbeat_and_the_check_reads_its_age(
    settings: Settings, tmp_path: Path
) -> None:
    swept = settings.model_copy(update={"data_dir": tmp_path})
    with pytest.raises(Unhealthy, match="no sweeper heartbeat"):
        check_sweeper(swept)

    async def run_a_while(manager: JobManager) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(Sweeper(manager).run(stop))
        for _ in range(200):
            if (tmp_path / HEARTBEAT_FILE).exists():
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task

    run_with_manager(swept, run_a_while)
    assert "last liveness pass" in check_sweeper(swept)
    assert health(swept, "sweeper").returncode == 0
    old = time.time() - 600
    os.utime(tmp_path / HEARTBEAT_FILE, (old, old))
    with pytest.raises(Unhealthy, match="600 s ago"):
        check_sweeper(swept)
    assert health(swept, "sweeper", "--max-age", "900").returncode == 0


def test_a_sweeper_writes_no_heartbeat_where_its_data_folder_does_not_exist(
    settings: Settings, tmp_path: Path
) -> None:
    swept = settings.model_copy(update={"data_dir": tmp_path / "absent"})
    run_with_manager(swept, lambda manager: Sweeper(manager).sweep_once())

    async def one_pass(manager: JobManager) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(Sweeper(manager).run(stop))
        await asyncio.sleep(0.5)
        stop.set()
        await task

    run_with_manager(swept, one_pass)
    assert not (tmp_path / "absent").exists()


def test_the_api_check_fails_when_nothing_answers(settings: Settings) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Unhealthy, match="does not answer"):
        check_api(settings, url=f"http://127.0.0.1:{port}")
    assert health(settings, "api", "--url", f"http://127.0.0.1:{port}").returncode == 1
    assert health(settings, "nonsense").returncode == 2

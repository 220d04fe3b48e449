"""Three workers as three machines would run them: separate processes, each with its own host name (a UTS
namespace of its own, so its worker id and registration name a host of its own), its own settings (fetch
concurrency, per-domain concurrency, data folder, log format), all pointed at one PostgreSQL and one Redis, as
docs/OPERATIONS.md describes. A batch submitted through a real API process is spread over all three, and every
job is fetched and written exactly once."""

from __future__ import annotations

import collections
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from crawljobs.health import check_api, check_sweeper, check_worker
from crawljobs.keys import create_key
from tests.acceptance.site import TestSite
from tests.acceptance.system import Process, System, worker_env

pytestmark = pytest.mark.acceptance

JOBS = 240
# Each machine's own settings, as its environment would give them.
MACHINES = {
    "crawl-machine-a": {"CRAWLJOBS_WORKER_CONCURRENCY": "4", "CRAWLJOBS_PER_DOMAIN_CONCURRENCY": "4"},
    "crawl-machine-b": {"CRAWLJOBS_WORKER_CONCURRENCY": "8", "CRAWLJOBS_PER_DOMAIN_CONCURRENCY": "8"},
    "crawl-machine-c": {
        "CRAWLJOBS_WORKER_CONCURRENCY": "16",
        "CRAWLJOBS_PER_DOMAIN_CONCURRENCY": "16",
        "CRAWLJOBS_LOG_FORMAT": "json",
    },
}


def own_host_names() -> bool:
    """Whether this user may give a process a host name of its own (`unshare --uts`: root, as in CI)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--uts", "sh", "-c", "hostname crawl-probe && hostname"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return probe.returncode == 0 and probe.stdout.strip() == "crawl-probe"


def start_machine(system: System, host: str, data_dir: Path, env: dict[str, str], separate: bool) -> Process:
    """`crawljobs worker` (the image's worker command) on a "machine" of its own."""
    data_dir.mkdir()
    environment = worker_env(system.settings, CRAWLJOBS_DATA_DIR=str(data_dir), **env)
    command = [sys.executable, "-m", "crawljobs.cli", "worker"]
    if separate:  # the host name is set in the new namespace, then the worker replaces the shell (same pid)
        command = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *command]
    process = Process(command, environment, system.logs / f"{host}.log")
    system.processes.append(process)
    return process


def registered(system: System) -> list[tuple[str, str]]:
    assert system.settings.database_url is not None
    with psycopg.connect(system.settings.database_url) as conn:
        return [
            (row[0], row[1]) for row in conn.execute("SELECT worker_id, host FROM crawl_workers").fetchall()
        ]


@pytest.mark.timeout(400)
def test_three_workers_on_three_machines_share_one_batch(
    fresh: System, clean_site: TestSite, tmp_path: Path
) -> None:
    settings = fresh.settings
    assert settings.database_url is not None
    separate = own_host_names()
    hosts = list(MACHINES) if separate else [socket.gethostname()] * 3

    sweeper_dir = tmp_path / "sweeper"
    sweeper_dir.mkdir()
    sweeper = Process(
        [sys.executable, "-m", "crawljobs.cli", "sweeper"],
        worker_env(settings, CRAWLJOBS_DATA_DIR=str(sweeper_dir)),
        fresh.logs / "sweeper.log",
    )
    fresh.processes.append(sweeper)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fresh.start_api(port)
    base = f"http://127.0.0.1:{port}"
    key = create_key(settings.database_url, name="machines", tenant="machines")

    workers = [
        start_machine(fresh, host, tmp_path / f"data-{index}", env, separate)
        for index, (host, env) in enumerate(zip(hosts, MACHINES.values(), strict=True))
    ]
    # All three announced (their liveness locks taken, registered) before any work arrives.
    fresh.wait_for(lambda: len(registered(fresh)) == 3, "the three workers registered", timeout=90)
    if separate:
        assert sorted(host for _, host in registered(fresh)) == sorted(MACHINES)
        for host in MACHINES:  # each machine's health check sees its own worker alive
            assert "1 worker(s) of host" in check_worker(settings, host=host)
    assert "ready" in check_api(settings, url=base)
    fresh.wait_for(lambda: (sweeper_dir / "sweeper-heartbeat").exists(), "the sweeper's first heartbeat")
    assert "last liveness pass" in check_sweeper(settings.model_copy(update={"data_dir": sweeper_dir}))

    urls = [clean_site.url(f"/slow?delay=0.2&n={index}") for index in range(JOBS)]
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
        submitted = api.post("/v1/batches", json={"urls": urls})
        assert submitted.status_code == 201, submitted.text
        batch_id = submitted.json()["batch_id"]
        assert submitted.json()["accepted"] == JOBS
        done = None
        for _ in range(6):
            done = api.get(f"/v1/batches/{batch_id}/wait", params={"timeout": 30}).json()
            if not done["timed_out"]:
                break
        assert done is not None and not done["timed_out"], fresh.logs_text()
        assert done["counts"]["completed"] == JOBS, done

    with psycopg.connect(settings.database_url) as conn:
        jobs = conn.execute(
            "SELECT id, status, attempt FROM crawl_jobs WHERE batch_id = %s AND tenant = 'machines'",
            (batch_id,),
        ).fetchall()
        attempts = conn.execute(
            "SELECT a.job_id, a.worker, a.outcome FROM crawl_attempts a JOIN crawl_jobs j ON j.id = a.job_id"
            " WHERE j.batch_id = %s AND j.tenant = 'machines'",
            (batch_id,),
        ).fetchall()
    # Nothing lost, nothing doubled: every job completed on its first claim, fetched once, written once.
    assert len(jobs) == JOBS
    assert {status for _, status, _ in jobs} == {"completed"}
    assert {attempt for _, _, attempt in jobs} == {1}
    assert len(attempts) == JOBS
    assert len({job_id for job_id, _, _ in attempts}) == JOBS
    hits = collections.Counter(hit.target for hit in clean_site.hits())
    assert all(hits[f"/slow?delay=0.2&n={index}"] == 1 for index in range(JOBS)), hits.most_common(3)

    # Spread over all three: each machine's worker took a share of the batch.
    by_worker = collections.Counter(worker for _, worker, _ in attempts)
    worker_ids = {worker_id for worker_id, _ in registered(fresh)}
    assert set(by_worker) == worker_ids, (by_worker, worker_ids)
    assert min(by_worker.values()) >= JOBS // 20, by_worker
    if separate:
        assert sorted(worker.split(":")[0] for worker in by_worker) == sorted(MACHINES)
    print(f"jobs per worker: {dict(by_worker)}")

    for worker in workers:  # each drains and exits cleanly
        worker.signal(15)
    for worker in workers:
        assert worker.wait(60) == 0, worker.output()[-3000:]
    assert registered(fresh) == []
    # The machine whose logs were set to JSON wrote JSON lines only.
    assert workers[2].json_lines()

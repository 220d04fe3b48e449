"""Fault injection: a batch of jobs runs through two real workers and a sweeper while something breaks for real.

Each case kills or restarts a real process or server in the middle of a batch (``FAULT_AT`` of it completed),
then checks what the design promises: every job ends ``completed`` (none lost), none is completed twice (the
audit trigger of ``tests.faults.harness``), and recovery — from the end of the fault until no job is stranded
(neither held by a live worker nor queued) — takes at most twice the lease. What each case counted is printed
at the end of pytest's output.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from bench.common import free_port
from crawljobs.keys import create_key
from tests.faults.harness import LEASE_SECONDS, SUBMIT_CHUNK, FaultRun
from tests.faults.waiters import Waiters

pytestmark = [pytest.mark.faults]

RunFactory = Callable[[str], FaultRun]
WAITERS = 50  # clients waiting on jobs through the API in the API-restart case
HELD_BACK = 0.2  # the share of the batch the SIGTERM case submits once its new workers are up
# The SIGSTOP case's freeze: several liveness checks long, and shorter than what is left of a lease after a
# missed heartbeat (renewed every third of it: at least two thirds of it are left when the freeze starts).
STOPPED_SECONDS = LEASE_SECONDS / 2 - 0.5


def started(fault_run: RunFactory, case: str) -> FaultRun:
    """A run of ``case`` with its workers and sweeper up, its batch submitted and ``FAULT_AT`` of it done."""
    run = fault_run(case)
    run.submit()
    run.wait_until_fault_time()
    return run


def assert_workers_took_jobs_after(run: FaultRun, moment: float) -> None:
    """Every live worker completed jobs after ``moment`` (a wall-clock time): none was left stuck."""
    after = run.completions_after(moment)
    idle = [pid for pid in run.live_worker_pids if after.get(pid, 0) == 0]
    assert not idle, f"workers {idle} completed nothing after the fault ({after})\n{run.system.logs_text()}"


def test_sigkill_of_one_worker(fault_run: RunFactory) -> None:
    """One worker is killed outright (SIGKILL) while it holds jobs.

    Its liveness lock dies with its session, so the sweeper's liveness check takes the jobs it held back at
    once, well before their leases would have run out (up to a lease after its last heartbeat), and queues them
    at the head; the other worker takes them. Recovery: from the kill to the moment none of them is stranded.
    """
    run = started(fault_run, "a  SIGKILL one worker")
    victim, survivor = run.workers
    held = run.held_jobs(victim.popen.pid)
    moment = time.time()
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    fault_end = time.monotonic()

    run.watch_until_final(fault_end)
    back = run.taken_back_after(held, moment)
    worst = max(back.values(), default=float("nan"))
    run.result.notes.append(f"held by the killed worker: {len(held)}, all back within {worst:.1f} s")
    run.check()
    assert held, "the killed worker held nothing: the case tested nothing"
    assert sorted(back) == sorted(held), "a job of the killed worker was never taken back"
    # Not by their leases (which ran LEASE_SECONDS past the last heartbeat): by the liveness check.
    assert worst < LEASE_SECONDS / 2, f"the killed worker's jobs came back after {worst:.1f} s"
    assert_workers_took_jobs_after(run, moment)
    assert survivor.popen.poll() is None


def test_sigstop_shorter_than_a_lease(fault_run: RunFactory) -> None:
    """One worker is frozen (SIGSTOP) for less than a lease, then let go on (SIGCONT).

    A frozen process keeps its sessions open, so its liveness lock stays held: it is only slow, and nothing may
    take its jobs early (only its lease could, and it did not run out). It keeps them and finishes them itself.
    """
    run = started(fault_run, "a2 SIGSTOP < lease")
    victim, _ = run.workers
    held = run.held_jobs(victim.popen.pid)
    moment = time.time()
    victim.signal(signal.SIGSTOP)
    time.sleep(STOPPED_SECONDS)
    victim.signal(signal.SIGCONT)
    fault_end = time.monotonic()

    run.watch_until_final(fault_end)
    taken = run.taken_back_after(held, moment)
    finishers = run.completed_by(held)
    run.result.notes.append(
        f"held while stopped {STOPPED_SECONDS} s: {len(held)}, taken from it: {len(taken)}"
    )
    run.check()
    assert held, "the stopped worker held nothing: the case tested nothing"
    assert not taken, f"{len(taken)} jobs were taken from a worker that was only stopped"
    assert set(finishers.values()) == {victim.popen.pid}, "the stopped worker did not finish its own jobs"


def test_redis_flushall(fault_run: RunFactory) -> None:
    """Redis loses every message at once (FLUSHALL) while jobs wait in the queue.

    Recovery: from the FLUSHALL to the moment every pending job has a message again: the sweeper sees fewer
    messages than pending dispatched jobs and dispatches again those dispatched more than
    ``dispatch_stale_seconds`` ago (5 s, under a lease).
    """
    run = started(fault_run, "b  Redis FLUSHALL")
    client = run.rd.client()
    try:
        client.flushall()
    finally:
        client.close()
    fault_end, moment = time.monotonic(), time.time()

    run.watch_until_final(fault_end)
    result = run.check()
    assert result.stranded_max > 0, "the FLUSHALL stranded nothing: the case tested nothing"
    assert_workers_took_jobs_after(run, moment)


def test_redis_restart(fault_run: RunFactory) -> None:
    """Redis is stopped and started again (without persistence: its messages are gone, its clients cut off).

    Recovery: from the moment Redis answers again to the moment every pending job has a message again (the
    workers and the sweeper reconnect on their own; the sweeper replaces the lost messages, as after FLUSHALL).
    """
    run = started(fault_run, "c  Redis restart")
    run.rd.stop()
    run.rd.start()
    fault_end, moment = time.monotonic(), time.time()

    run.watch_until_final(fault_end)
    result = run.check()
    assert result.stranded_max > 0, "the restart stranded nothing: the case tested nothing"
    assert_workers_took_jobs_after(run, moment)


def test_postgres_restart(fault_run: RunFactory) -> None:
    """PostgreSQL is shut down (fast: every session ended), stays down longer than a lease, and starts again.

    Every connection of the workers, the sweeper and their pools breaks, and no heartbeat gets through: the
    leases run out during the outage. When it ends, the sweeper may reclaim them before the workers renew them
    (the workers' results for reclaimed jobs are then fenced out and the jobs run again) or not; either way no
    job may be lost or completed twice, and both workers must take jobs again (a worker whose claim failed
    used to stop reading the queue for good). Recovery: from the moment PostgreSQL takes connections again to
    the moment no job is stranded.
    """
    run = started(fault_run, "d  PostgreSQL restart")
    run.pg.stop()
    outage_end = time.monotonic() + LEASE_SECONDS + 1
    run.watch_fault(lambda: time.monotonic() >= outage_end)
    run.pg.start()
    fault_end, moment = time.monotonic(), time.time()

    run.watch_until_final(fault_end)
    run.check()
    alive = run.live_worker_pids
    assert len(alive) == 2, f"a worker died with the database\n{run.system.logs_text()}"
    assert_workers_took_jobs_after(run, moment)


def test_sigterm_of_every_worker_then_new_workers(fault_run: RunFactory) -> None:
    """Every worker is asked to stop (SIGTERM) mid-batch; once they have exited, two new workers start.

    A stopping worker finishes or gives back every job it holds (none may be left to a lease expiry).
    Recovery: from the moment the new workers are up to the moment no job is stranded (given-back jobs are
    queued again by the sweeper's next sweep).

    A share of the batch (``HELD_BACK``) is submitted only once both new workers are up: whatever the old
    workers got done before they stopped, and however far apart the new ones started, there is work left
    for each of them (a worker takes at most twice its concurrency at once; the other wakes on the same push).
    """
    run = fault_run("e  SIGTERM all workers")
    run.submit(run.jobs - int(run.jobs * HELD_BACK))
    run.wait_until_fault_time()
    old = list(run.workers)
    for worker in old:
        worker.signal(signal.SIGTERM)
    for worker in old:
        assert worker.wait(60) == 0, worker.output()[-3000:]
    left_held = sum(run.held_by(worker.popen.pid) for worker in old)
    given_back = run.given_back()
    run.start_workers(2)
    fault_end, moment = time.monotonic(), time.time()
    run.submit()  # the held-back share

    run.watch_until_final(fault_end)
    run.result.notes.append(f"given back on SIGTERM: {given_back}")
    run.check()
    assert left_held == 0, f"the stopped workers left {left_held} jobs to expire"
    assert_workers_took_jobs_after(run, moment)


def test_api_restart_while_clients_wait(fault_run: RunFactory) -> None:
    """The API process is stopped (SIGTERM, as a deployment does) and a new one started on the same port while
    clients wait on jobs of the batch (half with the Python client, half with ``GET /v1/jobs/{id}/wait``);
    a client that loses its connection waits again. The stopping process answers its open waits at once (the
    job as it stands) and exits by itself.

    Recovery: for each client that lost its API, from the moment its answer was there to be had (the later of
    its job's completion and the new process's readiness) to the moment it got it; the case's recovery is the
    longest. The batch itself runs through the workers untouched.
    """
    run = fault_run("f  API restart, waits")
    settings = run.fault_system.settings
    assert settings.database_url is not None and settings.redis_url is not None
    key = create_key(settings.database_url, name="faults")
    port = free_port()
    base, deadline = f"http://127.0.0.1:{port}", 120 + run.jobs * 0.05
    old_api = run.system.start_api(port)  # its log and the new one's are kept with the workers' if it fails
    try:
        urls = run.page_urls()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
            for start in range(0, len(urls), SUBMIT_CHUNK):
                response = http.post("/v1/batches", json={"urls": urls[start : start + SUBMIT_CHUNK]})
                assert response.status_code == 201, response.text
                run.ids += [uuid.UUID(i) for i in response.json()["job_ids"]]
        step = max(1, run.jobs // WAITERS)
        waiters = Waiters(base, key, [str(i) for i in run.ids[::step]], deadline).start()
        run.wait_until_fault_time()
        stopping = time.monotonic()
        old_api.signal(signal.SIGTERM)
        try:  # not as long as its clients asked to wait: it answers them and stops
            exit_code: int | None = old_api.wait(60)
        except subprocess.TimeoutExpired:
            exit_code = None  # it waits for its waits to end (stop() kills it)
        stop_seconds = time.monotonic() - stopping
    finally:
        old_api.stop()
    assert exit_code in (0, -signal.SIGTERM), f"the API process did not stop by itself: {exit_code}"
    new_api = run.system.start_api(port)
    try:
        fault_end, ready_at = time.monotonic(), time.time()
        run.watch_until_final(fault_end)
        waiters.join(deadline)
    finally:
        new_api.stop()

    completed_at = dict(
        run.query(
            "SELECT id::text, extract(epoch FROM completed_at) FROM crawl_jobs WHERE id = ANY(%s)", (run.ids,)
        )
    )
    # Clients that lost their API: how long after their answer was there to be had did they get it (a client
    # may get it before this test has seen the new process ready: that counts as no delay).
    lags = [
        max(0.0, w.answered_at - max(ready_at, float(completed_at[w.job_id])))
        for w in waiters.waiters
        if w.answered_at is not None and w.reconnects
    ]
    run.result.notes += [
        f"waiters {len(waiters.waiters)}, reconnected {waiters.reconnected}",
        f"old API stopped in {stop_seconds:.1f} s",
    ]
    # The recovery of this case is the clients' (the workers were not touched): the longest lag.
    run.result.recovery_seconds = max(lags, default=0.0)
    run.check()
    problems = [(w.job_id, w.status, w.error) for w in waiters.waiters if w.status != "completed"]
    assert not problems, problems
    assert waiters.reconnected > 0, "no client lost its API: the case tested nothing"

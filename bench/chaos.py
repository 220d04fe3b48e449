"""Throughput kept while workers are SIGKILLed and restarted, and while Redis restarts: one batch, with and
without faults.

    python -m bench.chaos [--jobs 1500] [--workers 2] [--concurrency 16] [--lease 6] [--kill-every 4]
                          [--redis-every 4] [--faults N] [--repeat 1] [--rows baseline,kill,redis]
                          [--quick] [--logs DIR]

The measure of hardbyte/postgresql-job-queue-benchmarking's ``chaos.py``: the share of the fault-free throughput a
queue keeps while its workers are killed outright and started again. Each row runs the same batch of
``--jobs`` pages of the test site (``tests.acceptance.site`` in its own process, ``/slow`` pages that answer
after ``PAGE_DELAY_SECONDS`` of ``tests.faults.harness``) through a system of its own: an API process, a
sweeper (``crawljobs sweeper``) and ``--workers`` worker processes (``scrapy crawl crawl_jobs``, concurrency
``--concurrency``), started and warmed up by a small batch before the clock. Every row has the same lease
(``--lease``), sweep interval and dispatch staleness (those of the fault suite), so the rows compare:

- ``no faults``: the baseline.
- ``SIGKILL every K s``: every ``--kill-every`` seconds the longest-running worker is SIGKILLed and a new one
  started at once (it is not waited for: its start-up is part of the cost).
- ``Redis restart every R s``: every ``--redis-every`` seconds the Redis of the row is stopped and started
  again without persistence (every queued message lost, every client cut off) — a Redis of the benchmark's own
  (``tests.faults.servers.FaultRedis``, on a unix socket), never the configured one.

``--faults N`` stops after N faults per row (default: until the batch is done). The clock runs from the POST
of the batch (/v1/batches) to the observation (every 50 ms) of every job final; a run in which no job became
final for ``STALL_SECONDS`` (60 s) is stalled: it is left out of the jobs/s, its faults stop there, and it
ends once every job is final (or after another 60 s without progress). What is counted comes from the
fault suite's audit trigger (``tests.faults.harness.AUDIT_SQL``: a ``fault_transitions`` row for every status
change, with the database's clock time, the attempt and the lease owner):

- ``jobs/s`` and ``kept %``: the batch over the clock, and its share of the baseline's (medians of
  ``--repeat`` runs).
- ``idle``: kills of a worker that had claimed no job of the batch yet (one still starting up: with two workers
  and a kill every 4 s each lives 8 s, and a worker that needs longer to start never works).
- ``restart s``: from a kill to the first claim of the worker started in its place (its start-up), median.
- ``held``: the jobs a killed worker held at its kill (their last change before the kill was a claim by its
  lease owner; the kill's time is taken once the process is reaped). ``wait max / median``: from the kill to
  the next claim (pending -> processing) of each of them — the time a dead worker's job sits in a lease nobody
  renews, then in the queue behind the jobs queued before it; ``freed max``: from the kill to the lease taken
  back (the sweeper noticed the dead worker); ``never``: those never claimed again.
- ``lost``: jobs not ``completed`` at the end (an error, or not final at the end of a stalled run); ``twice``: jobs
  moved to ``completed`` more than once; ``attempts``: the sum of the jobs' attempt counters (the batch size
  when nothing ran twice).

Prints a row per way (totals over the runs) and the headline figures with their aims; the progress and each
kill's figures go to stderr. Exits with status 1 if a job was lost or completed twice. ``--quick`` is a smoke run (300 jobs, one fault per row, 2 s after the submit).
Services: CRAWLJOBS_BENCH_DATABASE_URL and CRAWLJOBS_BENCH_REDIS_URL, else embedded ones. Everything listens on
127.0.0.1 (or a unix socket) and every child process is stopped at the end, also on failure; the children's
logs stay in ``--logs`` (default: a temp folder).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from bench.common import api_process, median, scratch_database, services
from bench.crawl import drop_prefix, site_process, submit
from crawljobs.config import Settings
from tests.acceptance.system import Process, System
from tests.faults.harness import (
    AUDIT_SQL,
    DISPATCH_STALE_SECONDS,
    PAGE_DELAY_SECONDS,
    SWEEP_INTERVAL_SECONDS,
    WORKER_CONCURRENCY,
    worker_pid,
)
from tests.faults.servers import FaultRedis

POLL_SECONDS = 0.05
# A run stalls when no job became final for this long (say, every worker killed while it was still starting
# up): its faults stop there; if it is still stuck that long after, it ends and its jobs not final are lost.
STALL_SECONDS = 60.0
# The sweeper's liveness check (dead workers' jobs back at once) runs at its default in every row.
WORKER_CHECK_SECONDS = Settings.model_fields["worker_check_seconds"].default
FINAL = ("completed", "error", "cancelled")
ROWS = ("baseline", "kill", "redis")
# The aims of issue 10: throughput kept under a kill every 4 s, and a dead worker's jobs claimed again.
KEPT_AIM = 0.95
WAIT_AIM_SECONDS = 2.0


def log(message: str) -> None:
    print(f"[bench.chaos] {message}", file=sys.stderr, flush=True)


# -- what the audit trail says (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """One row of ``fault_transitions``: a job's status change, at the database's clock (epoch seconds)."""

    job_id: str
    old: str
    new: str
    attempt: int
    worker: str | None
    at: float


@dataclass(frozen=True)
class Kill:
    """A worker process killed, at ``at`` (epoch seconds, once it was reaped: it can change nothing after), and
    the process started at once in its place."""

    pid: int
    at: float
    replacement: int | None = None


@dataclass(frozen=True)
class Tally:
    """What one run's transitions and final statuses say."""

    jobs: int
    completed: int
    lost: int
    twice: int
    attempts: int
    held: int
    waits: tuple[float, ...]  # seconds from a kill to the next claim of each job the killed worker held
    freed: tuple[float, ...]  # seconds from a kill to each such job's lease taken back (to pending or error)
    never: int  # jobs held by a killed worker and never claimed again
    idle: int  # kills of a worker that had claimed no job of the batch yet (still starting up)
    restarts: tuple[float, ...]  # seconds from a kill to the first claim of the worker started in its place
    unfinished: int  # jobs not final at the end (the run stalled); counted in ``lost`` too


def per_job(transitions: Iterable[Transition]) -> dict[str, list[Transition]]:
    """Each job's transitions in time order (ties keep their given order, the audit table's id)."""
    jobs: dict[str, list[Transition]] = {}
    for transition in sorted(transitions, key=lambda t: t.at):
        jobs.setdefault(transition.job_id, []).append(transition)
    return jobs


def kill_waits(
    jobs: dict[str, list[Transition]], kills: Sequence[Kill]
) -> tuple[list[float], list[float], int]:
    """For every job a killed worker held at its kill: the seconds to its next claim, and to its lease taken
    back (its next change, to pending or to error); and how many of them were never claimed again. A job was
    held when its last change before the kill was a claim under the killed process's lease owner
    (``host:pid:nonce``). The claim comes after the job is queued again, behind what is queued already: its
    wait is the time to notice the dead worker (``freed``) plus its turn in the queue."""
    waits: list[float] = []
    freed: list[float] = []
    never = 0
    for kill in kills:
        for rows in jobs.values():
            before = [t for t in rows if t.at <= kill.at]
            if not before or before[-1].new != "processing" or worker_pid(before[-1].worker) != kill.pid:
                continue
            after = [t for t in rows if t.at > kill.at]
            if after and after[0].old == "processing":
                freed.append(after[0].at - kill.at)
            claims = [t for t in after if t.old == "pending" and t.new == "processing"]
            if claims:
                waits.append(claims[0].at - kill.at)
            else:
                never += 1
    return waits, freed, never


def idle_kills(transitions: Iterable[Transition], kills: Sequence[Kill]) -> int:
    """How many kills hit a worker that had not claimed a job yet: one still starting up."""
    claimed = {(worker_pid(t.worker), t.at) for t in transitions if t.new == "processing"}
    return sum(1 for kill in kills if not any(pid == kill.pid and at <= kill.at for pid, at in claimed))


def restart_times(transitions: Iterable[Transition], kills: Sequence[Kill]) -> list[float]:
    """For each kill whose replacement claimed a job: the seconds from the kill to its first claim (the new
    worker's start-up; a replacement that never claimed one is left out, it shows as an idle kill)."""
    first: dict[int, float] = {}
    for t in transitions:
        pid = worker_pid(t.worker)
        if t.new == "processing" and pid is not None:
            first[pid] = min(t.at, first.get(pid, t.at))
    return [
        first[k.replacement] - k.at for k in kills if k.replacement is not None and k.replacement in first
    ]


def tally(
    transitions: Sequence[Transition], statuses: dict[str, str], attempts: int, kills: Sequence[Kill]
) -> Tally:
    """Lost, completed twice and the killed workers' jobs' waits, from a run's transitions and its jobs' final
    statuses (``statuses``: every job of the batch, by id)."""
    ours = [t for t in transitions if t.job_id in statuses]
    jobs = per_job(ours)
    waits, freed, never = kill_waits(jobs, kills)
    twice = sum(1 for rows in jobs.values() if sum(t.new == "completed" for t in rows) > 1)
    completed = sum(status == "completed" for status in statuses.values())
    return Tally(
        jobs=len(statuses),
        completed=completed,
        lost=len(statuses) - completed,
        twice=twice,
        attempts=attempts,
        held=len(waits) + never,
        waits=tuple(waits),
        freed=tuple(freed),
        never=never,
        idle=idle_kills(ours, kills),
        restarts=tuple(restart_times(ours, kills)),
        unfinished=sum(status not in FINAL for status in statuses.values()),
    )


# -- one run -----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One row's run: its clock (None when it stalled), its faults and its tally."""

    row: str
    seconds: float | None
    faults: int
    tally: Tally
    stalled: int | None = None  # jobs not final when no job had become final for STALL_SECONDS


@dataclass
class Rig:
    """A system of one row: its processes (``System``), the API's client, the live workers."""

    system: System
    http: httpx.Client
    concurrency: int
    workers: list[Process] = field(default_factory=list)

    def start_worker(self) -> Process:
        worker = self.system.start_worker(CRAWLJOBS_WORKER_CONCURRENCY=str(self.concurrency))
        self.workers.append(worker)
        return worker

    def check_workers(self) -> None:
        for worker in self.workers:
            if worker.popen.poll() is not None:
                raise RuntimeError(f"a worker exited ({worker.popen.returncode}):\n{worker.output()[-3000:]}")

    def kill_oldest(self) -> Kill:
        """SIGKILL the longest-running worker, reap it, start another at once."""
        victim = self.workers.pop(0)
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        at = time.time()
        return Kill(pid=victim.popen.pid, at=at, replacement=self.start_worker().popen.pid)


@contextlib.contextmanager
def rig(database_url: str, redis_url: str, logs: Path, tag: str, args: argparse.Namespace) -> Iterator[Rig]:
    """An API process, a sweeper and ``--workers`` workers (their spiders open) on a queue prefix of their own."""
    prefix = f"benchchaos{uuid.uuid4().hex[:6]}"
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        queue_prefix=prefix,
        allowed_networks=["127.0.0.1/32"],
        lease_seconds=args.lease,
        sweep_interval_seconds=SWEEP_INTERVAL_SECONDS,
        dispatch_stale_seconds=DISPATCH_STALE_SECONDS,
        download_timeout=20.0,
        explore_rate=0.0,
        domain_memory=False,
    )
    system = System(settings, logs / tag)
    try:
        with (
            api_process(database_url, redis_url, allowed_networks="127.0.0.1/32", queue_prefix=prefix) as (
                api,
                key,
            ),
            httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http,
        ):
            running = Rig(system, http, args.concurrency)
            for _ in range(args.workers):
                running.start_worker()
            system.start_sweeper()

            def opened() -> bool:
                running.check_workers()
                return all("Spider opened" in worker.output() for worker in running.workers)

            system.wait_for(opened, "the workers opened their spiders", timeout=120)
            yield running
    finally:
        # Ask every process to stop at once, then wait for each (they stop in parallel).
        for process in system.processes:
            process.signal(signal.SIGTERM)
        system.stop()
        with contextlib.suppress(redis.RedisError):
            drop_prefix(redis_url, prefix)


def counts(conn: psycopg.Connection[Any], batch_id: str) -> int:
    """How many jobs of the batch are final."""
    row = conn.execute(
        "SELECT count(*) FROM crawl_jobs WHERE batch_id = %s AND status = ANY(%s)", (batch_id, list(FINAL))
    ).fetchone()
    assert row is not None
    return int(row[0])


def wait_warm(conn: psycopg.Connection[Any], running: Rig, batch_id: str, jobs: int, timeout: float) -> None:
    """Until the warm-up batch is final (or an error after ``timeout``, or when a worker exited)."""
    deadline = time.monotonic() + timeout
    while counts(conn, batch_id) < jobs:
        running.check_workers()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the warm-up batch was not done in {timeout:.0f} s")
        time.sleep(POLL_SECONDS)


def read_trail(conn: psycopg.Connection[Any], batch_id: str) -> tuple[list[Transition], dict[str, str], int]:
    """The batch's transitions (in time order), its jobs' final statuses by id, and the sum of their attempts."""
    statuses = {
        str(job_id): str(status)
        for job_id, status in conn.execute(
            "SELECT id, status FROM crawl_jobs WHERE batch_id = %s", (batch_id,)
        ).fetchall()
    }
    row = conn.execute(
        "SELECT coalesce(sum(attempt), 0) FROM crawl_jobs WHERE batch_id = %s", (batch_id,)
    ).fetchone()
    assert row is not None
    transitions = [
        Transition(str(job_id), old, new, int(attempt), worker, float(at))
        for job_id, old, new, attempt, worker, at in conn.execute(
            "SELECT t.job_id, t.old_status, t.new_status, t.attempt, t.worker, extract(epoch FROM t.at)"
            " FROM fault_transitions t JOIN crawl_jobs j ON j.id = t.job_id"
            " WHERE j.batch_id = %s ORDER BY t.at, t.id",
            (batch_id,),
        ).fetchall()
    ]
    return transitions, statuses, int(row[0])


def run_row(
    row: str,
    base: str,
    database_url: str,
    redis_url: str,
    logs: Path,
    tag: str,
    args: argparse.Namespace,
    fault_redis: FaultRedis | None = None,
) -> Run:
    """Warm the row's system up, then time one batch under the row's faults and tally it."""
    every = {"baseline": None, "kill": args.kill_every, "redis": args.redis_every}[row]
    if fault_redis is not None:
        redis_url = fault_redis.url
    with (
        rig(database_url, redis_url, logs, tag, args) as running,
        psycopg.connect(database_url, autocommit=True) as conn,
    ):
        warm = [
            f"{base}/slow?delay={PAGE_DELAY_SECONDS}&n=warm-{tag}-{i}"
            for i in range(2 * args.concurrency * args.workers)
        ]
        wait_warm(conn, running, submit(running.http, warm), len(warm), 120)
        time.sleep(1.0)  # the workers settle back to reading the queue

        urls = [f"{base}/slow?delay={PAGE_DELAY_SECONDS}&n={tag}-{i}" for i in range(args.jobs)]
        kills: list[Kill] = []
        faults = 0
        started, started_epoch = time.monotonic(), time.time()
        batch_id = submit(running.http, urls)
        next_fault = started + every if every else None
        seconds: float | None = None
        stalled: int | None = None  # jobs not final when the run stalled
        final, progressed = 0, started
        while True:
            now = time.monotonic()
            final, before = counts(conn, batch_id), final
            if final == args.jobs:
                seconds = now - started if stalled is None else None
                break
            if final > before:
                progressed = now
            elif now - progressed > STALL_SECONDS:
                if stalled is not None:
                    log(
                        f"{tag}: still {args.jobs - final} jobs not final {STALL_SECONDS:.0f} s after the faults stopped"
                    )
                    break
                # No throughput to measure any more: stop the faults and see whether every job still ends.
                stalled, next_fault, progressed = args.jobs - final, None, now
                log(
                    f"{tag}: stalled: no job final for {STALL_SECONDS:.0f} s, {stalled} not final; faults stop"
                )
            running.check_workers()
            if next_fault is not None and now >= next_fault and (not args.faults or faults < args.faults):
                if row == "kill":
                    kills.append(running.kill_oldest())
                    log(f"{tag}: killed worker {kills[-1].pid} at {now - started:.1f} s")
                else:
                    assert fault_redis is not None
                    fault_redis.stop()
                    fault_redis.start()
                    log(f"{tag}: restarted Redis at {now - started:.1f} s")
                faults += 1
                next_fault += every or 0.0
            time.sleep(POLL_SECONDS)
        transitions, statuses, attempts = read_trail(conn, batch_id)
        result = Run(row, seconds, faults, tally(transitions, statuses, attempts, kills), stalled)
        # Each kill on its own, for the log: how long noticing took, and the queue after it.
        for kill in kills:
            one = tally(transitions, statuses, attempts, [kill])
            if not one.held:
                continue
            log(
                f"{tag}: kill of {kill.pid} at {kill.at - started_epoch:.1f} s:"
                f" {one.held} jobs held, leases taken back after {max(one.freed, default=0):.2f} s at worst,"
                f" claimed again after {max(one.waits, default=0):.2f} s at worst"
            )
    clock = "stalled" if seconds is None else f"{seconds:.1f} s ({args.jobs / seconds:.1f} jobs/s)"
    counted = result.tally
    worst = f"{max(counted.waits):.2f} s" if counted.waits else "-"
    log(
        f"{tag}: {clock}, {faults} faults ({counted.idle} kills of a worker still starting), {counted.held} jobs"
        f" held at kills (worst wait {worst}, {counted.never} never claimed again), {counted.lost} lost"
        f" ({counted.unfinished} not final), {counted.twice} completed twice, {counted.attempts} attempts"
    )
    return result


# -- the table ---------------------------------------------------------------------------------------


def row_label(row: str, args: argparse.Namespace) -> str:
    if row == "kill":
        return f"SIGKILL every {args.kill_every:g} s"
    if row == "redis":
        return f"Redis restart every {args.redis_every:g} s"
    return "no faults"


def rate(runs: Sequence[Run]) -> float | None:
    """The median jobs/s of the runs that finished (None if none did)."""
    rates = [r.tally.jobs / r.seconds for r in runs if r.seconds]
    return median(rates) if rates else None


def cell(values: list[float], how: str) -> str:
    """The max or the median of some seconds, as a table cell ("-" for none)."""
    if not values:
        return "-"
    return f"{max(values) if how == 'max' else median(values):.2f}"


def kill_total(runs: Sequence[Run], name: str, row: str) -> str:
    """A count of the kills (a field of the runs' tallies, summed) as a table cell: "-" for no kill row."""
    return str(sum(getattr(r.tally, name) for r in runs)) if row == "kill" else "-"


def report(results: dict[str, list[Run]], args: argparse.Namespace) -> list[str]:
    """The table and the headline figures, as lines."""
    lines = [
        f"{args.jobs} jobs per run (pages of {PAGE_DELAY_SECONDS:g} s), {args.workers} workers of concurrency"
        f" {args.concurrency}, lease {args.lease} s, sweep every {SWEEP_INTERVAL_SECONDS:g} s, dispatch stale"
        f" after {DISPATCH_STALE_SECONDS} s, liveness check every {WORKER_CHECK_SECONDS:g} s;"
        f" medians of {args.repeat} run(s)"
        + (f", at most {args.faults} fault(s) per run" if args.faults else ""),
        f"{'row':<26} {'jobs':>6} {'seconds':>8} {'jobs/s':>7} {'kept %':>7} {'faults':>6} {'idle':>5}"
        f" {'restart s':>9}"
        f" {'held':>5} {'freed max s':>11} {'wait max s':>10} {'wait med s':>10} {'never':>5} {'lost':>5}"
        f" {'twice':>5} {'attempts':>8}",
    ]
    baseline = rate(results.get("baseline", []))
    for row, runs in results.items():
        jobs_per_s = rate(runs)
        finished = [r.seconds for r in runs if r.seconds is not None]
        seconds = f"{median(finished):.1f}" if finished else "stalled"
        kept = f"{100 * jobs_per_s / baseline:.1f}" if jobs_per_s and baseline else "-"
        waits = [w for r in runs for w in r.tally.waits]
        freed = [w for r in runs for w in r.tally.freed]
        restarts = [w for r in runs for w in r.tally.restarts]
        lines.append(
            f"{row_label(row, args):<26} {sum(r.tally.jobs for r in runs):>6} {seconds:>8}"
            f" {f'{jobs_per_s:.1f}' if jobs_per_s else '-':>7} {kept:>7} {sum(r.faults for r in runs):>6}"
            f" {kill_total(runs, 'idle', row):>5} {cell(restarts, 'median'):>9} {kill_total(runs, 'held', row):>5}"
            f" {cell(freed, 'max'):>11} {cell(waits, 'max'):>10} {cell(waits, 'median'):>10}"
            f" {kill_total(runs, 'never', row):>5} {sum(r.tally.lost for r in runs):>5}"
            f" {sum(r.tally.twice for r in runs):>5} {sum(r.tally.attempts for r in runs):>8}"
        )
    if "kill" in results:
        runs = results["kill"]
        jobs_per_s = rate(runs)
        if jobs_per_s and baseline:
            lines.append(
                f"throughput kept with a worker SIGKILLed every {args.kill_every:g} s:"
                f" {100 * jobs_per_s / baseline:.1f} % ({jobs_per_s:.1f} vs {baseline:.1f} jobs/s;"
                f" aim >= {100 * KEPT_AIM:.0f} %)"
            )
        waits = [w for r in runs for w in r.tally.waits]
        freed = [w for r in runs for w in r.tally.freed]
        never = sum(r.tally.never for r in runs)
        if waits:
            lines.append(
                f"a killed worker's jobs claimed again after {max(waits):.2f} s at worst, {median(waits):.2f} s"
                f" median ({len(waits)} jobs, {never} never; aim <= {WAIT_AIM_SECONDS:g} s); their leases"
                f" taken back after {max(freed, default=0.0):.2f} s at worst"
            )
        else:
            lines.append(f"a killed worker's jobs: none claimed again ({never} held at the kills)")
        restarts = [w for r in runs for w in r.tally.restarts]
        kills = sum(r.faults for r in runs)
        idle = sum(r.tally.idle for r in runs)
        if restarts:
            lines.append(
                f"a worker started in a killed one's place claimed its first job {median(restarts):.2f} s after"
                f" the kill (median of {len(restarts)}; {kills - len(restarts)} of {kills} claimed none);"
                f" {idle} kills hit a worker that had claimed nothing yet"
            )
        else:
            lines.append(
                f"no worker started in a killed one's place claimed a job ({kills} kills, {idle} of a worker that"
                " had claimed nothing yet)"
            )
    every = [r for runs in results.values() for r in runs]
    stalled = [r for r in every if r.stalled is not None]
    if stalled:
        which = ", ".join(
            f"{row_label(r.row, args)} with {r.stalled} jobs not final (its faults stopped there;"
            f" {r.tally.unfinished} of them never ended)"
            for r in stalled
        )
        lines.append(
            f"{len(stalled)} run(s) stalled (no job final for {STALL_SECONDS:.0f} s), left out of jobs/s: {which}"
        )
    lines.append(
        f"lost {sum(r.tally.lost for r in every)}, completed twice {sum(r.tally.twice for r in every)}"
        f" of {sum(r.tally.jobs for r in every)} jobs in {len(every)} run(s) (aim 0 and 0)"
    )
    return lines


# -- the run ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options, with the defaults of a full or a ``--quick`` run filled in."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=None, help="jobs per batch (default 1500; --quick 300)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=WORKER_CONCURRENCY, help="per worker")
    parser.add_argument("--lease", type=int, default=6, help="lease seconds, every row (default 6)")
    parser.add_argument(
        "--kill-every", type=float, default=None, help="seconds between kills (default 4; --quick 2)"
    )
    parser.add_argument(
        "--redis-every",
        type=float,
        default=None,
        help="seconds between Redis restarts (default 4; --quick 2)",
    )
    parser.add_argument(
        "--faults",
        type=int,
        default=None,
        help="at most this many faults per run (default: no limit; --quick 1)",
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--rows", default=",".join(ROWS), help="a comma-separated subset of " + ",".join(ROWS)
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 jobs, one fault per row")
    parser.add_argument("--logs", type=Path, default=None, help="folder for the children's logs")
    args = parser.parse_args(argv)
    quick = args.quick
    args.jobs = args.jobs if args.jobs is not None else (300 if quick else 1500)
    args.kill_every = args.kill_every if args.kill_every is not None else (2.0 if quick else 4.0)
    args.redis_every = args.redis_every if args.redis_every is not None else (2.0 if quick else 4.0)
    args.faults = args.faults if args.faults is not None else (1 if quick else 0)
    args.rows = [row.strip() for row in args.rows.split(",") if row.strip()]
    if not args.rows or any(row not in ROWS for row in args.rows):
        parser.error(f"--rows: a comma-separated subset of {','.join(ROWS)}")
    if min(args.jobs, args.workers, args.concurrency, args.repeat) < 1 or args.faults < 0:
        parser.error("--jobs, --workers, --concurrency and --repeat must be at least 1, --faults at least 0")
    if args.lease < 2 or args.kill_every <= 0 or args.redis_every <= 0:
        parser.error("--lease must be at least 2, --kill-every and --redis-every above 0")
    return args


def main() -> None:
    args = parse_args()
    # SIGTERM unwinds like Ctrl-C, so every child process is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logs: Path = args.logs or Path(tempfile.mkdtemp(prefix="bench-chaos-", dir="/tmp"))
    logs.mkdir(parents=True, exist_ok=True)
    log(f"logs in {logs}")

    results: dict[str, list[Run]] = {row: [] for row in ROWS if row in args.rows}
    with (
        services() as (admin_url, redis_url),
        scratch_database(admin_url) as database_url,
        site_process(logs) as base,
    ):
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(AUDIT_SQL.encode())
        for rep in range(args.repeat):
            for row in results:
                tag = f"r{rep}-{row}"
                if row == "redis":
                    fault_redis = FaultRedis()
                    try:
                        run = run_row(row, base, database_url, redis_url, logs, tag, args, fault_redis)
                    finally:
                        fault_redis.close()
                else:
                    run = run_row(row, base, database_url, redis_url, logs, tag, args)
                results[row].append(run)

    lines = report(results, args)
    print("\n".join(lines))
    every = [r for runs in results.values() for r in runs]
    if any(r.tally.lost or r.tally.twice for r in every):
        sys.exit(1)


if __name__ == "__main__":
    main()

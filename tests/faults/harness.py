"""One fault case: a batch of jobs through two real workers and a sweeper, a fault in the middle, the tally.

:class:`FaultSystem` is a database on the suite's own PostgreSQL (migrated, plus an audit trigger), a queue
prefix on the suite's own Redis, two worker processes and a sweeper process (``tests.acceptance.system``),
shared by consecutive cases. :class:`FaultRun` is one case on it: a batch of its own, of pages of the local
test site that take a moment each, so that the batch is still running when the fault strikes.

What is counted, and how:

- **Completed twice.** A trigger appends a row to ``fault_transitions`` every time a ``crawl_jobs`` row changes
  status (old and new status, attempt, lease owner, clock time). A job that moved to ``completed`` more than
  once was completed twice; each job id must appear there exactly once.
- **Lost.** Every submitted id must end ``completed`` (the pages always answer 200): an ``error`` ("worker
  lost", out of attempts) or a job never final is a loss.
- **Stranded.** A job that is not final and will not move on by itself: neither held by a live worker
  (``processing`` with a lease owner whose process runs) nor waiting in the queue (``pending`` with a message
  in Redis). Stranded jobs are what the sweeper exists for: expired leases and lost messages.
- **Recovery.** From the moment the fault ends to the first observation with no job stranded. The design bounds
  it by one lease (an expired lease is reclaimed within ``lease_seconds`` plus a sweep) or by
  ``dispatch_stale_seconds`` (a lost message is replaced), both at most ``lease_seconds`` here; the suite
  asserts at most twice that.
- **Attempts.** The sum of the jobs' ``attempt`` counters (every claim and every retry adds one): the batch
  size when nothing ran twice.
- **Counts.** The counts the database keeps in the transaction of every change (migration 0007: per batch and
  per tenant, summed over their shards) must equal a full recount of the jobs by status, whatever the fault
  did to the writers in the middle of their transactions.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from crawljobs.config import Settings
from crawljobs.migrate import migrate
from crawljobs.queue import QueueKeys, decode_message
from tests.acceptance.site import TestSite
from tests.acceptance.system import Process, System
from tests.faults.servers import FaultPostgres, FaultRedis

# The design's numbers for the suite: short, so that it is quick; the bound is the design's, not the machine's.
LEASE_SECONDS = 6
SWEEP_INTERVAL_SECONDS = 0.5
DISPATCH_STALE_SECONDS = 5
RECOVERY_BOUND_SECONDS = 2 * LEASE_SECONDS
# Each page takes this long to answer, and a worker fetches at most WORKER_CONCURRENCY at once: 1,000 jobs take
# several seconds, so that the fault lands in the middle of the batch.
PAGE_DELAY_SECONDS = 0.2
WORKER_CONCURRENCY = 16
# The fault strikes once this share of the batch is completed.
FAULT_AT = 0.3
SUBMIT_CHUNK = 5000
POLL_SECONDS = 0.2
FINAL = ("completed", "error", "cancelled")

AUDIT_SQL = """
CREATE TABLE fault_transitions (
    id bigserial PRIMARY KEY,
    job_id uuid NOT NULL,
    old_status text NOT NULL,
    new_status text NOT NULL,
    attempt integer NOT NULL,
    worker text,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ON fault_transitions (job_id);
CREATE FUNCTION fault_record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fault_transitions (job_id, old_status, new_status, attempt, worker)
    VALUES (NEW.id, OLD.status, NEW.status, NEW.attempt, coalesce(NEW.lease_owner, OLD.lease_owner));
    RETURN NULL;
END
$$;
CREATE TRIGGER fault_transitions AFTER UPDATE OF status ON crawl_jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION fault_record_transition();
"""


@dataclass
class CaseResult:
    """What one case counted, for the suite's summary."""

    case: str
    jobs: int = 0
    completed: int = 0
    errors: int = 0
    not_final: int = 0
    duplicates: int = 0
    attempts: int = 0
    stranded_max: int = 0
    recovery_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    def row(self) -> str:
        recovery = "-" if self.recovery_seconds is None else f"{self.recovery_seconds:.1f}"
        return (
            f"{self.case:<22} {self.jobs:>6} {self.completed:>9} {self.errors:>6} {self.not_final:>9} "
            f"{self.duplicates:>10} {self.attempts:>8} {self.stranded_max:>8} {recovery:>10}  "
            + "; ".join(self.notes)
        )

    HEADER = (
        f"{'case':<22} {'jobs':>6} {'completed':>9} {'errors':>6} {'not final':>9} {'duplicates':>10} "
        f"{'attempts':>8} {'stranded':>8} {'recovery s':>10}  notes"
    )


RESULTS: list[CaseResult] = []


@dataclass(frozen=True)
class Observation:
    at: float  # time.monotonic()
    final: int
    stranded: int


def worker_pid(lease_owner: str | None) -> int | None:
    """The process id in a lease owner (``host:pid:nonce``, ``crawlproject.context.new_worker_id``)."""
    if not lease_owner:
        return None
    try:
        return int(lease_owner.rsplit(":", 2)[-2])
    except (IndexError, ValueError):
        return None


def api_child(port: int) -> psutil.Process:
    """The API process (a child of this one) serving ``port``."""
    for child in psutil.Process().children():
        if "--port" in child.cmdline() and str(port) in child.cmdline():
            return child
    raise AssertionError(f"no API process on port {port}")


def eventually(check: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}\n{logs()}")
        time.sleep(POLL_SECONDS)


class FaultSystem:
    """The system the cases run on: a database on the suite's PostgreSQL (migrated, with the audit trigger), a
    queue prefix on the suite's Redis, two workers and a sweeper. Shared by consecutive cases (starting
    workers is the slow part); each case replaces the workers it killed, and after a case that failed the next
    one gets a new system (``clean`` is False)."""

    def __init__(self, pg: FaultPostgres, rd: FaultRedis, site: TestSite, logs: Path) -> None:
        self.pg, self.rd, self.site = pg, rd, site
        self.clean = True
        pg.ensure_running()
        rd.ensure_running()
        self.dbname = f"cjfault_{secrets.token_hex(4)}"
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        self.database_url = make_conninfo(pg.url, dbname=self.dbname)
        migrate(self.database_url)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(AUDIT_SQL.encode())
        self.settings = Settings(
            database_url=self.database_url,
            redis_url=rd.url,
            queue_prefix=f"cjfault:{secrets.token_hex(4)}",
            allowed_networks=["127.0.0.1/32"],
            lease_seconds=LEASE_SECONDS,
            sweep_interval_seconds=SWEEP_INTERVAL_SECONDS,
            dispatch_stale_seconds=DISPATCH_STALE_SECONDS,
            download_timeout=20.0,
            explore_rate=0.0,
            domain_memory=False,
        )
        self.keys = QueueKeys.for_prefix(self.settings.queue_prefix)
        self.system = System(self.settings, logs)
        self.workers: list[Process] = []
        self.sweeper: Process | None = None

    def start_workers(self, count: int) -> list[Process]:
        """Start ``count`` workers and wait until each has opened its spider (it reads the queue then)."""
        started = [
            self.system.start_worker(CRAWLJOBS_WORKER_CONCURRENCY=str(WORKER_CONCURRENCY))
            for _ in range(count)
        ]
        self.workers.extend(started)
        eventually(
            lambda: all("Spider opened" in p.output() for p in started),
            120,
            "the workers opened their spiders",
            self.system.logs_text,
        )
        return started

    def ready(self) -> None:
        """Both servers up, two live workers and a live sweeper (replacing those a case stopped)."""
        self.pg.ensure_running()
        self.rd.ensure_running()
        self.workers = [p for p in self.workers if p.popen.poll() is None]
        if len(self.workers) < 2:
            self.start_workers(2 - len(self.workers))
        if self.sweeper is None or self.sweeper.popen.poll() is not None:
            self.sweeper = self.system.start_sweeper()

    @property
    def live_worker_pids(self) -> set[int]:
        return {p.popen.pid for p in self.workers if p.popen.poll() is None}

    def query(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, connect_timeout=2) as conn:
            return conn.execute(query.encode(), params).fetchall()

    def close(self) -> None:
        self.system.stop()
        try:
            if self.pg.running:
                with psycopg.connect(self.pg.url, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.dbname))
                    )
            if self.rd.running:
                client = self.rd.client()
                try:
                    client.flushall()
                finally:
                    client.close()
        except (psycopg.Error, redis.RedisError):
            pass


@dataclass
class CaseLogs:
    """The processes' logs as one case found them: the workers and the sweeper outlive a case (consecutive cases
    share them), so a failed case keeps its own part of each log, from where it stood when the case began."""

    fault_system: FaultSystem
    begun_at: dict[Path, int]

    @classmethod
    def begin(cls, fault_system: FaultSystem) -> CaseLogs:
        processes = fault_system.system.processes
        return cls(fault_system, {p.log: p.log.stat().st_size for p in processes if p.log.exists()})

    def keep(self, folder: Path) -> list[Path]:
        """Copy the case's part of every process's log (those it started: all of it) into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        kept = []
        for process in self.fault_system.system.processes:
            if not process.log.exists():
                continue
            with process.log.open("rb") as log:
                log.seek(self.begun_at.get(process.log, 0))
                copy = folder / process.log.name
                copy.write_bytes(log.read())
            kept.append(copy)
        return kept


class FaultRun:
    """One case on a ready :class:`FaultSystem`: its own batch, watched, faulted and tallied."""

    def __init__(self, fault_system: FaultSystem, case: str, jobs: int) -> None:
        self.fault_system = fault_system
        self.pg, self.rd, self.site = fault_system.pg, fault_system.rd, fault_system.site
        self.system, self.keys, self.jobs = fault_system.system, fault_system.keys, jobs
        self.result = CaseResult(case=case, jobs=jobs)
        self.ids: list[uuid.UUID] = []
        self.stranded_max = 0
        fault_system.ready()

    @property
    def workers(self) -> list[Process]:
        return self.fault_system.workers

    def start_workers(self, count: int) -> list[Process]:
        return self.fault_system.start_workers(count)

    @property
    def live_worker_pids(self) -> set[int]:
        return self.fault_system.live_worker_pids

    def page_urls(self) -> list[str]:
        return [self.site.url(f"/slow?delay={PAGE_DELAY_SECONDS}&n={i}") for i in range(self.jobs)]

    def submit(self, count: int | None = None) -> list[uuid.UUID]:
        """Submit the next ``count`` pages of the case (by default all those not submitted yet)."""
        urls = self.page_urls()[len(self.ids) :]
        urls = urls if count is None else urls[:count]
        for start in range(0, len(urls), SUBMIT_CHUNK):
            self.ids += self.system.submit_batch(urls[start : start + SUBMIT_CHUNK])
        return self.ids

    def query(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.fault_system.query(query, params)

    # -- watching --------------------------------------------------------------------------------

    def completed_count(self) -> int:
        query = "SELECT count(*) FROM crawl_jobs WHERE id = ANY(%s) AND status = 'completed'"
        return int(self.query(query, (self.ids,))[0][0])

    def wait_until_fault_time(self) -> None:
        """Until both workers have completed jobs and ``FAULT_AT`` of the batch is done."""

        def ready() -> bool:
            rows = self.query(
                "SELECT DISTINCT worker FROM fault_transitions WHERE new_status = 'completed'"
                " AND job_id = ANY(%s)",
                (self.ids,),
            )
            active = {worker_pid(row[0]) for row in rows}
            return self.live_worker_pids <= active and self.completed_count() >= self.jobs * FAULT_AT

        eventually(ready, 120, f"{FAULT_AT:.0%} of the batch done by both workers", self.system.logs_text)

    def observe(self) -> Observation | None:
        """The number of final and of stranded jobs now; None while PostgreSQL or Redis cannot say."""
        now = time.monotonic()
        client = redis.Redis.from_url(self.rd.url, socket_timeout=5, socket_connect_timeout=2)
        try:
            # Redis first: a message read here and claimed before the database is read is held by then.
            queued = {
                decode_message(raw)
                for key in self.keys.in_order
                for raw in client.lrange(key, 0, -1)  # type: ignore[union-attr]
            }
        except redis.RedisError:
            return None
        finally:
            client.close()
        live = self.live_worker_pids
        try:
            rows = self.query(
                "SELECT id, status, lease_owner FROM crawl_jobs"
                " WHERE id = ANY(%s) AND status IN ('pending', 'processing')",
                (self.ids,),
            )
        except psycopg.OperationalError:
            return None
        stranded = sum(
            1
            for job_id, status, owner in rows
            if not (status == "processing" and worker_pid(owner) in live)
            and not (status == "pending" and job_id in queued)
        )
        self.stranded_max = max(self.stranded_max, stranded)
        return Observation(at=now, final=self.jobs - len(rows), stranded=stranded)

    def watch_until_final(self, fault_end: float, timeout: float | None = None) -> float | None:
        """Observe until every job is final; return the recovery time (seconds from ``fault_end`` to the first
        observation with nothing stranded), or None if nothing was ever seen unstranded."""
        timeout = timeout if timeout is not None else 120 + self.jobs * 0.05
        deadline = time.monotonic() + timeout
        recovered: float | None = None
        while True:
            seen = self.observe()
            if seen is not None:
                if recovered is None and seen.stranded == 0 and seen.at >= fault_end:
                    recovered = seen.at - fault_end
                if seen.final == self.jobs:
                    break
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
        self.result.recovery_seconds = recovered
        self.result.stranded_max = self.stranded_max
        return recovered

    def watch_fault(self, until: Callable[[], bool]) -> None:
        """Observe (counting stranded jobs) while a fault lasts, until ``until()``."""
        while not until():
            self.observe()
            time.sleep(POLL_SECONDS)

    # -- the tally -------------------------------------------------------------------------------

    def tally(self) -> CaseResult:
        statuses = dict(
            self.query(
                "SELECT status, count(*) FROM crawl_jobs WHERE id = ANY(%s) GROUP BY status", (self.ids,)
            )
        )
        result = self.result
        result.completed = statuses.get("completed", 0)
        result.errors = statuses.get("error", 0)
        result.not_final = sum(n for s, n in statuses.items() if s not in FINAL)
        result.duplicates = int(
            self.query(
                "SELECT count(*) FROM (SELECT job_id FROM fault_transitions WHERE new_status = 'completed'"
                " AND job_id = ANY(%s) GROUP BY job_id HAVING count(*) > 1) AS twice",
                (self.ids,),
            )[0][0]
        )
        query = "SELECT coalesce(sum(attempt), 0) FROM crawl_jobs WHERE id = ANY(%s)"
        result.attempts = int(self.query(query, (self.ids,))[0][0])
        return result

    def completions_after(self, moment_epoch: float) -> dict[int | None, int]:
        """Completions per worker process after a wall-clock moment (``time.time()``)."""
        rows = self.query(
            "SELECT worker, count(*) FROM fault_transitions WHERE new_status = 'completed'"
            " AND job_id = ANY(%s) AND at > to_timestamp(%s) GROUP BY worker",
            (self.ids, moment_epoch),
        )
        counts: dict[int | None, int] = {}
        for owner, n in rows:
            counts[worker_pid(owner)] = counts.get(worker_pid(owner), 0) + int(n)
        return counts

    def held_by(self, pid: int) -> int:
        """Jobs in ``processing`` whose lease belongs to the worker process ``pid``."""
        rows = self.query("SELECT lease_owner FROM crawl_jobs WHERE status = 'processing'")
        return sum(1 for (owner,) in rows if worker_pid(owner) == pid)

    def held_jobs(self, pid: int) -> list[uuid.UUID]:
        """The ids of the case's jobs in ``processing`` under a lease of the worker process ``pid``."""
        rows = self.query(
            "SELECT id, lease_owner FROM crawl_jobs WHERE status = 'processing' AND id = ANY(%s)", (self.ids,)
        )
        return [job_id for job_id, owner in rows if worker_pid(owner) == pid]

    def taken_back_after(self, ids: list[uuid.UUID], moment_epoch: float) -> dict[uuid.UUID, float]:
        """For each of ``ids`` taken from its worker (processing → pending) after a wall-clock moment, the
        seconds from the moment to the first such change."""
        rows = self.query(
            "SELECT job_id, min(extract(epoch FROM at)) FROM fault_transitions"
            " WHERE old_status = 'processing' AND new_status = 'pending' AND job_id = ANY(%s)"
            " AND at > to_timestamp(%s) GROUP BY job_id",
            (ids, moment_epoch),
        )
        return {job_id: float(at) - moment_epoch for job_id, at in rows}

    def completed_by(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, int | None]:
        """The worker process that completed each of ``ids``."""
        rows = self.query(
            "SELECT job_id, worker FROM fault_transitions WHERE new_status = 'completed' AND job_id = ANY(%s)",
            (ids,),
        )
        return {job_id: worker_pid(owner) for job_id, owner in rows}

    def given_back(self) -> int:
        """How many times a held job went back to pending (given back by a stopping worker, or reclaimed)."""
        rows = self.query(
            "SELECT count(*) FROM fault_transitions"
            " WHERE old_status = 'processing' AND new_status = 'pending' AND job_id = ANY(%s)",
            (self.ids,),
        )
        return int(rows[0][0])

    def error_messages(self) -> list[str]:
        return [
            row[0]
            for row in self.query(
                "SELECT DISTINCT error_message FROM crawl_jobs WHERE status = 'error' AND id = ANY(%s)",
                (self.ids,),
            )
        ]

    def counts_drift(self) -> list[str]:
        """Where the counts kept by the database (migration 0007) differ from a recount of every job."""
        statuses = ("pending", "processing", "completed", "error", "cancelled")
        recount = ", ".join(f"count(*) FILTER (WHERE status = '{s}')" for s in statuses)
        kept = ", ".join(f"sum({s})::bigint" for s in statuses)
        drift = []
        for what, key, table in (
            ("batch", "tenant, batch_id", "crawl_batch_counts"),
            ("tenant", "tenant", "crawl_tenant_counts"),
        ):
            where = "WHERE batch_id IS NOT NULL" if what == "batch" else ""
            counted = {
                row[:-5]: row[-5:]
                for row in self.query(f"SELECT {key}, {recount} FROM crawl_jobs {where} GROUP BY {key}")
            }
            held = {
                row[:-5]: row[-5:] for row in self.query(f"SELECT {key}, {kept} FROM {table} GROUP BY {key}")
            }
            for name in sorted(set(counted) | set(held)):
                expected, found = counted.get(name, (0,) * 5), held.get(name, (0,) * 5)
                if tuple(expected) != tuple(found):
                    drift.append(f"{what} {name}: kept {found}, recounted {expected}")
        batches = dict(self.query("SELECT tenant, count(*) FROM crawl_batches GROUP BY tenant"))
        kept_batches = dict(
            self.query("SELECT tenant, sum(batches)::bigint FROM crawl_tenant_counts GROUP BY tenant")
        )
        for tenant in sorted(set(batches) | set(kept_batches)):
            if batches.get(tenant, 0) != kept_batches.get(tenant, 0):
                drift.append(
                    f"batches of {tenant}: kept {kept_batches.get(tenant)}, recounted {batches.get(tenant)}"
                )
        return drift

    def check(self) -> CaseResult:
        """Assert what every case promises: all final, all completed once, recovery within the bound, the
        kept counts equal to a recount."""
        assert len(self.ids) == self.jobs, (
            f"only {len(self.ids)} of the case's {self.jobs} jobs were submitted"
        )
        result = self.tally()
        RESULTS.append(result)
        logs = self.system.logs_text
        assert result.not_final == 0, f"{result.not_final} jobs never became final\n{logs()}"
        assert result.errors == 0, f"{result.errors} jobs failed: {self.error_messages()}\n{logs()}"
        assert result.completed == self.jobs, result
        assert result.duplicates == 0, f"{result.duplicates} jobs were completed twice"
        assert result.recovery_seconds is not None, f"the stranded jobs were never taken up again\n{logs()}"
        assert result.recovery_seconds <= RECOVERY_BOUND_SECONDS, (
            f"recovery took {result.recovery_seconds:.1f} s, over 2 x the lease ({RECOVERY_BOUND_SECONDS} s)"
        )
        drift = self.counts_drift()
        assert not drift, "the kept counts differ from a recount:\n" + "\n".join(drift)
        return result

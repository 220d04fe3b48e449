"""Resident memory of one worker (and its Chromium) over many jobs: it must level off.

    python -m bench.memory [--http 20000] [--browser 500] [--rounds 25] [--interval 0.25] [--logs DIR]

One real worker process (``scrapy crawl crawl_jobs``) crawls the local test site (``tests.acceptance.site``, in
this process, recording no hits) on 127.0.0.1. The jobs go in ``--rounds`` rounds; each round is one batch of
``--http / --rounds`` plain jobs (``/fast/<n>``, ~0.7 KB) and one of ``--browser / --rounds`` rendered jobs
(``render=True``, ``/ok/<n>``, ~2 KB, through the worker's egress guard), submitted through the job manager
(the API's code); the next round is submitted once every job of the previous one is final (all must end
completed). Plain and rendered jobs are mixed in every round, so the browser is running from the first round on
and a leak of either kind keeps growing to the last.

A sampler thread reads, every ``--interval`` seconds, the resident set size (RSS, psutil) of the worker process
and of every process under it: Playwright's Node driver and Chromium's processes. The sum over Chromium's
processes counts the pages they share once per process (as ``ps`` does), so it overstates what they take
together; it is the same overstatement in every sample.

Printed: one row per round (jobs done, seconds, worker RSS at the round's end, peaks within the round of the
worker, the driver, Chromium and the total), then, for the worker alone and for the total, the minimum, median
and peak of each third of the rounds, and the verdict. The criterion (:func:`levelling`): the peak of the last
third of the rounds is at most a small margin above the peak of the middle third — the first third is the
warm-up (imports, the browser's launch, pools and caches filling). Peaks over many samples are steady when the
memory is; a leak of a fixed size per job raises the last third's peak by a third of the run's total growth.
The margins (:data:`WORKER_MARGIN`, :data:`TOTAL_MARGIN`): 5 % or 8 MiB, whichever is larger, for the worker
process (its peaks move by well under 1 MiB once warm), 10 % or 96 MiB for the total (Chromium's peak moves by
about 100 MiB from round to round). At the full size that catches a worker leak of about 1.2 KB per job. The
baseline is the same invocation's middle third. Exit status 1 when either series does not level off.
Services: CRAWLJOBS_BENCH_DATABASE_URL and CRAWLJOBS_BENCH_REDIS_URL, else embedded ones.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

from bench.common import scratch_database, services
from bench.crawl import drop_prefix
from crawljobs.config import Settings
from tests.acceptance.site import start_site
from tests.acceptance.system import System, running_system

MIB = 1024 * 1024
ROUND_TIMEOUT = 600.0  # seconds for one round's jobs to become final: a stall, not a slow machine
POLL_SECONDS = 0.2

# The criterion's margins: relative to the middle third's peak, and at least an absolute amount.
WORKER_MARGIN = (0.05, 8 * MIB)
TOTAL_MARGIN = (0.10, 96 * MIB)


def log(message: str) -> None:
    print(f"[bench.memory] {message}", file=sys.stderr, flush=True)


# -- sampling --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """The RSS (bytes) of the worker process, Playwright's driver and Chromium's processes at one moment."""

    round: int
    seconds: float
    worker: int
    driver: int
    browser: int
    processes: int

    @property
    def total(self) -> int:
        return self.worker + self.driver + self.browser


def read_tree(pid: int, round_index: int, started: float) -> Sample:
    """One sample of the process ``pid`` and all its descendants (a process that exits meanwhile is skipped)."""
    root = psutil.Process(pid)
    worker = root.memory_info().rss
    driver = browser = 0
    processes = 1
    for child in root.children(recursive=True):
        try:
            rss = child.memory_info().rss
            name = child.name()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        processes += 1
        if name.startswith("node"):
            driver += rss
        else:
            browser += rss
    return Sample(round_index, time.monotonic() - started, worker, driver, browser, processes)


@dataclass
class Sampler:
    """Samples a process tree every ``interval`` seconds in a thread, tagging each with the current round."""

    pid: int
    interval: float
    round: int = 0
    samples: list[Sample] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> Sample:
        sample = read_tree(self.pid, self.round, self._started)
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except psutil.NoSuchProcess:
                return  # the worker is gone; the main thread notices and reports it
            except BaseException as error:
                self.errors.append(error)
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the criterion ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Third:
    name: str
    rounds: range
    minimum: int
    median: float
    peak: int


@dataclass(frozen=True)
class Levelling:
    """The verdict on one series: the thirds, the allowed peak of the last one, and whether it held."""

    series: str
    thirds: tuple[Third, Third, Third]
    allowed: float

    @property
    def levels_off(self) -> bool:
        return self.thirds[2].peak <= self.allowed

    def describe(self) -> str:
        middle, last = self.thirds[1], self.thirds[2]
        verdict = "levels off" if self.levels_off else "DOES NOT level off"
        return (
            f"{self.series}: peak of the last third {last.peak / MIB:.1f} MiB, of the middle third"
            f" {middle.peak / MIB:.1f} MiB ({(last.peak - middle.peak) / MIB:+.1f} MiB,"
            f" {last.peak / middle.peak - 1:+.1%}); allowed up to {self.allowed / MIB:.1f} MiB: {verdict}"
        )


def thirds_of(rounds: int) -> tuple[range, range, range]:
    """The rounds split into three consecutive parts as equal as can be (the last one the longest)."""
    if rounds < 3:
        raise ValueError("at least 3 rounds are needed")
    first, second = rounds // 3, 2 * rounds // 3
    return range(0, first), range(first, second), range(second, rounds)


def levelling(
    series: str, values_by_round: dict[int, list[int]], rounds: int, margin: tuple[float, int]
) -> Levelling:
    """Levelled off: the peak of the last third of the rounds is at most ``max(relative * peak, absolute)``
    above the peak of the middle third."""
    parts = []
    for name, part in zip(("first", "middle", "last"), thirds_of(rounds), strict=True):
        values = [v for r in part for v in values_by_round.get(r, [])]
        if not values:
            raise ValueError(
                f"no samples in the {name} third of {series} (rounds {part.start}-{part.stop - 1})"
            )
        parts.append(Third(name, part, min(values), statistics.median(values), max(values)))
    first, middle, last = parts
    relative, absolute = margin
    allowed = middle.peak + max(relative * middle.peak, absolute)
    return Levelling(series, (first, middle, last), allowed)


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class RoundResult:
    index: int
    jobs_done: int
    seconds: float
    end: Sample


@dataclass
class MemoryRun:
    http: int
    browser: int
    rounds: list[RoundResult]
    samples: list[Sample]

    def by_round(self, series: str) -> dict[int, list[int]]:
        values: dict[int, list[int]] = {}
        for sample in self.samples:
            values.setdefault(sample.round, []).append(getattr(sample, series))
        return values

    def verdicts(self) -> tuple[Levelling, Levelling]:
        count = len(self.rounds)
        return (
            levelling("worker process", self.by_round("worker"), count, WORKER_MARGIN),
            levelling("worker + driver + Chromium", self.by_round("total"), count, TOTAL_MARGIN),
        )

    def table(self) -> str:
        """The RSS curve: a row per round, then the thirds and the verdicts."""
        peaks: dict[int, Sample] = {}
        lines = [
            f"{self.http} plain + {self.browser} rendered jobs in {len(self.rounds)} rounds through one worker;"
            f" {len(self.samples)} samples; RSS in MiB",
            f"{'round':>5} {'jobs done':>9} {'seconds':>8} {'worker end':>10} {'worker peak':>11}"
            f" {'driver peak':>11} {'Chromium peak':>13} {'total peak':>10} {'processes':>9}",
        ]
        for sample in self.samples:
            best = peaks.get(sample.round)
            if best is None or sample.total > best.total:
                peaks[sample.round] = sample
        by_worker = self.by_round("worker")
        for result in self.rounds:
            peak = peaks[result.index]
            lines.append(
                f"{result.index + 1:>5} {result.jobs_done:>9} {result.seconds:>8.1f}"
                f" {result.end.worker / MIB:>10.1f} {max(by_worker[result.index]) / MIB:>11.1f}"
                f" {max(s.driver for s in self.samples if s.round == result.index) / MIB:>11.1f}"
                f" {max(s.browser for s in self.samples if s.round == result.index) / MIB:>13.1f}"
                f" {peak.total / MIB:>10.1f} {peak.processes:>9}"
            )
        lines.append(f"{'series':<28} {'third':<7} {'rounds':>7} {'min':>8} {'median':>8} {'peak':>8}")
        verdicts = self.verdicts()
        for verdict in verdicts:
            for third in verdict.thirds:
                span = f"{third.rounds.start + 1}-{third.rounds.stop}"
                lines.append(
                    f"{verdict.series:<28} {third.name:<7} {span:>7} {third.minimum / MIB:>8.1f}"
                    f" {third.median / MIB:>8.1f} {third.peak / MIB:>8.1f}"
                )
        lines += [verdict.describe() for verdict in verdicts]
        return "\n".join(lines)


def shares(total: int, rounds: int) -> list[int]:
    return [total // rounds + (1 if i < total % rounds else 0) for i in range(rounds)]


def wait_final(
    database_url: str, job_ids: list[uuid.UUID], system: System, timeout: float = ROUND_TIMEOUT
) -> None:
    """Return once every job is final; raise (with the worker's log) on a job that did not complete, a worker
    that exited, or a round that stalls for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT status, count(*) FROM crawl_jobs WHERE id = ANY(%s) GROUP BY status", (job_ids,)
            ).fetchall()
            counts: dict[str, int] = {str(status): int(count) for status, count in rows}
            failed = {s: n for s, n in counts.items() if s in ("error", "cancelled")}
            if failed:
                raise RuntimeError(f"jobs did not complete: {failed}\n{system.logs_text()}")
            if counts.get("completed", 0) == len(job_ids):
                return
            if any(p.popen.poll() is not None for p in system.processes):
                raise RuntimeError(f"the worker exited\n{system.logs_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobs not final after {timeout:.0f} s: {counts}\n{system.logs_text()}")
            time.sleep(POLL_SECONDS)


def measure(
    database_url: str,
    redis_url: str,
    *,
    http: int,
    browser: int,
    rounds: int,
    interval: float,
    logs: Path,
    progress: bool = False,
) -> MemoryRun:
    """Run ``http`` plain and ``browser`` rendered jobs in ``rounds`` rounds through one new worker process,
    sampling its process tree; the worker is stopped at the end."""
    if rounds < 3:
        raise ValueError("at least 3 rounds are needed")
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        queue_prefix=f"cjmem:{uuid.uuid4().hex[:8]}",
        allowed_networks=["127.0.0.1/32"],
        domain_memory=False,
        explore_rate=0.0,
    )
    results: list[RoundResult] = []
    done = 0
    with start_site(record_hits=False) as site, running_system(settings, logs) as system:
        try:
            worker = system.start_worker()
            with Sampler(worker.popen.pid, interval) as sampler:
                for index, (plain, rendered) in enumerate(
                    zip(shares(http, rounds), shares(browser, rounds), strict=True)
                ):
                    sampler.round = index
                    started = time.monotonic()
                    ids: list[uuid.UUID] = []
                    if plain:
                        ids += system.submit_batch([site.url(f"/fast/{done + i}") for i in range(plain)])
                    if rendered:
                        urls = [site.url(f"/ok/r{index}-{i}") for i in range(rendered)]
                        ids += system.submit_batch(urls, render=True)
                    wait_final(database_url, ids, system)
                    done += len(ids)
                    end = sampler.sample()
                    results.append(RoundResult(index, done, time.monotonic() - started, end))
                    if sampler.errors:
                        raise RuntimeError("the sampler failed") from sampler.errors[0]
                    if progress:
                        log(
                            f"round {index + 1}/{rounds}: {done} jobs, {end.seconds:.0f} s,"
                            f" worker {end.worker / MIB:.0f} MiB, total {end.total / MIB:.0f} MiB"
                        )
        finally:
            drop_prefix(redis_url, settings.queue_prefix)
    return MemoryRun(http, browser, results, sampler.samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--http", type=int, default=20_000, help="plain jobs")
    parser.add_argument("--browser", type=int, default=500, help="rendered jobs (render=True)")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between samples")
    parser.add_argument("--logs", type=Path, help="folder for the worker's log (default: a new one in /tmp)")
    args = parser.parse_args()
    logs: Path = args.logs or Path(tempfile.mkdtemp(prefix="bench-memory-", dir="/tmp"))
    logs.mkdir(parents=True, exist_ok=True)
    with services() as (admin_url, redis_url), scratch_database(admin_url) as database_url:
        log(f"worker log in {logs}")
        run = measure(
            database_url,
            redis_url,
            http=args.http,
            browser=args.browser,
            rounds=args.rounds,
            interval=args.interval,
            logs=logs,
            progress=True,
        )
    print(run.table())
    if not all(v.levels_off for v in run.verdicts()):
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Run every benchmark and write docs/BENCHMARKS.md from what they print.

    python -m bench.report [--quick] [--only submit,crawl,wait,memory,chaos,dashboard] [--output PATH] [--logs DIR]

Each benchmark of ``bench/`` (:data:`BENCHMARKS`) runs as its own process (``python -m bench.<name> ...``), one
after the other, on one pair of services: CRAWLJOBS_BENCH_DATABASE_URL and CRAWLJOBS_BENCH_REDIS_URL, else an
embedded PostgreSQL and Redis started here and handed to every benchmark. Each benchmark measures its baseline in
the same invocation and prints its figures beside it; the report copies that output verbatim (nothing in it is
typed by hand), with the command that produced it, how long it took, its exit status, how the benchmark measures
(its module docstring) and the machine: CPU, cores, RAM, OS, Python, the PostgreSQL and Redis servers, Scrapy,
scrapy-redis, scrapy-playwright, Playwright and Chromium. A benchmark that fails is reported as failed (with the
end of its log) and the others still run; the exit status is then 1.

``--quick`` runs every benchmark at small sizes (a smoke run of a couple of minutes; its figures mean little) and
writes, unless ``--output`` says otherwise, to the temp folder rather than over docs/BENCHMARKS.md. Each
benchmark's stderr (its progress) goes to a log file in ``--logs``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench.common import ROOT

DEFAULT_OUTPUT = ROOT / "docs" / "BENCHMARKS.md"


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of bench/: its module, its arguments in a full and in a quick run, and what it compares."""

    name: str
    title: str
    baseline: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    # Lines of its output quoted in the summary (a regular expression); the whole output when none match.
    headline: str | None = None
    timeout: float = 3600.0

    @property
    def module(self) -> str:
        return f"bench.{self.name}"

    def argv(self, quick: bool) -> list[str]:
        return [sys.executable, "-m", self.module, *(self.quick if quick else self.full)]

    def command(self, quick: bool) -> str:
        return shlex.join(["python", "-m", self.module, *(self.quick if quick else self.full)])

    def docstring(self) -> str:
        source = (ROOT / "bench" / f"{self.name}.py").read_text()
        return ast.get_docstring(ast.parse(source)) or ""


BENCHMARKS = (
    Benchmark(
        name="submit",
        title="Batch submission",
        baseline="a bare COPY of the same rows with psycopg and nothing else (ratio = API server time / COPY)",
        full=("--sizes", "10000,50000", "--repeat", "3"),
        quick=("--sizes", "1000", "--repeat", "1"),
    ),
    Benchmark(
        name="crawl",
        title="Crawl throughput",
        baseline="a stock scrapy-redis spider (and plain Scrapy) on the same site, same concurrency",
        full=("--pages", "5000", "--repeat", "3"),
        quick=("--pages", "300", "--repeat", "1"),
        headline=r"^(way |plain Scrapy |stock scrapy-redis |whole system |system, impersonate |impersonate engine )",
    ),
    Benchmark(
        name="wait",
        title="Waiting for a job",
        baseline="the single-waiter row of the same run (its table is copied as printed)",
        full=(),
        quick=("--single", "20", "--many", "100", "--one-by-one", "20", "--rounds", "1"),
    ),
    Benchmark(
        name="memory",
        title="Worker memory",
        baseline="the middle third of the same run's rounds (the last third's peak may exceed its peak by a small margin only)",
        full=("--http", "20000", "--browser", "500", "--rounds", "25"),
        quick=("--http", "300", "--browser", "6", "--rounds", "3"),
        headline=r"(levels off|DOES NOT level off)$",
    ),
    Benchmark(
        name="chaos",
        title="Throughput under faults",
        baseline="the no-faults row of the same run: the same batch, workers and lease, nothing killed",
        full=("--repeat", "3"),
        quick=("--quick",),
        headline=r"^(row |no faults |SIGKILL every |Redis restart every |throughput kept |a killed worker|lost )",
    ),
    Benchmark(
        name="dashboard",
        title="Dashboard reads at a million jobs",
        baseline="today's queries (a batch's counts from the index, kept in the benchmark) on the same data, "
        "in the same run; the write side against the same statements with the counts' triggers disabled",
        full=(),
        quick=("--quick",),
        headline=r"^(filled |page of |one batch's counts|live job counts|overview:|GET |JobManager\.overview|"
        r"COPY of |\d+ workers finishing)",
    ),
)


@dataclass(frozen=True)
class Outcome:
    """What one benchmark process did: its command, output (stdout), exit status, time, and its log's end."""

    benchmark: Benchmark
    command: str
    stdout: str
    returncode: int
    seconds: float
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def headline(self) -> list[str]:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        if self.benchmark.headline:
            chosen = [line for line in lines if re.search(self.benchmark.headline, line)]
            if chosen:
                return chosen
        return lines


# -- the machine -----------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def memory_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def os_name() -> str:
    pretty = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.partition("=")[2].strip().strip('"')
    return f"{pretty or platform.system()}, kernel {platform.release()} ({platform.machine()})"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def chromium_version() -> str:
    """The Chromium the workers use: CRAWLJOBS_BROWSER_EXECUTABLE, else one on PATH (as crawlproject.settings)."""
    executable = (
        os.environ.get("CRAWLJOBS_BROWSER_EXECUTABLE")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    if not executable:
        return "none on PATH (Playwright's own)"
    try:
        done = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{executable}: {error}"
    for line in done.stdout.splitlines():
        if line.strip():
            return f"{line.strip()} ({executable})"
    return f"{executable}: no version printed"


def postgres_version(database_url: str) -> str:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
    return str(row[0]) if row else "unknown"


def redis_version(redis_url: str) -> str:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("server")
    finally:
        client.close()
    return str(info.get("redis_version", "unknown"))


def git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


def machine(database_url: str, redis_url: str, *, embedded: bool) -> list[tuple[str, str]]:
    """The machine and the software the figures were measured on, as (what, value) pairs."""
    where = "embedded, started by bench.report" if embedded else "CRAWLJOBS_BENCH_*_URL"
    return [
        ("CPU", cpu_model()),
        ("cores", f"{os.cpu_count()} logical"),
        ("RAM", f"{memory_bytes() / 1024**3:.1f} GiB"),
        ("OS", os_name()),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("PostgreSQL", f"{postgres_version(database_url)} ({where})"),
        ("Redis", f"{redis_version(redis_url)} ({where})"),
        ("Scrapy", package_version("scrapy")),
        ("scrapy-redis", package_version("scrapy-redis")),
        ("scrapy-playwright", package_version("scrapy-playwright")),
        ("Playwright", package_version("playwright")),
        ("Chromium", chromium_version()),
        ("crawljobs", git_revision()),
        ("load average at the start", load_average()),
    ]


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages: other work on the machine skews every figure."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min; {os.cpu_count()} cores)"


# -- running ---------------------------------------------------------------------------------------


def run_one(
    benchmark: Benchmark, *, quick: bool, env: dict[str, str], logs: Path, timeout: float | None = None
) -> Outcome:
    """Run one benchmark process; its stdout is the output, its stderr goes to ``logs/<name>.log``."""
    log_path = logs / f"{benchmark.name}.log"
    started = time.monotonic()
    with log_path.open("wb") as log_handle:
        try:
            done = subprocess.run(
                benchmark.argv(quick),
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log_handle,
                timeout=timeout or benchmark.timeout,
                check=False,
            )
            stdout, returncode = done.stdout.decode(errors="replace"), done.returncode
        except subprocess.TimeoutExpired as expired:
            raw = expired.stdout or b""
            stdout = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            returncode = -1
    seconds = time.monotonic() - started
    tail = ""
    if returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        if returncode == -1:
            tail += f"\n(stopped after {timeout or benchmark.timeout:.0f} s)"
    return Outcome(benchmark, benchmark.command(quick), stdout, returncode, seconds, tail)


@contextlib.contextmanager
def bench_services() -> Iterator[tuple[str, str, bool]]:
    """(PostgreSQL URL, Redis URL, embedded?): the configured ones, else embedded ones for the whole report."""
    from bench.common import services

    embedded = not (
        os.environ.get("CRAWLJOBS_BENCH_DATABASE_URL") and os.environ.get("CRAWLJOBS_BENCH_REDIS_URL")
    )
    with services() as (database_url, redis_url):
        yield database_url, redis_url, embedded


# -- rendering -------------------------------------------------------------------------------------


def fence(text: str) -> str:
    """``text`` in a fenced code block whose fence no line of it can close."""
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=0)
    marks = "`" * max(3, longest + 1)
    return f"{marks}text\n{text.rstrip()}\n{marks}"


def anchor(benchmark: Benchmark) -> str:
    return f"bench{benchmark.name}--{benchmark.title.lower().replace(' ', '-')}"


def render(
    outcomes: Sequence[Outcome],
    machine_facts: Sequence[tuple[str, str]],
    *,
    when: datetime,
    quick: bool,
) -> str:
    """The report (Markdown) from what the benchmarks printed; every figure in it comes from ``outcomes``."""
    total = sum(o.seconds for o in outcomes)
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python -m bench.report{' --quick' if quick else ''}` on"
        f" {when.astimezone(UTC).strftime('%Y-%m-%d %H:%M UTC')}, in {total / 60:.1f} minutes. Every figure below"
        " is copied from what the benchmark printed in this run; each benchmark measures its baseline in the"
        " same invocation and prints its figures beside it. Timing is measured here, never asserted by tests."
        " Other work on the machine (see the load averages) slows the absolute figures: read the ratios first.",
        "",
    ]
    if quick:
        lines += [
            "> **Quick run**: every benchmark at small sizes, a smoke test of the benchmarks themselves; these",
            "> figures are not representative. `python -m bench.report` gives the real ones.",
            "",
        ]
    lines += ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {what} | {value.replace('|', '/')} |" for what, value in machine_facts]
    lines += ["", "## Summary", ""]
    for outcome in outcomes:
        bench = outcome.benchmark
        state = "" if outcome.ok else f" — **failed (exit status {outcome.returncode})**"
        lines += [
            f"**[`{bench.module}`](#{anchor(bench)})** — {bench.title.lower()}, compared with"
            f" {bench.baseline}{state}:",
            "",
            fence("\n".join(outcome.headline()) or "(no output)"),
            "",
        ]
    for outcome in outcomes:
        bench = outcome.benchmark
        lines += [
            f"## `{bench.module}` — {bench.title}",
            "",
            f"Command: `{outcome.command}` ({outcome.seconds:.0f} s, exit status {outcome.returncode}).",
            f"Baseline: {bench.baseline}.",
            "",
            "Output:",
            "",
            fence(outcome.stdout or "(no output)"),
            "",
        ]
        if not outcome.ok:
            lines += ["End of its log:", "", fence(outcome.log_tail or "(empty)"), ""]
        lines += [
            "<details><summary>How it is measured (the module's docstring)</summary>",
            "",
            bench.docstring().rstrip(),
            "",
            "</details>",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


# -- main ------------------------------------------------------------------------------------------


def select(only: str | None) -> list[Benchmark]:
    if not only:
        return list(BENCHMARKS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    known = {b.name: b for b in BENCHMARKS}
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"unknown benchmark(s) {unknown}; known: {', '.join(known)}")
    return [known[name] for name in names]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", help="a comma-separated subset of: " + ",".join(b.name for b in BENCHMARKS))
    parser.add_argument(
        "--output", type=Path, help=f"the report (default: {DEFAULT_OUTPUT.relative_to(ROOT)})"
    )
    parser.add_argument("--logs", type=Path, help="folder for the benchmarks' stderr (default: a temp one)")
    args = parser.parse_args(argv)
    try:
        chosen = select(args.only)
    except ValueError as error:
        parser.error(str(error))
    output: Path = args.output or (
        Path(tempfile.gettempdir()) / "BENCHMARKS-quick.md" if args.quick else DEFAULT_OUTPUT
    )
    logs: Path = args.logs or Path(tempfile.mkdtemp(prefix="bench-report-", dir="/tmp"))
    logs.mkdir(parents=True, exist_ok=True)
    say(f"logs in {logs}")

    outcomes: list[Outcome] = []
    with bench_services() as (database_url, redis_url, embedded):
        env = {
            **os.environ,
            "CRAWLJOBS_BENCH_DATABASE_URL": database_url,
            "CRAWLJOBS_BENCH_REDIS_URL": redis_url,
            "PYTHONUNBUFFERED": "1",
        }
        facts = machine(database_url, redis_url, embedded=embedded)
        when = datetime.now(UTC)
        for benchmark in chosen:
            say(f"running {benchmark.command(args.quick)}")
            outcome = run_one(benchmark, quick=args.quick, env=env, logs=logs)
            say(f"{benchmark.module}: exit status {outcome.returncode} after {outcome.seconds:.0f} s")
            outcomes.append(outcome)
        facts.append(("load average at the end", load_average()))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(outcomes, facts, when=when, quick=args.quick))
    say(f"wrote {output}")
    return 0 if all(o.ok for o in outcomes) else 1


def say(message: str) -> None:
    print(f"[bench.report] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

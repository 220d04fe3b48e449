"""Pages per second from a fast local site: plain Scrapy, stock scrapy-redis and the whole system, in one run.

    python -m bench.crawl [--pages 5000] [--concurrency 64] [--workers 1] [--repeat 1]
                          [--ways plain,redis,system,impersonate,playwright,playwright-idle,browser]
                          [-s NAME=VALUE ...]
                          [--worker-setting NAME=VALUE ...] [--worker-env NAME=VALUE ...] [--py-spy DIR]
                          [--logs DIR] [--browser-pages 200] [--browser-concurrency 8]

One test site process (``tests.acceptance.site``, ``/fast/<n>`` pages of ~0.7 KB on 127.0.0.1) serves all three.
Each way uses ``--workers`` processes, each with ``CONCURRENT_REQUESTS`` and ``CONCURRENT_REQUESTS_PER_DOMAIN``
of ``--concurrency`` (every page is on one domain, so the per-domain limit is the real one) and the asyncio
reactor:

1. plain Scrapy: an in-memory spider (``bench.baseline_spiders``) whose ``start()`` yields the pages (split
   between the processes) and whose callback only counts them.
2. stock scrapy-redis: a stock ``RedisSpider`` fed by ``--pages`` ``{"url": U}`` messages pushed to its key
   before it starts (current Scrapy feeds it only through its ``spider_idle`` path, a batch of
   ``CONCURRENT_REQUESTS`` at a time); it closes after the last response.
3. the whole system: an API process and ``--workers`` worker processes (``scrapy crawl crawl_jobs``), started
   and warmed up by a small batch before the clock; then one batch of ``--pages`` URLs is POSTed to /v1/batches
   and the clock runs until every job is 'completed' with its HTML in PostgreSQL (polled every 50 ms). Its
   ladder is ``http:direct``: every page is fetched by Scrapy's downloader, as in the baselines.
4. the whole system with the impersonate engine (``CRAWLJOBS_LADDER=impersonate:direct``, the default ladder's
   first rung: curl with Chrome's handshake and headers), the same way, in the same run: its row beside the
   http engine's says what the engine costs in pages/s and CPU per page.

The baselines exclude process start-up: each process opens its spider, then waits at a gate; the clock runs
from the gate opening to the last response (over all processes). The system's clock runs from the submit to
the last completion. Prints the medians of ``--repeat`` runs, the ratios to stock scrapy-redis, and the CPU
time the crawling processes spent per page (less sensitive than wall time to other load on the machine; for
the system, its worker processes only).

The browser row (``--ways playwright,browser``): ``--browser-pages`` ``/fast`` pages rendered by a bare
Playwright loop (``bench.playwright_loop``: one Chromium, one context, ``--browser-concurrency`` tasks of
new page, goto until ``load``, content, close) and by the system (one worker, ``render: true`` jobs,
``CRAWLJOBS_BROWSER_CONCURRENCY`` of ``--browser-concurrency``), in the same run; printed as pages/s and
the ratio of the system to the bare loop (aim >= 0.8). ``playwright-idle`` is the bare loop with
``wait_until="networkidle"`` (no request for 500 ms): the worker's renders wait that long after ``load`` by
default (``CRAWLJOBS_RENDER_QUIET_MS``, what makes a page's post-load content part of its result), so that row is
the like-for-like comparison (``--ways playwright,playwright-idle,browser``); the load-only row says what the
settle wait costs.

``-s NAME=VALUE`` adds a Scrapy setting to all three ways, ``--worker-setting`` to the system's workers only
(to measure a change before making it); ``--ways`` runs a subset; ``--py-spy DIR`` samples the workers during
the timed run with py-spy (``pip install py-spy``) into collapsed-stack files.
Services: CRAWLJOBS_BENCH_DATABASE_URL and CRAWLJOBS_BENCH_REDIS_URL, else embedded ones. Everything listens on
127.0.0.1 and every child process is stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from bench.common import ROOT, api_process, median, scratch_database, services, stop
from crawljobs.config import Settings
from tests.acceptance.system import worker_env

SYSTEM_TIMEOUT = 600.0
POLL_SECONDS = 0.05


def log(message: str) -> None:
    print(f"[bench.crawl] {message}", file=sys.stderr, flush=True)


# -- child processes -------------------------------------------------------------------------------


@dataclass
class Child:
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    """A list to start children into; every one still running is stopped on the way out."""
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in started:
            stop(child.popen)


def spawn(into: list[Child], argv: list[str], env: dict[str, str], log_path: Path) -> Child:
    with log_path.open("wb") as handle:
        popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    child = Child(popen, log_path)
    into.append(child)
    return child


def wait_for_spiders(running: list[Child], timeout: float = 60) -> None:
    """Until every worker in `running` has opened its spider; raises when one exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not all("Spider opened" in child.tail(10**7) for child in running):
        for child in running:
            if child.popen.poll() is not None:
                raise RuntimeError(f"a worker exited before it was ready:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers did not open their spiders in {timeout:g} s")
        time.sleep(0.05)


def plain_env() -> dict[str, str]:
    """The environment of a baseline: no crawljobs or Scrapy project settings leak in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("CRAWLJOBS_") and k != "SCRAPY_SETTINGS_MODULE"
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def site_process(logs: Path) -> Iterator[str]:
    """The test site in its own process, recording nothing; yields its base URL."""
    out = logs / "site.out"
    with children() as running, out.open("wb") as handle:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tests.acceptance.site", "--host", "127.0.0.1", "--no-record"],
            cwd=ROOT,
            env=plain_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        running.append(Child(popen, out))
        deadline = time.monotonic() + 30
        while True:
            text = out.read_text(errors="replace")
            if text.startswith("http://127.0.0.1:") and text.endswith("\n"):
                base = text.splitlines()[0].strip()
                break
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test site did not start:\n{text}")
            time.sleep(0.05)
        httpx.get(f"{base}/fast/0", timeout=5).raise_for_status()
        yield base


# -- the baselines ---------------------------------------------------------------------------------


def run_baseline(
    kind: str,
    extra: list[list[str]],
    concurrency: int,
    logs: Path,
    tag: str,
    timeout: float,
    scrapy_settings: list[str],
) -> tuple[float, float, int, dict[str, int]]:
    """Start one baseline process per entry of ``extra`` (its own arguments), open the gate when all are ready,
    and return (seconds from the gate to the last response, CPU seconds of the processes, responses,
    statuses)."""
    folder = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=logs))
    go = folder / "go"
    with children() as running:
        for index, args in enumerate(extra):
            argv = [
                sys.executable,
                "-m",
                "bench.baseline_spiders",
                kind,
                "--concurrency",
                str(concurrency),
                "--ready",
                str(folder / f"ready-{index}"),
                "--go",
                str(go),
                "--result",
                str(folder / f"result-{index}.json"),
                *args,
                *(f"--set={pair}" for pair in scrapy_settings),
            ]
            spawn(running, argv, plain_env(), folder / f"process-{index}.log")
        deadline = time.monotonic() + 60
        while not all((folder / f"ready-{i}").exists() for i in range(len(extra))):
            for child in running:
                if child.popen.poll() is not None:
                    raise RuntimeError(f"a {kind} baseline exited before it was ready:\n{child.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} baseline did not get ready in 60 s")
            time.sleep(0.02)
        go.touch()
        deadline = time.monotonic() + timeout
        for child in running:
            try:
                child.popen.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"the {kind} baseline did not finish in {timeout:.0f} s:\n{child.tail()}"
                ) from None
        results: list[dict[str, Any]] = []
        for index, child in enumerate(running):
            path = folder / f"result-{index}.json"
            if not path.exists():
                raise RuntimeError(f"a {kind} baseline wrote no result:\n{child.tail()}")
            results.append(json.loads(path.read_text()))
    responses = sum(r["responses"] for r in results)
    statuses: dict[str, int] = {}
    for r in results:
        for status, count in r["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    started = min(r["go"] for r in results)
    last = max(r["last"] for r in results)
    return last - started, sum(r["cpu"] for r in results), responses, statuses


def run_plain(
    base: str, pages: int, workers: int, concurrency: int, logs: Path, tag: str, scrapy_settings: list[str]
) -> tuple[float, float]:
    shares = [pages // workers + (1 if i < pages % workers else 0) for i in range(workers)]
    extra, first = [], 0
    for share in shares:
        extra.append(["--base", base, "--first", str(first), "--count", str(share)])
        first += share
    seconds, cpu, responses, statuses = run_baseline(
        "plain", extra, concurrency, logs, tag, timeout=600, scrapy_settings=scrapy_settings
    )
    check(tag, pages, responses, statuses)
    return seconds, cpu


def run_stock_redis(
    base: str,
    redis_url: str,
    pages: int,
    workers: int,
    concurrency: int,
    logs: Path,
    tag: str,
    scrapy_settings: list[str],
) -> tuple[float, float]:
    key = f"benchcrawl:{uuid.uuid4().hex[:8]}:start_urls"
    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for start in range(0, pages, 1000):
            messages = [
                json.dumps({"url": f"{base}/fast/{i}"}) for i in range(start, min(pages, start + 1000))
            ]
            pipe.rpush(key, *messages)
        pipe.execute()
        # One process closes itself after the last response; several share the key and close when idle.
        expect = pages if workers == 1 else 0
        extra = [["--redis-url", redis_url, "--key", key, "--expect", str(expect)] for _ in range(workers)]
        seconds, cpu, responses, statuses = run_baseline(
            "redis", extra, concurrency, logs, tag, timeout=600, scrapy_settings=scrapy_settings
        )
    finally:
        client.delete(key)
        client.close()
    check(tag, pages, responses, statuses)
    return seconds, cpu


def check(tag: str, pages: int, responses: int, statuses: dict[str, int]) -> None:
    if responses != pages or set(statuses) != {"200"}:
        raise RuntimeError(f"{tag}: {responses} responses of {pages}, statuses {statuses}")


# -- the whole system ------------------------------------------------------------------------------


def completed_count(conn: psycopg.Connection[Any], batch_id: str) -> tuple[int, int]:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'completed' AND html IS NOT NULL),"
        " count(*) FILTER (WHERE status IN ('error', 'cancelled'))"
        " FROM crawl_jobs WHERE tenant = 'bench' AND batch_id = %s",
        (batch_id,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def submit(http: httpx.Client, urls: list[str], *, render: bool = False) -> str:
    response = http.post("/v1/batches", json={"urls": urls, "render": render})
    response.raise_for_status()
    body = response.json()
    if body["accepted"] != len(urls):
        raise RuntimeError(f"the API refused some URLs: {body['failures'][:3]}")
    batch_id: str = body["batch_id"]
    return batch_id


def wait_completed(
    conn: psycopg.Connection[Any], batch_id: str, count: int, timeout: float, workers: list[Child]
) -> float:
    """Poll every 50 ms until all ``count`` jobs of the batch are completed with HTML; the monotonic time then."""
    deadline = time.monotonic() + timeout
    while True:
        done, failed = completed_count(conn, batch_id)
        now = time.monotonic()
        if done == count:
            return now
        if failed:
            raise RuntimeError(f"{failed} jobs of batch {batch_id} failed\n{workers[0].tail()}")
        for worker in workers:
            if worker.popen.poll() is not None:
                raise RuntimeError(f"a worker exited ({worker.popen.returncode}):\n{worker.tail()}")
        if now > deadline:
            raise RuntimeError(f"{count - done} of {count} jobs not completed after {timeout:.0f} s")
        time.sleep(POLL_SECONDS)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_system(
    base: str,
    api: str,
    key: str,
    database_url: str,
    settings: Settings,
    pages: int,
    workers: int,
    concurrency: int,
    logs: Path,
    tag: str,
    scrapy_settings: list[str],
    py_spy: Path | None = None,
    ladder: str | None = None,
    render_pages: int | None = None,
    worker_env_pairs: list[str] | None = None,
) -> tuple[float, float]:
    """``render_pages``: render every page (``render: true``) with that many browser pages per worker;
    ``worker_env_pairs``: ``NAME=VALUE`` environment variables of the workers (``--worker-env``)."""
    render = render_pages is not None
    extra = {"CRAWLJOBS_BROWSER_CONCURRENCY": str(render_pages)} if render else {}
    for pair in worker_env_pairs or []:
        name, _, value = pair.partition("=")
        extra[name] = value
    env = worker_env(
        settings,
        CRAWLJOBS_WORKER_CONCURRENCY=str(concurrency),
        CRAWLJOBS_PER_DOMAIN_CONCURRENCY=str(concurrency),
        **({"CRAWLJOBS_LADDER": ladder} if ladder else {}),
        **extra,
    )
    argv = [sys.executable, "-m", "scrapy", "crawl", "crawl_jobs"]
    for pair in scrapy_settings:
        argv += ["-s", pair]
    headers = {"Authorization": f"Bearer {key}"}
    with (
        children() as running,
        httpx.Client(base_url=api, headers=headers, timeout=120) as http,
        psycopg.connect(database_url, autocommit=True) as conn,
    ):
        for index in range(workers):
            spawn(running, argv, env, logs / f"{tag}-worker-{index}.log")
        wait_for_spiders(running)
        # Warm-up: a small batch through the whole path (API, Redis, workers, PostgreSQL) before the clock.
        warm_count = 2 * render_pages * workers if render_pages else max(200, 2 * concurrency * workers)
        warm = [f"{base}/fast/warm-{tag}-{i}" for i in range(warm_count)]
        wait_completed(conn, submit(http, warm, render=render), len(warm), 120, running)
        time.sleep(1.0)  # let the workers settle back to idle (BLPOP)

        urls = [f"{base}/fast/{tag}-{i}" for i in range(pages)]
        with profilers(py_spy, running, tag):
            cpu_before = sum(cpu_seconds(child.popen.pid) for child in running)
            started = time.monotonic()
            batch_id = submit(http, urls, render=render)
            submitted = time.monotonic()
            finished = wait_completed(conn, batch_id, pages, SYSTEM_TIMEOUT, running)
            cpu = sum(cpu_seconds(child.popen.pid) for child in running) - cpu_before
        log(f"{tag}: submit {submitted - started:.2f} s, crawl {finished - submitted:.2f} s")
        return finished - started, cpu


def run_playwright(
    base: str, pages: int, concurrency: int, logs: Path, tag: str, wait_until: str = "load"
) -> tuple[float, float]:
    """The bare Playwright loop (``bench.playwright_loop``) in a process of its own; ``wait_until``
    ``networkidle``: each page also waits for 500 ms without a request after load, as the worker's renders do
    (``CRAWLJOBS_RENDER_QUIET_MS``, 500 by default)."""
    out = subprocess.run(
        [
            *(sys.executable, "-m", "bench.playwright_loop", "--base", base, "--pages", str(pages)),
            *("--concurrency", str(concurrency), "--tag", tag, "--wait-until", wait_until),
        ],
        capture_output=True,
        text=True,
        timeout=SYSTEM_TIMEOUT,
        check=False,
        cwd=ROOT,
    )
    (logs / f"{tag}-playwright.log").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"the bare Playwright loop failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), float(result["cpu"])


@contextlib.contextmanager
def profilers(folder: Path | None, workers: list[Child], tag: str) -> Iterator[None]:
    """With a folder: py-spy samples every worker (collapsed stacks, one file each) while the body runs."""
    if folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    with children() as running:
        for index, worker in enumerate(workers):
            argv = [
                str(spy),
                "record",
                "--pid",
                str(worker.popen.pid),
                "--rate",
                "250",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(folder / f"{tag}-worker-{index}.txt"),
            ]
            spawn(running, argv, os.environ.copy(), folder / f"{tag}-py-spy-{index}.log")
        time.sleep(1.0)  # py-spy attaches
        yield
        for child in running:
            child.popen.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for child in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(30)


# -- the run ---------------------------------------------------------------------------------------


WAYS = {
    "plain": "plain Scrapy",
    "redis": "stock scrapy-redis",
    "system": "whole system",
    "impersonate": "system, impersonate",
    "playwright": "bare Playwright",
    "playwright-idle": "bare PW, networkidle",
    "browser": "system, rendered",
}
BROWSER_WAYS = ("playwright", "playwright-idle", "browser")
# The ladder of each way of the whole system: the http engine (Scrapy's downloader, as the baselines use), and
# the impersonate engine (the default ladder's first rung).
LADDERS = {"system": "http:direct", "impersonate": "impersonate:direct"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="processes per way")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--browser-pages", type=int, default=200, help="pages of the browser ways (playwright, browser)"
    )
    parser.add_argument(
        "--browser-concurrency",
        type=int,
        default=8,
        help="concurrent pages of the browser ways: the bare loop's tasks, the worker's CRAWLJOBS_BROWSER_CONCURRENCY",
    )
    parser.add_argument(
        "--ways",
        default="plain,redis,system,impersonate",
        help="which ways to run, comma-separated (default: plain,redis,system,impersonate; the browser row: "
        "playwright,browser)",
    )
    parser.add_argument(
        "-s",
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another Scrapy setting for all three ways (repeatable)",
    )
    parser.add_argument(
        "--worker-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another Scrapy setting for the system's workers only (repeatable; to try a change)",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of the system's workers (repeatable; CRAWLJOBS_BROWSER_GL=swiftshader...)",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample the workers with py-spy during the timed system run (collapsed stacks in DIR)",
    )
    parser.add_argument(
        "--logs", type=Path, default=None, help="folder for the children's logs (default: a temp one)"
    )
    args = parser.parse_args()
    ways = [way.strip() for way in args.ways.split(",") if way.strip()]
    if not ways or any(way not in WAYS for way in ways):
        parser.error(f"--ways: a comma-separated subset of {','.join(WAYS)}")
    if args.pages < 1 or args.workers < 1 or args.concurrency < 1 or args.repeat < 1:
        parser.error("--pages, --workers, --concurrency and --repeat must be at least 1")
    for pair in [*args.setting, *args.worker_setting, *args.worker_env]:
        if "=" not in pair:
            parser.error(f"not NAME=VALUE: {pair!r}")
    # SIGTERM unwinds like Ctrl-C, so every child process is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logs: Path = args.logs or Path(tempfile.mkdtemp(prefix="bench-crawl-", dir="/tmp"))
    logs.mkdir(parents=True, exist_ok=True)
    log(f"logs in {logs}")

    times: dict[str, list[float]] = {way: [] for way in WAYS if way in ways}
    cpus: dict[str, list[float]] = {way: [] for way in times}
    prefix = f"benchcrawl{uuid.uuid4().hex[:6]}"
    pages, workers, concurrency = args.pages, args.workers, args.concurrency
    with (
        services() as (admin_url, redis_url),
        scratch_database(admin_url) as database_url,
        site_process(logs) as base,
        api_process(database_url, redis_url, allowed_networks="127.0.0.1/32", queue_prefix=prefix) as (
            api,
            key,
        ),
    ):
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            queue_prefix=prefix,
            allowed_networks=["127.0.0.1/32"],
            domain_memory=False,
        )
        try:
            for rep in range(args.repeat):
                for way in times:
                    tag = f"r{rep}-{way}"
                    count = args.browser_pages if way in BROWSER_WAYS else pages
                    if way in ("playwright", "playwright-idle"):
                        wait_until = "networkidle" if way == "playwright-idle" else "load"
                        seconds, cpu = run_playwright(
                            base, count, args.browser_concurrency, logs, tag, wait_until
                        )
                    elif way == "browser":
                        seconds, cpu = run_system(
                            base,
                            api,
                            key,
                            database_url,
                            settings,
                            count,
                            1,
                            concurrency,
                            logs,
                            tag,
                            [*args.setting, *args.worker_setting],
                            args.py_spy,
                            render_pages=args.browser_concurrency,
                            worker_env_pairs=args.worker_env,
                        )
                    elif way == "plain":
                        seconds, cpu = run_plain(base, pages, workers, concurrency, logs, tag, args.setting)
                    elif way == "redis":
                        seconds, cpu = run_stock_redis(
                            base, redis_url, pages, workers, concurrency, logs, tag, args.setting
                        )
                    else:
                        seconds, cpu = run_system(
                            base,
                            api,
                            key,
                            database_url,
                            settings,
                            pages,
                            workers,
                            concurrency,
                            logs,
                            tag,
                            [*args.setting, *args.worker_setting],
                            args.py_spy,
                            LADDERS[way],
                        )
                    times[way].append(seconds)
                    cpus[way].append(cpu)
                    log(
                        f"{tag}: {WAYS[way]} {seconds:.2f} s ({count / seconds:.1f} pages/s,"
                        f" {cpu / count * 1000:.2f} CPU ms/page)"
                    )
        finally:
            drop_prefix(redis_url, prefix)

    plain_ways = {way: values for way, values in times.items() if way not in BROWSER_WAYS}
    if plain_ways:
        report(
            plain_ways,
            {way: cpus[way] for way in plain_ways},
            pages,
            workers,
            concurrency,
            args.repeat,
            args.setting,
            args.worker_setting,
        )
    browser_ways = {way: values for way, values in times.items() if way in BROWSER_WAYS}
    if browser_ways:
        report_browser(browser_ways, cpus, args.browser_pages, args.browser_concurrency, args.repeat)


def drop_prefix(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.unlink(*keys)
    finally:
        client.close()


def report(
    times: dict[str, list[float]],
    cpus: dict[str, list[float]],
    pages: int,
    workers: int,
    concurrency: int,
    repeat: int,
    settings: list[str],
    worker_settings: list[str],
) -> None:
    rates = {way: pages / median(values) for way, values in times.items()}
    print(
        f"{pages} pages, {workers} process(es) per way, concurrency {concurrency} per process"
        f" (CONCURRENT_REQUESTS = CONCURRENT_REQUESTS_PER_DOMAIN), medians of {repeat} run(s)"
    )
    if settings:
        print(f"extra Scrapy settings (all ways): {' '.join(settings)}")
    if worker_settings:
        print(f"extra Scrapy settings (workers only): {' '.join(worker_settings)}")
    cpu_ms = {way: median(values) / pages * 1000 for way, values in cpus.items()}
    print(
        f"{'way':<20} {'pages':>7} {'seconds':>9} {'pages/s':>9} {'vs stock scrapy-redis':>22}"
        f" {'crawler CPU ms/page':>20}"
    )
    for way, values in times.items():
        ratio = f"{rates[way] / rates['redis']:.2f}x" if "redis" in rates else "-"
        print(
            f"{WAYS[way]:<20} {pages:>7} {median(values):>9.2f} {rates[way]:>9.1f} {ratio:>22}"
            f" {cpu_ms[way]:>20.2f}"
        )
    if "system" in rates and "redis" in rates:
        headline = rates["system"] / rates["redis"]
        print(f"whole system / stock scrapy-redis = {headline:.2f} (aim >= 0.90)")
        print(
            f"(crawler CPU per page, whole system / stock scrapy-redis = {cpu_ms['system'] / cpu_ms['redis']:.2f};"
            " the system's is its worker processes' only, not the API's, PostgreSQL's or Redis's)"
        )
    if "system" in rates and "impersonate" in rates:
        print(
            f"impersonate engine / http engine (both through the whole system) = "
            f"{rates['impersonate'] / rates['system']:.2f} pages/s, "
            f"{cpu_ms['impersonate'] / cpu_ms['system']:.2f} CPU per page"
        )


def report_browser(
    times: dict[str, list[float]], cpus: dict[str, list[float]], pages: int, concurrency: int, repeat: int
) -> None:
    """The browser row: rendered pages/s of the system (one worker) beside the bare Playwright loop, both with
    ``concurrency`` pages at once, on the same /fast pages (CPU: the bare loop's process and Chromium; the
    system's worker process only, its Chromium is not counted)."""
    print(
        f"{pages} rendered pages, {concurrency} browser pages at once (the bare loop's tasks, the worker's"
        f" CRAWLJOBS_BROWSER_CONCURRENCY), medians of {repeat} run(s)"
    )
    rates = {way: pages / median(values) for way, values in times.items()}
    print(
        f"{'way':<20} {'pages':>7} {'seconds':>9} {'pages/s':>9} {'vs bare Playwright':>19}"
        f" {'vs bare networkidle':>20}"
    )
    for way, values in times.items():
        ratio = f"{rates[way] / rates['playwright']:.2f}x" if "playwright" in rates else "-"
        idle = f"{rates[way] / rates['playwright-idle']:.2f}x" if "playwright-idle" in rates else "-"
        print(f"{WAYS[way]:<20} {pages:>7} {median(values):>9.2f} {rates[way]:>9.1f} {ratio:>19} {idle:>20}")
    # The like-for-like ratio: the worker waits, after load, for CRAWLJOBS_RENDER_QUIET_MS (500 ms by
    # default) without a request, as Playwright's networkidle does; the bare load-only loop does not.
    for bare in ("playwright-idle", "playwright"):
        if "browser" in rates and bare in rates:
            print(
                f"system rendered / {WAYS[bare]} = {rates['browser'] / rates[bare]:.2f}"
                + (" (aim >= 0.80)" if bare == "playwright-idle" else "")
            )


if __name__ == "__main__":
    main()

"""Processing pending jobs on demand (the legacy ``process-crawl-jobs``): a bounded worker run.

It runs exactly ``scrapy crawl crawl_jobs -a max_jobs=N`` (with the caller's tenant) in a child process and
reads the summary line the spider prints when it closes.

A run is a whole worker: three processes and ~370 MiB before it renders anything (Scrapy, and a Playwright
driver for each of scrapy-playwright's two download handlers, http and https), twelve and ~1.2 GiB once
Chromium renders a page (its browser, two zygotes, GPU, network, storage and renderer processes; and two
crashpad handlers outside the tree). So ``ProcessingRuns`` bounds how many one API process starts at once
(``CRAWLJOBS_MAX_PROCESSING_RUNS``) and how many of them one tenant holds
(``CRAWLJOBS_MAX_PROCESSING_RUNS_PER_TENANT``); a call beyond either is refused at once (``ProcessingBusy``, a
429), never queued. The bound is per API process, in memory: `crawljobs up` and `crawljobs api` serve with one
uvicorn process, and the children it bounds are that process's own, on its machine, which is what they
exhaust. A run whose caller is gone (its task cancelled) or that outlives its time limit is stopped: SIGTERM
(Scrapy finishes what it fetches and gives its other jobs back), then SIGKILL after ``STOP_GRACE_SECONDS``
(Playwright's drivers, their pipe closed, take Chromium down with them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from crawljobs.config import Settings
from crawljobs.exceptions import CrawlJobsError

SUMMARY_PREFIX = "CRAWLJOBS_SUMMARY "
# How long a stopped run may take to give its jobs back before it is killed (its leases then expire and the
# sweeper takes the jobs back).
STOP_GRACE_SECONDS = 10.0
# The Retry-After of a refused run: a run lasts a Scrapy start (2-3 s) and its fetches.
RETRY_AFTER_SECONDS = 10


class ProcessingFailed(CrawlJobsError):
    """The worker run did not finish."""

    code = "processing_failed"


class ProcessingBusy(CrawlJobsError):
    """Too many worker runs are going on; try again later."""

    code = "too_many_runs"

    def __init__(self, message: str, *, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProcessingRuns:
    """The worker runs of one API process: at most ``total`` at once, at most ``per_tenant`` of one tenant.

    A slot is taken and given back in the event loop's thread, between two awaits, so plain counters suffice
    (a semaphore's waiting is not wanted: a run beyond the bound is refused, not queued).
    """

    def __init__(self, *, total: int, per_tenant: int) -> None:
        self.total = total
        self.per_tenant = per_tenant
        self.running: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: Settings) -> ProcessingRuns:
        return cls(total=settings.max_processing_runs, per_tenant=settings.max_processing_runs_per_tenant)

    @contextlib.contextmanager
    def slot(self, tenant: str) -> Iterator[None]:
        """Hold one run of ``tenant`` for the ``with`` block; raises ProcessingBusy beyond either bound."""
        if self.running[tenant] >= self.per_tenant:
            raise ProcessingBusy(
                f"this tenant already has {self.running[tenant]} worker run(s) going "
                f"(at most {self.per_tenant}, CRAWLJOBS_MAX_PROCESSING_RUNS_PER_TENANT); try again later"
            )
        if self.running.total() >= self.total:
            raise ProcessingBusy(
                f"{self.running.total()} worker runs are going (at most {self.total}, "
                "CRAWLJOBS_MAX_PROCESSING_RUNS); try again later"
            )
        self.running[tenant] += 1
        try:
            yield
        finally:
            self.running[tenant] -= 1
            if not self.running[tenant]:
                del self.running[tenant]


@dataclass(frozen=True)
class ProcessSummary:
    processed: int
    completed: int
    failed: int

    @property
    def message(self) -> str:
        return f"Processed {self.processed} jobs ({self.completed} completed, {self.failed} failed)"


def worker_environment(settings: Settings) -> dict[str, str]:
    """The environment of a child worker: this process's, with the settings in force spelled out."""
    env = dict(os.environ)
    env["SCRAPY_SETTINGS_MODULE"] = "crawlproject.settings"
    for name, value in settings.model_dump(exclude={"data_dir"}).items():
        if value is None:
            env.pop(f"CRAWLJOBS_{name.upper()}", None)
        elif isinstance(value, list):
            env[f"CRAWLJOBS_{name.upper()}"] = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            env[f"CRAWLJOBS_{name.upper()}"] = "true" if value else "false"
        else:
            env[f"CRAWLJOBS_{name.upper()}"] = str(value)
    return env


async def process_pending(
    settings: Settings, *, batch_size: int, tenant: str, time_limit: float = 600
) -> ProcessSummary:
    """Run a worker on up to ``batch_size`` of ``tenant``'s pending jobs and return its summary.

    Cancelled (the caller is gone) or over ``time_limit``, the run is stopped before this returns or raises.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scrapy",
        "crawl",
        "crawl_jobs",
        "-a",
        f"max_jobs={batch_size}",
        "-a",
        f"tenant={tenant}",
        env=worker_environment(settings),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), time_limit)
    except TimeoutError:
        raise ProcessingFailed(f"the worker run did not finish within {time_limit:.0f} s") from None
    finally:
        # Shielded: a cancelled caller must still see its child stopped, not leave it running.
        await asyncio.shield(stop_run(process))
    for line in stdout.decode(errors="replace").splitlines():
        if line.startswith(SUMMARY_PREFIX):
            summary = json.loads(line[len(SUMMARY_PREFIX) :])
            return ProcessSummary(summary["processed"], summary["completed"], summary["failed"])
    tail = stderr.decode(errors="replace")[-500:]
    raise ProcessingFailed(f"the worker run ended without a summary (exit {process.returncode}): {tail}")


async def stop_run(process: asyncio.subprocess.Process, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop a worker run that is still going: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        # Its output read to the end meanwhile: a child blocked writing to a full pipe would never stop.
        await asyncio.wait_for(process.communicate(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.communicate()

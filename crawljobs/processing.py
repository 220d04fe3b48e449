"""Processing pending jobs on demand (the legacy ``process-crawl-jobs``): a bounded worker run.

It runs exactly ``scrapy crawl crawl_jobs -a max_jobs=N`` (with the caller's tenant) in a child process and
reads the summary line the spider prints when it closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass

from crawljobs.config import Settings
from crawljobs.exceptions import CrawlJobsError

SUMMARY_PREFIX = "CRAWLJOBS_SUMMARY "


class ProcessingFailed(CrawlJobsError):
    """The worker run did not finish."""

    code = "processing_failed"


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
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), time_limit)
    except TimeoutError:
        process.terminate()
        await process.wait()
        raise ProcessingFailed(f"the worker run did not finish within {time_limit:.0f} s") from None
    for line in stdout.decode(errors="replace").splitlines():
        if line.startswith(SUMMARY_PREFIX):
            summary = json.loads(line[len(SUMMARY_PREFIX) :])
            return ProcessSummary(summary["processed"], summary["completed"], summary["failed"])
    tail = stderr.decode(errors="replace")[-500:]
    raise ProcessingFailed(f"the worker run ended without a summary (exit {process.returncode}): {tail}")

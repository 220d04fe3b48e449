"""Browser capacity that is real: how many pages a worker renders at once, and how many jobs it claims.

Before, direct browser jobs shared one context of 4 pages while a worker claimed up to 128 jobs: claimed
render jobs waited inside a busy worker holding their leases (another worker idle meanwhile), and their
``processing_time_ms`` counted the wait (12 to 26 s recorded for renders of 0.5 to 0.8 s). Now:

- ``browser_pages``: one budget of pages per worker, all contexts together (``CRAWLJOBS_BROWSER_CONCURRENCY``,
  or from the worker's share of the machine's cores and memory), held by one semaphore
  (``crawlproject.rendering``);
- ``ClaimGauge``: the spider claims at most what can start soon. Which popped jobs are renders is known only
  once they are claimed, so the gauge keeps the share of browser starts among recent claims and bounds the
  next claim so that the browser jobs it is expected to bring fit the pages free now plus one more round of
  the budget (a job waits for at most about one render). It starts pessimistic (every job a render) and
  follows each claim by halves, so an http-only workload reaches full claims within a few claims;
- processing time is counted from the start of the fetch (the page's turn, or the download handler's), not
  from the claim.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from crawljobs.config import Settings
from crawljobs.lifecycle import ClaimedJob

GIB = 1024**3
MAX_PAGES = 64
MIN_SHARE = 0.05  # below this share of browser starts, claims are not bounded by the browser


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _memory_bytes() -> int:
    """The memory this process may use: the cgroup's limit when there is one, else the machine's."""
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            return int(text)
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 4 * GIB


def browser_pages(settings: Settings, *, cores: int | None = None, memory_bytes: int | None = None) -> int:
    """The pages one worker renders at once (module docstring)."""
    if settings.browser_concurrency is not None:
        return settings.browser_concurrency
    cores = cores or _cores()
    memory = memory_bytes or _memory_bytes()
    workers = settings.workers or cores  # `crawljobs up` starts one per core unless told
    by_cpu = settings.browser_pages_per_core * cores / workers
    by_memory = settings.browser_pages_per_gib * memory / GIB / workers
    return max(1, min(MAX_PAGES, math.floor(min(by_cpu, by_memory))))


@dataclass
class ClaimGauge:
    """How many jobs the spider may claim now, given the browser's pages (module docstring)."""

    pages: int
    share: float = 1.0  # of browser starts among the jobs claimed lately

    def want(self, room: int, browser_held: int) -> int:
        """At most ``room`` (the worker's own bound); 0 when the browser is full and renders are expected."""
        if room <= 0:
            return 0
        if self.share < MIN_SHARE:
            return room
        free = 2 * self.pages - browser_held
        if free <= 0:
            return 0
        return max(1, min(room, math.floor(free / self.share)))

    def claimed(self, jobs: int, browser_starts: int) -> None:
        if jobs > 0:
            self.share = (self.share + browser_starts / jobs) / 2


def fetch_starting(meta: dict[str, object]) -> None:
    """The fetch of a request starts now (its page's turn, or the download handler's): its attempt's
    duration and its job's processing time count from here, not from its wait for a page or a slot."""
    meta["crawljobs_started"] = time.monotonic()
    meta["crawljobs_started_at"] = datetime.now(UTC)
    job = meta.get("job")
    if isinstance(job, ClaimedJob):
        job.fetch_starting()

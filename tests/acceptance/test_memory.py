"""The worker's resident memory levels off over many jobs: one real worker, plain and rendered jobs.

The measurement is ``bench.memory``'s (see its docstring): one worker process crawls the local test site in 25
rounds, each mixing plain jobs and rendered ones (``render=True``), while a thread samples the RSS of the worker
and of every process under it (Playwright's driver, Chromium). The criterion is ``bench.memory.levelling``: the
peak of the last third of the rounds at most a small margin above the peak of the middle third, for the worker
process alone and for the whole tree.

Reduced size by default (4,000 plain + 100 rendered jobs, about a minute and a half); ``MEMORY_TEST_SIZE=full``
runs the full size (20,000 + 500, as ``python -m bench.memory``). The RSS table is printed: see it with ``-s``
or ``-rP``. (The variable has no ``CRAWLJOBS_`` prefix: tests/conftest.py strips those.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.memory import measure

pytestmark = pytest.mark.acceptance

FULL = os.environ.get("MEMORY_TEST_SIZE", "").lower() == "full"
HTTP_JOBS, BROWSER_JOBS = (20_000, 500) if FULL else (4_000, 100)


@pytest.mark.timeout(3600 if FULL else 600)
def test_worker_memory_levels_off_over_many_plain_and_rendered_jobs(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    run = measure(
        database_url,
        redis_url,
        http=HTTP_JOBS,
        browser=BROWSER_JOBS,
        rounds=25,
        interval=0.25,
        logs=tmp_path,
    )
    table = run.table()
    print(table)

    assert run.rounds[-1].jobs_done == HTTP_JOBS + BROWSER_JOBS
    # The browser was running, and measured, through every third of the run.
    worker, total = run.verdicts()
    for third in total.thirds:
        in_third = [s for s in run.samples if s.round in third.rounds]
        assert max(s.browser for s in in_third) > 0, table
        assert max(s.driver for s in in_third) > 0, table
    assert worker.levels_off, table
    assert total.levels_off, table

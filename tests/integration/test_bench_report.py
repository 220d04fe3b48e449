"""``python -m bench.report --quick --only submit`` runs the cheapest benchmark for real and writes its report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from bench.common import ROOT


@pytest.mark.timeout(300)
def test_a_quick_report_of_the_submit_benchmark(pg_admin_url: str, redis_url: str, tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CRAWLJOBS_")}
    env |= {"CRAWLJOBS_BENCH_DATABASE_URL": pg_admin_url, "CRAWLJOBS_BENCH_REDIS_URL": redis_url}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.report",
            "--quick",
            "--only",
            "submit",
            "--output",
            str(output),
            "--logs",
            str(tmp_path / "logs"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr + (tmp_path / "logs" / "submit.log").read_text()
    report = output.read_text()

    assert "> **Quick run**" in report
    assert "Command: `python -m bench.submit --sizes 1000 --repeat 1`" in report
    # The benchmark's table is in the report as printed: its header and a row for the one size.
    assert re.search(r"URLs +API server ms +API client ms +bare COPY ms +ratio", report)
    assert re.search(r"\n +1000 +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+x\n", report)
    assert "## `bench.crawl`" not in report
    # The machine: the versions of the servers the benchmark ran on.
    with psycopg.connect(pg_admin_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    assert f"| PostgreSQL | {row[0]} (CRAWLJOBS_BENCH_*_URL) |" in report
    assert re.search(r"\| Redis \| \d+\.\d+\.\d+ ", report)
    assert re.search(r"\| Scrapy \| \d+\.\d+", report)

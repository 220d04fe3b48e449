"""bench.report renders what the benchmarks printed, verbatim, beside the machine they ran on."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench.report import BENCHMARKS, Outcome, fence, render, select

CANNED = {
    "submit": (
        "   URLs  API server ms  API client ms  bare COPY ms   ratio\n"
        "  10000          169.4          212.0         121.3   1.40x\n"
        "(medians of 3 runs; ratio = API server time / bare COPY time)\n"
    ),
    "crawl": (
        "5000 pages, 1 process(es) per way, concurrency 64 per process\n"
        "way                    pages   seconds   pages/s  vs stock scrapy-redis  crawler CPU ms/page\n"
        "plain Scrapy            5000      6.10     819.7                  1.30x                 1.10\n"
        "stock scrapy-redis      5000      7.93     630.5                  1.00x                 1.40\n"
        "whole system            5000      7.85     636.9                  1.01x                 1.45\n"
        "whole system / stock scrapy-redis = 1.01 (aim >= 0.90)\n"
    ),
    "wait": (
        "       waiters  samples  median ms   p99 ms   max ms  API conns\n"
        "             1      200        2.3      4.0      5.1          2\n"
        "     1000 held      600        3.9      9.9     12.0          2\n"
        "  1000 at once     3000      160.0    301.2    310.0          2\n"
    ),
    "memory": (
        "round jobs done ...\n"
        "worker process: peak of the last third 118.0 MiB, of the middle third 117.8 MiB (+0.2 MiB, +0.2%);"
        " allowed up to 125.8 MiB: levels off\n"
        "worker + driver + Chromium: peak of the last third 1900.0 MiB, of the middle third 1661.0 MiB"
        " (+239.0 MiB, +14.4%); allowed up to 1827.1 MiB: DOES NOT level off\n"
    ),
    "chaos": (
        "1500 jobs per run (pages of 0.2 s), 2 workers of concurrency 16, lease 6 s; medians of 1 run(s)\n"
        "row                          jobs  seconds  jobs/s  kept % faults  idle restart s  held freed max s"
        " wait max s wait med s never  lost twice attempts\n"
        "no faults                    1500     25.0    60.0   100.0      0     -         -     -           -"
        "          -          -     -     0     0     1500\n"
        "SIGKILL every 4 s            1500     35.0    42.9    71.4      9     1      3.10   280        6.10"
        "       6.90       5.90     0     0     0     1780\n"
        "throughput kept with a worker SIGKILLed every 4 s: 71.4 % (42.9 vs 60.0 jobs/s; aim >= 95 %)\n"
        "a killed worker's jobs claimed again after 6.90 s at worst, 5.90 s median (280 jobs, 0 never; aim <= 2 s)\n"
        "lost 0, completed twice 0 of 3000 jobs in 2 run(s) (aim 0 and 0)\n"
    ),
    "dashboard": (
        "filled 100,000 jobs (10,000 in one batch, the rest in batches of 100) by COPY, then VACUUM ANALYZE, in 16 s\n"
        "\n"
        "SQL in-process, median of 10 (ms) — before: today's queries; after: the kept counts (0007)\n"
        "query                                               before ms  after ms  ratio\n"
        "page of 25 batches with counts                            5.1       1.0     5x\n"
        "\n"
        "Through the API process, server time (Server-Timing app), median of 10\n"
        "request                                            after ms\n"
        "GET /v1/batches?limit=25                                8.2\n"
    ),
}
FACTS = [("CPU", "AMD EPYC"), ("cores", "2 logical"), ("PostgreSQL", "16.4 (CRAWLJOBS_BENCH_*_URL)")]
WHEN = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)


def outcomes() -> list[Outcome]:
    codes = {"memory": 1}
    return [
        Outcome(b, b.command(False), CANNED[b.name], codes.get(b.name, 0), 60.0, "Traceback: boom")
        for b in BENCHMARKS
    ]


def test_every_benchmark_output_is_copied_verbatim_with_its_command_and_method() -> None:
    report = render(outcomes(), FACTS, when=WHEN, quick=False)
    assert report.startswith("# Benchmarks\n")
    assert "on 2026-05-01 12:30 UTC, in 6.0 minutes" in report  # six benchmarks of 60 s
    for benchmark in BENCHMARKS:
        assert f"```text\n{CANNED[benchmark.name].rstrip()}\n```" in report
        assert f"## `bench.{benchmark.name}`" in report
        assert f"Command: `{benchmark.command(False)}`" in report
        # The method is the module's own docstring.
        assert benchmark.docstring().splitlines()[0] in report
    assert "| CPU | AMD EPYC |" in report
    assert "| PostgreSQL | 16.4 (CRAWLJOBS_BENCH_*_URL) |" in report
    assert "Quick run" not in report


def test_the_summary_quotes_the_headline_lines_and_flags_a_failure() -> None:
    report = render(outcomes(), FACTS, when=WHEN, quick=True)
    summary = report.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "whole system / stock scrapy-redis = 1.01 (aim >= 0.90)" in summary
    assert "5000 pages, 1 process(es)" not in summary  # crawl's table and ratio, not its preamble
    assert "whole system            5000      7.85     636.9                  1.01x" in summary
    assert "round jobs done" not in summary  # only memory's verdict lines
    assert "DOES NOT level off" in summary
    assert "1000 held      600" in summary  # wait's table as printed, whatever its rows
    assert "throughput kept with a worker SIGKILLed every 4 s: 71.4 %" in summary  # chaos's table and figures
    assert "SIGKILL every 4 s            1500     35.0" in summary
    assert "1500 jobs per run" not in summary
    assert "page of 25 batches with counts                            5.1       1.0     5x" in summary
    assert "GET /v1/batches?limit=25                                8.2" in summary  # dashboard's rows
    assert "Through the API process" not in summary
    assert "**failed (exit status 1)**" in summary
    # A failed benchmark shows the end of its log; a successful one does not.
    assert report.count("Traceback: boom") == 1
    assert "> **Quick run**" in report


def test_a_fence_is_never_closed_by_the_text_it_holds() -> None:
    assert fence("a\n```\nb") == "````text\na\n```\nb\n````"


def test_select_names_a_subset_in_order_and_refuses_unknown_names() -> None:
    assert [b.name for b in select("memory,submit")] == ["memory", "submit"]
    assert [b.name for b in select(None)] == ["submit", "crawl", "wait", "memory", "chaos", "dashboard"]
    with pytest.raises(ValueError, match="nope"):
        select("submit,nope")

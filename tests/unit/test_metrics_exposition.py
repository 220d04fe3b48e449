"""The metric logic without services: histogram buckets, Scrapy stats, the exposition, JSON log lines."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from crawljobs.exposition import Snapshot, WorkerState, exposition
from crawljobs.logs import JsonFormatter, job_fields
from crawljobs.metrics import FETCH_BUCKETS, MetricsBuffer, bucket_label, counter_field, numeric_stats


def samples_of(snapshot: Snapshot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exposition(snapshot).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize(
    ("seconds", "label"), [(0.0, "0.05"), (0.05, "0.05"), (0.051, "0.1"), (60.0, "60.0"), (61.0, "+Inf")]
)
def test_a_fetch_falls_in_the_smallest_bucket_that_holds_it(seconds: float, label: str) -> None:
    assert bucket_label(seconds) == label


def test_buffer_adds_counts_and_fetch_times_per_field() -> None:
    buffer = MetricsBuffer(None, "p")
    buffer.count("attempts", "http:direct", "ok")
    buffer.count("attempts", "http:direct", "ok", n=2)
    buffer.count("jobs_finished", "error", n=0)  # nothing to add: no field
    buffer.observe_fetch("http:direct", 0.2)
    buffer.observe_fetch("http:direct", 0.3)
    assert buffer.counts == {
        "attempts|http:direct|ok": 3,
        "fetch_seconds|http:direct|0.25": 1,
        "fetch_seconds|http:direct|0.5": 1,
    }
    assert buffer.sums == {"fetch_seconds|http:direct|sum": pytest.approx(0.5)}


def test_numeric_stats_keep_numbers_only() -> None:
    stats = {
        "a/count": 3,
        "b/ratio": 0.5,
        "flag": True,
        "start_time": object(),
        "reason": "finished",
        "x": float("nan"),
    }
    assert numeric_stats(stats) == {"a/count": 3.0, "b/ratio": 0.5}


def test_exposition_of_counters_histograms_and_workers() -> None:
    counters = {
        counter_field("attempts", "http:direct", "ok"): 4,
        counter_field("attempts", "browser:premium", "blocked"): 1,
        counter_field("attempts", "too", "many", "labels"): 9,  # not ours: ignored
        counter_field("nonsense"): 7,
        counter_field("fetch_seconds", "http:direct", "0.1"): 3,
        counter_field("fetch_seconds", "http:direct", "+Inf"): 1,
        counter_field("fetch_seconds", "http:direct", "sum"): 70.25,
    }
    snapshot = Snapshot(
        live_jobs={"pending": 5, "processing": 2},
        counters=counters,
        queue_depth={"priority": 1, "bulk": 4},
        workers={"h:1:a": WorkerState(heartbeat=1000.5, in_flight=2, stats={"item_scraped_count": 3})},
        up={"postgres": True, "redis": True},
    )
    samples = samples_of(snapshot)
    assert samples[("crawljobs_attempts_total", (("method", "http:direct"), ("outcome", "ok")))] == 4
    assert samples[("crawljobs_attempts_total", (("method", "browser:premium"), ("outcome", "blocked")))] == 1
    assert not any(labels and ("method", "too") in labels for _, labels in samples)
    bucket = "crawljobs_fetch_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.05"), ("method", "http:direct")))] == 0
    assert samples[(bucket, (("le", "0.1"), ("method", "http:direct")))] == 3  # cumulative from here on
    assert samples[(bucket, (("le", repr(FETCH_BUCKETS[-1])), ("method", "http:direct")))] == 3
    assert samples[(bucket, (("le", "+Inf"), ("method", "http:direct")))] == 4
    assert samples[("crawljobs_fetch_duration_seconds_count", (("method", "http:direct"),))] == 4
    assert samples[("crawljobs_fetch_duration_seconds_sum", (("method", "http:direct"),))] == 70.25
    # Counters nobody has added to yet are shown at 0 for the label values known in advance.
    assert samples[("crawljobs_leases_reclaimed_total", (("to", "error"),))] == 0
    assert samples[("crawljobs_jobs", (("status", "pending"),))] == 5
    assert samples[("crawljobs_queue_depth", (("queue", "bulk"),))] == 4
    assert samples[("crawljobs_worker_in_flight_jobs", (("worker", "h:1:a"),))] == 2
    assert (
        samples[("crawljobs_worker_scrapy_stat", (("stat", "item_scraped_count"), ("worker", "h:1:a")))] == 3
    )


def test_a_source_that_is_down_leaves_its_metrics_out() -> None:
    samples = samples_of(Snapshot(live_jobs=None, up={"postgres": False, "redis": False}))
    assert samples[("crawljobs_metrics_source_up", (("source", "redis"),))] == 0
    assert not any(
        name.startswith(("crawljobs_jobs", "crawljobs_attempts", "crawljobs_queue")) for name, _ in samples
    )


def test_json_log_lines_carry_extra_fields_and_exceptions() -> None:
    record = logging.LogRecord("crawljobs.x", logging.WARNING, __file__, 1, "job %s failed", ("j1",), None)
    for name, value in {"action": "job_failed", "spider": object(), **job_fields("j1", "batch-1")}.items():
        setattr(record, name, value)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "job j1 failed"
    assert (line["level"], line["logger"], line["job_id"], line["batch_id"]) == (
        "WARNING",
        "crawljobs.x",
        "j1",
        "batch-1",
    )
    assert "spider" not in line
    assert line["time"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "oops", None, sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(failed))["exception"]
    assert job_fields(None) == {}
    assert job_fields("j2") == {"job_id": "j2"}

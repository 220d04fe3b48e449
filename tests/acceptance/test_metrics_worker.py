"""A real worker's metrics and logs: what it fetched shows on /metrics, and its JSON log lines name the jobs.

The worker is a real ``scrapy crawl crawl_jobs`` process (JSON logs on, publishing every second); /metrics is
served by the API app on the same PostgreSQL and Redis, as any API process would serve it, with a metrics token
(/metrics is closed without one).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from crawljobs.config import Settings
from service.app import create_app
from tests.acceptance.conftest import drop_prefix, system_settings_for
from tests.acceptance.proxies import TestProxy
from tests.acceptance.site import TestSite
from tests.acceptance.system import ROOT, System, running_system, worker_env

pytestmark = pytest.mark.acceptance

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
DEADLINE_SECONDS = 60.0
METRICS_TOKEN = "acceptance-metrics-token"


@pytest.fixture(scope="module")
def observed(
    database_url: str,
    redis_url: str,
    premium_proxy: TestProxy,
    ultra_proxy: TestProxy,
    site: TestSite,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[System]:
    """One worker with JSON logs, publishing its heartbeat and Scrapy stats every second."""
    settings = system_settings_for(database_url, redis_url, premium_proxy, ultra_proxy)
    with running_system(settings, tmp_path_factory.mktemp("metrics")) as running:
        running.start_worker(CRAWLJOBS_LOG_FORMAT="json", CRAWLJOBS_METRICS_INTERVAL_SECONDS="1")
        yield running
    drop_prefix(redis_url, settings.queue_prefix)


def metrics_client(settings: Settings) -> TestClient:
    """The API app of ``settings``, with the metrics token that ``scrape`` sends."""
    app = create_app(Settings(**{**settings.model_dump(), "metrics_token": METRICS_TOKEN}))
    return TestClient(app, raise_server_exceptions=False)


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def workers_of(samples: Samples) -> dict[str, float]:
    """Worker id -> last heartbeat."""
    return {
        dict(labels)["worker"]: v
        for (name, labels), v in samples.items()
        if name == "crawljobs_worker_last_heartbeat_timestamp_seconds"
    }


def scrape_until(
    client: TestClient, done: Callable[[Samples], bool], system: System | None = None
) -> Samples:
    """Scrape until ``done`` holds (the worker sends its counts and stats on its own schedule)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        samples = scrape(client)
        if done(samples):
            return samples
        if time.monotonic() > deadline:
            logs = system.logs_text() if system is not None else ""
            raise AssertionError(
                f"/metrics never showed what was expected:\n{sorted(samples.items())}\n{logs}"
            )
        time.sleep(0.2)


def test_metrics_show_a_real_workers_attempts_fetch_times_heartbeat_and_stats(
    observed: System, clean_site: TestSite
) -> None:
    worker = observed.processes[0]
    with metrics_client(observed.settings) as client:
        before = scrape(client)
        started = time.time()
        flaky = f"/flaky/{uuid.uuid4().hex}?fail=1"  # 429 with Retry-After: 1, then 200
        ids = observed.submit_batch(
            [
                clean_site.url("/ok/m1"),
                clean_site.url("/ok/m2"),
                clean_site.url("/notfound"),
                clean_site.url(flaky),
            ]
        )
        ids.append(observed.submit(clean_site.url("/ok/m3"), premium=True))
        jobs = observed.wait_final(ids)
        assert [j["status"] for j in jobs] == ["completed", "completed", "error", "completed", "completed"]

        def delta(samples: Samples, name: str, **labels: str) -> float:
            return value(samples, name, **labels) - value(before, name, **labels)

        expected_attempts = {
            ("impersonate:direct", "ok"): 3,
            ("impersonate:direct", "permanent"): 1,
            ("impersonate:direct", "transient"): 1,
            ("impersonate:premium", "ok"): 1,
        }

        def counted(samples: Samples) -> bool:
            return all(
                delta(samples, "crawljobs_attempts_total", method=method, outcome=outcome) >= count
                for (method, outcome), count in expected_attempts.items()
            )

        def stats_published(samples: Samples) -> bool:
            ours = [
                w
                for w, beat in workers_of(samples).items()
                if f":{worker.popen.pid}:" in w and beat >= started
            ]
            # Published once every job is written: four completed, and none left in flight.
            return bool(ours) and any(
                value(samples, "crawljobs_worker_scrapy_stat", worker=w, stat="crawljobs/completed") >= 4
                and samples.get(("crawljobs_worker_in_flight_jobs", (("worker", w),))) == 0
                for w in ours
            )

        samples = scrape_until(client, lambda s: counted(s) and stats_published(s), observed)

    for (method, outcome), count in expected_attempts.items():
        assert delta(samples, "crawljobs_attempts_total", method=method, outcome=outcome) == count
    assert delta(samples, "crawljobs_fetch_duration_seconds_count", method="impersonate:direct") == 5
    assert delta(samples, "crawljobs_fetch_duration_seconds_count", method="impersonate:premium") == 1
    assert (
        delta(samples, "crawljobs_fetch_duration_seconds_bucket", method="impersonate:direct", le="+Inf") == 5
    )
    assert delta(samples, "crawljobs_fetch_duration_seconds_sum", method="impersonate:direct") > 0
    assert delta(samples, "crawljobs_jobs_finished_total", status="completed") == 4
    assert delta(samples, "crawljobs_jobs_finished_total", status="error") == 1
    assert value(samples, "crawljobs_jobs", status="processing") == 0
    # The worker's own Scrapy stats, labelled by its id.
    (worker_id,) = [w for w in workers_of(samples) if f":{worker.popen.pid}:" in w]
    stat = dict(
        (dict(labels)["stat"], v)
        for (name, labels), v in samples.items()
        if name == "crawljobs_worker_scrapy_stat" and dict(labels)["worker"] == worker_id
    )
    assert stat["downloader/response_status_count/404"] >= 1
    assert stat["crawljobs/attempts/impersonate:premium/ok"] >= 1
    assert stat["crawljobs/failed"] >= 1
    assert samples[("crawljobs_worker_in_flight_jobs", (("worker", worker_id),))] == 0
    assert value(samples, "crawljobs_workers") >= 1


def test_json_logs_carry_the_job_and_batch_ids(observed: System, clean_site: TestSite) -> None:
    worker = observed.processes[0]
    (job_id,) = observed.submit_batch([clean_site.url("/notfound")])
    (job,) = observed.wait_final([job_id])
    assert job["status"] == "error"
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not any(line.get("job_id") == str(job_id) for line in worker.json_lines()):
        assert time.monotonic() < deadline, worker.output()[-3000:]
        time.sleep(0.1)
    lines = worker.json_lines()
    (failed,) = [line for line in lines if line.get("job_id") == str(job_id)]
    assert failed["batch_id"] == job["batch_id"]
    assert failed["level"] == "WARNING"
    assert failed["action"] == "job_failed"
    assert "404" in failed["message"]
    assert f":{worker.popen.pid}:" in failed["worker"]
    # Scrapy's own records, from the first one on, are JSON too (no per-page record at INFO).
    assert lines[0]["logger"].startswith("scrapy")
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert not any("Crawled (" in line["message"] for line in lines)


def test_a_bounded_run_publishes_its_stats_at_close(
    database_url: str,
    redis_url: str,
    premium_proxy: TestProxy,
    ultra_proxy: TestProxy,
    clean_site: TestSite,
    tmp_path: Path,
) -> None:
    settings = system_settings_for(database_url, redis_url, premium_proxy, ultra_proxy)
    try:
        system = System(settings, tmp_path)  # for its submit and wait helpers: it starts no process
        ids = system.submit_batch([clean_site.url("/ok/b1"), clean_site.url("/ok/b2")])
        # Published when the spider opens and when it closes, never in between (an hour's interval).
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "scrapy",
                "crawl",
                "crawl_jobs",
                "-a",
                "max_jobs=2",
                "-a",
                "tenant=acceptance",
            ],
            env=worker_env(settings, CRAWLJOBS_METRICS_INTERVAL_SECONDS="3600"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert [j["status"] for j in system.wait_final(ids, timeout=5)] == ["completed"] * 2
        with metrics_client(settings) as client:
            samples = scrape(client)
        (worker_id,) = workers_of(samples)
        assert (
            value(samples, "crawljobs_worker_scrapy_stat", worker=worker_id, stat="crawljobs/completed") == 2
        )
        assert samples[("crawljobs_worker_in_flight_jobs", (("worker", worker_id),))] == 0
        assert value(samples, "crawljobs_attempts_total", method="impersonate:direct", outcome="ok") == 2
    finally:
        drop_prefix(redis_url, settings.queue_prefix)

"""/metrics, /healthz and /readyz against real PostgreSQL and Redis (and a Redis that is not there).

/metrics is closed without a token: this module's settings have one, which ``scrape`` sends (the refusal of the
default is tests/hostile/test_api_limits.py's).
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from crawljobs import __version__
from crawljobs.config import Settings
from crawljobs.manager import JobManager
from crawljobs.metrics import WORKER_TTL_FACTOR, MetricKeys, publish_worker
from crawljobs.models import SubmitOptions
from crawljobs.sweeper import Sweeper
from crawljobs.testing import FakeWorker
from tests.integration.conftest import make_client, run_with_manager
from tests.integration.test_webhooks import Receiver

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

METRICS_TOKEN = "integration-metrics-token"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The integration settings, with the metrics token ``scrape`` sends."""
    return Settings(**{**settings.model_dump(), "metrics_token": METRICS_TOKEN})


def scrape(client: TestClient, **headers: str) -> Samples:
    """Every sample of a /metrics answer (with the module's token unless ``headers`` name another), parsed with
    prometheus_client's own parser."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}", **headers})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def with_(settings: Settings, **changes: Any) -> Settings:
    return Settings(**{**settings.model_dump(), **changes})


def test_health_routes_answer_without_a_key(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}


def test_readyz_names_redis_when_it_cannot_be_reached(settings: Settings) -> None:
    down = with_(settings, redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    with make_client(down) as client:
        assert client.get("/healthz").status_code == 200  # alive, but not ready
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert body["status"] == "not ready"
        assert body["checks"]["postgres"] == "ok"
        assert body["checks"]["redis"].startswith("error: ")


def test_readyz_names_postgres_when_it_cannot_be_reached(settings: Settings) -> None:
    down = with_(settings, database_url=f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres")
    with make_client(down) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["redis"] == "ok"
        assert ready.json()["checks"]["postgres"].startswith("error: ")


def test_submissions_are_counted_by_route_family_with_jobs_and_queue_depth(
    settings: Settings, auth: dict[str, str]
) -> None:
    fresh = with_(settings, metrics_cache_seconds=0)
    with make_client(fresh) as client:
        before = scrape(client)
        assert value(before, "crawljobs_metrics_source_up", source="postgres") == 1
        assert value(before, "crawljobs_metrics_source_up", source="redis") == 1
        assert value(before, "crawljobs_jobs", status="pending") == 0
        assert value(before, "crawljobs_queue_depth", queue="priority") == 0
        assert value(before, "crawljobs_submitted_urls_total", family="v1", result="accepted") == 0

        assert client.post("/v1/jobs", json={"url": "https://example.com/a"}, headers=auth).status_code == 201
        key = {"Idempotency-Key": f"k-{uuid.uuid4()}", **auth}
        assert client.post("/v1/jobs", json={"url": "https://example.com/b"}, headers=key).status_code == 201
        assert client.post("/v1/jobs", json={"url": "https://example.com/b"}, headers=key).status_code == 200
        refused = client.post("/v1/jobs", json={"url": "http://10.0.0.1/"}, headers=auth)
        assert refused.status_code == 422, refused.text
        urls = [
            "https://example.com/1",
            "https://example.com/2",
            "http://192.168.1.1/",
            "https://example.com/3",
        ]
        assert client.post("/v1/batches", json={"urls": urls}, headers=auth).status_code == 201
        nothing = client.post("/v1/batches", json={"urls": ["http://10.0.0.2/", "ftp://x/"]}, headers=auth)
        assert nothing.status_code == 422, nothing.text
        legacy_job = client.post(
            "/functions/v1/submit-crawl-job", json={"url": "https://example.com/l"}, headers=auth
        )
        assert legacy_job.status_code == 200, legacy_job.text
        legacy_batch = client.post(
            "/functions/v1/submit-crawl-jobs-batch",
            json={"urls": ["https://example.com/l1", "http://127.0.0.1/"]},
            headers=auth,
        )
        assert legacy_batch.status_code == 200, legacy_batch.text

        after = scrape(client)
    calls = {
        ("v1", "job", "created"): 2,
        ("v1", "job", "replayed"): 1,
        ("v1", "job", "rejected"): 1,
        ("v1", "batch", "created"): 1,
        ("v1", "batch", "rejected"): 1,
        ("legacy", "job", "created"): 1,
        ("legacy", "batch", "created"): 1,
    }
    for (family, kind, result), count in calls.items():
        got = value(after, "crawljobs_submissions_total", family=family, kind=kind, result=result)
        assert got == count, (family, kind, result, got)
    assert value(after, "crawljobs_submitted_urls_total", family="v1", result="accepted") == 2 + 3
    assert value(after, "crawljobs_submitted_urls_total", family="v1", result="refused") == 1 + 1 + 2
    assert value(after, "crawljobs_submitted_urls_total", family="legacy", result="accepted") == 2
    assert value(after, "crawljobs_submitted_urls_total", family="legacy", result="refused") == 1
    # Every accepted job is pending; single jobs wait on the priority list, batch jobs on the bulk list.
    assert value(after, "crawljobs_jobs", status="pending") == 7
    assert value(after, "crawljobs_jobs", status="processing") == 0
    assert value(after, "crawljobs_queue_depth", queue="priority") == 3
    assert value(after, "crawljobs_queue_depth", queue="bulk") == 4


def test_job_counts_are_cached_between_scrapes(settings: Settings, auth: dict[str, str]) -> None:
    cached = with_(settings, metrics_cache_seconds=3600)
    with make_client(cached) as client:
        first = value(scrape(client), "crawljobs_jobs", status="pending")
        assert first is not None
        assert client.post("/v1/jobs", json={"url": "https://example.com/c"}, headers=auth).status_code == 201
        again = scrape(client)
        # The database was not asked again: the count is the cached one; the Redis side is read every time.
        assert value(again, "crawljobs_jobs", status="pending") == first
        assert value(again, "crawljobs_queue_depth", queue="priority") == 1


def test_counters_are_shared_between_api_processes(settings: Settings, auth: dict[str, str]) -> None:
    with make_client(settings) as first:
        assert first.post("/v1/jobs", json={"url": "https://example.com/s"}, headers=auth).status_code == 201
        cancelled = first.post("/v1/batches", json={"urls": ["https://example.com/x"] * 3}, headers=auth)
        batch_id = cancelled.json()["batch_id"]
        assert first.post(f"/v1/batches/{batch_id}/cancel", headers=auth).json()["cancelled"] == 3
    # The first process stopped (its counts flushed on the way out); another one reads them from Redis.
    with make_client(settings) as second:
        samples = scrape(second)
    assert value(samples, "crawljobs_submissions_total", family="v1", kind="job", result="created") == 1
    assert value(samples, "crawljobs_submitted_urls_total", family="v1", result="accepted") == 4
    assert value(samples, "crawljobs_jobs_finished_total", status="cancelled") == 3


def test_metrics_token_is_required_once_set(settings: Settings) -> None:
    token = "s3cret-metrics-token"
    with make_client(with_(settings, metrics_token=token)) as client:
        missing = client.get("/metrics")
        assert missing.status_code == 401
        assert missing.json()["code"] == "unauthorized"
        assert missing.headers["www-authenticate"] == "Bearer"
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        samples = scrape(client, Authorization=f"Bearer {token}")
        assert value(samples, "crawljobs_info", version=__version__) == 1
        assert client.get("/healthz").status_code == 200  # health stays open


def test_metrics_answer_without_redis_and_say_so(settings: Settings, auth: dict[str, str]) -> None:
    down = with_(settings, redis_url=f"redis://127.0.0.1:{closed_port()}/0", metrics_cache_seconds=0)
    with make_client(down) as client:
        accepted = client.post("/v1/jobs", json={"url": "https://example.com/r"}, headers=auth)
        assert accepted.status_code == 201, accepted.text  # committed; the sweeper dispatches it later
        samples = scrape(client)
    assert value(samples, "crawljobs_metrics_source_up", source="redis") == 0
    assert value(samples, "crawljobs_metrics_source_up", source="postgres") == 1
    assert value(samples, "crawljobs_jobs", status="pending") is not None
    assert not any(name.startswith("crawljobs_queue_depth") for name, _ in samples)


def test_worker_heartbeats_and_stats_are_shown_until_they_expire(
    settings: Settings, redis_client: redis.Redis
) -> None:
    keys = MetricKeys.for_prefix(settings.queue_prefix)

    async def publish(manager: JobManager) -> None:
        assert manager.redis is not None
        for worker, in_flight in (("host-a:1:aaaaaa", 3), ("host-b:2:bbbbbb", 0)):
            await publish_worker(
                manager.redis,
                keys,
                worker,
                in_flight=in_flight,
                stats={"downloader/response_count": 12.0, "crawljobs/completed": 10.0},
                interval=5,
                now=1_700_000_000.5,
            )

    run_with_manager(settings, publish)
    assert 0 < redis_client.ttl(keys.worker("host-a:1:aaaaaa")) <= 5 * WORKER_TTL_FACTOR
    with make_client(settings) as client:
        samples = scrape(client)
        assert value(samples, "crawljobs_workers") == 2
        assert value(samples, "crawljobs_worker_in_flight_jobs", worker="host-a:1:aaaaaa") == 3
        assert (
            value(samples, "crawljobs_worker_last_heartbeat_timestamp_seconds", worker="host-b:2:bbbbbb")
            == 1_700_000_000.5
        )
        stat = value(
            samples,
            "crawljobs_worker_scrapy_stat",
            worker="host-a:1:aaaaaa",
            stat="downloader/response_count",
        )
        assert stat == 12
        # A worker whose keys expired is no longer shown, and is forgotten.
        redis_client.delete(keys.worker("host-a:1:aaaaaa"), keys.worker_stats("host-a:1:aaaaaa"))
        samples = scrape(client)
    assert value(samples, "crawljobs_workers") == 1
    assert value(samples, "crawljobs_worker_in_flight_jobs", worker="host-a:1:aaaaaa") is None
    assert redis_client.smembers(keys.workers) == {b"host-b:2:bbbbbb"}


def test_sweeper_counts_reclaimed_leases_and_webhook_deliveries(settings: Settings) -> None:
    loopback = with_(settings, allowed_networks=["127.0.0.1/32"])
    receiver = Receiver("127.0.0.1", failures=1).start()
    try:

        async def body(manager: JobManager) -> None:
            lost = await manager.submit_batch(
                tenant="sweep", urls=["https://example.com/l1"] * 2, options=SubmitOptions(max_retries=0)
            )
            hooked = await manager.submit_job(
                tenant="sweep", url="https://example.com/h", options=SubmitOptions(callback_url=receiver.url)
            )
            lost_ids = [i for i in lost.job_ids if i is not None]
            # Two workers died holding jobs: one that may lose its worker again (back to pending), one that
            # has lost it as often as it may (error).
            async with manager.pool.connection() as conn:
                await conn.execute(
                    "UPDATE crawl_jobs SET lost_leases = %s WHERE id = %s",
                    (settings.max_lost_leases, lost_ids[1]),
                )
            await FakeWorker(manager.pool, worker="dead").die(lost_ids)
            await FakeWorker(manager.pool).complete([hooked.job.id])
            sweeper = Sweeper(manager)
            await sweeper.sweep_once()  # reclaims both; the receiver answers its first delivery with 500
            async with manager.pool.connection() as conn:
                await conn.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
            await sweeper.sweep_once()  # delivered
            assert await manager.meter.flush()

        run_with_manager(loopback, body)
    finally:
        receiver.stop()
    with make_client(loopback) as client:
        samples = scrape(client)
    assert value(samples, "crawljobs_leases_reclaimed_total", to="pending") == 1
    assert value(samples, "crawljobs_leases_reclaimed_total", to="error") == 1
    assert value(samples, "crawljobs_jobs_finished_total", status="error") == 1
    assert value(samples, "crawljobs_webhook_deliveries_total", outcome="failed") == 1
    assert value(samples, "crawljobs_webhook_deliveries_total", outcome="delivered") == 1
    assert value(samples, "crawljobs_webhook_deliveries_total", outcome="gave_up") == 0


def test_openapi_documents_metrics(client: TestClient) -> None:
    paths: dict[str, Any] = client.get("/openapi.json").json()["paths"]
    assert CONTENT_TYPE_LATEST in paths["/metrics"]["get"]["responses"]["200"]["content"]

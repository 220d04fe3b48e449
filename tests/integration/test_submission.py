"""Submission rules: limits, network refusals, idempotency, Redis down, nothing left behind on refusal."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from crawljobs.config import Settings
from crawljobs.queue import QueueKeys
from crawljobs.testing import queue_depth
from tests.integration.conftest import make_client


def row_counts(database_url: str) -> tuple[int, int]:
    with psycopg.connect(database_url) as conn:
        jobs = conn.execute("SELECT count(*) FROM crawl_jobs").fetchone()
        batches = conn.execute("SELECT count(*) FROM crawl_batches").fetchone()
    assert jobs is not None and batches is not None
    return jobs[0], batches[0]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8080/",
        "http://10.0.0.8/",
        "http://192.168.1.1/router",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://internal.example.com/",
        "http://loopback.example.com/",
        "http://mixed.example.com/",
    ],
)
def test_private_targets_refused_at_submit(
    client: TestClient, auth: dict[str, str], database_url: str, url: str
) -> None:
    before = row_counts(database_url)
    response = client.post("/v1/jobs", json={"url": url}, headers=auth)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "url_rejected"
    assert row_counts(database_url) == before


def test_allowed_network_lets_loopback_in(settings: Settings, auth: dict[str, str]) -> None:
    allowed = Settings(**{**settings.model_dump(), "allowed_networks": ["127.0.0.1/32"]})
    with make_client(allowed) as client:
        assert client.post("/v1/jobs", json={"url": "http://127.0.0.1:9/"}, headers=auth).status_code == 201
        # Outside the allowed network: still refused (127.0.0.2 is the forbidden loopback of the tests).
        refused = client.post("/v1/jobs", json={"url": "http://127.0.0.2:9/"}, headers=auth)
        assert refused.status_code == 422


def test_batch_with_no_good_url_is_422_and_writes_nothing(
    client: TestClient, auth: dict[str, str], database_url: str
) -> None:
    before = row_counts(database_url)
    response = client.post(
        "/functions/v1/submit-crawl-jobs-batch",
        json={"urls": ["ftp://x", "http://10.0.0.1/", None], "batchId": "all-bad"},
        headers=auth,
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "no_valid_urls"
    assert [f["index"] for f in body["details"]["failures"]] == [0, 1, 2]
    assert row_counts(database_url) == before
    # The id was not taken by the refused request.
    ok = client.post(
        "/functions/v1/submit-crawl-jobs-batch",
        json={"urls": ["https://example.com/"], "batchId": "all-bad"},
        headers=auth,
    )
    assert ok.status_code == 200


def test_batch_size_limit_is_413(settings: Settings, auth: dict[str, str], database_url: str) -> None:
    small = Settings(**{**settings.model_dump(), "max_batch_size": 5})
    before = row_counts(database_url)
    with make_client(small) as client:
        response = client.post(
            "/v1/batches", json={"urls": [f"https://example.com/{i}" for i in range(6)]}, headers=auth
        )
        assert response.status_code == 413
        assert response.json()["code"] == "batch_too_large"
        assert "at most 5" in response.json()["error"]
        assert (
            client.post("/v1/batches", json={"urls": ["https://example.com/"] * 5}, headers=auth).status_code
            == 201
        )
    assert row_counts(database_url)[0] == before[0] + 5


def test_body_limit_counts_streamed_bytes(settings: Settings, auth: dict[str, str]) -> None:
    tight = Settings(**{**settings.model_dump(), "max_request_bytes": 2048})
    with make_client(tight) as client:
        big = {"urls": ["https://example.com/" + "a" * 100] * 30}
        declared = client.post("/v1/batches", json=big, headers=auth)
        assert declared.status_code == 413
        assert declared.json()["code"] == "request_too_large"

        def chunks():  # no Content-Length: chunked transfer
            for _ in range(10):
                yield b" " * 500

        streamed = client.post(
            "/v1/batches", content=chunks(), headers={**auth, "content-type": "application/json"}
        )
        assert streamed.status_code == 413


def test_url_too_long_is_refused(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post("/v1/jobs", json={"url": "https://example.com/" + "a" * 8200}, headers=auth)
    assert response.status_code == 422
    assert response.json()["code"] == "url_rejected"


def test_existing_batch_id_is_409_unless_same_idempotency_key(
    client: TestClient, auth: dict[str, str], database_url: str
) -> None:
    payload = {"urls": ["https://example.com/i1", "bad", "https://example.com/i2"], "batchId": "idem-1"}
    first = client.post(
        "/functions/v1/submit-crawl-jobs-batch", json=payload, headers={**auth, "Idempotency-Key": "k-1"}
    )
    assert first.status_code == 200
    before = row_counts(database_url)

    replay = client.post(
        "/functions/v1/submit-crawl-jobs-batch", json=payload, headers={**auth, "Idempotency-Key": "k-1"}
    )
    assert replay.status_code == 200
    assert replay.json() == first.json()

    conflict = client.post("/functions/v1/submit-crawl-jobs-batch", json=payload, headers=auth)
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "batch_exists"

    other_key = client.post(
        "/functions/v1/submit-crawl-jobs-batch", json=payload, headers={**auth, "Idempotency-Key": "k-2"}
    )
    assert other_key.status_code == 409

    changed = client.post(
        "/functions/v1/submit-crawl-jobs-batch",
        json={**payload, "urls": ["https://example.com/other"]},
        headers={**auth, "Idempotency-Key": "k-1"},
    )
    assert changed.status_code == 409
    assert changed.json()["code"] == "idempotency_conflict"
    assert row_counts(database_url) == before


def test_v1_batch_replay_returns_the_same_job_ids(client: TestClient, auth: dict[str, str]) -> None:
    payload = {"urls": ["https://example.com/r1", "nope", "https://example.com/r2"]}
    headers = {**auth, "Idempotency-Key": "v1-replay"}
    first = client.post("/v1/batches", json=payload, headers=headers)
    second = client.post("/v1/batches", json=payload, headers=headers)
    assert first.status_code == 201 and second.status_code == 200
    assert second.json()["job_ids"] == first.json()["job_ids"]
    assert second.json()["batch_id"] == first.json()["batch_id"]


def test_a_replay_reads_a_batch_stored_under_the_old_legacy_name(
    client: TestClient, auth: dict[str, str], database_url: str
) -> None:
    """Batches stored before the core named it ``batch_id`` kept ``batchId``: they still replay."""
    payload = {"urls": ["https://example.com/o1", "nope"]}
    headers = {**auth, "Idempotency-Key": "stored-before"}
    first = client.post("/v1/batches", json=payload, headers=headers).json()
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT response FROM crawl_batches WHERE batch_id = %s", (first["batch_id"],)
        ).fetchone()
        assert (
            stored is not None and stored[0]["batch_id"] == first["batch_id"] and "batchId" not in stored[0]
        )
        conn.execute(
            """UPDATE crawl_batches SET response = response - 'batch_id' || jsonb_build_object('batchId', batch_id)
               WHERE batch_id = %s""",
            (first["batch_id"],),
        )
    second = client.post("/v1/batches", json=payload, headers=headers)
    assert second.status_code == 200
    assert second.json() == {**first, "dispatched": True}


def test_single_job_idempotency(client: TestClient, auth: dict[str, str], database_url: str) -> None:
    headers = {**auth, "Idempotency-Key": "single-1"}
    first = client.post("/v1/jobs", json={"url": "https://example.com/s"}, headers=headers)
    second = client.post("/v1/jobs", json={"url": "https://example.com/s"}, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]


def test_submission_with_redis_stopped(
    settings: Settings, auth: dict[str, str], database_url: str, redis_server_factory
) -> None:
    server = redis_server_factory()
    with_redis = Settings(**{**settings.model_dump(), "redis_url": server.url})
    with make_client(with_redis) as client:
        dispatched = client.post("/v1/jobs", json={"url": "https://example.com/up"}, headers=auth).json()
        assert dispatched["dispatched"] is True
        server.stop()
        single = client.post("/v1/jobs", json={"url": "https://example.com/down"}, headers=auth)
        batch = client.post(
            "/functions/v1/submit-crawl-jobs-batch",
            json={"urls": ["https://example.com/d1", "https://example.com/d2"], "batchId": "redis-down"},
            headers=auth,
        )
        assert single.status_code == 201
        assert single.json()["dispatched"] is False
        assert batch.status_code == 200 and batch.json()["successCount"] == 2
        assert client.get("/readyz").status_code == 503
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT status, dispatched_at FROM crawl_jobs WHERE id = %s OR batch_id = 'redis-down'",
            (single.json()["id"],),
        ).fetchall()
    assert len(rows) == 3
    assert all(status == "pending" and dispatched_at is None for status, dispatched_at in rows)


def test_batch_of_many_urls_in_one_transaction(
    settings: Settings, auth: dict[str, str], database_url: str, redis_client
) -> None:
    allowed = Settings(**{**settings.model_dump(), "allowed_networks": ["127.0.0.1/32"]})
    urls = [f"http://127.0.0.1:9/p/{i}" for i in range(5000)]
    with make_client(allowed) as client:
        body = client.post("/v1/batches", json={"urls": urls, "batch_id": "big"}, headers=auth).json()
    assert body["accepted"] == 5000
    with psycopg.connect(database_url) as conn:
        count = conn.execute(
            "SELECT count(DISTINCT xmin::text) FROM crawl_jobs WHERE batch_id='big'"
        ).fetchone()
    assert count == (1,)  # one transaction wrote them all
    assert queue_depth(redis_client, QueueKeys.for_prefix(allowed.queue_prefix)) == 5000


def test_single_job_idempotency_key_with_another_body_is_409(
    client: TestClient, auth: dict[str, str]
) -> None:
    headers = {**auth, "Idempotency-Key": "single-conflict"}
    assert client.post("/v1/jobs", json={"url": "https://example.com/a"}, headers=headers).status_code == 201
    other = client.post("/v1/jobs", json={"url": "https://example.com/b"}, headers=headers)
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_conflict"
    flags = client.post("/v1/jobs", json={"url": "https://example.com/a", "render": True}, headers=headers)
    assert flags.status_code == 409
    same = client.post("/v1/jobs", json={"url": "HTTPS://EXAMPLE.com/a"}, headers=headers)
    assert same.status_code == 200  # the same request, spelled differently

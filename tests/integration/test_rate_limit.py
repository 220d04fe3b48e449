"""The per-key request rate limit (CRAWLJOBS_RATE_LIMIT_PER_SECOND): a token bucket in Redis per API key, shared
by the API processes, answered with 429, a JSON error and Retry-After; checked after the key and before a byte of
the body (DESIGN rule 9), on /v1 and the legacy routes alike."""

from __future__ import annotations

import secrets

import psycopg
from fastapi.testclient import TestClient
from httpx import Response

from crawljobs.config import Settings
from crawljobs.keys import create_key
from tests.integration.conftest import make_client

BURST = 3


def limited(settings: Settings) -> Settings:
    # A refill so slow that no token comes back during the test.
    return Settings(**{**settings.model_dump(), "rate_limit_per_second": 0.01, "rate_limit_burst": BURST})


def headers(database_url: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(database_url, name=f'rl-{secrets.token_hex(4)}')}"}


def assert_limited(response: Response) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["success"] is False and body["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1


def test_a_key_past_its_burst_gets_429_with_retry_after_on_v1_and_legacy_routes(
    settings: Settings, database_url: str
) -> None:
    auth = headers(database_url)
    with make_client(limited(settings)) as client:
        statuses = [client.get("/v1/batches", headers=auth).status_code for _ in range(BURST)]
        assert statuses == [200] * BURST
        assert_limited(client.get("/v1/batches", headers=auth))
        # One bucket per key, whichever route or API generation spends it.
        assert_limited(client.get("/functions/v1/get-crawl-job", params={"jobId": "x"}, headers=auth))
        # Another key has its own bucket; a request without a valid key is a 401 and spends nothing.
        assert client.get("/v1/batches", headers=headers(database_url)).status_code == 200
        assert client.get("/v1/batches", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_the_limit_comes_before_the_body_is_read_and_changes_nothing(
    settings: Settings, database_url: str
) -> None:
    auth = headers(database_url)
    too_large = b"x" * (settings.max_request_bytes + 1)
    with make_client(limited(settings)) as client:
        for _ in range(BURST):
            client.get("/v1/batches", headers=auth)
        # Past the limit the body is never read: a 429, not the 413 its size would earn.
        response = client.post(
            "/v1/batches", content=too_large, headers={**auth, "Content-Type": "application/json"}
        )
        assert_limited(response)
        assert response.headers.get("connection") == "close"
        legacy = client.post(
            "/functions/v1/submit-crawl-jobs-batch",
            json={"urls": ["https://example.com/rl"], "batchId": "rate-limited"},
            headers=auth,
        )
        assert_limited(legacy)
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM crawl_batches WHERE batch_id = 'rate-limited'").fetchone()
    assert row == (0,)


def test_api_processes_share_one_bucket_per_key(settings: Settings, database_url: str) -> None:
    auth = headers(database_url)
    first, second = make_client(limited(settings)), make_client(limited(settings))
    with first, second:
        spent = [
            (first if n % 2 else second).get("/v1/batches", headers=auth).status_code for n in range(BURST)
        ]
        assert spent == [200] * BURST
        assert_limited(first.get("/v1/batches", headers=auth))
        assert_limited(second.get("/v1/batches", headers=auth))


def test_off_by_default(settings: Settings, database_url: str) -> None:
    auth = headers(database_url)
    client: TestClient
    with make_client(settings) as client:
        assert {client.get("/v1/batches", headers=auth).status_code for _ in range(3 * BURST)} == {200}

"""The REST API under /v1."""

from __future__ import annotations

import uuid

import psycopg
from fastapi.testclient import TestClient

from crawljobs import testing as fakeworker
from crawljobs.config import Settings
from crawljobs.queue import QueueKeys
from crawljobs.testing import queued_ids


def test_submit_and_get_job(
    client: TestClient, auth: dict[str, str], redis_client, settings: Settings
) -> None:
    response = client.post(
        "/v1/jobs",
        json={"url": "HTTPS://WWW.Example.com:443/a b#frag", "render": True, "max_retries": 5},
        headers=auth,
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["url"] == "https://www.example.com/a%20b"
    assert job["status"] == "pending"
    assert job["render"] is True and job["premium"] is False and job["ultra_premium"] is False
    assert job["attempt"] == 0 and job["max_retries"] == 5 and job["max_attempts"] == 6
    assert job["dispatched"] is True
    assert job["attempts"] == []
    assert job["batch_id"] is None
    # Single jobs go to the priority list, ahead of any batch.
    assert redis_client.lrange(f"{settings.queue_prefix}:queue:priority", 0, -1) == [job["id"].encode()]

    fetched = client.get(f"/v1/jobs/{job['id']}", headers=auth)
    assert fetched.status_code == 200
    assert fetched.json()["id"] == job["id"]
    assert "html" not in fetched.json()
    with_html = client.get(f"/v1/jobs/{job['id']}", params={"include_html": True}, headers=auth).json()
    assert with_html["html"] is None

    no_html = client.get(f"/v1/jobs/{job['id']}/html", headers=auth)
    assert no_html.status_code == 404


def test_job_html_and_attempts(client: TestClient, auth: dict[str, str], database_url: str) -> None:
    job = client.post("/v1/jobs", json={"url": "https://example.com/h"}, headers=auth).json()
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO crawl_attempts (job_id, attempt, method, outcome, http_status, duration_ms)"
            " VALUES (%s, 1, 'http:direct', 'blocked', 403, 12)",
            (job["id"],),
        )
    # The browser's attempt succeeds (the fake worker records it with the method that worked).
    fakeworker.complete(
        database_url, [job["id"]], html="<p>hi</p>", content_type="text/html", success_method="browser:direct"
    )
    body = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert [a["outcome"] for a in body["attempts"]] == ["blocked", "ok"]
    assert body["attempts"][0]["http_status"] == 403
    html = client.get(f"/v1/jobs/{job['id']}/html", headers=auth)
    assert html.status_code == 200
    assert html.text == "<p>hi</p>"
    assert html.headers["content-type"].startswith("text/html")


def test_submit_batch_and_follow_it(
    client: TestClient, auth: dict[str, str], redis_client, settings: Settings
) -> None:
    urls = [
        "https://example.com/b0",
        "javascript:alert(1)",
        "https://example.com/b2",
        "https://example.com/b3",
    ]
    response = client.post(
        "/v1/batches", json={"urls": urls, "premium": True, "batch_id": "v1-batch"}, headers=auth
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["batch_id"] == "v1-batch"
    assert (body["total"], body["accepted"], body["rejected"]) == (4, 3, 1)
    assert body["failures"][0]["index"] == 1
    assert body["job_ids"][1] is None
    assert all(uuid.UUID(i) for i in body["job_ids"] if i is not None)
    assert body["dispatched"] is True
    queued = [str(i) for i in queued_ids(redis_client, QueueKeys.for_prefix(settings.queue_prefix))]
    assert queued == [i for i in body["job_ids"] if i]

    batch = client.get("/v1/batches/v1-batch", headers=auth).json()
    assert batch["counts"] == {
        "pending": 3,
        "processing": 0,
        "completed": 0,
        "error": 0,
        "cancelled": 0,
        "total": 3,
    }
    assert batch["progress"] == 0
    assert batch["premium"] is True
    assert [j["url"] for j in batch["jobs"]] == [
        "https://example.com/b0",
        "https://example.com/b2",
        "https://example.com/b3",
    ]

    page = client.get("/v1/batches/v1-batch", params={"limit": 1, "offset": 1}, headers=auth).json()
    assert [j["url"] for j in page["jobs"]] == ["https://example.com/b2"]
    assert (page["limit"], page["offset"]) == (1, 1)

    done = client.get("/v1/batches/v1-batch", params={"status": "completed"}, headers=auth).json()
    assert done["jobs"] == []

    listing = client.get("/v1/batches", headers=auth).json()
    assert "v1-batch" in [b["batch_id"] for b in listing["batches"]]
    assert listing["limit"] == 25


def test_v1_retry_failed(client: TestClient, auth: dict[str, str], database_url: str) -> None:
    body = client.post(
        "/v1/batches", json={"urls": ["https://example.com/f"], "batch_id": "v1-retry"}, headers=auth
    ).json()
    fakeworker.fail(database_url, [body["job_ids"][0]], attempt=4)
    result = client.post("/v1/batches/v1-retry/retry-failed", headers=auth)
    assert result.json() == {"batch_id": "v1-retry", "retried": 1}
    job = client.get(f"/v1/jobs/{body['job_ids'][0]}", headers=auth).json()
    assert job["status"] == "pending"
    assert job["attempt"] == 4 and job["max_attempts"] == 8


def test_v1_errors_are_json_with_codes(client: TestClient, auth: dict[str, str]) -> None:
    cases = [
        (client.get("/v1/jobs/" + str(uuid.uuid4()), headers=auth), 404, "job_not_found"),
        (client.get("/v1/batches/unknown-batch", headers=auth), 404, "batch_not_found"),
        (client.post("/v1/batches/unknown-batch/retry-failed", headers=auth), 404, "batch_not_found"),
        (client.post("/v1/jobs", json={"url": 5}, headers=auth), 422, "validation_error"),
        (client.post("/v1/jobs", json={}, headers=auth), 422, "validation_error"),
        (
            client.post("/v1/jobs", json={"url": "https://example.com", "extra": 1}, headers=auth),
            422,
            "validation_error",
        ),
        (
            client.post("/v1/jobs", json={"url": "https://example.com", "max_retries": -1}, headers=auth),
            422,
            "validation_error",
        ),
        (client.post("/v1/jobs", json={"url": "gopher://example.com"}, headers=auth), 422, "url_rejected"),
        (
            client.post(
                "/v1/jobs", content=b"{not json", headers={**auth, "content-type": "application/json"}
            ),
            422,
            "validation_error",
        ),
        (client.post("/v1/batches", json={"urls": []}, headers=auth), 422, "validation_error"),
        (
            client.post("/v1/batches", json={"urls": "https://example.com"}, headers=auth),
            422,
            "validation_error",
        ),
        (
            client.post(
                "/v1/batches", json={"urls": ["https://example.com"], "batch_id": "bad id!"}, headers=auth
            ),
            422,
            "validation_error",
        ),
        (
            client.post(
                "/v1/batches", json={"urls": ["https://example.com"], "batch_id": "x" * 129}, headers=auth
            ),
            422,
            "validation_error",
        ),
        (client.get("/v1/batches", params={"limit": 0}, headers=auth), 422, "validation_error"),
        (client.get("/v1/batches", params={"limit": "many"}, headers=auth), 422, "validation_error"),
        (client.get("/v1/nothing-here", headers=auth), 404, "not_found"),
        (client.delete("/v1/jobs", headers=auth), 405, "method_not_allowed"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (response.request.url, response.text)
        body = response.json()
        assert body["success"] is False
        assert body["code"] == code, body
        assert body["error"]


def test_validation_error_names_the_field(client: TestClient, auth: dict[str, str]) -> None:
    body = client.post(
        "/v1/jobs", json={"url": "https://example.com", "premium": "true"}, headers=auth
    ).json()
    assert body["details"][0]["field"] == "premium"
    assert "premium" in body["error"]


def test_openapi_docs_are_open_and_have_examples(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/functions/v1/submit-crawl-jobs-batch" in schema["paths"]
    assert "/v1/batches" in schema["paths"]
    assert schema["components"]["schemas"]["BatchCreate"]["examples"]
    assert schema["components"]["schemas"]["LegacySubmitJob"]["examples"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_health_and_ready_are_open(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}
    assert "server-timing" in ready.headers


def test_a_refused_address_names_the_setting_that_allows_it(client: TestClient, auth: dict[str, str]) -> None:
    """The first URL a new user tries is often their own machine's: the refusal says how to allow it."""
    single = client.post("/v1/jobs", json={"url": "http://127.0.0.1:9/"}, headers=auth)
    assert single.status_code == 422
    assert "address 127.0.0.1 is loopback" in single.json()["error"]
    assert "CRAWLJOBS_ALLOWED_NETWORKS" in single.json()["error"]
    batch = client.post(
        "/v1/batches", json={"urls": ["http://10.0.0.1/", "https://example.com/"]}, headers=auth
    )
    assert batch.status_code in (200, 201), batch.text
    (failure,) = batch.json()["failures"]
    assert "CRAWLJOBS_ALLOWED_NETWORKS" in failure["reason"]

"""Tenant isolation on every route, checked against the app's own list of routes.

Tenant A owns a job, a batch (one job failed, one completed with HTML), a webhook delivery, a secret and an
Idempotency-Key. Tenant B then calls every route that names a job, a batch or a delivery with A's ids: each
answers exactly as for an id that does not exist (404 and the same code), lists show B nothing of A's, ids
and keys A uses stay free for B, and afterwards A's rows and the dispatch lists are as they were.

`test_every_route_is_classified` walks the OpenAPI paths: a route whose path, query or body names a job, a
batch or a delivery must have an isolation case here; every other route must be listed with the reason it
names nothing. A new route fails that test until someone decides which it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from crawljobs import testing as fakeworker
from crawljobs.config import Settings
from service.app import create_app

A_TENANT = "tenant-a"  # the tenant of the `api_key` fixture (tests/conftest.py)
A_BATCH = "iso-batch"
A_KEY = "iso-shared-idempotency-key"
MISSING_BATCH = "iso-missing"
MISSING_JOB = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Owned:
    job: str  # a single job, pending
    failed: str  # a batch job in error (what retry-failed would touch)
    completed: str  # a batch job completed, with HTML


@pytest.fixture(scope="module")
def owned(client: TestClient, api_key: str, database_url: str) -> Owned:
    auth = {"Authorization": f"Bearer {api_key}"}
    job = client.post(
        "/v1/jobs", json={"url": "https://example.com/iso"}, headers={**auth, "Idempotency-Key": A_KEY}
    )
    assert job.status_code == 201, job.text
    batch = client.post(
        "/v1/batches",
        json={"urls": ["https://example.com/f", "https://example.com/c"], "batch_id": A_BATCH},
        headers=auth,
    )
    assert batch.status_code == 201, batch.text
    failed, completed = batch.json()["job_ids"]
    fakeworker.fail(database_url, [failed], error="blocked")
    fakeworker.complete(database_url, [completed], html="<p>secret of A</p>", content_type="text/html")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO webhook_deliveries (tenant, event, job_id, batch_id, url, payload)"
            " VALUES (%s, 'job.failed', %s, %s, 'https://example.com/hook', '{}')",
            (A_TENANT, failed, A_BATCH),
        )
    assert client.get("/v1/webhooks/secret", headers=auth).status_code == 200
    return Owned(job=job.json()["id"], failed=failed, completed=completed)


def a_state(database_url: str) -> list[Any]:
    """Everything of tenant A's, row by row."""
    with psycopg.connect(database_url) as conn:
        return [
            conn.execute(f"SELECT * FROM {table} WHERE tenant = %s ORDER BY 1, 2", (A_TENANT,)).fetchall()
            for table in ("crawl_jobs", "crawl_batches", "webhook_deliveries", "tenant_secrets")
        ]


# -- the 404 cases: tenant B with A's ids answers as with ids that do not exist ------------------------------

# (method, OpenAPI path) -> the request for a job id and a batch id: (method, url, keyword arguments).
Request = tuple[str, str, dict[str, Any]]
NOT_FOUND: dict[tuple[str, str], Callable[[str, str], list[Request]]] = {
    ("GET", "/v1/jobs/{job_id}"): lambda j, b: [
        ("GET", f"/v1/jobs/{j}", {}),
        ("GET", f"/v1/jobs/{j}", {"params": {"include_html": "true"}}),
    ],
    ("GET", "/v1/jobs/{job_id}/html"): lambda j, b: [("GET", f"/v1/jobs/{j}/html", {})],
    ("POST", "/v1/jobs/{job_id}/cancel"): lambda j, b: [("POST", f"/v1/jobs/{j}/cancel", {})],
    ("GET", "/v1/jobs/{job_id}/wait"): lambda j, b: [
        ("GET", f"/v1/jobs/{j}/wait", {"params": {"timeout": 0}})
    ],
    ("GET", "/v1/batches/{batch_id}"): lambda j, b: [("GET", f"/v1/batches/{b}", {})],
    ("POST", "/v1/batches/{batch_id}/retry-failed"): lambda j, b: [
        ("POST", f"/v1/batches/{b}/retry-failed", {})
    ],
    ("POST", "/v1/batches/{batch_id}/cancel"): lambda j, b: [("POST", f"/v1/batches/{b}/cancel", {})],
    ("GET", "/v1/batches/{batch_id}/export"): lambda j, b: [
        ("GET", f"/v1/batches/{b}/export", {"params": {"format": f}}) for f in ("ndjson", "csv", "json")
    ],
    ("GET", "/v1/batches/{batch_id}/wait"): lambda j, b: [
        ("GET", f"/v1/batches/{b}/wait", {"params": {"timeout": 0}})
    ],
    ("GET", "/v1/batches/{batch_id}/events"): lambda j, b: [("GET", f"/v1/batches/{b}/events", {})],
    ("GET", "/functions/v1/get-crawl-job"): lambda j, b: [
        ("GET", "/functions/v1/get-crawl-job", {"params": {"jobId": j}})
    ],
    ("GET", "/functions/v1/get-crawl-jobs-batch"): lambda j, b: [
        ("GET", "/functions/v1/get-crawl-jobs-batch", {"params": {"batchId": b}})
    ],
    # The legacy reads as supabase-js sends them: a POST, the id in the query string or the body.
    ("POST", "/functions/v1/get-crawl-job"): lambda j, b: [
        ("POST", "/functions/v1/get-crawl-job", {"params": {"jobId": j}}),
        ("POST", "/functions/v1/get-crawl-job", {"json": {"jobId": j}}),
    ],
    ("POST", "/functions/v1/get-crawl-jobs-batch"): lambda j, b: [
        ("POST", "/functions/v1/get-crawl-jobs-batch", {"params": {"batchId": b}}),
        ("POST", "/functions/v1/get-crawl-jobs-batch", {"json": {"batchId": b}}),
    ],
    ("POST", "/functions/v1/retry-failed-batch-jobs"): lambda j, b: [
        ("POST", "/functions/v1/retry-failed-batch-jobs", {"json": {"batchId": b}})
    ],
    ("POST", "/functions/v1/wait-for-crawl-job"): lambda j, b: [
        ("POST", "/functions/v1/wait-for-crawl-job", {"json": {"jobId": j, "maxWaitTimeMs": 0}})
    ],
}


def _send(client: TestClient, request: Request, headers: dict[str, str]) -> Response:
    method, url, kwargs = request
    return client.request(method, url, headers=headers, **kwargs)


@pytest.mark.parametrize("route", list(NOT_FOUND), ids=[f"{m} {p}" for m, p in NOT_FOUND])
def test_another_tenants_ids_are_not_found(
    client: TestClient,
    owned: Owned,
    auth: dict[str, str],
    other_auth: dict[str, str],
    database_url: str,
    footprint: Callable[[], dict[str, int]],
    route: tuple[str, str],
) -> None:
    before, queues = a_state(database_url), footprint()
    for job_id in (owned.job, owned.failed, owned.completed):
        theirs = NOT_FOUND[route](job_id, A_BATCH)
        missing = NOT_FOUND[route](MISSING_JOB, MISSING_BATCH)
        for request, control in zip(theirs, missing, strict=True):
            answer, expected = _send(client, request, other_auth), _send(client, control, other_auth)
            assert answer.status_code == 404, (request, answer.text)
            # Indistinguishable from an id that does not exist: same status, code and message but for the id.
            assert _without_ids(answer.json()) == _without_ids(expected.json()), request
            if request[0] == "GET":  # and the owner reads it (the id is right; only the tenant differs)
                found = _send(client, request, auth)
                assert found.status_code == 200 or (route[1].endswith("/html") and job_id != owned.completed)
    assert a_state(database_url) == before
    assert footprint() == queues


def _without_ids(body: dict[str, Any]) -> dict[str, Any]:
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", str(body["error"]))
    return {**body, "error": text.replace(A_BATCH, "<id>").replace(MISSING_BATCH, "<id>")}


# -- lists, the delivery log, the secret, and ids and keys shared between tenants -------------------------------


def test_lists_and_the_delivery_log_show_nothing_of_another_tenants(
    client: TestClient, owned: Owned, auth: dict[str, str], other_auth: dict[str, str], database_url: str
) -> None:
    before = a_state(database_url)
    assert A_BATCH in [b["batch_id"] for b in client.get("/v1/batches", headers=auth).json()["batches"]]
    assert A_BATCH not in [
        b["batch_id"] for b in client.get("/v1/batches", headers=other_auth).json()["batches"]
    ]
    legacy = client.get("/functions/v1/list-crawl-job-batches", headers=other_auth).json()
    assert A_BATCH not in [b["batch_id"] for b in legacy["batches"]]
    for params in ({}, {"job_id": owned.failed}, {"batch_id": A_BATCH}):
        mine = client.get("/v1/webhooks/deliveries", params=params, headers=auth)
        assert len(mine.json()["deliveries"]) == 1, params
        theirs = client.get("/v1/webhooks/deliveries", params=params, headers=other_auth)
        assert theirs.status_code == 200
        assert theirs.json()["deliveries"] == [], params
    secret_a = client.get("/v1/webhooks/secret", headers=auth).json()["secret"]
    assert client.get("/v1/webhooks/secret", headers=other_auth).json()["secret"] != secret_a
    assert a_state(database_url)[:3] == before[:3]


def test_a_delivery_is_redelivered_only_by_its_own_tenant(
    client: TestClient, owned: Owned, auth: dict[str, str], other_auth: dict[str, str], database_url: str
) -> None:
    (delivery,) = client.get("/v1/webhooks/deliveries", headers=auth).json()["deliveries"]
    before = a_state(database_url)
    theirs = client.post(f"/v1/webhooks/deliveries/{delivery['id']}/redeliver", headers=other_auth)
    assert theirs.status_code == 404 and theirs.json()["code"] == "delivery_not_found"
    assert a_state(database_url) == before
    mine = client.post(f"/v1/webhooks/deliveries/{delivery['id']}/redeliver", headers=auth)
    assert mine.status_code == 200 and mine.json()["id"] == delivery["id"]
    assert mine.json()["status"] == "pending" and mine.json()["attempts"] == 0


def test_a_batch_id_and_an_idempotency_key_are_per_tenant(
    client: TestClient, owned: Owned, other_auth: dict[str, str], database_url: str
) -> None:
    before = a_state(database_url)
    # B may use A's batch id: a batch of B's own, A's untouched.
    for path, body in [
        ("/v1/batches", {"urls": ["https://example.com/b1"], "batch_id": A_BATCH}),
        (
            "/functions/v1/submit-crawl-jobs-batch",
            {"urls": ["https://example.com/b2"], "batchId": A_BATCH + "-2"},
        ),
    ]:
        assert client.post(path, json=body, headers=other_auth).status_code in (200, 201)
    legacy_again = client.post(
        "/functions/v1/submit-crawl-jobs-batch",
        json={"urls": ["https://example.com/b3"], "batchId": A_BATCH},
        headers=other_auth,
    )
    assert legacy_again.status_code == 409  # B's own batch of that id now exists, not A's
    b_batch = client.get(f"/v1/batches/{A_BATCH}", headers=other_auth).json()
    assert [j["url"] for j in b_batch["jobs"]] == ["https://example.com/b1"]
    # B sending A's Idempotency-Key (and A's very body) gets a job of its own, not A's replayed.
    for path in ("/v1/jobs", "/functions/v1/submit-crawl-job"):
        replay = client.post(
            path, json={"url": "https://example.com/iso"}, headers={**other_auth, "Idempotency-Key": A_KEY}
        )
        assert replay.status_code in (200, 201)
        assert owned.job not in replay.text
    assert a_state(database_url) == before


# -- the walk -----------------------------------------------------------------------------------------------------

# Routes that name no job, batch or delivery, and why.
NAMES_NOTHING = {
    ("GET", "/healthz"): "open, no tenant",
    ("GET", "/readyz"): "open, no tenant",
    ("GET", "/metrics"): "behind the metrics token (or opened), counts only, no tenant",
    (
        "POST",
        "/v1/jobs",
    ): "creates; a same Idempotency-Key of another tenant's: test_a_batch_id_and_an_idempotency_key_are_per_tenant",
    (
        "POST",
        "/functions/v1/submit-crawl-job",
    ): "creates; see test_a_batch_id_and_an_idempotency_key_are_per_tenant",
    (
        "POST",
        "/v1/jobs/process",
    ): "processes the caller's own tenant's pending jobs (the tenant comes from the key)",
    ("POST", "/functions/v1/process-crawl-jobs"): "as /v1/jobs/process",
    (
        "GET",
        "/v1/webhooks/secret",
    ): "the caller's own secret: test_lists_and_the_delivery_log_show_nothing_of_another_tenants",
}
# Routes that name one but are not 404 cases, and the test that covers them.
OTHER_CASES = {
    (
        "POST",
        "/v1/webhooks/deliveries/{delivery_id}/redeliver",
    ): "test_a_delivery_is_redelivered_only_by_its_own_tenant",
    ("GET", "/v1/batches"): "test_lists_and_the_delivery_log_show_nothing_of_another_tenants",
    (
        "GET",
        "/functions/v1/list-crawl-job-batches",
    ): "test_lists_and_the_delivery_log_show_nothing_of_another_tenants",
    (
        "POST",
        "/functions/v1/list-crawl-job-batches",
    ): "test_lists_and_the_delivery_log_show_nothing_of_another_tenants",
    ("GET", "/v1/webhooks/deliveries"): "test_lists_and_the_delivery_log_show_nothing_of_another_tenants",
    ("POST", "/v1/batches"): "test_a_batch_id_and_an_idempotency_key_are_per_tenant",
    (
        "POST",
        "/functions/v1/submit-crawl-jobs-batch",
    ): "test_a_batch_id_and_an_idempotency_key_are_per_tenant",
}
NAMES = re.compile(r"job_?id|batch_?id", re.IGNORECASE)


def _named_fields(document: dict[str, Any], operation: dict[str, Any]) -> set[str]:
    names = {p["name"] for p in operation.get("parameters", [])}
    for content in operation.get("requestBody", {}).get("content", {}).values():
        schema = content.get("schema", {})
        if "$ref" in schema:
            schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        names |= set(schema.get("properties", {}))
    return names


def test_every_route_is_classified() -> None:
    document = create_app(Settings(database_url="postgresql://unused.invalid/walk")).openapi()
    operations = {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    classified = set(NOT_FOUND) | set(OTHER_CASES) | set(NAMES_NOTHING)
    assert not set(NOT_FOUND) & set(OTHER_CASES) and not classified - set(operations), "stale entries"
    unclassified = set(operations) - classified
    assert not unclassified, f"routes with no tenant-isolation case or reason: {sorted(unclassified)}"
    for key, operation in operations.items():
        names_one = bool(NAMES.search(key[1]) or "deliveries" in key[1]) or any(
            NAMES.fullmatch(name) for name in _named_fields(document, operation)
        )
        if names_one:
            assert key in NOT_FOUND or key in OTHER_CASES, f"{key} names a job, batch or delivery: add a case"
    for test in set(OTHER_CASES.values()):
        assert callable(globals()[test])

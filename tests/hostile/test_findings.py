"""One plain regression test per defect the hostile suite found (Schemathesis, or by hand), with the fix named.

Each was a 5xx, or an answer the OpenAPI schema did not document.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crawljobs.config import Settings
from service.app import create_app

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings(database_url="postgresql://unused.invalid/doc")).openapi()


def test_a_405_names_the_allowed_methods(client: TestClient, auth: dict[str, str]) -> None:
    """Schemathesis ST204: every 405 came without `Allow` (the error handler dropped the exception's headers).
    Fix: service/errors.py keeps them."""
    response = client.request("TRACE", "/v1/jobs/00000000-0000-0000-0000-000000000000", headers=auth)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json()["code"] == "method_not_allowed"


def test_a_405_names_every_method_of_a_path_shared_by_two_routes(
    client: TestClient, auth: dict[str, str]
) -> None:
    """Schemathesis ST205: `OPTIONS /v1/batches` said `Allow: POST`; GET was missing (Starlette names the first
    route that matched the path). Fix: service/errors.py asks every route which methods match the path."""
    response = client.request("DELETE", "/v1/batches", headers=auth)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"


def test_the_idempotency_key_rule_is_in_the_schema(
    client: TestClient, auth: dict[str, str], document: dict[str, Any]
) -> None:
    """Schemathesis ST202: a schema-valid `Idempotency-Key` (any string) got a 422. Fix: service/deps.py
    documents 1 to 255 printable ASCII characters (minLength, maxLength, pattern) and checks exactly that."""
    (header,) = [
        p for p in document["paths"]["/v1/jobs"]["post"]["parameters"] if p["name"] == "Idempotency-Key"
    ]
    assert (header["schema"]["minLength"], header["schema"]["maxLength"]) == (1, 255)
    body = {"url": "https://example.com/key"}
    for bad in ("", " ", "k" * 256, "caf\xe9".encode("latin-1"), b"a\x7fb"):
        response = client.post("/v1/jobs", json=body, headers={**auth, "Idempotency-Key": bad})
        assert response.status_code == 422, bad
        assert response.json()["details"]["field"] == "Idempotency-Key"
    ok = client.post("/v1/jobs", json=body, headers={**auth, "Idempotency-Key": "order 42 / retry:1"})
    assert ok.status_code == 201


def test_the_delivery_log_documents_job_id_as_a_uuid(
    client: TestClient, auth: dict[str, str], document: dict[str, Any]
) -> None:
    """Schemathesis ST202: `job_id` was documented as any string, and a non-UUID got a 422. Fix:
    service/routes/webhooks.py declares it a UUID (`format: uuid`), validated as such."""
    (param,) = [
        p for p in document["paths"]["/v1/webhooks/deliveries"]["get"]["parameters"] if p["name"] == "job_id"
    ]
    assert {"type": "string", "format": "uuid"} in param["schema"]["anyOf"]
    response = client.get("/v1/webhooks/deliveries", params={"job_id": "nope"}, headers=auth)
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "job_id"


def test_an_idempotent_replay_is_a_documented_200(
    client: TestClient, auth: dict[str, str], document: dict[str, Any]
) -> None:
    """Schemathesis ST103: a replay answered 200, documented were only 201 and errors. Fix: the 200 is in
    `responses` of POST /v1/jobs and POST /v1/batches (service/routes/jobs.py, batches.py)."""
    for path in ("/v1/jobs", "/v1/batches"):
        assert {"200", "201"} <= set(document["paths"][path]["post"]["responses"])
    headers = {**auth, "Idempotency-Key": "finding-replay"}
    first = client.post("/v1/batches", json={"urls": ["https://example.com/r"]}, headers=headers)
    again = client.post("/v1/batches", json={"urls": ["https://example.com/r"]}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()


def test_a_body_that_is_not_utf8_is_the_invalid_json_422(client: TestClient, auth: dict[str, str]) -> None:
    """Schemathesis ST103: a JSON body that is not UTF-8 got FastAPI's undocumented `400 There was an error
    parsing the body`. Fix: service/errors.py answers it as any other unparsable body."""
    response = client.post(
        "/functions/v1/wait-for-crawl-job", content=b'{"jobId": "\xff\xfe"}', headers={**auth, **JSON}
    )
    assert response.status_code == 422
    body = response.json()
    assert (body["code"], body["details"][0]["type"]) == ("validation_error", "json_invalid")
    assert "UTF-8" in body["error"]


def test_a_body_nested_too_deeply_is_the_invalid_json_422(client: TestClient, auth: dict[str, str]) -> None:
    """By hand: 100,000 nested arrays were the same undocumented 400 (a RecursionError in the parser).
    Fix: service/errors.py."""
    response = client.post("/v1/jobs", content=b"[" * 100_000 + b"]" * 100_000, headers={**auth, **JSON})
    assert response.status_code == 422
    assert response.json()["details"][0]["type"] == "json_invalid"


def test_a_nul_in_a_legacy_batch_id_is_a_422_not_a_500(client: TestClient, auth: dict[str, str]) -> None:
    """By hand: `get-crawl-jobs-batch?batchId=a%00b` reached PostgreSQL, which cannot hold NUL in text: 500.
    Fix: service/routes/legacy.py validates `batchId` with the batch id pattern, as every other route does."""
    response = client.get("/functions/v1/get-crawl-jobs-batch?batchId=a%00b", headers=auth)
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "batchId"


def test_a_huge_legacy_offset_is_a_422_not_a_500(client: TestClient, auth: dict[str, str]) -> None:
    """By hand: `get-crawl-jobs-batch?offset=2**63` overflowed PostgreSQL's bigint: 500. Fix:
    service/routes/legacy.py bounds `offset` as /v1 does (at most 10,000,000)."""
    created = client.post(
        "/v1/batches", json={"urls": ["https://example.com/o"], "batch_id": "finding-offset"}, headers=auth
    )
    assert created.status_code == 201
    for offset in (2**63, 10**30):
        response = client.get(
            "/functions/v1/get-crawl-jobs-batch",
            params={"batchId": "finding-offset", "offset": offset},
            headers=auth,
        )
        assert response.status_code == 422
        assert response.json()["details"][0]["field"] == "offset"


def test_a_refused_url_with_a_nul_is_reported_not_a_500(client: TestClient, auth: dict[str, str]) -> None:
    """By hand: a batch with one good URL and one holding a NUL was a 500: the refused URL, quoted in the
    batch's stored answer (jsonb), cannot hold \\u0000. Fix: crawljobs/urls/resolve.py quotes NUL as an escape."""
    response = client.post(
        "/v1/batches", json={"urls": ["https://example.com/n\x00", "https://example.com/ok"]}, headers=auth
    )
    assert response.status_code == 201, response.text
    (failure,) = response.json()["failures"]
    assert failure["url"] == "https://example.com/n\\u0000"


def test_a_refused_url_with_a_lone_surrogate_is_reported_not_a_500(
    client: TestClient, auth: dict[str, str]
) -> None:
    """By hand: a lone surrogate (`"\\ud800"` in the JSON) in a refused URL was a 500 twice over: PostgreSQL
    refused it in jsonb, and alone in a batch it could not be written back as UTF-8. Fix: crawljobs/urls/resolve.py."""
    mixed = json.dumps({"urls": ["https://example.com/\ud800", "https://example.com/ok"]}).encode()
    response = client.post("/v1/batches", content=mixed, headers={**auth, **JSON})
    assert response.status_code == 201, response.text
    assert response.json()["failures"][0]["url"] == "https://example.com/\\ud800"
    alone = json.dumps({"urls": ["https://example.com/\udfff"]}).encode()
    response = client.post("/functions/v1/submit-crawl-jobs-batch", content=alone, headers={**auth, **JSON})
    assert response.status_code == 422
    assert response.json()["details"]["failures"][0]["url"] == "https://example.com/\\udfff"

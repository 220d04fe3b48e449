"""Oversized and malformed request bodies: each is a 4xx JSON error with a stable code, and changes nothing.

Every POST route is tried (the list is read from the app, so a new route is covered without editing this
file): bodies over the limit with and without Content-Length, bodies that do not parse (invalid JSON, raw
NUL, invalid UTF-8, nesting deeper than the parser goes), no body, the wrong content type, fields of the
wrong type, huge strings, and batches over the size limit. After each, no table has a new row and no
dispatch list a new entry.

The two routes that run a worker (`.../process`) only ever get bodies that fail validation here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crawljobs.config import Settings
from tests.hostile.conftest import ApiRoute, api_routes, make_client

LIMIT = 4096
MAX_BATCH = 5
GOOD = "https://example.com/bodies"


def _post_routes() -> list[ApiRoute]:
    """The API's routes that take a POST (JSON bodies, key auth); the dashboard's forms are tested with it
    (tests/integration/test_dashboard.py, and test_body_pressure for bodies sent without a session)."""
    return sorted(
        (r for r in api_routes() if "POST" in r.methods and r.path.startswith(("/v1/", "/functions/"))),
        key=lambda r: r.path,
    )


def _concrete(path: str) -> str:
    """A route's path with its parameters filled in (ids that name nothing: the body is refused first)."""
    return path.replace("{job_id}", "00000000-0000-0000-0000-000000000000").replace("{batch_id}", "nothing")


POST_ROUTES = [_concrete(r.path) for r in _post_routes()]
BODY_ROUTES = [_concrete(r.path) for r in _post_routes() if r.takes_body]
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def tight_client(hostile_settings: Settings) -> Iterator[TestClient]:
    tight = Settings(
        **{**hostile_settings.model_dump(), "max_request_bytes": LIMIT, "max_batch_size": MAX_BATCH}
    )
    with make_client(tight) as client:
        yield client


@pytest.fixture
def unchanged(footprint: Callable[[], dict[str, int]]) -> Iterator[None]:
    """The test's requests leave no row and no queue entry behind."""
    before = footprint()
    yield
    assert footprint() == before


WORKER_RUNS = ("/v1/jobs/process", "/functions/v1/process-crawl-jobs")


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    # A body one of these routes accepted has started a real worker run: this suite must never send one.
    assert not (response.request.url.path in WORKER_RUNS and response.is_success), "a worker run started"
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = json.loads(response.content)
    assert (body["success"], body["code"]) == (False, code), body
    assert isinstance(body["error"], str) and body["error"]
    return body


def test_the_route_lists_are_what_this_file_expects() -> None:
    assert "/v1/jobs" in BODY_ROUTES and "/functions/v1/submit-crawl-jobs-batch" in BODY_ROUTES
    assert "/v1/jobs/00000000-0000-0000-0000-000000000000/cancel" in POST_ROUTES
    assert set(BODY_ROUTES) < set(POST_ROUTES)


# -- size ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", POST_ROUTES)
@pytest.mark.usefixtures("unchanged")
def test_a_body_over_the_limit_is_413_however_it_is_sent(
    tight_client: TestClient, auth: dict[str, str], path: str
) -> None:
    big = json.dumps({"urls": [GOOD] * (LIMIT // len(GOOD) + 1)}).encode()
    assert len(big) > LIMIT
    declared = tight_client.post(path, content=big, headers={**auth, **JSON})
    _error(declared, 413, "request_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer, counted as it arrives
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    streamed = tight_client.post(path, content=chunks(), headers={**auth, **JSON})
    _error(streamed, 413, "request_too_large")
    # A Content-Length over the limit is refused before a byte of the body is read.
    lying = tight_client.post(path, content=b"{}", headers={**auth, **JSON, "content-length": str(10**12)})
    _error(lying, 413, "request_too_large")


@pytest.mark.usefixtures("unchanged")
def test_a_batch_over_the_size_limit_is_413(tight_client: TestClient, auth: dict[str, str]) -> None:
    urls = [f"{GOOD}/{i}" for i in range(MAX_BATCH + 1)]
    for path, body in [
        ("/v1/batches", {"urls": urls, "batch_id": "too-big"}),
        ("/functions/v1/submit-crawl-jobs-batch", {"urls": urls, "batchId": "too-big"}),
    ]:
        error = _error(tight_client.post(path, json=body, headers=auth), 413, "batch_too_large")
        assert f"at most {MAX_BATCH}" in error["error"]
        # Refused URLs count too: the limit is on what was sent.
        bad = [f"http://10.0.0.{i}/" for i in range(MAX_BATCH + 1)]
        _error(tight_client.post(path, json={"urls": bad}, headers=auth), 413, "batch_too_large")


# -- bodies that do not parse -----------------------------------------------------------------------------

NOT_JSON = [
    ("truncated", b'{"url": ', "json_invalid"),
    ("single-quotes", b"{'url': 'https://example.com/'}", "json_invalid"),
    ("trailing-comma", b'{"url": "https://example.com/",}', "json_invalid"),
    ("raw-nul-in-string", b'{"url": "https://example.com/\x00"}', "json_invalid"),
    ("nul-bytes-only", b"\x00\x00\x00\x00", "json_invalid"),
    ("invalid-utf8", b'{"url": "https://example.com/\xff"}', "json_invalid"),
    ("overlong-utf8", b'{"url": "https://example.com/\xc0\xaf"}', "json_invalid"),
    ("nested-too-deeply", b"[" * 100_000 + b"]" * 100_000, "json_invalid"),
    ("objects-nested-too-deeply", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "json_invalid"),
    # Python refuses to read an integer of over 4,300 digits (its guard against quadratic conversions).
    (
        "integer-of-5000-digits",
        b'{"url": "https://example.com/", "max_retries": ' + b"9" * 5000 + b"}",
        "json_invalid",
    ),
    ("empty", b"", "missing"),
    ("json-null", b"null", "missing model_attributes_type"),
    ("json-array", b'["https://example.com/"]', "model_attributes_type"),
    ("json-string", b'"https://example.com/"', "model_attributes_type"),
    ("json-number", b"42", "model_attributes_type"),
]


@pytest.mark.parametrize(("content", "kind"), [n[1:] for n in NOT_JSON], ids=[n[0] for n in NOT_JSON])
@pytest.mark.usefixtures("unchanged")
def test_a_body_that_is_not_a_json_object_is_422(
    client: TestClient, auth: dict[str, str], content: bytes, kind: str
) -> None:
    for path in BODY_ROUTES:
        error = _error(client.post(path, content=content, headers={**auth, **JSON}), 422, "validation_error")
        assert error["details"][0]["field"] == "body", (path, error)
        assert error["details"][0]["type"] in kind.split(), (path, error)


CONTENT_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "application/jsonp",
    None,  # no Content-Type at all
]


@pytest.mark.parametrize("content_type", CONTENT_TYPES, ids=[str(c) for c in CONTENT_TYPES])
@pytest.mark.usefixtures("unchanged")
def test_a_json_body_under_another_content_type_is_422(
    client: TestClient, auth: dict[str, str], content_type: str | None
) -> None:
    payload = json.dumps({"url": "http://10.0.0.1/", "urls": ["http://10.0.0.1/"], "batchId": "x"}).encode()
    headers = {**auth, "content-type": content_type} if content_type else auth
    for path in BODY_ROUTES:
        error = _error(client.post(path, content=payload, headers=headers), 422, "validation_error")
        assert error["details"][0]["field"] == "body", (path, error)


# -- fields of the wrong type or out of range --------------------------------------------------------------

G = GOOD
WRONG_FIELDS: list[tuple[str, str, dict[str, Any], str]] = [
    ("job-url-number", "/v1/jobs", {"url": 5}, "url"),
    ("job-url-null", "/v1/jobs", {"url": None}, "url"),
    ("job-url-list", "/v1/jobs", {"url": [G]}, "url"),
    ("job-url-missing", "/v1/jobs", {"render": True}, "url"),
    ("job-render-string", "/v1/jobs", {"url": G, "render": "yes"}, "render"),
    ("job-render-int", "/v1/jobs", {"url": G, "render": 1}, "render"),
    ("job-retries-string", "/v1/jobs", {"url": G, "max_retries": "3"}, "max_retries"),
    ("job-retries-float", "/v1/jobs", {"url": G, "max_retries": 3.5}, "max_retries"),
    ("job-retries-negative", "/v1/jobs", {"url": G, "max_retries": -1}, "max_retries"),
    ("job-retries-over", "/v1/jobs", {"url": G, "max_retries": 21}, "max_retries"),
    ("job-retries-huge", "/v1/jobs", {"url": G, "max_retries": 10**40}, "max_retries"),
    ("job-callback-number", "/v1/jobs", {"url": G, "callback_url": 5}, "callback_url"),
    ("job-unknown-field", "/v1/jobs", {"url": G, "priority": 9}, "priority"),
    ("batch-urls-string", "/v1/batches", {"urls": G}, "urls"),
    ("batch-urls-object", "/v1/batches", {"urls": {"0": G}}, "urls"),
    ("batch-urls-empty", "/v1/batches", {"urls": []}, "urls"),
    ("batch-id-number", "/v1/batches", {"urls": [G], "batch_id": 7}, "batch_id"),
    ("batch-id-empty", "/v1/batches", {"urls": [G], "batch_id": ""}, "batch_id"),
    ("batch-id-slash", "/v1/batches", {"urls": [G], "batch_id": "a/../b"}, "batch_id"),
    ("batch-id-nul", "/v1/batches", {"urls": [G], "batch_id": "a\x00b"}, "batch_id"),
    ("batch-id-huge", "/v1/batches", {"urls": [G], "batch_id": "a" * 100_000}, "batch_id"),
    ("batch-premium-null", "/v1/batches", {"urls": [G], "premium": None}, "premium"),
    ("legacy-url-number", "/functions/v1/submit-crawl-job", {"url": 5}, "url"),
    (
        "legacy-flag-string",
        "/functions/v1/submit-crawl-job",
        {"url": G, "ultraPremium": "false"},
        "ultraPremium",
    ),
    ("legacy-retries-string", "/functions/v1/submit-crawl-job", {"url": G, "maxRetries": "1"}, "maxRetries"),
    ("legacy-batch-urls-string", "/functions/v1/submit-crawl-jobs-batch", {"urls": G}, "urls"),
    (
        "legacy-batch-id-number",
        "/functions/v1/submit-crawl-jobs-batch",
        {"urls": [G], "batchId": 5},
        "batchId",
    ),
    ("legacy-retry-missing", "/functions/v1/retry-failed-batch-jobs", {}, "batchId"),
    ("legacy-retry-id-number", "/functions/v1/retry-failed-batch-jobs", {"batchId": 5}, "batchId"),
    ("legacy-retry-id-pattern", "/functions/v1/retry-failed-batch-jobs", {"batchId": "a b"}, "batchId"),
    ("legacy-wait-id-number", "/functions/v1/wait-for-crawl-job", {"jobId": 5}, "jobId"),
    (
        "legacy-wait-negative",
        "/functions/v1/wait-for-crawl-job",
        {"jobId": "x", "maxWaitTimeMs": -1},
        "maxWaitTimeMs",
    ),
    ("process-size-string", "/v1/jobs/process", {"batch_size": "5"}, "batch_size"),
    ("process-size-zero", "/v1/jobs/process", {"batch_size": 0}, "batch_size"),
    ("process-size-over", "/v1/jobs/process", {"batch_size": 1001}, "batch_size"),
    ("process-unknown-field", "/v1/jobs/process", {"batch_size": 1, "tenant": "other"}, "tenant"),
    ("legacy-process-string", "/functions/v1/process-crawl-jobs", {"batchSize": "5"}, "batchSize"),
    ("legacy-process-negative", "/functions/v1/process-crawl-jobs", {"batchSize": -5}, "batchSize"),
]


@pytest.mark.parametrize(
    ("path", "body", "field"), [w[1:] for w in WRONG_FIELDS], ids=[w[0] for w in WRONG_FIELDS]
)
@pytest.mark.usefixtures("unchanged")
def test_a_field_of_the_wrong_type_or_range_is_422_naming_it(
    client: TestClient, auth: dict[str, str], path: str, body: dict[str, Any], field: str
) -> None:
    error = _error(client.post(path, json=body, headers=auth), 422, "validation_error")
    assert field in [d["field"] for d in error["details"]], error
    assert field in error["error"]


def test_the_wrong_field_table_covers_every_route_with_a_body() -> None:
    assert {path for _, path, _, _ in WRONG_FIELDS} == set(BODY_ROUTES)


# -- NUL bytes and huge strings inside valid JSON ---------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
def test_nul_characters_are_refused_wherever_they_are(client: TestClient, auth: dict[str, str]) -> None:
    nul = f"{GOOD}/\x00"
    for path, body, field in [
        ("/v1/jobs", {"url": nul}, "url"),
        ("/functions/v1/submit-crawl-job", {"url": nul}, "url"),
        ("/v1/jobs", {"url": GOOD, "callback_url": nul}, "callback_url"),
        ("/functions/v1/submit-crawl-job", {"url": GOOD, "callbackUrl": nul}, "callbackUrl"),
    ]:
        error = _error(client.post(path, json=body, headers=auth), 422, "url_rejected")
        assert error["details"]["field"] == field
        assert "control or whitespace character" in error["error"]
    # A NUL in an id names nothing: 404 or 422, never a database error.
    _error(client.get(f"/v1/jobs/{'a%00b'}", headers=auth), 404, "job_not_found")
    _error(client.get("/functions/v1/get-crawl-job?jobId=a%00b", headers=auth), 404, "job_not_found")
    _error(
        client.get("/functions/v1/get-crawl-jobs-batch?batchId=a%00b", headers=auth), 422, "validation_error"
    )
    _error(client.get("/v1/batches/a%00b", headers=auth), 422, "validation_error")
    wait = client.post("/functions/v1/wait-for-crawl-job", json={"jobId": "a\x00b"}, headers=auth)
    _error(wait, 404, "job_not_found")


@pytest.mark.usefixtures("unchanged")
def test_a_surrogate_encoded_in_utf8_is_refused_as_a_url(client: TestClient, auth: dict[str, str]) -> None:
    """Python's JSON parser lets UTF-8-encoded surrogates through (as lone surrogates): the URL check catches them,
    and the refusal quotes them escaped (a lone surrogate cannot be written back as UTF-8, nor stored)."""
    content = b'{"url": "https://example.com/\xed\xa0\x80"}'
    error = _error(client.post("/v1/jobs", content=content, headers={**auth, **JSON}), 422, "url_rejected")
    assert "\\ud800" in error["error"]
    batch = b'{"urls": ["https://example.com/\xed\xa0\x80"]}'
    error = _error(client.post("/v1/batches", content=batch, headers={**auth, **JSON}), 422, "no_valid_urls")
    assert error["details"]["failures"][0]["url"] == "https://example.com/\\ud800"


@pytest.mark.usefixtures("unchanged")
def test_huge_strings_are_refused_without_being_echoed(client: TestClient, auth: dict[str, str]) -> None:
    huge = GOOD + "/" + "a" * 1_000_000
    error = _error(client.post("/v1/jobs", json={"url": huge}, headers=auth), 422, "url_rejected")
    assert error["error"] == "URL is longer than 8192 bytes"
    error = _error(
        client.post("/v1/jobs", json={"url": GOOD, "callback_url": huge}, headers=auth), 422, "url_rejected"
    )
    assert "longer than 8192 bytes" in error["error"]
    key = _error(
        client.post("/v1/jobs", json={"url": GOOD}, headers={**auth, "Idempotency-Key": "k" * 10_000}),
        422,
        "invalid_request",
    )
    assert key["details"]["field"] == "Idempotency-Key"
    many = client.post("/v1/batches", json={"urls": ["x" * 100_000] * 50}, headers=auth)
    error = _error(many, 422, "no_valid_urls")
    assert len(many.content) < 50 * 1000  # each refused URL is quoted clipped, not whole
    assert all(len(f["url"]) <= 300 for f in error["details"]["failures"])


@pytest.mark.parametrize("depth", [10, 200, 600])
def test_nested_values_in_a_batch_are_refused_one_by_one(
    client: TestClient, auth: dict[str, str], footprint: Callable[[], dict[str, int]], depth: int
) -> None:
    """Nesting the parser accepts reaches the URL check, which refuses it (never a 5xx); the rest is kept."""
    before = footprint()
    nested = b"[" * depth + b"]" * depth
    content = b'{"urls": [' + nested + b', {"a": ' + nested + b'}, "' + GOOD.encode() + b'"]}'
    response = client.post("/v1/batches", content=content, headers={**auth, **JSON})
    assert response.status_code in (201, 422), response.text
    if response.status_code == 201:  # parsed: two refused values, one job
        assert [f["index"] for f in response.json()["failures"]] == [0, 1]
        assert footprint()["crawl_jobs"] == before["crawl_jobs"] + 1
    else:  # deeper than this parser goes
        assert response.json()["details"][0]["type"] == "json_invalid"
        assert footprint() == before

"""Render waits as job options (`wait_for`, `wait_ms`): kept on the job row, shown by /v1, taken by both APIs
(the legacy body as `waitFor`/`waitMs` extensions), refused with a 422 naming the field and nothing written."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from crawljobs.config import Settings
from tests.integration.conftest import make_client


@pytest.fixture
def capped(settings: Settings) -> Iterator[TestClient]:
    """An API whose deployment caps render waits at 2 s."""
    with make_client(settings.model_copy(update={"render_max_wait_ms": 2000})) as test_client:
        yield test_client


def job_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM crawl_jobs").fetchone()
    assert row is not None
    return int(row[0])


def stored_waits(database_url: str, job_id: str) -> tuple[str | None, int | None]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT wait_for, wait_ms FROM crawl_jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def test_v1_job_and_batch_keep_their_waits(
    client: TestClient, auth: dict[str, str], database_url: str
) -> None:
    job = client.post(
        "/v1/jobs",
        json={"url": "https://example.com/a", "render": True, "wait_for": "#price .amount", "wait_ms": 1500},
        headers=auth,
    )
    assert job.status_code == 201, job.text
    assert job.json()["wait_for"] == "#price .amount" and job.json()["wait_ms"] == 1500
    assert stored_waits(database_url, job.json()["id"]) == ("#price .amount", 1500)
    assert client.get(f"/v1/jobs/{job.json()['id']}", headers=auth).json()["wait_ms"] == 1500

    batch = client.post(
        "/v1/batches",
        json={"urls": ["https://example.com/b", "https://example.com/c"], "wait_for": "main > p.a\\:b"},
        headers=auth,
    )
    assert batch.status_code == 201, batch.text
    for job_id in batch.json()["job_ids"]:
        assert stored_waits(database_url, job_id) == ("main > p.a\\:b", None)

    plain = client.post("/v1/jobs", json={"url": "https://example.com/d"}, headers=auth).json()
    assert plain["wait_for"] is None and plain["wait_ms"] is None


def test_legacy_bodies_take_the_waits_as_extensions(
    client: TestClient, auth: dict[str, str], database_url: str
) -> None:
    single = client.post(
        "/functions/v1/submit-crawl-job",
        json={"url": "https://example.com/e", "render": True, "waitFor": "#ready", "waitMs": 250},
        headers=auth,
    )
    assert single.status_code == 200, single.text
    assert stored_waits(database_url, single.json()["jobId"]) == ("#ready", 250)
    batch = client.post(
        "/functions/v1/submit-crawl-jobs-batch",
        json={"urls": ["https://example.com/f"], "render": True, "waitMs": 0},
        headers=auth,
    )
    assert batch.status_code == 200, batch.text
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT wait_for, wait_ms FROM crawl_jobs WHERE batch_id = %s", (batch.json()["batchId"],)
        ).fetchone()
    assert row == (None, 0)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"wait_ms": -1}, "wait_ms", "greater than or equal to 0"),
        ({"wait_ms": "500"}, "wait_ms", "valid integer"),
        ({"wait_ms": 2.5}, "wait_ms", "valid integer"),
        ({"wait_ms": 2001}, "wait_ms", "at most 2000 ms (CRAWLJOBS_RENDER_MAX_WAIT_MS)"),
        ({"wait_for": ""}, "wait_for", "at least 1 character"),
        ({"wait_for": 42}, "wait_for", "valid string"),
        ({"wait_for": ["#a"]}, "wait_for", "valid string"),
        ({"wait_for": "#a" * 501}, "wait_for", "at most 1000 characters"),
        ({"wait_for": "   "}, "wait_for", "non-empty CSS selector"),
        ({"wait_for": "#a\x00b"}, "wait_for", "control characters"),
    ],
)
@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/batches", "/functions/v1/submit-crawl-job"])
def test_bad_waits_are_a_422_naming_the_field_and_write_nothing(
    capped: TestClient,
    auth: dict[str, str],
    database_url: str,
    route: str,
    body: dict[str, object],
    field: str,
    words: str,
) -> None:
    before = job_count(database_url)
    if route.startswith("/functions"):
        legacy = {"waitMs" if name == "wait_ms" else "waitFor": value for name, value in body.items()}
        response = capped.post(route, json={"url": "https://example.com/x", **legacy}, headers=auth)
    elif route == "/v1/batches":
        response = capped.post(route, json={"urls": ["https://example.com/x"], **body}, headers=auth)
    else:
        response = capped.post(route, json={"url": "https://example.com/x", **body}, headers=auth)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == "validation_error" and error["success"] is False
    assert words in error["error"], error
    # Pydantic's refusals list the body's own field names; the deployment's cap names the option.
    named = str(error.get("details")) + error["error"]
    assert field in named or ("waitMs" if field == "wait_ms" else "waitFor") in named, error
    assert job_count(database_url) == before


def test_a_wait_at_the_cap_is_taken(capped: TestClient, auth: dict[str, str]) -> None:
    response = capped.post("/v1/jobs", json={"url": "https://example.com/y", "wait_ms": 2000}, headers=auth)
    assert response.status_code == 201, response.text

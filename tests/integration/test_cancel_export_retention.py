"""Cancel, export and retention against real PostgreSQL and Redis (issue 4, items 4 to 6)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from crawljobs import store
from crawljobs import testing as fakeworker
from crawljobs.config import Settings
from crawljobs.lifecycle import ResultRecord
from crawljobs.manager import JobManager
from crawljobs.sweeper import Sweeper, SweepReport
from crawljobs.testing import FakeWorker
from service.render import EXPORT_CSV_FIELDS
from tests.integration.conftest import run_with_manager


def result(job_id: uuid.UUID | str, attempt: int, html: str) -> ResultRecord:
    """What a worker's pipeline hands to store.finish_jobs for a page it fetched."""
    return ResultRecord(
        id=uuid.UUID(str(job_id)), attempt=attempt, status="completed", processing_time_ms=5, cost=1.0, html=html,
        http_status=200, final_url="https://example.com/", content_type="text/html", success_method="http:direct",
    )  # fmt: skip


def age(database_url: str, ids: list[str], interval: str) -> None:
    """Time passing: the jobs finished `interval` ago (the one thing a test writes by hand)."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE crawl_jobs SET completed_at = now() - %s::interval WHERE id = ANY(%s::uuid[])",
            (interval, ids),
        )


def submit_batch(client: TestClient, auth: dict[str, str], batch_id: str, n: int) -> list[str]:
    urls = [f"https://example.com/{batch_id}/{i}" for i in range(n)]
    response = client.post("/v1/batches", json={"urls": urls, "batch_id": batch_id}, headers=auth)
    assert response.status_code == 201, response.text
    return list(response.json()["job_ids"])


def row_of(database_url: str, job_id: str) -> dict[str, Any]:
    with psycopg.connect(database_url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        found = cur.execute("SELECT * FROM crawl_jobs WHERE id = %s", (job_id,)).fetchone()
    assert found is not None
    return found


class Listener:
    """A LISTEN on the jobs channel, opened before the action it should hear about."""

    def __init__(self, database_url: str) -> None:
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.conn.execute(f"LISTEN {store.NOTIFY_CHANNEL}")

    def payloads(self, expected: int) -> list[str]:
        got = [n.payload for n in self.conn.notifies(timeout=5, stop_after=expected)]
        self.conn.close()
        return got


# -- cancel -------------------------------------------------------------------------------------------


def test_cancel_a_pending_job(
    client: TestClient, auth: dict[str, str], database_url: str, settings: Settings
) -> None:
    job = client.post("/v1/jobs", json={"url": "https://example.com/cancel-me"}, headers=auth).json()
    listener = Listener(database_url)
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == job["id"]
    assert body["status"] == "cancelled"
    assert body["error_message"] == "cancelled"
    assert body["completed_at"] is not None
    assert listener.payloads(1) == [job["id"]]

    # Its message is still queued: a worker popping it fails to claim and drops it (rule 2).
    async def claim(manager: JobManager) -> list[Any]:
        async with manager.pool.connection() as conn:
            return await store.claim_jobs(conn, ids=[job["id"]], worker="w", lease_seconds=30)

    assert run_with_manager(settings, claim) == []
    # Cancelling again changes nothing and answers the job as it stands.
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"
    assert again.json()["completed_at"] == body["completed_at"]
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["status"] == "cancelled"


def test_cancel_during_a_fetch_the_worker_writes_nothing(
    client: TestClient, auth: dict[str, str], database_url: str, settings: Settings
) -> None:
    job = client.post("/v1/jobs", json={"url": "https://example.com/in-flight"}, headers=auth).json()

    async def claim(manager: JobManager) -> list[Any]:
        async with manager.pool.connection() as conn:
            return await store.claim_jobs(conn, ids=[job["id"]], worker="w1", lease_seconds=30)

    claimed = run_with_manager(settings, claim)
    assert [(str(r["id"]), r["attempt"]) for r in claimed] == [(job["id"], 1)]
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["status"] == "processing"

    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"

    # The worker comes back with its page: every fenced write fails.
    async def worker_finishes(manager: JobManager) -> tuple[Any, ...]:
        async with manager.pool.connection() as conn:
            renewed = await store.renew_leases(conn, worker="w1", ids=[job["id"]], lease_seconds=30)
            retry = await store.next_attempt(
                conn, job_id=uuid.UUID(job["id"]), attempt=1, retry=True, worker="w1", lease_seconds=30
            )
            written = await store.finish_jobs(
                conn, worker="w1", results=[result(job["id"], 1, "<p>late</p>")], attempts=[]
            )
        return renewed, retry, written

    assert run_with_manager(settings, worker_finishes) == ([], None, [])
    row = row_of(database_url, job["id"])
    assert row["status"] == "cancelled"
    assert row["html"] is None and row["html_length"] is None and row["http_status"] is None
    assert row["lease_owner"] is None and row["lease_expires_at"] is None
    assert row["error_message"] == "cancelled"


def test_cancel_a_finished_job_leaves_it_as_it_is(
    client: TestClient, auth: dict[str, str], database_url: str
) -> None:
    job = client.post("/v1/jobs", json={"url": "https://example.com/done"}, headers=auth).json()
    fakeworker.complete(database_url, [job["id"]], html="<p>ok</p>")
    before = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert response.status_code == 200
    assert response.json() == before
    assert row_of(database_url, job["id"])["html"] == "<p>ok</p>"


def test_cancel_a_batch(
    client: TestClient, auth: dict[str, str], database_url: str, settings: Settings
) -> None:
    ids = submit_batch(client, auth, "cancel-batch", 450)
    fakeworker.complete(database_url, ids[:3])
    fakeworker.fail(database_url, ids[3:4])

    async def claim(manager: JobManager) -> list[Any]:
        async with manager.pool.connection() as conn:
            return await store.claim_jobs(conn, ids=ids[4:6], worker="w", lease_seconds=30)

    assert len(run_with_manager(settings, claim)) == 2
    listener = Listener(database_url)
    response = client.post("/v1/batches/cancel-batch/cancel", headers=auth)
    assert response.status_code == 200, response.text
    assert response.json() == {"batch_id": "cancel-batch", "cancelled": 446}
    # One NOTIFY per 200 ids, covering every cancelled job, and one naming the batch.
    payloads = listener.payloads(4)
    assert len(payloads) == 4
    assert payloads[3] == "batch:cancel-batch"
    assert sorted(i for p in payloads[:3] for i in p.split(",")) == sorted(ids[4:])

    counts = client.get("/v1/batches/cancel-batch", headers=auth).json()
    assert counts["counts"] == {
        "pending": 0, "processing": 0, "completed": 3, "error": 1, "cancelled": 446, "total": 450,
    }  # fmt: skip
    assert counts["progress"] == 100
    # The legacy counts keep their shape (no `cancelled` key).
    legacy = client.get(
        "/functions/v1/get-crawl-jobs-batch", params={"batchId": "cancel-batch", "limit": 1}, headers=auth
    ).json()
    assert set(legacy["counts"]) == {"pending", "processing", "completed", "error", "total"}
    # Nothing is left to cancel.
    assert client.post("/v1/batches/cancel-batch/cancel", headers=auth).json()["cancelled"] == 0
    assert client.post("/v1/batches/no-such-batch/cancel", headers=auth).status_code == 404


# -- export -------------------------------------------------------------------------------------------

EXPORT_SIZE = 1000


@pytest.fixture
def export_batch(client: TestClient, auth: dict[str, str], settings: Settings) -> tuple[str, list[str]]:
    """A 1,000-job batch: every third job completed with awkward HTML, every seventh an error, the rest pending."""
    batch_id = f"export-{uuid.uuid4().hex[:8]}"
    ids = submit_batch(client, auth, batch_id, EXPORT_SIZE)

    async def end(manager: JobManager) -> None:
        worker = FakeWorker(manager.pool)
        for index, job_id in enumerate(ids):
            if index % 3 == 0:
                await worker.complete([job_id], html=expected_html(index))
            elif index % 7 == 0:
                await worker.fail([job_id], error='HTTP 500, "server error"\nagain', attempt=4)

    run_with_manager(settings, end)
    return batch_id, ids


def expected_html(index: int) -> str | None:
    return f'<p class="x">{index}\n\u00e9, "quoted"</p>' if index % 3 == 0 else None


def test_export_ndjson_streams_every_job_in_order_with_html(
    client: TestClient, auth: dict[str, str], export_batch: tuple[str, list[str]]
) -> None:
    batch_id, ids = export_batch
    with client.stream(
        "GET", f"/v1/batches/{batch_id}/export", params={"format": "ndjson"}, headers=auth
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        assert resp.headers["content-disposition"] == f'attachment; filename="{batch_id}.ndjson"'
        lines = list(resp.iter_lines())
    jobs = [json.loads(line) for line in lines if line]
    assert len(jobs) == EXPORT_SIZE
    assert [j["id"] for j in jobs] == ids
    assert [j["index"] for j in jobs] == list(range(EXPORT_SIZE))
    for job in jobs:
        index = job["index"]
        assert job["url"] == f"https://example.com/{batch_id}/{index}"
        assert job["html"] == expected_html(index)
        assert job["batch_id"] == batch_id
        assert "attempts" not in job
    assert jobs[3]["status"] == "completed" and jobs[3]["html_length"] == len(expected_html(3) or "")
    assert jobs[7]["status"] == "error" and jobs[7]["error_message"] == 'HTTP 500, "server error"\nagain'
    assert jobs[1]["status"] == "pending"
    # The default format is NDJSON.
    assert client.get(f"/v1/batches/{batch_id}/export", headers=auth).text.count("\n") == EXPORT_SIZE


def test_export_csv_streams_the_metadata(
    client: TestClient, auth: dict[str, str], export_batch: tuple[str, list[str]]
) -> None:
    batch_id, ids = export_batch
    response = client.get(f"/v1/batches/{batch_id}/export", params={"format": "csv"}, headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == f'attachment; filename="{batch_id}.csv"'
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == EXPORT_SIZE
    assert tuple(rows[0]) == EXPORT_CSV_FIELDS
    assert "html" not in rows[0]
    assert [r["id"] for r in rows] == ids
    assert [int(r["index"]) for r in rows] == list(range(EXPORT_SIZE))
    assert (
        rows[3]["status"] == "completed"
        and rows[3]["http_status"] == "200"
        and rows[3]["html_length"] == str(len(expected_html(3) or ""))
    )
    assert rows[3]["success_method"] == "http:direct" and rows[3]["completed_at"].endswith("Z")
    assert rows[7]["status"] == "error" and rows[7]["error_message"] == 'HTTP 500, "server error"\nagain'
    assert rows[7]["attempt"] == "4"
    assert rows[1]["status"] == "pending" and rows[1]["completed_at"] == "" and rows[1]["html_length"] == ""
    assert rows[1]["url"] == f"https://example.com/{batch_id}/1"


def test_export_json_is_paged(
    client: TestClient, auth: dict[str, str], export_batch: tuple[str, list[str]]
) -> None:
    batch_id, ids = export_batch
    seen: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = client.get(
            f"/v1/batches/{batch_id}/export",
            params={"format": "json", "limit": 300, "offset": offset},
            headers=auth,
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-disposition"] == f'attachment; filename="{batch_id}-{offset}.json"'
        page = response.json()
        assert (page["batch_id"], page["total"], page["limit"], page["offset"]) == (
            batch_id,
            EXPORT_SIZE,
            300,
            offset,
        )
        if not page["jobs"]:
            break
        seen.extend(page["jobs"])
        offset += 300
    assert len(seen) == EXPORT_SIZE
    assert [j["id"] for j in seen] == ids
    assert all(j["html"] == expected_html(j["index"]) for j in seen)
    too_many = client.get(
        f"/v1/batches/{batch_id}/export", params={"format": "json", "limit": 501}, headers=auth
    )
    assert too_many.status_code == 422
    bad = client.get(f"/v1/batches/{batch_id}/export", params={"format": "xml"}, headers=auth)
    assert bad.status_code == 422


def test_export_of_an_unknown_batch_is_404(client: TestClient, auth: dict[str, str]) -> None:
    for export_format in ("ndjson", "csv", "json"):
        response = client.get("/v1/batches/nope/export", params={"format": export_format}, headers=auth)
        assert response.status_code == 404
        assert response.json()["code"] == "batch_not_found"


# -- tenants ------------------------------------------------------------------------------------------


def test_another_tenant_gets_404_on_every_new_route(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    job = client.post("/v1/jobs", json={"url": "https://example.com/mine"}, headers=auth).json()
    submit_batch(client, auth, "tenant-a-batch", 3)

    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=other_auth)
    assert response.status_code == 404 and response.json()["code"] == "job_not_found"
    response = client.post("/v1/batches/tenant-a-batch/cancel", headers=other_auth)
    assert response.status_code == 404 and response.json()["code"] == "batch_not_found"
    for export_format in ("ndjson", "csv", "json"):
        response = client.get(
            "/v1/batches/tenant-a-batch/export", params={"format": export_format}, headers=other_auth
        )
        assert response.status_code == 404, export_format
    # Nothing of tenant A's changed.
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["status"] == "pending"
    assert client.get("/v1/batches/tenant-a-batch", headers=auth).json()["counts"]["pending"] == 3
    # And without a key at all: 401.
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 401
    assert client.get("/v1/batches/tenant-a-batch/export").status_code == 401


# -- retention ----------------------------------------------------------------------------------------


def test_the_sweeper_drops_expired_html_and_keeps_the_metadata(
    client: TestClient, auth: dict[str, str], database_url: str, settings: Settings
) -> None:
    old, old_too, fresh, error_old = submit_batch(client, auth, "retention", 4)
    with psycopg.connect(database_url) as conn:
        # Earlier tests' jobs share this database: keep them out of the counts.
        conn.execute("UPDATE crawl_jobs SET html = NULL WHERE batch_id IS DISTINCT FROM 'retention'")
    fakeworker.complete(database_url, [old, old_too], html="<p>page</p>")
    fakeworker.complete(database_url, [fresh], html="<p>new</p>")
    fakeworker.fail(database_url, [error_old], html="<p>denied</p>", http_status=403, error="blocked")
    age(database_url, [old, old_too], "8 days")
    age(database_url, [fresh], "6 days")
    age(database_url, [error_old], "30 days")
    before = row_of(database_url, old)

    # TTL 0 disables retention: nothing is purged, however old.
    off = Settings(**{**settings.model_dump(), "result_ttl": 0})
    report: SweepReport = run_with_manager(off, lambda manager: Sweeper(manager).sweep_once())
    assert report.purged == 0
    assert row_of(database_url, old)["html"] == "<p>page</p>"

    assert settings.result_ttl == 7 * 24 * 3600  # the default
    report = run_with_manager(settings, lambda manager: Sweeper(manager).sweep_once())
    assert report.purged == 3 and report.busy

    after = row_of(database_url, old)
    assert after["html"] is None and after["html_purged_at"] is not None
    kept = (
        "status",
        "html_length",
        "http_status",
        "success_method",
        "final_url",
        "cost",
        "completed_at",
        "updated_at",
    )
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}
    assert row_of(database_url, old_too)["html"] is None
    purged_error = row_of(database_url, error_old)
    assert purged_error["html"] is None and purged_error["error_message"] == "blocked"
    assert purged_error["html_length"] == 13
    untouched = row_of(database_url, fresh)
    assert untouched["html"] == "<p>new</p>" and untouched["html_purged_at"] is None

    # The API still answers the metadata; the HTML is gone.
    body = client.get(f"/v1/jobs/{old}", params={"include_html": True}, headers=auth).json()
    assert body["status"] == "completed" and body["html_length"] == 11 and body["html"] is None
    assert client.get(f"/v1/jobs/{old}/html", headers=auth).status_code == 404

    # A second sweep has nothing left to purge.
    assert run_with_manager(settings, lambda manager: Sweeper(manager).sweep_once()).purged == 0


def test_retention_purges_in_chunks(
    client: TestClient, auth: dict[str, str], database_url: str, settings: Settings
) -> None:
    ids = submit_batch(client, auth, "retention-chunks", 25)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE crawl_jobs SET html = NULL WHERE batch_id IS DISTINCT FROM 'retention-chunks'")
    fakeworker.complete(database_url, ids, html="x")
    age(database_url, ids, "2 hours")
    hour = Settings(**{**settings.model_dump(), "result_ttl": 3600})
    report = run_with_manager(hour, lambda manager: Sweeper(manager, batch_limit=10).sweep_once())
    assert report.purged == 25
    with psycopg.connect(database_url) as conn:
        left = conn.execute("SELECT count(*) FROM crawl_jobs WHERE html IS NOT NULL").fetchone()
    assert left == (0,)

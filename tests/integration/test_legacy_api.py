"""The /functions/v1 contract of the legacy system, field by field (../shared/LEGACY-SYSTEM.md)."""

from __future__ import annotations

import re
import uuid

import psycopg
from fastapi.testclient import TestClient

from crawljobs import testing as fakeworker
from crawljobs.queue import QueueKeys
from crawljobs.testing import drop_queue, queued_ids

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
LEGACY_JOB_ORDER = (
    "id",
    "url",
    "status",
    "created_at",
    "updated_at",
    "completed_at",
    "html_length",
    "processing_time_ms",
    "success_method",
)
LEGACY_JOB_KEYS = set(LEGACY_JOB_ORDER)
# After the nine, two extensions its clients ignore: why a job failed, and how many fetches it took.
LEGACY_JOB_KEYS_AND_EXTENSIONS = {*LEGACY_JOB_KEYS, "error_message", "attempts"}


def complete_job(database_url: str, job_id: str, html: str = "<html>done</html>") -> None:
    """Finish a job as a worker's pipeline does (through the real lifecycle)."""
    fakeworker.complete(database_url, [job_id], html=html, processing_time_ms=1234)


def fail_job(database_url: str, job_id: str) -> None:
    fakeworker.fail(database_url, [job_id], error="HTTP 500")


def test_submit_crawl_job_shape(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/functions/v1/submit-crawl-job",
        json={
            "url": "https://www.example.com/web/browse",
            "premium": False,
            "ultraPremium": True,
            "render": True,
        },
        headers=auth,
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "jobId", "status", "message"}
    assert body["success"] is True
    assert uuid.UUID(body["jobId"])
    assert body["status"] == "pending"
    assert body["message"] == "Job submitted successfully"


def test_get_crawl_job_shape_pending_and_completed(
    client: TestClient, auth: dict[str, str], database_url: str
) -> None:
    job_id = client.post(
        "/functions/v1/submit-crawl-job", json={"url": "https://example.com/a"}, headers=auth
    ).json()["jobId"]

    body = client.get("/functions/v1/get-crawl-job", params={"jobId": job_id}, headers=auth).json()
    assert set(body) == {"success", "job", "html"}
    assert body["success"] is True
    assert set(body["job"]) == LEGACY_JOB_KEYS_AND_EXTENSIONS
    assert tuple(body["job"])[:9] == LEGACY_JOB_ORDER  # the contract's fields first, in its order
    assert body["job"]["error_message"] is None
    assert body["job"]["id"] == job_id
    assert body["job"]["url"] == "https://example.com/a"
    assert body["job"]["status"] == "pending"
    assert ISO.match(body["job"]["created_at"]) and ISO.match(body["job"]["updated_at"])
    assert body["job"]["completed_at"] is None
    assert body["html"] is None

    complete_job(database_url, job_id)
    body = client.get("/functions/v1/get-crawl-job", params={"jobId": job_id}, headers=auth).json()
    assert body["job"]["status"] == "completed"
    assert ISO.match(body["job"]["completed_at"])
    assert body["job"]["html_length"] == len("<html>done</html>")
    assert body["job"]["processing_time_ms"] == 1234
    assert body["job"]["success_method"] == "http:direct"
    assert body["html"] == "<html>done</html>"


def test_submit_batch_shape_and_per_url_failures(client: TestClient, auth: dict[str, str]) -> None:
    urls = [
        "https://example.com/page1",
        "ftp://example.com/file",
        "https://example.com/page2",
        "http://10.0.0.1/admin",
        42,
        "not a url",
        "https://www.example.com/product123",
    ]
    response = client.post(
        "/functions/v1/submit-crawl-jobs-batch",
        json={
            "urls": urls,
            "premium": False,
            "ultraPremium": True,
            "render": True,
            "batchId": "legacy-shape-1",
        },
        headers=auth,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"success", "batchId", "total", "successCount", "failedCount", "failures"}
    assert body["success"] is True
    assert body["batchId"] == "legacy-shape-1"
    assert body["total"] == 7
    assert body["successCount"] == 3
    assert body["failedCount"] == 4
    assert [f["index"] for f in body["failures"]] == [1, 3, 4, 5]
    for failure in body["failures"]:
        assert set(failure) == {"index", "url", "reason"}
        assert failure["reason"]
    assert "private" in body["failures"][1]["reason"]


def test_generated_batch_id(client: TestClient, auth: dict[str, str]) -> None:
    body = client.post(
        "/functions/v1/submit-crawl-jobs-batch", json={"urls": ["https://example.com/x"]}, headers=auth
    ).json()
    assert re.match(r"^batch-[0-9a-f]{16}$", body["batchId"])


def test_get_crawl_jobs_batch_counts_progress_and_urls(
    client: TestClient, auth: dict[str, str], database_url: str
) -> None:
    urls = ["https://example.com/1", "https://example.com/2", "https://example.com/3"]
    client.post(
        "/functions/v1/submit-crawl-jobs-batch", json={"urls": urls, "batchId": "legacy-counts"}, headers=auth
    )
    body = client.get(
        "/functions/v1/get-crawl-jobs-batch", params={"batchId": "legacy-counts"}, headers=auth
    ).json()
    assert set(body) == {"success", "counts", "progress", "urls"}
    assert body["counts"] == {"pending": 3, "processing": 0, "completed": 0, "error": 0, "total": 3}
    assert body["progress"] == 0
    assert [u["url"] for u in body["urls"]] == urls
    assert all(set(u) == LEGACY_JOB_KEYS_AND_EXTENSIONS for u in body["urls"])

    complete_job(database_url, body["urls"][0]["id"])
    body = client.get(
        "/functions/v1/get-crawl-jobs-batch", params={"batchId": "legacy-counts"}, headers=auth
    ).json()
    assert body["counts"] == {"pending": 2, "processing": 0, "completed": 1, "error": 0, "total": 3}
    assert body["progress"] == 33

    fail_job(database_url, body["urls"][1]["id"])
    complete_job(database_url, body["urls"][2]["id"])
    body = client.get(
        "/functions/v1/get-crawl-jobs-batch", params={"batchId": "legacy-counts"}, headers=auth
    ).json()
    assert body["counts"] == {"pending": 0, "processing": 0, "completed": 2, "error": 1, "total": 3}
    assert body["progress"] == 100


def test_list_crawl_job_batches_shape_and_paging(client: TestClient, auth: dict[str, str]) -> None:
    for n in range(3):
        client.post(
            "/functions/v1/submit-crawl-jobs-batch",
            json={"urls": [f"https://example.com/l{n}/{i}" for i in range(n + 1)], "batchId": f"list-{n}"},
            headers=auth,
        )
    body = client.get(
        "/functions/v1/list-crawl-job-batches", params={"limit": 2, "offset": 0}, headers=auth
    ).json()
    assert set(body) == {"batches", "total", "limit", "offset"}
    assert body["limit"] == 2 and body["offset"] == 0
    assert body["total"] >= 3
    assert len(body["batches"]) == 2
    newest = body["batches"][0]
    assert set(newest) == {
        "batch_id",
        "total",
        "pending",
        "processing",
        "completed",
        "error",
        "progress",
        "created_at",
        "last_updated",
    }
    assert newest["batch_id"] == "list-2"
    assert newest["total"] == 3 and newest["pending"] == 3 and newest["progress"] == 0
    assert ISO.match(newest["created_at"]) and ISO.match(newest["last_updated"])

    page2 = client.get(
        "/functions/v1/list-crawl-job-batches", params={"limit": 2, "offset": 2}, headers=auth
    ).json()
    assert page2["offset"] == 2
    assert {b["batch_id"] for b in page2["batches"]}.isdisjoint({b["batch_id"] for b in body["batches"]})

    defaults = client.get("/functions/v1/list-crawl-job-batches", headers=auth).json()
    assert defaults["limit"] == 25 and defaults["offset"] == 0


def test_retry_failed_batch_jobs(
    client: TestClient, auth: dict[str, str], database_url: str, redis_client, settings
) -> None:
    urls = [f"https://example.com/r{i}" for i in range(3)]
    client.post(
        "/functions/v1/submit-crawl-jobs-batch", json={"urls": urls, "batchId": "legacy-retry"}, headers=auth
    )
    jobs = client.get(
        "/functions/v1/get-crawl-jobs-batch", params={"batchId": "legacy-retry"}, headers=auth
    ).json()
    ids = [u["id"] for u in jobs["urls"]]
    fail_job(database_url, ids[0])  # one attempt recorded, failed
    fail_job(database_url, ids[1])
    drop_queue(redis_client, QueueKeys.for_prefix(settings.queue_prefix))

    body = client.post(
        "/functions/v1/retry-failed-batch-jobs", json={"batchId": "legacy-retry"}, headers=auth
    ).json()
    assert body == {"success": True, "count": 2, "message": "Reset 2 failed jobs to pending status"}

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id::text, status, attempt, max_attempts, error_message FROM crawl_jobs WHERE id = ANY(%s::uuid[])",
            (ids[:2],),
        ).fetchall()
        attempts = conn.execute("SELECT count(*) FROM crawl_attempts WHERE job_id = %s", (ids[0],)).fetchone()
    for _id, status, attempt, max_attempts, error_message in rows:
        assert status == "pending"
        assert error_message is None
        assert max_attempts > attempt  # a fresh retry budget
    assert attempts == (1,)  # the history stays
    queued = {str(i) for i in queued_ids(redis_client, QueueKeys.for_prefix(settings.queue_prefix))}
    assert queued == set(ids[:2])

    again = client.post(
        "/functions/v1/retry-failed-batch-jobs", json={"batchId": "legacy-retry"}, headers=auth
    ).json()
    assert again["count"] == 0


def test_legacy_errors(client: TestClient, auth: dict[str, str]) -> None:
    missing = client.get("/functions/v1/get-crawl-job", headers=auth)
    assert missing.status_code == 422
    assert missing.json()["success"] is False
    assert "jobId" in missing.json()["error"]

    unknown = client.get("/functions/v1/get-crawl-job", params={"jobId": str(uuid.uuid4())}, headers=auth)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "job_not_found"

    garbage = client.get("/functions/v1/get-crawl-job", params={"jobId": "not-a-uuid"}, headers=auth)
    assert garbage.status_code == 404

    no_batch = client.get("/functions/v1/get-crawl-jobs-batch", params={"batchId": "nope"}, headers=auth)
    assert no_batch.status_code == 404
    assert no_batch.json()["code"] == "batch_not_found"

    retry_none = client.post("/functions/v1/retry-failed-batch-jobs", json={"batchId": "nope"}, headers=auth)
    assert retry_none.status_code == 404

    wrong_type = client.post(
        "/functions/v1/submit-crawl-job", json={"url": "https://example.com", "render": "yes"}, headers=auth
    )
    assert wrong_type.status_code == 422
    assert "render" in wrong_type.json()["error"]


def test_a_failed_job_says_why_on_the_legacy_routes(
    client: TestClient, auth: dict[str, str], database_url: str
) -> None:
    """The old system promised "detailed error messages for debugging": a failed job carries its message."""
    job_id = client.post(
        "/functions/v1/submit-crawl-job", json={"url": "https://example.com/fails"}, headers=auth
    ).json()["jobId"]
    fail_job(database_url, job_id)
    body = client.get("/functions/v1/get-crawl-job", params={"jobId": job_id}, headers=auth).json()
    assert body["job"]["status"] == "error"
    assert body["job"]["error_message"] == "HTTP 500"
    assert body["job"]["attempts"] == 1


def test_the_reads_take_their_parameters_from_the_query_or_the_body_whatever_the_method(
    client: TestClient, auth: dict[str, str], database_url: str
) -> None:
    """As the old functions did, and as `supabase.functions.invoke` calls them (a POST by default)."""
    job_id = client.post(
        "/functions/v1/submit-crawl-job", json={"url": "https://example.com/either"}, headers=auth
    ).json()["jobId"]
    batch_id = client.post(
        "/functions/v1/submit-crawl-jobs-batch",
        json={"urls": ["https://example.com/e1", "https://example.com/e2"], "batchId": "either-way-1"},
        headers=auth,
    ).json()["batchId"]
    job = "/functions/v1/get-crawl-job"
    for response in (
        client.get(job, params={"jobId": job_id}, headers=auth),
        client.post(job, params={"jobId": job_id}, headers=auth),
        client.post(job, json={"jobId": job_id}, headers=auth),
        # Both name it: the body wins (the query's is a valid string, so nothing is refused).
        client.post(job, params={"jobId": "not-this-one"}, json={"jobId": job_id}, headers=auth),
    ):
        assert response.status_code == 200, response.text
        assert response.json()["job"]["id"] == job_id
    batch = "/functions/v1/get-crawl-jobs-batch"
    paged = client.post(batch, json={"batchId": batch_id, "limit": 1}, headers=auth).json()
    assert paged["counts"]["total"] == 2 and len(paged["urls"]) == 1
    listed = client.post("/functions/v1/list-crawl-job-batches", json={"limit": 1}, headers=auth).json()
    assert listed["limit"] == 1 and len(listed["batches"]) == 1

    # Missing, wrong or unreadable parameters are a 422, never a 500, wherever they are.
    for response in (
        client.post(job, headers=auth),
        client.post(job, json={}, headers=auth),
        client.post(job, json=["jobId"], headers=auth),
        client.post(job, content=b"{not json", headers={**auth, "content-type": "application/json"}),
        client.post(batch, params={"batchId": "bad id!"}, json={"batchId": batch_id}, headers=auth),
        client.post(batch, json={"batchId": batch_id, "limit": 0}, headers=auth),
        client.post("/functions/v1/list-crawl-job-batches", params={"offset": "null"}, headers=auth),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["success"] is False


def test_wait_and_retry_take_their_fields_from_the_query_string_too(
    client: TestClient, auth: dict[str, str], database_url: str
) -> None:
    """`supabase.functions.invoke('wait-for-crawl-job?jobId=…')` sends a POST with no body: the old functions
    read the query string then, and so do these."""
    job_id = client.post(
        "/functions/v1/submit-crawl-job", json={"url": "https://example.com/waited"}, headers=auth
    ).json()["jobId"]
    complete_job(database_url, job_id)
    waited = client.post(
        "/functions/v1/wait-for-crawl-job", params={"jobId": job_id, "maxWaitTimeMs": "1000"}, headers=auth
    )
    assert waited.status_code == 200, waited.text
    assert waited.json()["job"]["status"] == "completed"
    batch_id = client.post(
        "/functions/v1/submit-crawl-jobs-batch",
        json={"urls": ["https://example.com/r1"], "batchId": "retry-by-query"},
        headers=auth,
    ).json()["batchId"]
    body = client.get("/functions/v1/get-crawl-jobs-batch", params={"batchId": batch_id}, headers=auth).json()
    fail_job(database_url, body["urls"][0]["id"])
    retried = client.post("/functions/v1/retry-failed-batch-jobs", params={"batchId": batch_id}, headers=auth)
    assert retried.status_code == 200 and retried.json()["count"] == 1
    assert client.post("/functions/v1/retry-failed-batch-jobs", headers=auth).status_code == 422

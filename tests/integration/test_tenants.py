"""API keys and tenant isolation on every route."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
from fastapi.testclient import TestClient

from crawljobs.config import Settings
from crawljobs.keys import hash_key
from tests.integration.conftest import run_with_manager
from tests.integration.test_webhooks import finish


def test_routes_need_a_key(client: TestClient) -> None:
    for method, path in [
        ("post", "/v1/jobs"),
        ("get", "/v1/batches"),
        ("get", "/functions/v1/list-crawl-job-batches"),
        ("post", "/functions/v1/submit-crawl-job"),
    ]:
        response = getattr(client, method)(path)
        assert response.status_code == 401, path
        assert response.json()["code"] == "unauthorized"
    bad = client.get("/v1/batches", headers={"Authorization": "Bearer cj_wrong"})
    assert bad.status_code == 401


def test_legacy_apikey_header(client: TestClient, api_key: str) -> None:
    assert client.get("/v1/batches", headers={"apikey": api_key}).status_code == 200
    # Supabase clients send an anon JWT as Bearer and the key in apikey: either valid one is enough.
    both = client.get("/v1/batches", headers={"apikey": api_key, "Authorization": "Bearer anon-jwt"})
    assert both.status_code == 200


def test_tenant_isolation_on_every_route(
    settings: Settings, client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    created = client.post("/v1/jobs", json={"url": "https://example.com/mine"}, headers=auth)
    assert created.status_code == 201, created.text
    job = created.json()
    batch = client.post(
        "/v1/batches", json={"urls": ["https://example.com/m"], "batch_id": "tenant-a-batch"}, headers=auth
    )
    assert batch.status_code == 201, batch.text
    run_with_manager(settings, lambda manager: finish(manager, [uuid.UUID(job["id"])]))  # it has HTML now

    # Everything is there for its owner: the other tenant's 404s below are the isolation, not a missing row.
    owner_views = [
        client.get(f"/v1/jobs/{job['id']}", headers=auth),
        client.get(f"/v1/jobs/{job['id']}/html", headers=auth),
        client.get("/functions/v1/get-crawl-job", params={"jobId": job["id"]}, headers=auth),
        client.get("/v1/batches/tenant-a-batch", headers=auth),
        client.post("/v1/batches/tenant-a-batch/retry-failed", headers=auth),
        client.get("/functions/v1/get-crawl-jobs-batch", params={"batchId": "tenant-a-batch"}, headers=auth),
        client.post(
            "/functions/v1/retry-failed-batch-jobs", json={"batchId": "tenant-a-batch"}, headers=auth
        ),
    ]
    assert [r.status_code for r in owner_views] == [200] * len(owner_views), [r.text for r in owner_views]
    own_list = client.get("/v1/batches", headers=auth).json()
    assert "tenant-a-batch" in [b["batch_id"] for b in own_list["batches"]]
    own_legacy_list = client.get("/functions/v1/list-crawl-job-batches", headers=auth).json()
    assert "tenant-a-batch" in [b["batch_id"] for b in own_legacy_list["batches"]]

    assert client.get(f"/v1/jobs/{job['id']}", headers=other_auth).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/html", headers=other_auth).status_code == 404
    assert (
        client.get("/functions/v1/get-crawl-job", params={"jobId": job["id"]}, headers=other_auth).status_code
        == 404
    )
    assert client.get("/v1/batches/tenant-a-batch", headers=other_auth).status_code == 404
    assert client.post("/v1/batches/tenant-a-batch/retry-failed", headers=other_auth).status_code == 404
    assert (
        client.get(
            "/functions/v1/get-crawl-jobs-batch", params={"batchId": "tenant-a-batch"}, headers=other_auth
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/functions/v1/retry-failed-batch-jobs", json={"batchId": "tenant-a-batch"}, headers=other_auth
        ).status_code
        == 404
    )
    other_list = client.get("/v1/batches", headers=other_auth).json()
    assert "tenant-a-batch" not in [b["batch_id"] for b in other_list["batches"]]
    legacy_list = client.get("/functions/v1/list-crawl-job-batches", headers=other_auth).json()
    assert "tenant-a-batch" not in [b["batch_id"] for b in legacy_list["batches"]]
    # The same batch id is free for another tenant (and says nothing about the first one's).
    mine = client.post(
        "/v1/batches",
        json={"urls": ["https://example.com/o"], "batch_id": "tenant-a-batch"},
        headers=other_auth,
    )
    assert mine.status_code == 201


def test_keys_create_prints_the_key_alone_and_stores_a_hash(database_url: str, client: TestClient) -> None:
    env = {"CRAWLJOBS_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "crawljobs.cli", "keys", "create", "cli-key", "--tenant", "cli-tenant"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    key = result.stdout.strip()
    assert result.stdout == key + "\n"
    assert key.startswith("cj_") and len(key) > 40
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT tenant, key_hash FROM api_keys WHERE name = 'cli-key'").fetchone()
        assert row is not None
        assert row[0] == "cli-tenant"
        assert bytes(row[1]) == hash_key(key)
        stored = conn.execute("SELECT count(*) FROM api_keys WHERE key_prefix || '' = %s", (key,)).fetchone()
        assert stored == (0,)  # the key itself is nowhere
    assert client.get("/v1/batches", headers={"Authorization": f"Bearer {key}"}).status_code == 200

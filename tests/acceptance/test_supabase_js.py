"""The legacy routes through the client library the old system's callers really used: ``@supabase/supabase-js``.

``node/drive.mjs`` calls every ``/functions/v1`` route with ``supabase.functions.invoke(name, {body})``, as the
old README's callers did — the read routes also the way such callers really invoke them, as a POST (the
library's default) with the parameters in the query string or the body — and reads an error through
``FunctionsHttpError``. The API runs in this process on loopback; every submitted page is the local test site's.
Node's packages come from ``node/package-lock.json`` (``npm ci``, by ``.ci/run`` or here on first use).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crawljobs import testing as fakeworker
from crawljobs.keys import create_key
from tests.acceptance.conftest import system_settings_for
from tests.acceptance.proxies import TestProxy
from tests.acceptance.site import TestSite
from tests.conftest import drop_prefix
from tests.integration.test_legacy_api import LEGACY_JOB_ORDER
from tests.integration.test_waiting import live_api

NODE = shutil.which("node")
NPM = shutil.which("npm")
FOLDER = Path(__file__).parent / "node"

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="Node.js and npm are not installed (.ci/run installs them in CI)"
)


@pytest.fixture(scope="module")
def supabase_js() -> Path:
    if not (FOLDER / "node_modules" / "@supabase" / "supabase-js").is_dir():
        assert NPM is not None
        subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=FOLDER, check=True, timeout=600)
    return FOLDER


@pytest.fixture
def api_settings(
    database_url: str, redis_url: str, premium_proxy: TestProxy, ultra_proxy: TestProxy
) -> Iterator[Any]:
    settings = system_settings_for(database_url, redis_url, premium_proxy, ultra_proxy)
    yield settings
    drop_prefix(redis_url, settings.queue_prefix)


def test_every_legacy_route_through_supabase_js(
    supabase_js: Path, api_settings: Any, site: TestSite, database_url: str
) -> None:
    key = create_key(database_url, name=f"supabase-{secrets.token_hex(3)}")
    auth = {"Authorization": f"Bearer {key}"}
    with live_api(api_settings) as api, httpx.Client(base_url=api.base, headers=auth) as http:
        # A completed job to read and wait for, and a batch with a failed job to retry.
        done = http.post("/functions/v1/submit-crawl-job", json={"url": site.url("/ok/done")}).json()["jobId"]
        fakeworker.complete(database_url, [done], html="<html>done</html>")
        failed_batch = f"compat-failed-{secrets.token_hex(3)}"
        submitted = http.post(
            "/functions/v1/submit-crawl-jobs-batch",
            json={"urls": [site.url("/ok/f1"), site.url("/ok/f2")], "batchId": failed_batch},
        )
        assert submitted.status_code == 200, submitted.text
        batch_jobs = http.get("/functions/v1/get-crawl-jobs-batch", params={"batchId": failed_batch}).json()
        ids = [job["id"] for job in batch_jobs["urls"]]
        fakeworker.complete(database_url, ids[:1], html="<html>f1</html>")
        fakeworker.fail(database_url, ids[1:], error="HTTP 500")

        assert NODE is not None
        run = subprocess.run(
            [NODE, "drive.mjs", api.base, key, site.url("").rstrip("/"), done, failed_batch],
            cwd=supabase_js,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert run.returncode == 0, run.stderr
    results: dict[str, Any] = json.loads(run.stdout)
    data = {label: result.get("data") for label, result in results.items()}
    failures = {
        label: result for label, result in results.items() if "error" in result and label != "missing"
    }
    assert failures == {}, failures

    assert data["submit"]["success"] is True and data["submit"]["status"] == "pending"
    assert set(data["submit"]) == {"success", "jobId", "status", "message"}
    batch = data["submitBatch"]
    assert (batch["total"], batch["successCount"], batch["failedCount"]) == (3, 2, 1)

    for label in ("getByGet", "getByPostQuery", "getByPostBody"):
        body = data[label]
        assert body["success"] is True and body["html"] == "<html>done</html>", label
        assert tuple(body["job"])[: len(LEGACY_JOB_ORDER)] == LEGACY_JOB_ORDER, label
        assert body["job"]["id"] == done and body["job"]["status"] == "completed", label
    assert data["getPending"]["job"]["status"] == "pending"

    for label in ("batchByGet", "batchByPostBody"):
        counts = data[label]["counts"]
        assert (counts["completed"], counts["error"], counts["total"]) == (1, 1, 2), label
        assert data[label]["progress"] == 100
    for label in ("listByGet", "listByPost"):
        listed = data[label]
        assert {"batches", "total", "limit", "offset"} <= set(listed), label
        assert failed_batch in [b["batch_id"] for b in listed["batches"]], label

    assert data["wait"]["success"] is True and data["wait"]["job"]["status"] == "completed"
    assert isinstance(data["wait"]["waitTime"], int)
    assert data["retry"] == {"success": True, "count": 1, "message": "Reset 1 failed jobs to pending status"}
    assert data["process"]["success"] is True and data["process"]["processed"] == 1

    missing = results["missing"]
    assert missing["error"] == "FunctionsHttpError" and missing["httpError"] is True
    assert missing["status"] == 404
    assert missing["body"]["success"] is False and missing["body"]["error"]

"""The client commands of the CLI driven as a user would: ``python -m crawljobs.cli ...`` in a subprocess,
against the real API (uvicorn on 127.0.0.1 in a thread), checking stdout, stderr and exit codes."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from crawljobs.config import Settings
from crawljobs.keys import create_key
from tests.conftest import drop_prefix
from tests.integration.test_client import URL, ServedApi, finish_jobs, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(database_url: str, redis_url: str) -> Iterator[ServedApi]:
    prefix = f"cjtest:{secrets.token_hex(6)}"
    settings = Settings(
        database_url=database_url, redis_url=redis_url, queue_prefix=prefix, allowed_networks=["127.0.0.1/32"]
    )
    with ServedApi(settings) as api:
        yield api
    drop_prefix(redis_url, prefix)


@pytest.fixture(scope="module")
def key(database_url: str) -> str:
    return create_key(database_url, name="cli-tests")


class Cli:
    def __init__(self, base: str, key: str | None, *, data_dir: Path | None = None) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CRAWLJOBS_")}
        # The data folder of a local `crawljobs up` holds a key the CLI uses when none is set: never the
        # checkout's own .crawljobs here (a developer's `scripts/up` would change what the tests see).
        folder = data_dir or Path(tempfile.gettempdir()) / f"cjcli-none-{secrets.token_hex(4)}"
        self.env.update(CRAWLJOBS_URL=base, COLUMNS="200", NO_COLOR="1", CRAWLJOBS_DATA_DIR=str(folder))
        if key is not None:
            self.env["CRAWLJOBS_API_KEY"] = key

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "crawljobs.cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=ROOT,
            timeout=60,
        )


def finish_once_submitted(database_url: str, select: str, value: str) -> None:
    """Finish the jobs `select` finds, once the CLI (a process that may start slowly) has submitted them."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(select, (value,)).fetchall()
        if rows:
            finish_jobs(database_url, [r[0] for r in rows])
            return
        time.sleep(0.1)


@pytest.fixture
def cli(served: ServedApi, key: str) -> Cli:
    return Cli(served.base, key)


def test_missing_key_is_a_configuration_error(served: ServedApi) -> None:
    result = Cli(served.base, None)("status", "anything")
    assert result.returncode == 2
    assert "CRAWLJOBS_API_KEY is not set" in result.stderr and result.stdout == ""


def test_submit_status_cancel_and_json(cli: Cli, database_url: str) -> None:
    submitted = cli("submit", URL + "?cli", "--render")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    shown = cli("status", job_id, "--json")
    assert shown.returncode == 0
    body = json.loads(shown.stdout)
    assert body["type"] == "job" and body["id"] == job_id and body["status"] == "pending" and body["render"]

    readable = cli("status", job_id)
    assert job_id in readable.stdout and "pending" in readable.stdout

    cancelled = cli("cancel", job_id)
    assert cancelled.returncode == 0 and f"job {job_id}: cancelled" in cancelled.stdout
    assert cli("status", job_id).returncode == 1  # a cancelled job did not succeed

    failed_job = cli("submit", URL + "?cli-error").stdout.strip()
    finish_jobs(database_url, [failed_job], status="error")
    assert cli("status", failed_job).returncode == 1


def test_submit_and_batch_with_a_callback_url(cli: Cli, database_url: str) -> None:
    hook = "http://127.0.0.1:9/hook"
    job_id = cli("submit", URL + "?cli-hook", "--callback-url", hook, "--obey-robots").stdout.strip()
    batch = cli("batch", "-", "--callback-url", hook, "--batch-id", "cli-hooks", stdin=URL + "?b\n")
    assert batch.returncode == 0, batch.stderr
    with psycopg.connect(database_url) as conn:
        job = conn.execute("SELECT callback_url, obey_robots FROM crawl_jobs WHERE id = %s", (job_id,))
        assert job.fetchone() == (hook, True)
        stored = conn.execute("SELECT callback_url FROM crawl_batches WHERE batch_id = 'cli-hooks'")
        assert stored.fetchone() == (hook,)
    refused = cli("submit", URL + "?cli-bad-hook", "--callback-url", "http://127.0.0.2:9/hook")
    assert refused.returncode == 3 and "callback" in refused.stderr.lower(), refused.stderr


def test_submit_wait_success_and_timeout(cli: Cli, database_url: str) -> None:
    def finish_pending() -> None:
        finish_once_submitted(
            database_url,
            "SELECT id::text FROM crawl_jobs WHERE url = %s AND status = 'pending'",
            URL + "?cli-wait",
        )

    timer = threading.Timer(1.5, finish_pending)
    timer.start()
    waited = cli("submit", URL + "?cli-wait", "--wait", "--timeout", "30", "--json")
    timer.join()
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["status"] == "completed"

    timed_out = cli("submit", URL + "?cli-slow", "--wait", "--timeout", "0.5")
    assert timed_out.returncode == 1
    assert "still pending" in timed_out.stderr and "pending" in timed_out.stdout


def test_api_errors_exit_3_with_the_message(cli: Cli, served: ServedApi) -> None:
    missing = cli("status", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 3 and "batch_not_found" in missing.stderr

    refused = cli("submit", "ftp://127.0.0.1/file")
    assert refused.returncode == 3 and "HTTP 422" in refused.stderr

    stranger = Cli(served.base, "not-a-key")("batches")
    assert stranger.returncode == 3 and "HTTP 401" in stranger.stderr

    nowhere = Cli(f"http://127.0.0.1:{free_port()}", "k")("batches")
    assert nowhere.returncode == 3 and "cannot reach" in nowhere.stderr

    assert cli("export", "b", "-o", "x", "--format", "xml").returncode == 2
    assert cli("submit").returncode == 2  # usage


def test_batch_from_stdin_wait_status_retry_export(cli: Cli, database_url: str, tmp_path: Path) -> None:
    urls = "\n".join([f"{URL}?s={i}" for i in range(3)] + ["# a comment", "", "ftp://127.0.0.1/refused"])
    batch_id = f"cli-{secrets.token_hex(4)}"
    submitted = cli("batch", "-", "--batch-id", batch_id, "--json", stdin=urls)
    assert submitted.returncode == 0, submitted.stderr
    body = json.loads(submitted.stdout)
    assert body["batch_id"] == batch_id and body["accepted"] == 3 and body["rejected"] == 1
    assert "refused #3" in submitted.stderr
    ids = [i for i in body["job_ids"] if i]

    finish_jobs(database_url, ids[:2])
    finish_jobs(database_url, ids[2:], status="error")
    status = cli("status", batch_id, "--json")
    assert status.returncode == 1  # done, with a failed job
    assert json.loads(status.stdout)["counts"]["error"] == 1
    assert f"batch {batch_id}: 100% done" in cli("status", batch_id).stdout

    listed = cli("batches", "--json", "--limit", "100")
    assert batch_id in [b["batch_id"] for b in json.loads(listed.stdout)["batches"]]
    assert batch_id in cli("batches", "--limit", "100").stdout

    retried = cli("retry", batch_id)
    assert retried.returncode == 0 and "retried 1 job(s)" in retried.stdout

    out = tmp_path / "export.ndjson"
    exported = cli("export", batch_id, "-o", str(out))
    assert exported.returncode == 0 and f"to {out}" in exported.stderr
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ids
    csv_out = tmp_path / "export.csv"
    assert cli("export", batch_id, "-o", str(csv_out), "--format", "csv").returncode == 0
    assert csv_out.read_text().splitlines()[0].startswith("index,id,url,status")

    cancelled = cli("cancel", batch_id)
    assert cancelled.returncode == 0 and "cancelled 1 job(s)" in cancelled.stdout


def test_batch_file_wait_with_progress(cli: Cli, database_url: str, tmp_path: Path) -> None:
    source = tmp_path / "urls.txt"
    source.write_text("\n".join(f"{URL}?w={i}" for i in range(4)) + "\n")
    batch_id = f"cli-wait-{secrets.token_hex(4)}"

    def finish() -> None:
        finish_once_submitted(database_url, "SELECT id::text FROM crawl_jobs WHERE batch_id = %s", batch_id)

    timer = threading.Timer(1.5, finish)
    timer.start()
    waited = cli("batch", str(source), "--batch-id", batch_id, "--wait", "--timeout", "30")
    timer.join()
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == batch_id
    assert "4/4" in waited.stderr  # the progress bar's last state

    timed_out = cli("batch", str(source), "--wait", "--timeout", "0.5")
    assert timed_out.returncode == 1 and "0% done" in timed_out.stderr

    assert cli("batch", str(tmp_path / "missing.txt")).returncode == 2


def test_the_key_up_saved_is_used_for_a_local_api_only(served: ServedApi, key: str, tmp_path: Path) -> None:
    (tmp_path / "api-key").write_text(key + "\n")
    local = Cli(served.base, None, data_dir=tmp_path)("batches", "--json")
    assert local.returncode == 0, local.stderr
    # Another machine's API never gets this machine's key: the CLI stops before sending anything.
    remote = Cli("http://crawljobs.invalid:8000", None, data_dir=tmp_path)("batches")
    assert remote.returncode == 2 and "CRAWLJOBS_API_KEY is not set" in remote.stderr


def test_html_prints_or_writes_a_jobs_page(cli: Cli, database_url: str, tmp_path: Path) -> None:
    job_id = cli("submit", URL + "?html").stdout.strip()
    finish_jobs(database_url, [job_id])
    printed = cli("html", job_id)
    assert printed.returncode == 0 and printed.stdout == f"<html>{job_id}</html>"
    out = tmp_path / "page.html"
    written = cli("html", job_id, "-o", str(out))
    assert written.returncode == 0 and out.read_text() == f"<html>{job_id}</html>"
    pending = cli("html", cli("submit", URL + "?no-html-yet").stdout.strip())
    assert pending.returncode == 3  # no page yet: the API's 404, with its message


def test_batches_piped_are_whole_and_tab_separated(cli: Cli) -> None:
    batch_id = f"cli-a-long-batch-id-that-a-terminal-table-would-cut-{secrets.token_hex(4)}"
    assert cli("batch", "-", "--batch-id", batch_id, stdin=URL + "?long").returncode == 0
    lines = cli("batches", "--limit", "1000").stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["batch", "created", "total"]
    assert [line.split("\t")[0] for line in lines].count(batch_id) == 1


def test_json_timestamps_are_the_apis(cli: Cli, served: ServedApi, key: str) -> None:
    job_id = cli("submit", URL + "?time").stdout.strip()
    ours = json.loads(cli("status", job_id, "--json").stdout)["created_at"]
    theirs = httpx.get(f"{served.base}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()
    assert ours == theirs["created_at"] and ours.endswith("Z")


@pytest.mark.parametrize(
    "command", [[], ["submit"], ["batch"], ["batches"], ["html"], ["export"], ["keys", "create"]]
)
def test_help_reads_well(cli: Cli, command: list[str]) -> None:
    shown = cli(*command, "--help")
    assert shown.returncode == 0
    assert "<bool>" not in shown.stdout and "<str>" not in shown.stdout, shown.stdout
    if not command:
        assert "CRAWLJOBS_URL" in shown.stdout and "CRAWLJOBS_API_KEY" in shown.stdout


def test_submit_and_batch_with_render_waits(cli: Cli, database_url: str) -> None:
    job_id = cli("submit", URL + "?cli-wait-for", "--render", "--wait-for", "#price", "--wait-ms", "1200")
    assert job_id.returncode == 0, job_id.stderr
    batch = cli("batch", "-", "--wait-ms", "300", "--batch-id", "cli-waits", stdin=URL + "?w\n")
    assert batch.returncode == 0, batch.stderr
    with psycopg.connect(database_url) as conn:
        job = conn.execute("SELECT wait_for, wait_ms FROM crawl_jobs WHERE id = %s", (job_id.stdout.strip(),))
        assert job.fetchone() == ("#price", 1200)
        batch_job = conn.execute("SELECT wait_for, wait_ms FROM crawl_jobs WHERE batch_id = 'cli-waits'")
        assert batch_job.fetchone() == (None, 300)
    too_long = cli("submit", URL + "?cli-wait-long", "--wait-ms", "999999")
    assert too_long.returncode == 3 and "CRAWLJOBS_RENDER_MAX_WAIT_MS" in too_long.stderr, too_long.stderr

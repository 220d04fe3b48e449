"""A stopping API process answers its open waits and ends its event streams at once, instead of staying up for
as long as they would have waited (up to CRAWLJOBS_MAX_WAIT_SECONDS; a stream, as long as its batch runs).

No worker runs here: the jobs stay pending, so every wait is still waiting when the API process gets SIGTERM.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import httpx
import psutil
import pytest

from bench.common import api_process
from crawljobs.keys import create_key
from tests.faults.harness import api_child

pytestmark = [pytest.mark.faults]

WAIT_SECONDS = 300  # what the clients ask for; the process must stop long before


def test_a_stopping_api_answers_its_waits_and_ends_its_streams(
    database_url: str, redis_url: str, redis_prefix: str
) -> None:
    key = create_key(database_url, name="shutdown")
    auth = {"Authorization": f"Bearer {key}"}
    env = {"allowed_networks": "127.0.0.1/32", "queue_prefix": redis_prefix}
    answers: dict[str, Any] = {}

    def ask(name: str, method: str, url: str, **kwargs: Any) -> None:
        try:
            with httpx.Client(headers=auth, timeout=WAIT_SECONDS + 30) as http:
                response = http.request(method, url, **kwargs)
                answers[name] = (response.status_code, response.json())
        except Exception as exc:
            answers[name] = exc

    def follow(url: str, first_event: threading.Event) -> None:
        lines: list[str] = []
        try:
            with (
                httpx.Client(headers=auth, timeout=WAIT_SECONDS + 30) as http,
                http.stream("GET", url) as response,
            ):
                for line in response.iter_lines():
                    lines.append(line)
                    first_event.set()
            answers["events"] = lines
        except Exception as exc:
            answers["events"] = exc
        finally:
            first_event.set()

    with api_process(database_url, redis_url, key=key, **env) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        job = httpx.post(f"{base}/v1/jobs", json={"url": "http://127.0.0.1:9/stays-pending"}, headers=auth)
        batch = httpx.post(f"{base}/v1/batches", json={"urls": ["http://127.0.0.1:9/a"]}, headers=auth)
        assert job.status_code == 201 and batch.status_code == 201, (job.text, batch.text)
        job_id, batch_id = job.json()["id"], batch.json()["batch_id"]
        streaming = threading.Event()
        threads = [
            threading.Thread(
                target=ask,
                args=("job", "GET", f"{base}/v1/jobs/{job_id}/wait"),
                kwargs={"params": {"timeout": WAIT_SECONDS}},
            ),
            threading.Thread(
                target=ask,
                args=("batch", "GET", f"{base}/v1/batches/{batch_id}/wait"),
                kwargs={"params": {"timeout": WAIT_SECONDS}},
            ),
            threading.Thread(
                target=ask,
                args=("legacy", "POST", f"{base}/functions/v1/wait-for-crawl-job"),
                kwargs={"json": {"jobId": job_id, "maxWaitTimeMs": WAIT_SECONDS * 1000}},
            ),
            threading.Thread(target=follow, args=(f"{base}/v1/batches/{batch_id}/events", streaming)),
        ]
        for thread in threads:
            thread.start()
        server = api_child(port)
        deadline = time.monotonic() + 60
        # Every client connected, and one more request answered after that: the server has read theirs.
        while len([c for c in server.net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED]) < 4:
            assert time.monotonic() < deadline, "the clients did not connect"
            time.sleep(0.05)
        assert streaming.wait(60)
        assert httpx.get(f"{base}/healthz").status_code == 200

        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(60)  # it would take WAIT_SECONDS if it waited for its waits
        for thread in threads:
            thread.join(60)

    assert exit_code in (0, -signal.SIGTERM), exit_code  # it stopped by itself, it was not killed
    for name in ("job", "batch", "legacy"):
        assert not isinstance(answers[name], Exception), (name, answers[name])
    status, body = answers["job"]
    assert (status, body["status"], body["timed_out"]) == (200, "pending", True)
    status, body = answers["batch"]
    assert (status, body["timed_out"]) == (200, True)
    status, body = answers["legacy"]
    assert (status, body.get("timedOut")) == (200, True)
    events = answers["events"]
    assert not isinstance(events, Exception), events
    assert "event: counts" in events and "event: done" not in events, events

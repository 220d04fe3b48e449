"""The Python client (`crawljobs.client`) against the real API: uvicorn on a free 127.0.0.1 port in a thread,
on real PostgreSQL and Redis. No worker runs: the tests finish jobs as a worker's pipeline would (UPDATE the
rows and ``pg_notify`` their ids and batches in one transaction). Only ``http://127.0.0.1:9/...`` URLs are submitted
(allowed by ``CRAWLJOBS_ALLOWED_NETWORKS=127.0.0.1/32``), so nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import FrozenInstanceError
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn

from crawljobs import testing as fakeworker
from crawljobs.client import (
    AsyncClient,
    Client,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    Job,
    NotFound,
    Unauthorized,
    WaitTimeout,
)
from crawljobs.config import Settings
from crawljobs.keys import create_key, hash_key
from service.app import create_app
from tests.conftest import drop_prefix
from tests.integration.conftest import fake_resolver

URL = "http://127.0.0.1:9/page"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServedApi:
    """The real app served by uvicorn on loopback in a thread, for the whole test module."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings, resolver=fake_resolver)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="client-test-api", daemon=True)

    def __enter__(self) -> ServedApi:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("the API did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def waiters(self) -> int:
        """How many waits the API's completion hub holds now (read from this thread: a concurrent change of
        its registry is read again)."""
        while True:
            try:
                count: int = self.app.state.hub.waiters
                return count
            except RuntimeError:  # the registry changed size while it was counted
                continue


def finish_jobs(database_url: str, ids: Sequence[str], *, status: str = "completed") -> None:
    """Finish jobs as the worker's pipeline does (claimed, written and NOTIFYd through the real lifecycle), each
    completed one with the page ``<html>{id}</html>``."""
    if status == "completed":
        fakeworker.complete(database_url, ids, html=lambda job: f"<html>{job.id}</html>")
    else:
        fakeworker.fail(database_url, ids)


def once(
    condition: Callable[[], bool], action: Callable[[], None], *, seconds: float = 15.0
) -> threading.Thread:
    """Run `action` in a thread as soon as `condition` holds (polled, with a deadline), so that a finish lands
    while the client is really waiting. Past the deadline it gives up: the wait under test then times out."""

    def run() -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def finish_when_waited(
    served: ServedApi, database_url: str, ids: Sequence[str], **kwargs: str
) -> threading.Thread:
    """Finish the jobs once the API holds one more wait than now (the client's, about to be made)."""
    before = served.waiters()
    return once(lambda: served.waiters() > before, lambda: finish_jobs(database_url, ids, **kwargs))


@pytest.fixture(scope="module")
def api_settings(database_url: str, redis_url: str) -> Iterator[Settings]:
    prefix = f"cjtest:{secrets.token_hex(6)}"
    yield Settings(
        database_url=database_url,
        redis_url=redis_url,
        queue_prefix=prefix,
        allowed_networks=["127.0.0.1/32"],
    )
    drop_prefix(redis_url, prefix)


@pytest.fixture(scope="module")
def served(api_settings: Settings) -> Iterator[ServedApi]:
    with ServedApi(api_settings) as api:
        yield api


@pytest.fixture(scope="module")
def key(database_url: str) -> str:
    return create_key(database_url, name="client-tests")


@pytest.fixture
def client(served: ServedApi, key: str) -> Iterator[Client]:
    with Client(served.base, key, timeout=10) as c:
        yield c


def test_submit_get_and_typed_results(client: Client) -> None:
    job = client.submit(URL + "?one", render=True, max_retries=2)
    assert isinstance(job, Job)
    assert job.status == "pending" and not job.is_final
    assert job.url == URL + "?one" and job.render and not job.premium
    assert job.max_retries == 2 and job.created_at is not None
    with pytest.raises(FrozenInstanceError):
        job.status = "completed"  # type: ignore[misc]
    again = client.get(job.id)
    assert again.id == job.id and again.html is None


def test_render_waits_are_submitted_and_read_back(client: Client) -> None:
    job = client.submit(URL + "?waits", render=True, wait_for="#price", wait_ms=800)
    assert job.wait_for == "#price" and job.wait_ms == 800
    assert client.get(job.id).wait_ms == 800
    batch = client.submit_batch([URL + "?waits-batch"], wait_for="main")
    assert client.get(str(batch.job_ids[0])).wait_for == "main"
    with pytest.raises(InvalidRequest) as refused:
        client.submit(URL + "?waits-bad", wait_ms=-5)
    assert refused.value.status == 422


def test_configured_by_environment(served: ServedApi, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLJOBS_URL", served.base)
    monkeypatch.setenv("CRAWLJOBS_API_KEY", key)
    with Client() as c:
        assert c.base_url == served.base
        assert c.batches(limit=1).limit == 1


def test_idempotency_key_replays_and_conflicts(client: Client) -> None:
    token = secrets.token_hex(8)
    first = client.submit(URL + "?idem", idempotency_key=token)
    assert client.submit(URL + "?idem", idempotency_key=token).id == first.id
    batch_token = secrets.token_hex(8)
    replayed = client.submit_batch([URL + "?idem"], idempotency_key=batch_token)
    assert client.submit_batch([URL + "?idem"], idempotency_key=batch_token).batch_id == replayed.batch_id
    with pytest.raises(Conflict) as caught:
        client.submit_batch([URL + "?other"], idempotency_key=batch_token)
    assert caught.value.status == 409 and caught.value.code == "idempotency_conflict"


def test_typed_errors(served: ServedApi, client: Client) -> None:
    with Client(served.base, "not-a-key") as stranger, pytest.raises(Unauthorized) as unauthorized:
        stranger.submit(URL)
    assert unauthorized.value.status == 401 and unauthorized.value.code == "unauthorized"

    with pytest.raises(NotFound) as missing:
        client.get("00000000-0000-0000-0000-000000000000")
    assert missing.value.status == 404 and missing.value.code == "job_not_found"
    with pytest.raises(NotFound) as missing_batch:
        client.get_batch("no-such-batch")
    assert missing_batch.value.code == "batch_not_found"

    with pytest.raises(InvalidRequest) as invalid:
        client.submit("ftp://127.0.0.1/file")
    assert invalid.value.status == 422 and invalid.value.message

    batch_id = f"dup-{secrets.token_hex(4)}"
    client.submit_batch([URL], batch_id=batch_id)
    with pytest.raises(Conflict) as taken:
        client.submit_batch([URL], batch_id=batch_id)
    assert taken.value.code == "batch_exists"

    with Client(f"http://127.0.0.1:{free_port()}", "k") as nowhere, pytest.raises(ConnectionFailed):
        nowhere.get("00000000-0000-0000-0000-000000000000")


def test_wait_is_released_by_completion(client: Client, served: ServedApi, database_url: str) -> None:
    job = client.submit(URL + "?wait")
    finisher = finish_when_waited(served, database_url, [job.id])
    started = time.monotonic()
    done = client.wait(job.id, timeout=20)
    assert time.monotonic() - started < 10
    finisher.join()
    assert done.ok and done.status == "completed" and done.success_method == "http:direct"
    assert client.get(job.id, include_html=True).html == f"<html>{job.id}</html>"
    assert client.html(job.id) == f"<html>{job.id}</html>"


def test_legacy_pattern_submit_then_wait(client: Client, served: ServedApi, database_url: str) -> None:
    """The documented two-liner: submit, wait with a timeout, carry on."""
    before = served.waiters()
    finisher = once(
        lambda: served.waiters() > before, lambda: finish_jobs(database_url, _pending_ids(database_url))
    )
    job = client.wait(client.submit(URL + "?legacy").id, timeout=20)
    finisher.join()
    assert job.status == "completed"


def _pending_ids(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id::text FROM crawl_jobs WHERE url LIKE %s AND status = 'pending'", ("%?legacy",)
        ).fetchall()
    return [row[0] for row in rows]


def test_wait_timeout_carries_the_job(client: Client) -> None:
    job = client.submit(URL + "?slow")
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        client.wait(job.id, timeout=0.5)
    assert 0.4 < time.monotonic() - started < 8
    assert caught.value.job is not None and caught.value.job.id == job.id
    assert caught.value.job.status == "pending"


def test_wait_on_an_unknown_job_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        client.wait("00000000-0000-0000-0000-000000000000", timeout=1)


def test_batch_submit_wait_iterate_and_page(client: Client, served: ServedApi, database_url: str) -> None:
    urls = [f"{URL}?b={i}" for i in range(5)] + ["ftp://127.0.0.1/refused"]
    submission = client.submit_batch(urls, premium=True)
    assert submission.total == 6 and submission.accepted == 5 and submission.rejected == 1
    assert submission.failures[0].index == 5 and submission.job_ids[5] is None
    ids = [i for i in submission.job_ids if i is not None]

    with pytest.raises(WaitTimeout) as caught:
        client.wait_batch(submission.batch_id, timeout=0.3)
    assert caught.value.batch is not None and caught.value.batch.counts.pending == 5

    finish_when_waited(served, database_url, ids[:4])
    finish_when_waited(served, database_url, ids[4:], status="error")
    batch = client.wait_batch(submission.batch_id, timeout=20)
    assert batch.is_done and batch.progress == 100
    assert (batch.counts.completed, batch.counts.error, batch.counts.total) == (4, 1, 5)

    results = list(client.iter_results(submission.batch_id))
    assert [job.id for job in results] == ids
    assert [job.index for job in results] == [0, 1, 2, 3, 4]
    assert results[0].html == f"<html>{ids[0]}</html>" and results[4].status == "error"

    page = client.get_batch(submission.batch_id, status="error")
    assert [job.id for job in page.jobs] == ids[4:]
    listed = client.batches(limit=100)
    assert submission.batch_id in [b.batch_id for b in listed.batches]
    assert listed.total >= 1 and listed.limit == 100

    assert client.retry_failed(submission.batch_id) == 1
    assert client.get(ids[4]).status == "pending"


def test_follow_a_batch_as_it_progresses(client: Client, database_url: str) -> None:
    submission = client.submit_batch([f"{URL}?follow={i}" for i in range(3)])
    ids = [i for i in submission.job_ids if i is not None]
    events = client.follow(submission.batch_id, timeout=20)
    first = next(events)
    assert (first.counts.pending, first.counts.total, first.progress, first.done) == (3, 3, 0, False)
    finish_jobs(database_url, ids[:1])  # the stream is subscribed: it sent its first event
    second = next(events)
    assert (second.counts.completed, second.progress, second.done) == (1, 33, False)
    finish_jobs(database_url, ids[1:], status="error")
    rest = list(events)
    assert rest[-1].done and rest[-1].counts.error == 2 and rest[-1].progress == 100

    quiet = client.submit_batch([URL + "?follow-quiet"])
    with pytest.raises(WaitTimeout):
        list(client.follow(quiet.batch_id, timeout=0.5))

    async def through_async() -> list[tuple[int, bool]]:
        async with AsyncClient(client.base_url, client.api_key, timeout=10) as c:
            return [(p.progress, p.done) async for p in c.follow(submission.batch_id)]

    # A finished batch: its counts, then done.
    assert asyncio.run(through_async()) == [(100, False), (100, True)]


def test_cancel_job_and_batch(client: Client) -> None:
    job = client.submit(URL + "?cancel")
    assert client.cancel(job.id).status == "cancelled"
    assert client.cancel(job.id).status == "cancelled"  # twice is harmless
    submission = client.submit_batch([f"{URL}?c={i}" for i in range(3)])
    assert client.cancel_batch(submission.batch_id) == 3
    assert client.get_batch(submission.batch_id).counts.cancelled == 3
    with pytest.raises(NotFound):
        client.cancel_batch("no-such-batch")


def test_export_to_files(client: Client, database_url: str, tmp_path: Path) -> None:
    submission = client.submit_batch([f"{URL}?e={i}" for i in range(3)])
    ids = [i for i in submission.job_ids if i is not None]
    finish_jobs(database_url, ids)

    ndjson = tmp_path / "out.ndjson"
    written = client.export(submission.batch_id, ndjson)
    assert written == ndjson.stat().st_size > 0
    lines = [json.loads(line) for line in ndjson.read_text().splitlines()]
    assert [line["id"] for line in lines] == ids and lines[0]["html"] == f"<html>{ids[0]}</html>"

    csv_path = tmp_path / "out.csv"
    client.export(submission.batch_id, csv_path, format="csv")
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [row["id"] for row in rows] == ids and rows[0]["status"] == "completed"

    json_path = tmp_path / "out.json"
    client.export(submission.batch_id, json_path, format="json")
    assert [job["id"] for job in json.loads(json_path.read_text())] == ids

    with pytest.raises(NotFound):
        client.export("no-such-batch", tmp_path / "none.ndjson")


def test_async_client(served: ServedApi, key: str, database_url: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(served.base, key, timeout=10) as c:
            job = await c.submit(URL + "?async")
            assert (await c.get(job.id)).status == "pending"
            with pytest.raises(WaitTimeout):
                await c.wait(job.id, timeout=0.3)
            finish_when_waited(served, database_url, [job.id])
            assert (await c.wait(job.id, timeout=20)).ok

            submission = await c.submit_batch([f"{URL}?a={i}" for i in range(2)])
            ids = [i for i in submission.job_ids if i is not None]
            finish_when_waited(served, database_url, ids)
            assert (await c.wait_batch(submission.batch_id, timeout=20)).is_done
            assert [j.id async for j in c.iter_results(submission.batch_id)] == ids
            buffer = io.BytesIO()
            await c.export(submission.batch_id, buffer, format="csv")
            assert buffer.getvalue().count(b"\n") == 3
            assert (await c.batches(limit=5)).batches
            assert await c.retry_failed(submission.batch_id) == 0
            other = await c.submit(URL + "?async-cancel")
            assert (await c.cancel(other.id)).status == "cancelled"
            assert await c.cancel_batch(submission.batch_id) == 0
            with pytest.raises(NotFound):
                await c.get("00000000-0000-0000-0000-000000000000")

    asyncio.run(scenario())


def test_callback_url_robots_and_the_delivery_log(client: Client, database_url: str) -> None:
    hook = "http://127.0.0.1:9/hook"
    job = client.submit(URL + "?hook", callback_url=hook, obey_robots=True)
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT callback_url, obey_robots FROM crawl_jobs WHERE id = %s", (job.id,))
        assert row.fetchone() == (hook, True)
    assert client.deliveries(job_id=job.id) == []
    fakeworker.complete(database_url, [job.id])

    [delivery] = client.deliveries(job_id=job.id)
    assert (delivery.event, delivery.status, delivery.url, delivery.attempts) == (
        "job.completed",
        "pending",  # no sweeper runs here: nothing is sent
        hook,
        0,
    )
    assert delivery.payload["job"]["id"] == job.id and delivery.created_at is not None
    assert client.webhook_secret().startswith("whsec_")
    assert client.webhook_secret() == client.webhook_secret()
    with pytest.raises(InvalidRequest) as refused:
        client.submit(URL + "?bad-hook", callback_url="http://127.0.0.2:9/hook")
    assert refused.value.status == 422

    batch = client.submit_batch([URL + "?hook-batch"], callback_url=hook, batch_id="client-hooks")
    fakeworker.complete(database_url, [i for i in batch.job_ids if i])
    events = sorted(d.event for d in client.deliveries(batch_id="client-hooks"))
    assert events == ["batch.completed", "job.completed"]

    async def through_async() -> None:
        async with AsyncClient(client.base_url, client.api_key, timeout=10) as c:
            assert len(await c.deliveries(batch_id="client-hooks", limit=1)) == 1
            assert await c.webhook_secret() == client.webhook_secret()
            other = await c.submit(URL + "?async-hook", callback_url=hook)
            with psycopg.connect(database_url) as conn:
                found = conn.execute("SELECT callback_url FROM crawl_jobs WHERE id = %s", (other.id,))
                assert found.fetchone() == (hook,)

    asyncio.run(through_async())


class WithoutWaitRoutes(httpx.HTTPTransport):
    """A server from before the wait routes: they answer the router's own 404 (`not_found`). Counts the
    refused waits, after which the client polls."""

    refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/wait"):
            self.refused += 1
            body = {"success": False, "code": "not_found", "error": "Not Found"}
            return httpx.Response(404, json=body, request=request)
        return super().handle_request(request)


def test_wait_falls_back_to_polling_without_the_wait_routes(
    served: ServedApi, key: str, database_url: str
) -> None:
    transport = WithoutWaitRoutes()
    with Client(served.base, key, poll_interval=0.1, transport=transport) as c:
        job = c.submit(URL + "?poll")
        with pytest.raises(WaitTimeout):
            c.wait(job.id, timeout=0.3)
        refused = transport.refused
        once(lambda: transport.refused > refused, lambda: finish_jobs(database_url, [job.id]))
        assert c.wait(job.id, timeout=20).ok
        submission = c.submit_batch([URL + "?poll-batch"])
        refused = transport.refused
        ids = [i for i in submission.job_ids if i]
        once(lambda: transport.refused > refused, lambda: finish_jobs(database_url, ids))
        assert c.wait_batch(submission.batch_id, timeout=20).is_done


def test_following_with_a_key_revoked_meanwhile_raises_unauthorized(
    database_url: str, redis_url: str
) -> None:
    """The server ends a stream whose key was revoked with `event: error`; the client raises it (it used to end
    the iteration silently, as if the stream had simply stopped)."""
    prefix = f"cjtest:{secrets.token_hex(6)}"
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        queue_prefix=prefix,
        allowed_networks=["127.0.0.1/32"],
        key_recheck_seconds=0.3,
    )
    key = create_key(database_url, name=f"revoked-{secrets.token_hex(3)}")
    with ServedApi(settings) as api, Client(api.base, key, timeout=10) as client:
        batch = client.submit_batch([URL + "?revoked"])
        events = client.follow(batch.batch_id, timeout=20)
        assert next(events).done is False
        with psycopg.connect(database_url) as conn:
            conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_hash = %s", (hash_key(key),))
        with pytest.raises(Unauthorized) as raised:
            list(events)
    assert raised.value.code == "unauthorized" and "revoked" in raised.value.message
    drop_prefix(redis_url, prefix)

"""Waiting without polling against real PostgreSQL (issue 4, items 1 and 2): job, batch and legacy waits, SSE.

The API runs for real (uvicorn on a free 127.0.0.1 port, in a thread) so that waits are in flight while the
test plays the worker from another connection: UPDATE the rows to final and NOTIFY their ids in one
transaction, as ``store.finish_jobs`` does. The app runs in the test's process: a test can watch the server's
reads (`recorded`) to know that a wait has seen a state, instead of sleeping and hoping it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI

from crawljobs import store, waiting
from crawljobs import testing as fakeworker
from crawljobs.config import Settings
from crawljobs.hub import CompletionHub
from crawljobs.models import Batch, Job
from crawljobs.queries import query
from crawljobs.store import events as store_events
from service import streams
from service.app import create_app
from service.render import LEGACY_JOB_FIELDS
from tests.integration.conftest import fake_resolver

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveApi:
    """The app served by uvicorn on loopback in a thread: ``base`` URL, the ``app`` and its ``hub``."""

    def __init__(self, settings: Settings) -> None:
        self.app: FastAPI = create_app(settings, resolver=fake_resolver)
        self.base = f"http://127.0.0.1:{free_port()}"
        port = int(self.base.rsplit(":", 1)[1])
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", backlog=4096
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-api", daemon=True)

    @property
    def hub(self) -> CompletionHub:
        hub: CompletionHub = self.app.state.hub
        return hub

    def start(self) -> None:
        self.thread.start()
        until(lambda: self.server.started, what="the API to start")
        until(self.hub.listening.is_set, what="the hub to LISTEN")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def waiters(self) -> int:
        while True:
            try:
                return self.hub.waiters
            except RuntimeError:  # the server's thread changed the dict while it was counted
                continue


def until(condition: Callable[[], object], *, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def live_api(settings: Settings) -> Iterator[LiveApi]:
    api = LiveApi(settings)
    api.start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def api(settings: Settings) -> Iterator[LiveApi]:
    with live_api(settings) as running:
        yield running


@pytest.fixture
def http(api: LiveApi, auth: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base, headers=auth, timeout=60) as client:
        yield client


@pytest.fixture
def background() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


def submit_job(http: httpx.Client, path: str = "x") -> str:
    response = http.post("/v1/jobs", json={"url": f"https://example.com/{path}"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def submit_batch(http: httpx.Client, batch_id: str, n: int) -> list[str]:
    urls = [f"https://example.com/{batch_id}/{i}" for i in range(n)]
    response = http.post("/v1/batches", json={"urls": urls, "batch_id": batch_id})
    assert response.status_code == 201, response.text
    return [str(i) for i in response.json()["job_ids"]]


def finish(database_url: str, ids: Sequence[str], status: str = "completed") -> None:
    """What a worker does: claim the jobs, write their results and NOTIFY their ids and batches, in one
    transaction (through the real lifecycle: tests/fakeworker.py)."""
    if status == "completed":
        fakeworker.complete(database_url, ids, processing_time_ms=12)
    else:
        fakeworker.fail(database_url, ids)


def notify(conn: psycopg.Connection[Any], ids: Sequence[str], batch_ids: Sequence[str | None] = ()) -> None:
    """NOTIFY the ids and batches as the store does (with the transaction of ``conn``)."""
    payloads = store.notify_payloads(ids, batch_ids)
    conn.execute(query("notify_jobs"), {"channel": store.NOTIFY_CHANNEL, "payloads": payloads})


def backends(database_url: str, exclude: Sequence[int] = ()) -> int:
    """Connections open to the test's database, other than the ones named (and this query's own)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND NOT (pid = ANY(%s))",
            (list(exclude),),
        ).fetchone()
    assert row is not None
    return int(row[0])


def start_wait(
    background: ThreadPoolExecutor, http: httpx.Client, path: str, api: LiveApi, **params: Any
) -> Future[httpx.Response]:
    """Start a GET wait in the background and return once the server holds it (its waiter registered)."""
    before = api.waiters()
    future = background.submit(http.get, path, params=params)
    until(lambda: api.waiters() > before or future.done(), what="the waiter to register")
    return future


def recorded(monkeypatch: pytest.MonkeyPatch, owner: object, method: str) -> queue.Queue[T]:
    """What the live app's ``owner.method`` (a coroutine method) answers from now on, each answer put in the
    returned queue as it is returned."""
    answers: queue.Queue[T] = queue.Queue()
    original: Callable[..., Awaitable[T]] = getattr(owner, method)

    async def recording(*args: Any, **kwargs: Any) -> T:
        answer = await original(*args, **kwargs)
        answers.put(answer)
        return answer

    monkeypatch.setattr(owner, method, recording)
    return answers


def next_answer(answers: queue.Queue[T], condition: Callable[[T], bool], *, what: str) -> T:
    """The first answer recorded that meets ``condition``, waiting for it up to 10 s."""
    deadline = time.monotonic() + 10
    while True:
        try:
            answer = answers.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"timed out waiting for {what}") from None
        if condition(answer):
            return answer


# -- /v1/jobs/{id}/wait ---------------------------------------------------------------------------


def test_waiter_is_released_by_a_completion(
    api: LiveApi,
    http: httpx.Client,
    background: ThreadPoolExecutor,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings.database_url is not None
    reads: queue.Queue[Job] = recorded(monkeypatch, api.app.state.job_reader, "read")
    job_id = submit_job(http)
    future = start_wait(background, http, f"/v1/jobs/{job_id}/wait", api, timeout=30)
    held_from = time.monotonic()  # the server's wait had begun: its waiter is registered
    # A notification is only a hint: the waiter re-reads its job, finds it pending, and waits on.
    with psycopg.connect(settings.database_url) as conn:
        notify(conn, [job_id])
    for _ in range(2):  # its first read, and the one after the hint (in whichever order they came)
        assert reads.get(timeout=10).status == "pending"
    assert not future.done()
    finished_at = time.monotonic()
    finish(settings.database_url, [job_id])
    response = future.result(10)
    answered = time.monotonic() - finished_at
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == job_id
    assert body["status"] == "completed"
    assert body["html_length"] == 9
    assert body["timed_out"] is False
    assert body["waited_ms"] >= int((finished_at - held_from) * 1000)  # it answered after the completion
    assert "attempts" in body
    assert answered < 5  # woken by the NOTIFY, far from the 30 s timeout
    assert api.waiters() == 0


def test_wait_that_times_out_says_so_and_returns_the_job_as_it_stands(
    api: LiveApi, http: httpx.Client
) -> None:
    job_id = submit_job(http)
    started = time.monotonic()
    response = http.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 0.5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["timed_out"] is True
    assert body["status"] == "pending"
    assert body["id"] == job_id
    assert 500 <= body["waited_ms"] < 5000
    assert time.monotonic() - started >= 0.5
    assert api.waiters() == 0


def test_a_final_job_answers_at_once(http: httpx.Client, settings: Settings) -> None:
    assert settings.database_url is not None
    job_id = submit_job(http)
    finish(settings.database_url, [job_id], status="error")
    started = time.monotonic()
    response = http.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 60})
    assert time.monotonic() - started < 2
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "error"
    assert body["timed_out"] is False
    # timeout=0 answers at once too, with whatever the job is.
    assert http.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 0}).json()["timed_out"] is False


def test_a_cancel_releases_a_waiter(api: LiveApi, http: httpx.Client, background: ThreadPoolExecutor) -> None:
    job_id = submit_job(http)
    future = start_wait(background, http, f"/v1/jobs/{job_id}/wait", api, timeout=30)
    assert http.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    body = future.result(10).json()
    assert (body["status"], body["timed_out"]) == ("cancelled", False)


def test_wait_rejects_bad_timeouts_and_unknown_jobs(http: httpx.Client) -> None:
    job_id = submit_job(http)
    response = http.get(f"/v1/jobs/{job_id}/wait", params={"timeout": -1})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert http.get("/v1/jobs/not-a-uuid/wait").status_code == 404
    missing = http.get("/v1/jobs/00000000-0000-0000-0000-000000000000/wait", params={"timeout": 5})
    assert missing.status_code == 404
    assert missing.json()["code"] == "job_not_found"


# -- the hub's connection ---------------------------------------------------------------------------


def test_the_hub_reconnects_and_wakes_its_waiters(
    api: LiveApi, http: httpx.Client, background: ThreadPoolExecutor, settings: Settings
) -> None:
    """A completion notified while the LISTEN connection is down is found by the re-read on reconnect."""
    assert settings.database_url is not None
    job_id = submit_job(http)
    future = start_wait(background, http, f"/v1/jobs/{job_id}/wait", api, timeout=30)
    pid = api.hub.backend_pid
    assert pid is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finish(settings.database_url, [job_id])  # most likely while the hub is deaf
    body = future.result(10).json()
    assert (body["status"], body["timed_out"]) == ("completed", False)
    until(lambda: api.hub.connects >= 2 and api.hub.backend_pid not in (None, pid), what="a new LISTEN")
    # And the new connection hears the next completion.
    second = submit_job(http, "second")
    future = start_wait(background, http, f"/v1/jobs/{second}/wait", api, timeout=30)
    finish(settings.database_url, [second])
    assert future.result(10).json()["status"] == "completed"


# -- the legacy route -------------------------------------------------------------------------------


def test_legacy_wait_has_the_legacy_shape(
    api: LiveApi, http: httpx.Client, background: ThreadPoolExecutor, settings: Settings
) -> None:
    assert settings.database_url is not None
    job_id = submit_job(http, "legacy")
    before = api.waiters()
    future = background.submit(
        http.post,
        "/functions/v1/wait-for-crawl-job",
        json={"jobId": job_id, "maxWaitTimeMs": 30000, "pollingIntervalMs": 5000},
    )
    until(lambda: api.waiters() > before, what="the legacy waiter")
    finish(settings.database_url, [job_id])
    response = future.result(10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["success", "job", "waitTime"]
    assert body["success"] is True
    assert isinstance(body["waitTime"], int)
    assert 0 < body["waitTime"] < 30000
    job = body["job"]
    assert tuple(job) == LEGACY_JOB_FIELDS
    assert job["id"] == job_id
    assert job["url"] == "https://example.com/legacy"
    assert job["status"] == "completed"
    assert job["html_length"] == 9
    assert job["processing_time_ms"] == 12
    assert job["success_method"] == "http:direct"
    for field in ("created_at", "updated_at", "completed_at"):
        assert job[field].endswith("Z") and len(job[field]) == len("2023-04-05T12:00:00.000Z")


def test_legacy_wait_timeout_is_capped_and_says_so(
    database_url: str, redis_url: str, redis_prefix: str, api_key: str
) -> None:
    settings = Settings(
        database_url=database_url, redis_url=redis_url, queue_prefix=redis_prefix, max_wait_seconds=1
    )
    with (
        live_api(settings) as running,
        httpx.Client(base_url=running.base, headers={"apikey": api_key}, timeout=30) as client,
    ):
        job_id = submit_job(client, "capped")
        started = time.monotonic()
        response = client.post(
            "/functions/v1/wait-for-crawl-job", json={"jobId": job_id, "maxWaitTimeMs": 600_000}
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        body = response.json()
        assert list(body) == ["success", "job", "waitTime", "timedOut", "message"]
        assert body["success"] is True
        assert body["timedOut"] is True
        assert body["message"] == "Timed out after 1000 ms; the job is still pending"
        assert tuple(body["job"]) == LEGACY_JOB_FIELDS
        assert body["job"]["status"] == "pending"
        assert body["job"]["completed_at"] is None
        assert 1000 <= body["waitTime"] < 5000
        assert 1 <= elapsed < 5
        # The same cap applies to /v1.
        assert client.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 3600}).json()["timed_out"] is True
        # A bad body is a 422; pollingIntervalMs is optional.
        bad = client.post("/functions/v1/wait-for-crawl-job", json={"maxWaitTimeMs": 10})
        assert bad.status_code == 422
        assert bad.json()["success"] is False


# -- a thousand waiters -----------------------------------------------------------------------------


def test_a_thousand_waiters_share_the_pool(
    database_url: str, redis_url: str, redis_prefix: str, api_key: str
) -> None:
    pool_size = 5
    settings = Settings(
        database_url=database_url, redis_url=redis_url, queue_prefix=redis_prefix, db_pool_size=pool_size
    )
    headers = {"Authorization": f"Bearer {api_key}"}
    with live_api(settings) as running:
        with httpx.Client(base_url=running.base, headers=headers, timeout=60) as client:
            ids = submit_batch(client, "thousand", 1000)
        peak = 0
        sampling = threading.Event()

        def sample() -> None:
            nonlocal peak
            with psycopg.connect(database_url, autocommit=True) as conn:
                while not sampling.is_set():
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                    ).fetchone()
                    assert row is not None
                    peak = max(peak, int(row[0]))
                    time.sleep(0.005)

        async def wait_all() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            async with httpx.AsyncClient(
                base_url=running.base, headers=headers, timeout=60, limits=limits
            ) as aclient:
                tasks = [
                    asyncio.create_task(aclient.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 60}))
                    for job_id in ids
                ]
                await asyncio.to_thread(
                    until, lambda: running.waiters() >= 1000, what="1000 waiters", seconds=90
                )
                # Every waiter is registered and has read its row: the connections are the pool's and the hub's.
                held = backends(database_url)
                assert held <= pool_size + 1, held
                assert not any(t.done() for t in tasks)
                sampler = threading.Thread(target=sample)
                sampler.start()
                try:
                    await asyncio.to_thread(finish, database_url, ids)  # one commit, 5 NOTIFYs of 200 ids
                    return await asyncio.gather(*tasks)
                finally:
                    sampling.set()
                    sampler.join()

        responses = asyncio.run(wait_all())
        bodies = [r.json() for r in responses]
        assert all(r.status_code == 200 for r in responses)
        assert sorted(b["id"] for b in bodies) == sorted(ids)
        assert all(b["status"] == "completed" and b["timed_out"] is False for b in bodies)
        # The release: the pool, the hub, and the test's own two connections (the sampler is not counted).
        assert peak <= pool_size + 2, peak
        assert running.waiters() == 0


# -- batches ----------------------------------------------------------------------------------------


def test_notifications_wake_only_the_waiters_of_their_job_or_batch() -> None:
    async def scenario() -> None:
        hub = CompletionHub("postgresql://unused")  # never started: dispatch alone is under test
        job_id = "0190b7a4-0000-7000-8000-000000000001"
        with (
            hub.watch_batch("a") as batch_a,
            hub.watch_batch("b") as batch_b,
            hub.watch([job_id]) as job,
        ):
            assert hub.waiters == 3
            hub.dispatch(",".join(store.notify_payloads([], ["a"])))
            assert [await s.wait(0) for s in (batch_a, batch_b, job)] == [True, False, False]
            for payload in store.notify_payloads([job_id], ["b"]):
                hub.dispatch(payload)
            assert [await s.wait(0) for s in (batch_a, batch_b, job)] == [False, True, True]
            hub.wake_all()
            assert [await s.wait(0) for s in (batch_a, batch_b, job)] == [True, True, True]
        assert hub.waiters == 0

    asyncio.run(scenario())


def test_batch_wait_returns_when_every_job_is_final(
    api: LiveApi,
    http: httpx.Client,
    background: ThreadPoolExecutor,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings.database_url is not None
    ids = submit_batch(http, "waitme", 3)
    timed = http.get("/v1/batches/waitme/wait", params={"timeout": 0.3}).json()
    assert timed["timed_out"] is True
    assert timed["counts"]["pending"] == 3
    reads: queue.Queue[Batch] = recorded(monkeypatch, api.app.state.manager, "get_batch")
    future = start_wait(background, http, "/v1/batches/waitme/wait", api, timeout=30)
    finish(settings.database_url, ids[:1])
    # The waiter has read the batch with one job final of three (the only reader of it now), and waits on:
    # an answer with it would fail the counts asserted below.
    next_answer(reads, lambda batch: batch.counts.completed == 1, what="a read with one job final")
    assert not future.done()
    finish(settings.database_url, ids[1:2], status="error")
    assert http.post(f"/v1/jobs/{ids[2]}/cancel").json()["status"] == "cancelled"
    response = future.result(10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["batch_id"] == "waitme"
    assert body["timed_out"] is False
    assert body["progress"] == 100
    assert body["counts"] == {
        "pending": 0, "processing": 0, "completed": 1, "error": 1, "cancelled": 1, "total": 3
    }  # fmt: skip


def test_batch_wait_rereads_without_a_batch_mark(
    api: LiveApi,
    http: httpx.Client,
    background: ThreadPoolExecutor,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A writer that announces job ids but no batch (an older worker) still ends a batch wait: the fallback
    re-read finds the batch done."""
    assert settings.database_url is not None
    monkeypatch.setattr(waiting, "BATCH_FALLBACK_SECONDS", 0.3)
    ids = submit_batch(http, "unmarked", 2)
    future = start_wait(background, http, "/v1/batches/unmarked/wait", api, timeout=30)
    # The older worker: its NOTIFYs name the jobs, never their batch.
    monkeypatch.setattr(store_events, "notify_payloads", lambda ids, batch_ids=(): store.notify_payloads(ids))
    finish(settings.database_url, ids)
    body = future.result(20).json()  # the wait's own end is 30 s away: a re-read answered it
    assert body["timed_out"] is False and body["progress"] == 100


def read_events(response: httpx.Response, into: queue.Queue[tuple[str, str]]) -> None:
    """Parse a server-sent-event stream into (event, data) pairs; comments arrive as ("comment", text)."""
    event, data = "message", ""
    for line in response.iter_lines():
        if line.startswith(":"):
            into.put(("comment", line[1:].strip()))
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif line == "":
            if data:
                into.put((event, data))
            event, data = "message", ""
    into.put(("closed", ""))


def test_batch_events_follow_the_counts(
    api: LiveApi,
    http: httpx.Client,
    background: ThreadPoolExecutor,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    assert settings.database_url is not None
    monkeypatch.setattr(streams, "KEEPALIVE_SECONDS", 0.3)
    ids = submit_batch(http, "live", 3)
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    with http.stream("GET", "/v1/batches/live/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = background.submit(read_events, response, events)
        kind, data = events.get(timeout=5)
        assert kind == "counts"
        assert json.loads(data) == {
            "pending": 3, "processing": 0, "completed": 0, "error": 0, "cancelled": 0, "total": 3, "progress": 0
        }  # fmt: skip
        assert events.get(timeout=5) == ("comment", "keep-alive")
        finish(settings.database_url, ids[:1])
        kind, data = events.get(timeout=5)
        while kind == "comment":
            kind, data = events.get(timeout=5)
        assert kind == "counts"
        assert json.loads(data)["completed"] == 1
        assert json.loads(data)["progress"] == 33
        finish(settings.database_url, ids[1:])
        received = []
        while True:
            kind, data = events.get(timeout=5)
            if kind == "closed":
                break
            if kind != "comment":
                received.append((kind, json.loads(data)))
        reader.result(5)
    assert received[-1][0] == "done"
    assert received[-1][1]["completed"] == 3
    assert received[-1][1]["progress"] == 100
    assert all(kind == "counts" for kind, _ in received[:-1])
    assert api.waiters() == 0


def test_events_of_a_finished_batch_end_at_once(http: httpx.Client, settings: Settings) -> None:
    assert settings.database_url is not None
    ids = submit_batch(http, "over", 2)
    finish(settings.database_url, ids)
    response = http.get("/v1/batches/over/events")
    assert response.status_code == 200
    blocks = [b for b in response.text.split("\n\n") if b]
    assert [b.splitlines()[0] for b in blocks] == ["event: counts", "event: done"]


# -- tenants ----------------------------------------------------------------------------------------


def test_waits_are_tenant_scoped(http: httpx.Client, api: LiveApi, other_auth: dict[str, str]) -> None:
    job_id = submit_job(http, "mine")
    submit_batch(http, "mine", 1)
    with httpx.Client(base_url=api.base, headers=other_auth, timeout=30) as other:
        assert other.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 5}).status_code == 404
        legacy = other.post("/functions/v1/wait-for-crawl-job", json={"jobId": job_id, "maxWaitTimeMs": 5000})
        assert legacy.status_code == 404
        assert legacy.json()["success"] is False
        assert other.get("/v1/batches/mine/wait", params={"timeout": 5}).status_code == 404
        events = other.get("/v1/batches/mine/events")
        assert events.status_code == 404
        assert events.json()["code"] == "batch_not_found"
    with httpx.Client(base_url=api.base, timeout=30) as anonymous:
        assert anonymous.get(f"/v1/jobs/{job_id}/wait").status_code == 401
        assert anonymous.get("/v1/batches/mine/events").status_code == 401
    assert api.waiters() == 0

"""Webhooks against real PostgreSQL and a receiver on 127.0.0.1: outbox, retries, signature, restarts, rules."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from crawljobs import store
from crawljobs.config import Settings
from crawljobs.manager import JobManager
from crawljobs.models import SubmitOptions
from crawljobs.sweeper import Sweeper
from crawljobs.testing import FakeWorker
from crawljobs.webhooks import verify
from tests.integration.conftest import make_client, run_with_manager


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """A webhook receiver on a loopback address: answers each of `failures` first requests with 500."""

    host: str
    failures: int = 0
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://{self.host}:{self.server.server_address[1]}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                answer = 500 if len(receiver.received) < receiver.failures else 200
                receiver.received.append(Received(dict(self.headers.items()), body, answer))
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(host: str = "127.0.0.1", failures: int = 0) -> Receiver:
        receiver = Receiver(host, failures).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
def loopback_settings(settings: Settings) -> Settings:
    return Settings(**{**settings.model_dump(), "allowed_networks": ["127.0.0.1/32"]})


async def finish(manager: JobManager, ids: list[uuid.UUID]) -> None:
    """Claim and complete jobs the way a worker does."""
    written = await FakeWorker(manager.pool).complete(ids)
    assert sorted(written) == sorted(ids)


async def sweep_until_settled(manager: JobManager, *, rounds: int = 6) -> None:
    """Sweep, making every failed delivery due again at once (instead of waiting out its backoff)."""
    for _ in range(rounds):
        await Sweeper(manager).sweep_once()
        async with manager.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = now() "
                "WHERE delivered_at IS NULL AND gave_up_at IS NULL RETURNING id"
            )
            if not await cur.fetchall():
                return


def deliveries(database_url: str, where: str = "true") -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT event, attempts, last_status, last_error, delivered_at IS NOT NULL, job_id, batch_id "
            f"FROM webhook_deliveries WHERE {where} ORDER BY created_at, event"
        ).fetchall()


def test_failing_receiver_gets_one_signed_delivery_after_retries(
    loopback_settings: Settings, database_url: str, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory(failures=2)
    tenant = "hooks-retry"

    async def body(manager: JobManager) -> tuple[uuid.UUID, str]:
        submission = await manager.submit_job(
            tenant=tenant, url="https://example.com/a", options=SubmitOptions(callback_url=receiver.url)
        )
        await finish(manager, [submission.job.id])
        await sweep_until_settled(manager)
        return submission.job.id, await manager.webhook_secret(tenant=tenant)

    job_id, secret = run_with_manager(loopback_settings, body)

    assert [r.answered for r in receiver.received] == [500, 500, 200]
    ids = {r.headers["X-Crawljobs-Delivery"] for r in receiver.received}
    assert len(ids) == 1  # the same delivery, tried three times
    accepted = receiver.received[-1]
    assert accepted.headers["X-Crawljobs-Event"] == "job.completed"
    signature = accepted.headers["X-Crawljobs-Signature"]
    assert verify(secret, accepted.headers["X-Crawljobs-Timestamp"], accepted.body, signature)
    assert not verify("whsec_wrong", accepted.headers["X-Crawljobs-Timestamp"], accepted.body, signature)
    payload = json.loads(accepted.body)
    assert payload["id"] == ids.pop()
    assert payload["event"] == "job.completed"
    assert payload["job"]["id"] == str(job_id)
    assert payload["job"]["status"] == "completed"
    rows = deliveries(database_url, f"tenant = '{tenant}'")
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [("job.completed", 3, 200, True)]


def test_deliveries_survive_a_restart_and_batches_report_completion(
    loopback_settings: Settings, database_url: str, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    tenant = "hooks-restart"

    async def finish_batch(manager: JobManager) -> str:
        submission = await manager.submit_batch(
            tenant=tenant,
            urls=["https://example.com/1", "https://example.com/2"],
            options=SubmitOptions(callback_url=receiver.url),
        )
        await finish(manager, [i for i in submission.job_ids if i is not None])
        return submission.batch_id

    batch_id = run_with_manager(
        loopback_settings, finish_batch
    )  # the "API process" stops with its outbox unsent
    assert receiver.received == []
    assert [r[0] for r in deliveries(database_url, f"tenant = '{tenant}'")] == [
        "batch.completed",
        "job.completed",
        "job.completed",
    ]

    async def deliver(manager: JobManager) -> None:
        await sweep_until_settled(manager)

    run_with_manager(loopback_settings, deliver)  # a new process delivers them
    events = sorted(r.headers["X-Crawljobs-Event"] for r in receiver.received)
    assert events == ["batch.completed", "job.completed", "job.completed"]
    done = json.loads(next(r.body for r in receiver.received if b"batch.completed" in r.body))
    assert done["batch"] == {**done["batch"], "batch_id": batch_id, "total": 2, "completed": 2, "error": 0}
    assert all(r[4] and r[1] == 1 for r in deliveries(database_url, f"tenant = '{tenant}'"))


def test_a_batch_finished_by_a_cancel_reports_its_completion(
    loopback_settings: Settings, database_url: str
) -> None:
    tenant = "hooks-cancel"

    async def body(manager: JobManager) -> str:
        submission = await manager.submit_batch(
            tenant=tenant,
            urls=["https://example.com/c1", "https://example.com/c2", "https://example.com/c3"],
            options=SubmitOptions(callback_url="http://127.0.0.1:9/never-called"),
        )
        first = submission.job_ids[0]
        assert first is not None
        await finish(manager, [first])
        async with manager.pool.connection() as conn:
            assert len(await store.cancel_batch_jobs(conn, tenant=tenant, batch_id=submission.batch_id)) == 2
        return submission.batch_id

    batch_id = run_with_manager(loopback_settings, body)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT event, payload -> 'batch' FROM webhook_deliveries WHERE tenant = %s ORDER BY event",
            (tenant,),
        ).fetchall()
    assert [event for event, _ in rows] == ["batch.completed", "job.completed"]
    assert rows[0][1] == {**rows[0][1], "batch_id": batch_id, "completed": 1, "cancelled": 2, "error": 0}


def test_concurrent_writers_of_a_batch_last_jobs_report_its_completion_once(
    loopback_settings: Settings, database_url: str
) -> None:
    tenant = "hooks-race"

    async def body(manager: JobManager) -> None:
        for _ in range(5):
            submission = await manager.submit_batch(
                tenant=tenant,
                urls=[f"https://example.com/r{i}" for i in range(4)],
                options=SubmitOptions(callback_url="http://127.0.0.1:9/never-called"),
            )
            ids = [i for i in submission.job_ids if i is not None]
            # Four workers write one job each at the same time.
            await asyncio.gather(*(finish(manager, [job_id]) for job_id in ids))

    run_with_manager(loopback_settings, body)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM webhook_deliveries WHERE tenant = %s AND event = 'batch.completed'",
            (tenant,),
        ).fetchone()
    assert rows == (5,)


def test_forbidden_callback_is_refused_at_submit_and_at_delivery(
    loopback_settings: Settings,
    auth: dict[str, str],
    database_url: str,
    receiver_factory: Callable[..., Receiver],
) -> None:
    forbidden = receiver_factory(host="127.0.0.2")
    with make_client(loopback_settings) as client:
        refused = client.post(
            "/v1/jobs", json={"url": "https://example.com/", "callback_url": forbidden.url}, headers=auth
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "url_rejected"
        assert "callback_url" in refused.text
        legacy = client.post(
            "/functions/v1/submit-crawl-jobs-batch",
            json={"urls": ["https://example.com/"], "callbackUrl": forbidden.url},
            headers=auth,
        )
        assert legacy.status_code == 422, legacy.text
        assert "callbackUrl" in legacy.text
    with psycopg.connect(database_url) as conn:
        written = conn.execute("SELECT count(*) FROM crawl_jobs WHERE tenant = 'tenant-a'").fetchone()
        assert written == (0,)
        # A row that names it anyway (written before the rules changed): refused at delivery time too.
        conn.execute(
            "INSERT INTO webhook_deliveries (tenant, event, url, payload) "
            "VALUES ('hooks-forbidden', 'job.failed', %s, '{}')",
            (forbidden.url,),
        )

    run_with_manager(loopback_settings, lambda manager: Sweeper(manager).sweep_once())
    assert forbidden.received == []
    ((_, attempts, status, error, delivered, _, _),) = deliveries(database_url, "tenant = 'hooks-forbidden'")
    assert (attempts, status, delivered) == (1, None, False)
    assert "refused by the network rules" in error


def test_delivery_log_and_secret_are_per_tenant(
    loopback_settings: Settings,
    auth: dict[str, str],
    other_auth: dict[str, str],
    receiver_factory: Callable[..., Receiver],
) -> None:
    receiver = receiver_factory()
    with make_client(loopback_settings) as client:
        created = client.post(
            "/v1/jobs", json={"url": "https://example.com/log", "callback_url": receiver.url}, headers=auth
        )
        assert created.status_code == 201, created.text
        job_id = uuid.UUID(created.json()["id"])

        run_with_manager(loopback_settings, lambda manager: finish(manager, [job_id]))
        run_with_manager(loopback_settings, sweep_until_settled)

        mine = client.get("/v1/webhooks/deliveries", params={"job_id": str(job_id)}, headers=auth)
        assert mine.status_code == 200, mine.text
        (entry,) = mine.json()["deliveries"]
        assert (entry["event"], entry["status"], entry["attempts"], entry["job_id"]) == (
            "job.completed",
            "delivered",
            1,
            str(job_id),
        )
        theirs = client.get("/v1/webhooks/deliveries", params={"job_id": str(job_id)}, headers=other_auth)
        assert theirs.status_code == 200
        assert theirs.json()["deliveries"] == []
        assert (
            client.get("/v1/webhooks/deliveries", params={"job_id": "nope"}, headers=auth).status_code == 422
        )

        secret = client.get("/v1/webhooks/secret", headers=auth).json()["secret"]
        assert client.get("/v1/webhooks/secret", headers=auth).json()["secret"] == secret
        assert client.get("/v1/webhooks/secret", headers=other_auth).json()["secret"] != secret
        (received,) = receiver.received
        assert verify(
            secret,
            received.headers["X-Crawljobs-Timestamp"],
            received.body,
            received.headers["X-Crawljobs-Signature"],
        )


def test_a_job_the_sweeper_ends_worker_lost_fails_like_any_other(
    loopback_settings: Settings, database_url: str
) -> None:
    """A job whose last lease expires ends in error through the sweeper: its job.failed webhook and batch's
    batch.completed are recorded and its waiters are notified, as when a worker writes the error."""
    tenant = "hooks-lost"
    loopback_settings = Settings(**{**loopback_settings.model_dump(), "max_lost_leases": 0})  # its first loss

    async def body(manager: JobManager) -> tuple[uuid.UUID, str, list[str]]:
        submission = await manager.submit_batch(
            tenant=tenant,
            urls=["https://example.com/lost"],
            options=SubmitOptions(max_retries=0, callback_url="http://127.0.0.1:9/x"),
        )
        job_id = submission.job_ids[0]
        assert job_id is not None
        await FakeWorker(manager.pool, worker="gone").die([job_id])
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
            await listener.execute(f"LISTEN {store.NOTIFY_CHANNEL}")
            report = await Sweeper(manager).sweep_once()
            assert report.failed_lost == 1
            heard = [n.payload async for n in listener.notifies(timeout=5, stop_after=2)]
        return job_id, submission.batch_id, heard

    job_id, batch_id, heard = run_with_manager(loopback_settings, body)
    assert heard == [str(job_id), f"batch:{batch_id}"]
    with psycopg.connect(database_url) as conn:
        events = conn.execute(
            "SELECT event, payload #>> '{job,error_message}' FROM webhook_deliveries WHERE tenant = %s "
            "ORDER BY event",
            (tenant,),
        ).fetchall()
    assert events[0] == ("batch.completed", None)
    assert events[1][0] == "job.failed" and events[1][1].startswith("worker lost")


class Trickler:
    """A webhook receiver that reads the request and then answers one byte a second, for as long as it is let:
    httpx's timeouts are per read, so only a deadline on the whole delivery ends such an answer."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.stopped = threading.Event()
        self.asked = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/slow"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            self.asked.set()
            answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 600
            for byte in answer:
                if self.stopped.wait(1.0):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()


def test_a_slow_receiver_holds_up_neither_other_tenants_nor_the_sweep(
    loopback_settings: Settings, database_url: str, receiver_factory: Callable[..., Receiver]
) -> None:
    """Attack finding 5: a receiver answering a byte a second stalled the whole sweeper (another tenant's
    webhook came 98.9 s late; lease reclaims, dispatch and retention waited too). Now the sender runs beside
    the sweep, each delivery in its own task with one deadline for the whole of it."""
    settings = Settings(**{**loopback_settings.model_dump(), "webhook_timeout_seconds": 3.0})
    trickler = Trickler()
    fast = receiver_factory()

    async def body(manager: JobManager) -> dict[str, float]:
        slow_job = await manager.submit_job(
            tenant="hooks-slow", url="https://example.com/s", options=SubmitOptions(callback_url=trickler.url)
        )
        await finish(manager, [slow_job.job.id])
        stop = asyncio.Event()
        sweeper = asyncio.create_task(Sweeper(manager).run(stop, interval=0.2))
        started = time.monotonic()
        seen: dict[str, float] = {}
        try:
            # The slow delivery is in flight once the trickler has its request.
            await asyncio.to_thread(trickler.asked.wait, 10)
            fast_job = await manager.submit_job(
                tenant="hooks-fast", url="https://example.com/f", options=SubmitOptions(callback_url=fast.url)
            )
            await finish(manager, [fast_job.job.id])
            (stuck,) = await _submit_and_strand(manager)
            while len(seen) < 3 and time.monotonic() - started < 30:
                if fast.received and "fast" not in seen:
                    seen["fast"] = time.monotonic() - started
                if "reclaim" not in seen and await _status(manager, stuck) == "pending":
                    seen["reclaim"] = time.monotonic() - started
                rows = deliveries(database_url, "tenant = 'hooks-slow' AND last_error IS NOT NULL")
                if rows and "slow" not in seen:
                    seen["slow"] = time.monotonic() - started
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await sweeper
            trickler.stop()
        return seen

    seen = run_with_manager(settings, body)
    print(
        f"\nslow receiver: the other tenant's webhook after {seen.get('fast')} s, an expired lease reclaimed "
        f"after {seen.get('reclaim')} s, the slow delivery ended after {seen.get('slow')} s"
    )
    assert seen.get("fast", 99) < 5, seen  # it was 98.9 s
    assert seen.get("reclaim", 99) < 5, seen
    assert 2.5 < seen.get("slow", 99) < 10, seen  # ended by the 3 s deadline, not by the receiver
    (row,) = deliveries(database_url, "tenant = 'hooks-slow'")
    errors = [r for r in row if isinstance(r, str) and "timed out" in r]
    assert errors, row


async def _submit_and_strand(manager: JobManager) -> list[uuid.UUID]:
    """A job claimed by a worker that vanished: its lease already expired."""
    submission = await manager.submit_job(tenant="hooks-fast", url="https://example.com/stranded")
    async with manager.pool.connection() as conn:
        await store.claim_jobs(conn, ids=[submission.job.id], worker="gone", lease_seconds=30)
        await conn.execute(
            "UPDATE crawl_jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
            (submission.job.id,),
        )
    return [submission.job.id]


async def _status(manager: JobManager, job_id: uuid.UUID) -> str:
    async with manager.pool.connection() as conn:
        cur = await conn.execute("SELECT status FROM crawl_jobs WHERE id = %s", (job_id,))
        row = await cur.fetchone()
    assert row is not None
    return str(row[0])

"""Hostile pages against the http and impersonate engines (issue 10, findings 3 and 12; issue 11), through a
real worker process per engine (its ladder that engine alone, on every tier).

Each page ends its job with a named error and one recorded attempt, fetched once: endless response headers
(the worker's memory must not follow them), a decompression bomb, a redirect loop, a chunked body over the
size limit, a name that resolves to an address the network rules refuse.

The module's worker resolves names only through ``tests.acceptance.names`` (no real DNS): ``refused.test`` is
127.0.0.2, which the configuration (127.0.0.1/32) does not allow.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from psycopg_pool import AsyncConnectionPool

from crawljobs.manager import JobManager
from crawljobs.models import SubmitOptions
from crawljobs.queue import redis_client
from tests.acceptance.conftest import system_settings_for
from tests.acceptance.proxies import TestProxy
from tests.acceptance.site import BackgroundLoop, TestSite
from tests.acceptance.system import Process, System, running_system
from tests.conftest import drop_prefix

pytestmark = pytest.mark.acceptance

MIB = 1024 * 1024


@dataclass
class Worker:
    system: System
    process: Process
    engine: str

    @property
    def direct(self) -> str:
        return f"{self.engine}:direct"


@pytest.fixture(scope="module", params=["http", "impersonate"])
def worker(
    request: pytest.FixtureRequest,
    database_url: str,
    redis_url: str,
    premium_proxy: TestProxy,
    ultra_proxy: TestProxy,
    site: TestSite,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    """One worker (names from tests.acceptance.names) and a sweeper, on a queue prefix of this module's."""
    engine: str = request.param
    settings = system_settings_for(database_url, redis_url, premium_proxy, ultra_proxy)
    with running_system(settings, tmp_path_factory.mktemp("logs")) as system:
        process = system.start_worker(
            "-s",
            "TWISTED_DNS_RESOLVER=tests.acceptance.names.MappedResolver",
            CRAWLJOBS_LADDER=",".join(f"{engine}:{tier}" for tier in ("direct", "premium", "ultra_premium")),
        )
        system.start_sweeper()
        yield Worker(system, process, engine)
    drop_prefix(redis_url, settings.queue_prefix)


def outcomes(job: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["method"], a["outcome"]) for a in job["attempts"]]


def rss(process: Process) -> int:
    return int(psutil.Process(process.popen.pid).memory_info().rss)


# -- endless response headers ---------------------------------------------------------------------------------


class EndlessHeaders:
    """A raw server on 127.0.0.1 that answers any request with a status line and then header lines forever
    (until the client goes away), counting what it sent."""

    LINE = b"X-Filler-%08d: " + b"h" * 80 + b"\r\n"

    def __init__(self) -> None:
        self.sent = 0
        self.connections = 0
        self._background = BackgroundLoop("endless-headers")
        self._server = self._background.call(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        untrack = self._background.track()
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n")
            number = 0
            while True:
                block = b"".join(self.LINE % (number + i) for i in range(700))  # ~64 KiB
                number += 700
                writer.write(block)
                await writer.drain()
                self.sent += len(block)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            untrack()
            writer.close()

    def close(self) -> None:
        self._background.stop(self._server)


@pytest.fixture
def endless_headers() -> Iterator[EndlessHeaders]:
    server = EndlessHeaders()
    try:
        yield server
    finally:
        server.close()


def test_endless_response_headers_end_the_job_and_leave_the_memory_alone(
    worker: Worker, site: TestSite, endless_headers: EndlessHeaders
) -> None:
    """Finding 3: Twisted's parser bounds a line, not the number of lines; the worker kept every header line
    (147 → 3,776 MiB, never released). Now the head is capped as the egress guard caps it (framing.py)."""
    system = worker.system
    (warm,) = system.wait_final([system.submit(site.url("/ok/warm-up"))])  # a worker past its start-up
    assert warm["status"] == "completed", warm["error_message"]
    before = rss(worker.process)
    job_id = system.submit(f"http://127.0.0.1:{endless_headers.port}/endless")
    bound = 256 * MIB  # broken: gigabytes; fixed: the 64 KiB head and nothing more
    peak, deadline = before, time.monotonic() + 60
    while system.job(job_id)["status"] not in ("completed", "error", "cancelled"):
        peak = max(peak, rss(worker.process))
        figures = (
            f"worker RSS {before / MIB:.0f} MiB before, peak {peak / MIB:.0f} MiB; "
            f"the server sent {endless_headers.sent / MIB:.0f} MiB of header lines"
        )
        assert peak - before < bound, figures
        assert time.monotonic() < deadline, f"not final in 60 s; {figures}\n{system.logs_text()}"
        time.sleep(0.1)
    after = rss(worker.process)
    job = system.job(job_id)
    figures = (
        f"worker RSS {before / MIB:.0f} MiB before, peak {peak / MIB:.0f} MiB, {after / MIB:.0f} MiB after; "
        f"the server sent {endless_headers.sent / MIB:.1f} MiB of header lines"
    )
    print(figures)
    print(job["error_message"])
    assert job["status"] == "error", figures
    assert "response headers too large" in job["error_message"], job["error_message"]
    assert outcomes(job) == [(worker.direct, "permanent")], job["attempts"]
    assert endless_headers.connections == 1  # not retried
    assert after - before < bound, figures


# -- failures that must be named, recorded and not retried ----------------------------------------------------


def test_a_decompression_bomb_is_a_named_permanent_error_with_its_attempt(
    worker: Worker, site: TestSite
) -> None:
    """Finding 12: a gzip body inflating past the size limit ended with no attempt and Scrapy's raw
    ``IgnoreRequest … DOWNLOAD_MAXSIZE`` text."""
    path = f"/gzip-bomb?mb=64&key={uuid.uuid4().hex}"
    (job,) = worker.system.wait_final([worker.system.submit(site.url(path))])
    print(job["error_message"])
    assert job["status"] == "error"
    assert "body too large (decompressed)" in job["error_message"], job["error_message"]
    assert "IgnoreRequest" not in job["error_message"]
    assert outcomes(job) == [(worker.direct, "permanent")]
    assert job["attempts"][0]["error"] == job["error_message"]
    assert len(site.hits(path)) == 1


def test_too_many_redirects_is_named_and_recorded(worker: Worker, site: TestSite) -> None:
    """Finding 12: a redirect chain longer than REDIRECT_MAX_TIMES (10) recorded no attempt and ended with
    ``IgnoreRequest: max redirections reached``."""
    key = uuid.uuid4().hex
    (job,) = worker.system.wait_final([worker.system.submit(site.url(f"/redirect/15?key={key}"))])
    print(job["error_message"])
    assert job["status"] == "error"
    assert "too many redirects" in job["error_message"], job["error_message"]
    assert "IgnoreRequest" not in job["error_message"]
    assert outcomes(job) == [(worker.direct, "permanent")]
    assert job["attempts"][0]["http_status"] == 302


def test_an_oversized_chunked_body_is_not_retried(worker: Worker, site: TestSite) -> None:
    """Finding 12: a chunked body (no Content-Length) over CRAWLJOBS_MAX_BODY_BYTES was taken for a lost
    connection and fetched four times; the size is a fact of the page."""
    path = f"/huge?mb=3&chunked=1&key={uuid.uuid4().hex}"
    (job,) = worker.system.wait_final([worker.system.submit(site.url(path))])
    print(job["error_message"])
    assert job["status"] == "error"
    assert "larger than CRAWLJOBS_MAX_BODY_BYTES" in job["error_message"], job["error_message"]
    assert outcomes(job) == [(worker.direct, "permanent")]
    assert len(site.hits(path)) == 1


def test_a_name_resolving_to_a_refused_address_is_refused_by_the_network_rules(
    worker: Worker, site: TestSite
) -> None:
    """Finding 12: a name resolving (at fetch time) to a refused address said "does not resolve"; it is
    refused by the network rules, in the words a literal refused address gets."""
    system = worker.system

    async def nothing_resolves(host: str) -> list[str]:
        # At submit time the name does not resolve (accepted: the worker checks it again when it fetches).
        raise OSError(f"{host} does not resolve")

    async def submit(url: str) -> uuid.UUID:
        assert system.settings.database_url is not None
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            system.settings.database_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
        )
        await pool.open()
        redis = redis_client(system.settings.redis_url or "")
        try:
            manager = JobManager(pool=pool, redis=redis, settings=system.settings, resolver=nothing_resolves)
            submitted = await manager.submit_job(tenant="acceptance", url=url, options=SubmitOptions())
            return submitted.job.id
        finally:
            await redis.aclose()
            await pool.close()

    by_name = asyncio.run(submit(f"http://refused.test:{site.port}/ok/by-name"))
    allowed = asyncio.run(submit(f"http://allowed.test:{site.port}/ok/allowed-name"))
    nowhere = asyncio.run(submit(f"http://nowhere.test:{site.port}/ok/nowhere"))
    # A literal refused address cannot be submitted: a redirect takes the worker there.
    literal = system.submit(site.url(f"/redirect-to?url=http://127.0.0.2:{site.port}/ok/literal"))
    jobs = {j["id"]: j for j in system.wait_final([by_name, allowed, literal, nowhere])}
    assert jobs[allowed]["status"] == "completed", jobs[allowed]["error_message"]  # the names do resolve
    # Connected to the address the worker's resolver checked: curl, which cannot resolve allowed.test itself (no
    # DNS knows it), was handed that address (DNS rebinding: no second look-up).
    assert site.hits("/ok/allowed-name")[-1].headers["host"] == f"allowed.test:{site.port}"
    assert jobs[allowed]["cost"] > 0
    # Nothing was sent for a name that does not resolve or resolves to a refused address: no cost (issue 12).
    assert jobs[nowhere]["status"] == "error" and "does not resolve" in jobs[nowhere]["error_message"]
    assert jobs[nowhere]["cost"] == 0 and jobs[by_name]["cost"] == 0
    for job_id in (by_name, literal):
        job = jobs[job_id]
        print(job["error_message"])
        assert job["status"] == "error"
        assert job["error_message"].startswith("refused by the network rules: "), job["error_message"]
        assert "127.0.0.2" in job["error_message"]
        assert "does not resolve" not in job["error_message"]
        assert outcomes(job) == [(worker.direct, "permanent")]


def test_a_page_slower_than_the_download_timeout_ends_as_a_timeout(worker: Worker, site: TestSite) -> None:
    """The download timeout (20 s here) ends a fetch that never answers: a transient timeout, recorded."""
    key = uuid.uuid4().hex
    started = time.monotonic()
    (job,) = worker.system.wait_final(
        [worker.system.submit(site.url(f"/slow?delay=120&key={key}"), max_retries=0)], timeout=90
    )
    print(job["error_message"])
    assert job["status"] == "error"
    assert "timeout" in job["error_message"], job["error_message"]
    assert outcomes(job) == [(worker.direct, "transient")]
    assert time.monotonic() - started < 80  # the timeout's, not the page's 120 s

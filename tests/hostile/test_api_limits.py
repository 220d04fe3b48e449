"""Limits of the API under attack (issue 10, findings 9, 11 and 13): worker runs on demand, /metrics, and
waits and streams whose key is revoked.

The API runs for real (uvicorn on 127.0.0.1 in a thread, ``tests.integration.test_waiting.LiveApi``), so that
calls are truly concurrent and a client can truly go away. Worker runs are real ``scrapy crawl crawl_jobs -a
max_jobs=N`` child processes (Chromium too, for a rendered job) fetching the local test site's ``/slow`` page,
counted with psutil; each test has tenants of its own, so no run takes another test's jobs.
"""

from __future__ import annotations

import asyncio
import json
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import psycopg
import pytest

from crawljobs.config import Settings
from crawljobs.keys import create_key, hash_key
from crawljobs.processing import ProcessingFailed, process_pending
from service import streams
from service.app import create_app
from tests.acceptance.site import TestSite, start_site
from tests.conftest import drop_prefix
from tests.hostile.conftest import make_client
from tests.integration.test_waiting import LiveApi, live_api, until

PROCESS = "/functions/v1/process-crawl-jobs"


@pytest.fixture(scope="module")
def site() -> Iterator[TestSite]:
    with start_site() as running:
        yield running


@pytest.fixture(scope="module")
def limits_settings(database_url: str, redis_url: str) -> Iterator[Settings]:
    """The defaults of the bounds (2 runs, 1 per tenant), loopback allowed for the test site, slow pages given
    time, and a key re-checked every half second."""
    prefix = f"cjlimits:{secrets.token_hex(6)}"
    yield Settings(
        database_url=database_url,
        redis_url=redis_url,
        queue_prefix=prefix,
        allowed_networks=["127.0.0.1/32"],
        download_timeout=180.0,
        max_retries=0,
        domain_memory=False,
        explore_rate=0.0,
        key_recheck_seconds=0.5,
    )
    drop_prefix(redis_url, prefix)


@pytest.fixture(scope="module")
def api(limits_settings: Settings) -> Iterator[LiveApi]:
    with live_api(limits_settings) as running:
        yield running


def new_tenant(database_url: str) -> dict[str, str]:
    """The auth headers of a tenant of the test's own."""
    key = create_key(database_url, name=f"limits-{secrets.token_hex(4)}")
    return {"Authorization": f"Bearer {key}"}


def submit(api: LiveApi, auth: dict[str, str], urls: list[str], **flags: Any) -> list[str]:
    response = httpx.post(f"{api.base}/v1/batches", json={"urls": urls, **flags}, headers=auth, timeout=30)
    assert response.status_code == 201, response.text
    return [str(i) for i in response.json()["job_ids"]]


# -- finding 9: worker runs on demand ------------------------------------------------------------------------


@dataclass
class Children:
    """The descendants of this process started while the ``with`` block runs, sampled every 50 ms: every one
    seen (pid and start time, so that a reused pid is not mistaken for it), and the most alive at once."""

    before: set[int] = field(
        default_factory=lambda: {p.pid for p in psutil.Process().children(recursive=True)}
    )
    seen: dict[int, float] = field(default_factory=dict)
    most_runs: int = 0
    most_processes: int = 0
    most_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        processes, runs, rss = 0, 0, 0
        for child in psutil.Process().children(recursive=True):
            if child.pid in self.before:
                continue
            try:
                self.seen.setdefault(child.pid, child.create_time())
                processes += 1
                rss += child.memory_info().rss
                runs += "crawl_jobs" in child.cmdline()
            except psutil.NoSuchProcess:
                continue
        self.most_runs = max(self.most_runs, runs)
        self.most_processes = max(self.most_processes, processes)
        self.most_rss = max(self.most_rss, rss)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def __enter__(self) -> Children:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()

    def alive(self) -> list[int]:
        """Those seen that still run (an orphan re-parented away from us counts: it is found by its pid)."""
        alive = []
        for pid, started in self.seen.items():
            try:
                process = psutil.Process(pid)
                if process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                continue
        return alive


def call_together(api: LiveApi, calls: list[dict[str, str]], body: dict[str, Any]) -> list[httpx.Response]:
    """One POST per auth in ``calls``, all released at once from threads of their own."""
    barrier = threading.Barrier(len(calls))

    def call(auth: dict[str, str]) -> httpx.Response:
        barrier.wait()
        return httpx.post(f"{api.base}{PROCESS}", json=body, headers=auth, timeout=300)

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(call, calls))


def runs_going(api: LiveApi) -> int:
    """The worker runs the API process holds slots for, read from its own bound."""
    while True:
        try:
            return sum(api.app.state.processing_runs.running.values())
        except RuntimeError:  # the server's thread changed the counter while it was summed
            continue


def assert_refused(response: httpx.Response) -> None:
    """A 429 in the error shape legacy clients check (`success: false`, `error`), with `Retry-After`."""
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["success"] is False and body["code"] == "too_many_runs", body
    assert "CRAWLJOBS_MAX_PROCESSING_RUNS" in body["error"]
    assert int(response.headers["retry-after"]) > 0


def test_concurrent_runs_of_one_tenant_are_one_run(api: LiveApi, site: TestSite, database_url: str) -> None:
    """Six concurrent calls of one tenant started six worker processes at once; now one runs, five are 429."""
    auth = new_tenant(database_url)
    submit(api, auth, [site.url(f"/slow?delay=6&n={i}") for i in range(6)])
    with Children() as children:
        responses = call_together(api, [auth] * 6, {"batchSize": 1})
    statuses = sorted(r.status_code for r in responses)
    print(f"one tenant, 6 calls: statuses {statuses}, worker runs at once {children.most_runs}")
    assert children.most_runs <= 1, f"{children.most_runs} worker runs at once (statuses {statuses})"
    assert statuses == [200] + [429] * 5, [r.text for r in responses]
    for response in responses:
        if response.status_code == 429:
            assert_refused(response)
        else:
            assert response.json() == {
                "success": True,
                "processed": 1,
                "message": "Processed 1 jobs (1 completed, 0 failed)",
            }
    assert children.alive() == []


def test_runs_are_bounded_per_tenant_and_per_api_process(
    api: LiveApi, site: TestSite, database_url: str
) -> None:
    """Three calls of each of two tenants: one run each (the per-tenant bound), two in all (the global bound
    of 2); a third tenant finds no room while they run."""
    first, second, third = (new_tenant(database_url) for _ in range(3))
    for auth in (first, second, third):
        submit(api, auth, [site.url(f"/slow?delay=6&n={i}") for i in range(3)])
    with Children() as children:
        responses = call_together(api, [first, second] * 3, {"batchSize": 1})
    by_tenant = {
        name: sorted(r.status_code for r in responses[index::2])
        for index, name in enumerate(("first", "second"))
    }
    print(f"two tenants, 3 calls each: {by_tenant}, worker runs at once {children.most_runs}")
    assert children.most_runs <= 2
    assert by_tenant == {"first": [200, 429, 429], "second": [200, 429, 429]}, [r.text for r in responses]

    # While two runs go on, a third tenant is refused by the global bound (and named so).
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = [pool.submit(call_together, api, [auth], {"batchSize": 1}) for auth in (first, second)]
        until(lambda: runs_going(api) == 2, what="two runs", seconds=30)
        refused = httpx.post(f"{api.base}{PROCESS}", json={"batchSize": 1}, headers=third, timeout=30)
        assert_refused(refused)
        assert "2 worker runs are going" in refused.json()["error"]
        assert [f.result()[0].status_code for f in running] == [200, 200]


def test_a_run_is_stopped_when_its_client_goes_away(api: LiveApi, site: TestSite, database_url: str) -> None:
    """The client gave up, the run did not: its worker and Chromium went on for as long as the page took.
    Now the run is stopped (its whole process tree, Chromium included), and its slot is free again."""
    auth = new_tenant(database_url)
    submit(api, auth, [site.url("/slow?delay=120")], render=True)
    body = json.dumps({"batchSize": 1}).encode()
    host, port = api.base.removeprefix("http://").split(":")
    request = (
        f"POST {PROCESS} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {auth['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with Children() as children:
        with socket.create_connection((host, int(port))) as client:
            client.sendall(request + body)
            # The client leaves once the page is being fetched in Chromium: the run at its largest.
            site.wait_for_hits("/slow?delay=120", 1, timeout=90)
            time.sleep(0.5)
        sampled = children.most_processes, children.most_rss
    left = time.monotonic()
    until(lambda: children.alive() == [], what="the run's processes to end", seconds=40)
    ended = time.monotonic() - left
    print(
        f"a rendered run: {sampled[0]} processes, {sampled[1] / 2**20:.0f} MiB at most; "
        f"all gone {ended:.1f} s after the client left"
    )
    # Nothing stops the run otherwise before its 120 s page is done.
    assert ended < 40
    again = httpx.post(f"{api.base}{PROCESS}", json={"batchSize": 1}, headers=auth, timeout=120)
    assert again.status_code == 200, again.text  # the slot was given back (no job is left to take)


def test_a_run_over_its_time_limit_is_killed(api: LiveApi, site: TestSite, database_url: str) -> None:
    """Over its limit, a run was sent SIGTERM and waited for without end: Scrapy finishes the fetch in flight
    first, so a slow page in Chromium held the call for as long as the page took (117 s after the SIGTERM for
    this one). Now SIGKILL follows a grace period, and the whole process tree, Chromium included, is gone."""
    tenant = f"limits-{secrets.token_hex(4)}"
    auth = {"Authorization": f"Bearer {create_key(database_url, name=tenant)}"}
    page = "/slow?delay=150&limit=1"
    submit(api, auth, [site.url(page)], render=True)
    started = time.monotonic()
    with Children() as children, pytest.raises(ProcessingFailed, match="did not finish within 30 s"):
        asyncio.run(process_pending(api.app.state.settings, batch_size=1, tenant=tenant, time_limit=30))
    took = time.monotonic() - started
    left = children.alive()
    print(f"a run over its 30 s limit returned after {took:.1f} s, leaving {len(left)} processes")
    assert site.hits(page), "the page was not being fetched when the limit struck: nothing was tested"
    assert took < 80, f"the run over its limit held on for {took:.0f} s"
    assert left == []


# -- finding 11: /metrics ----------------------------------------------------------------------------------------


def with_(settings: Settings, **changes: Any) -> Settings:
    return Settings(**{**settings.model_dump(), **changes})


def test_metrics_are_closed_by_default(limits_settings: Settings) -> None:
    """/metrics answered anyone (queue depth, worker hosts and pids, byte counters). Now it wants a token;
    without one configured it is a 403 naming the settings that open it."""
    with make_client(limits_settings) as client:
        response = client.get("/metrics")
        assert response.status_code == 403, response.text
        body = response.json()
        assert (body["success"], body["code"]) == (False, "metrics_closed")
        assert "CRAWLJOBS_METRICS_TOKEN" in body["error"] and "CRAWLJOBS_METRICS_OPEN" in body["error"]
        assert "crawljobs_" not in response.text
    with make_client(with_(limits_settings, metrics_open=True)) as client:
        assert client.get("/metrics").status_code == 200
    token = secrets.token_urlsafe(16)
    with make_client(with_(limits_settings, metrics_token=token, metrics_open=True)) as client:
        assert client.get("/metrics").status_code == 401  # a token set is wanted, open or not
        assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with make_client(with_(limits_settings, metrics_token="")) as client:
        assert client.get("/metrics").status_code == 403  # an empty token is none, not one that matches ""


# -- finding 13: waits and streams of a revoked key ----------------------------------------------------------------


def revoke(database_url: str, auth: dict[str, str]) -> None:
    """Revoke a key as the store knows revocation: `revoked_at` set (find_tenant_by_key skips such keys)."""
    key = auth["Authorization"].split()[1]
    with psycopg.connect(database_url) as conn:
        done = conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_hash = %s AND revoked_at IS NULL",
            (hash_key(key),),
        )
        assert done.rowcount == 1


def read_events(response: httpx.Response, into: queue.Queue[tuple[str, str]]) -> None:
    event = "message"
    for line in response.iter_lines():
        if line.startswith(":"):
            into.put(("comment", line[1:].strip()))
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            into.put((event, line[5:].strip()))
            event = "message"
    into.put(("closed", ""))


def test_an_event_stream_ends_once_its_key_is_revoked(
    api: LiveApi, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream went on after its key was revoked, for as long as its batch ran. Now it re-checks the key
    (every 0.5 s here) and ends with `event: error` naming the reason."""
    monkeypatch.setattr(streams, "KEEPALIVE_SECONDS", 0.2)
    auth = new_tenant(database_url)
    submit(api, auth, ["https://example.com/revoked/1"], batch_id="revoked")
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    with (
        ThreadPoolExecutor(max_workers=1) as background,  # joined last: after the stream is closed
        httpx.Client(base_url=api.base, headers=auth, timeout=30) as http,
        http.stream("GET", "/v1/batches/revoked/events") as response,
    ):
        assert response.status_code == 200
        reader = background.submit(read_events, response, events)
        assert events.get(timeout=5)[0] == "counts"
        # Valid keys are re-checked and the stream goes on: keep-alives for three intervals, nothing else.
        heard: list[tuple[str, str]] = []
        quiet_until = time.monotonic() + 1.5
        while time.monotonic() < quiet_until:
            heard.append(events.get(timeout=5))
        assert {kind for kind, _ in heard} == {"comment"}, heard
        revoke(database_url, auth)
        revoked_at = time.monotonic()
        after: list[tuple[str, str]] = []
        while (not after or after[-1][0] != "closed") and time.monotonic() < revoked_at + 10:
            after.append(events.get(timeout=10))
        ended = time.monotonic() - revoked_at
        print(f"the stream ended {ended:.2f} s after its key was revoked")
        kinds = [kind for kind, _ in after if kind != "comment"]
        assert kinds == ["error", "closed"], after[-5:]
        reader.result(5)
    error = json.loads(next(data for kind, data in after if kind == "error"))
    assert error == {
        "success": False,
        "code": "unauthorized",
        "error": "the API key was revoked; the stream ends",
    }
    assert ended < 5  # two intervals (a shared re-check may be one interval old), far from "never"
    until(lambda: api.waiters() == 0, what="the stream's subscription to end")


WAITS: dict[str, Callable[[httpx.Client, str], httpx.Response]] = {
    "job": lambda http, job_id: http.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 60}),
    "batch": lambda http, _: http.get("/v1/batches/waited/wait", params={"timeout": 60}),
    "legacy": lambda http, job_id: http.post(
        "/functions/v1/wait-for-crawl-job", json={"jobId": job_id, "maxWaitTimeMs": 60_000}
    ),
}


@pytest.mark.parametrize("kind", WAITS)
def test_a_long_wait_ends_401_once_its_key_is_revoked(api: LiveApi, database_url: str, kind: str) -> None:
    """A wait held its answer for its whole timeout after the key was revoked; now it is a 401 within two
    re-check intervals."""
    auth = new_tenant(database_url)
    (job_id,) = submit(api, auth, ["https://example.com/waited/1"], batch_id="waited")
    with (
        httpx.Client(base_url=api.base, headers=auth, timeout=90) as http,
        ThreadPoolExecutor(max_workers=1) as background,
    ):
        before = api.waiters()
        waiting = background.submit(WAITS[kind], http, job_id)
        until(lambda: api.waiters() > before, what="the wait to start")
        time.sleep(1.2)  # past two re-checks of the valid key
        assert not waiting.done()
        revoke(database_url, auth)
        revoked_at = time.monotonic()
        response = waiting.result(70)
        ended = time.monotonic() - revoked_at
    print(f"the {kind} wait answered {response.status_code} {ended:.2f} s after its key was revoked")
    assert response.status_code == 401, response.text
    body = response.json()
    assert (body["success"], body["code"]) == (False, "unauthorized")
    assert "revoked" in body["error"]
    assert ended < 5


def test_the_refusals_are_documented() -> None:
    paths = create_app(Settings(database_url="postgresql://unused.invalid/doc")).openapi()["paths"]
    assert {"401", "403"} <= set(paths["/metrics"]["get"]["responses"])
    for path in (PROCESS, "/v1/jobs/process"):
        assert "Retry-After" in paths[path]["post"]["responses"]["429"]["headers"]

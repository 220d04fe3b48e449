"""Request bodies as a weapon against a real API process: memory, held connections, read time.

The attack (issue 10, finding 1): bodies of up to CRAWLJOBS_MAX_REQUEST_BYTES were read before the key was
checked, with no bound on how many are read at once and no bound on how long one may take. 25 connections
without a key, each holding back the last byte of 60 MiB, took the API from 92 to 1,697 MiB.

Here the API runs in a process of its own (``tests.hostile.api_process``) and is attacked over raw sockets:

- without a key, a body is never read: the 401 comes after the headers, and the process's memory stays where
  it was however many such bodies are being sent;
- with a valid key, the bytes of bodies in flight are bounded (CRAWLJOBS_MAX_BODY_BYTES_IN_FLIGHT): a body
  that does not fit is a 503 with Retry-After, before it is read;
- a body still arriving at the read deadline (CRAWLJOBS_BODY_READ_TIMEOUT_SECONDS) is a 408, and its
  connection is closed.

Figures are printed (``pytest -s``) and bounds are far from both the broken and the fixed values.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.hostile.api_process import ApiProcess, api_process
from tests.hostile.conftest import api_routes

MIB = 2**20
CHUNK = b" " * MIB  # JSON whitespace: a body that is not finished until its last byte


def head(path: str, length: int, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(api: ApiProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", api.port), timeout=60)


def early_answer(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent within ``seconds`` (until it closed the connection), or None if nothing came."""
    readable, _, _ = select.select([sock], [], [], seconds)
    if not readable:
        return None
    return read_answer(sock)


def read_answer(sock: socket.socket) -> bytes:
    """One response: its head, and its body as long as its Content-Length says (or until the server closes)."""
    data = b""
    with contextlib.suppress(OSError):
        while True:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                for line in data[:head_end].lower().split(b"\r\n"):
                    if line.startswith(b"content-length:") and len(data) >= head_end + 4 + int(line[15:]):
                        return data
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def status_of(answer: bytes | None) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer else None


def body_of(answer: bytes) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(answer.partition(b"\r\n\r\n")[2])
    return parsed


def send_all_but_the_last_byte(sock: socket.socket, length: int) -> bool:
    """Send ``length - 1`` bytes of body (True), or stop when the server closes the connection (False)."""
    left = length - 1
    try:
        while left > 0:
            sock.sendall(CHUNK[: min(left, MIB)])
            left -= min(left, MIB)
    except OSError:  # the server answered and closed: nothing more to send
        return False
    return True


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("body-pressure")


@pytest.fixture(scope="module")
def default_api(database_url: str, redis_url: str, logs: Path) -> Iterator[ApiProcess]:
    """The API with the default body limits (64 MiB bodies), a short read deadline aside."""
    with api_process(
        database_url,
        redis_url,
        log=logs / "default-api.log",
        queue_prefix=f"cjbody:{secrets.token_hex(4)}",
        body_read_timeout_seconds="60",
    ) as api:
        yield api


def warm(api: ApiProcess, key: str) -> None:
    """A first request of each kind, so that what the test measures is not the first request's imports."""
    with httpx.Client(base_url=api.base, timeout=30) as client:
        client.get("/healthz").raise_for_status()
        client.post("/v1/batches", json={"urls": []})
        client.post("/v1/batches", json={"urls": []}, headers={"Authorization": f"Bearer {key}"})


def _concrete(path: str) -> str:
    return path.replace("{job_id}", "00000000-0000-0000-0000-000000000000").replace("{batch_id}", "nothing")


# Every route that takes a request with a body, read from the app (the legacy /functions/v1 routes too).
POST_ROUTES = sorted(_concrete(r.path) for r in api_routes() if "POST" in r.methods)


def test_without_a_key_the_body_is_not_read(default_api: ApiProcess) -> None:
    """The answer comes right after the headers: the client has sent none of the 10 MiB body it announced.

    Every POST route of the API needs a key (401); the dashboard's forms a session (a redirect to its sign-in
    page), and its sign-in form, read without one, is held to a few KiB (413); a path no route takes is a 404,
    a method it does not take a 405."""
    assert "/functions/v1/submit-crawl-jobs-batch" in POST_ROUTES and "/v1/batches" in POST_ROUTES
    api = [path for path in POST_ROUTES if path.startswith(("/v1/", "/functions/"))]
    dashboard = [path for path in POST_ROUTES if path not in api and path != "/sign-in"]
    assert "/submit/batch" in dashboard and "/sign-in" in POST_ROUTES
    cases = (
        [(path, 401) for path in api]
        + [(path, 303) for path in dashboard]
        + [("/sign-in", 413), ("/nowhere", 404), ("/healthz", 405)]
    )
    for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"apikey": "not-a-key"}):
        for path, status in cases:
            with connect(default_api) as sock:
                sock.sendall(head(path, 10 * MIB, headers))
                answer = early_answer(sock, 10)
            assert status_of(answer) == status, (path, headers, answer)
            assert answer is not None
            if status == 303:
                assert b"\r\nlocation: /sign-in?reason=expired\r\n" in answer.lower()
            if status == 401:
                assert body_of(answer)["code"] == "unauthorized"
                assert b"\r\nwww-authenticate: bearer" in answer.lower()
    # CORS preflights and the open routes need no key.
    preflight = httpx.options(
        f"{default_api.base}/v1/batches",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code != 401, preflight.text


def test_bodies_without_a_key_do_not_fill_the_memory(default_api: ApiProcess, api_key: str) -> None:
    """20 connections, each sending 40 MiB of a 40 MiB body but its last byte, without a key (the attack).

    Broken: the API read them all, +800 MiB and more. Fixed: none is read; the memory stays where it was."""
    warm(default_api, api_key)
    connections, length = 20, 40 * MIB
    before = default_api.rss_mib()
    sockets = [connect(default_api) for _ in range(connections)]
    sent: list[bool] = []
    try:

        def attack(sock: socket.socket) -> None:
            sock.sendall(head("/v1/batches", length, {}))
            sent.append(send_all_but_the_last_byte(sock, length))

        threads = [threading.Thread(target=attack, args=(sock,)) for sock in sockets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        time.sleep(0.5)
        during = default_api.rss_mib()
    finally:
        for sock in sockets:
            sock.close()
    growth = during - before
    print(
        f"\nno key: {connections} x {length // MIB} MiB bodies, {sent.count(True)} sent whole but a byte; "
        f"API RSS {before:.0f} -> {during:.0f} MiB (+{growth:.0f})"
    )
    assert growth < 200, f"the API grew by {growth:.0f} MiB ({before:.0f} -> {during:.0f}) for unread bodies"
    assert httpx.get(f"{default_api.base}/healthz", timeout=10).status_code == 200


def test_bodies_in_flight_with_a_key_are_bounded(
    database_url: str, redis_url: str, logs: Path, api_key: str
) -> None:
    """With a valid key: 20 bodies of 15 MiB held open under a 45 MiB cap. Three are read; the others get a
    503 with Retry-After at once, unread. Broken: all 20 were read (+300 MiB)."""
    cap, connections, length = 45 * MIB, 20, 15 * MIB
    with api_process(
        database_url,
        redis_url,
        log=logs / "capped-api.log",
        queue_prefix=f"cjbody:{secrets.token_hex(4)}",
        max_request_bytes=str(16 * MIB),
        max_body_bytes_in_flight=str(cap),
        body_read_timeout_seconds="60",
    ) as api:
        warm(api, api_key)
        before = api.rss_mib()
        auth = {"Authorization": f"Bearer {api_key}"}
        sockets = [connect(api) for _ in range(connections)]
        answers: list[bytes | None] = []
        try:

            def client(sock: socket.socket) -> None:
                sock.sendall(head("/v1/batches", length, auth))
                answer = early_answer(sock, 5.0)  # a refusal comes right after the headers
                if answer is None:
                    send_all_but_the_last_byte(sock, length)
                answers.append(answer)

            threads = [threading.Thread(target=client, args=(sock,)) for sock in sockets]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            time.sleep(0.5)
            during = api.rss_mib()
            # The cap is full: even a small body waits for room.
            full = httpx.post(f"{api.base}/v1/batches", json={"urls": []}, headers=auth, timeout=10)
        finally:
            for sock in sockets:
                sock.close()
        statuses = [status_of(a) for a in answers]
        growth = during - before
        print(
            f"\nkey, cap {cap // MIB} MiB: {connections} x {length // MIB} MiB bodies held; "
            f"read: {statuses.count(None)}, refused: {statuses.count(503)}; "
            f"API RSS {before:.0f} -> {during:.0f} MiB (+{growth:.0f})"
        )
        assert growth < 150, f"the API grew by {growth:.0f} MiB ({before:.0f} -> {during:.0f})"
        assert statuses.count(None) == cap // length, statuses
        assert statuses.count(503) == connections - cap // length, statuses
        refused = next(a for a in answers if a is not None)
        assert body_of(refused)["code"] == "server_busy"
        assert b"\r\nretry-after: " in refused.lower()
        assert full.status_code == 503 and full.headers["retry-after"], full.text
        # Once those bodies are gone, the budget is free again.
        deadline = time.monotonic() + 10
        while True:
            again = httpx.post(f"{api.base}/v1/batches", json={"urls": []}, headers=auth, timeout=10)
            if again.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert again.status_code == 422, again.text  # an empty batch: read, parsed and refused


def test_a_trickling_body_is_cut_at_the_read_deadline(
    database_url: str, redis_url: str, logs: Path, api_key: str
) -> None:
    """50 connections with a key trickle a byte of their body every 0.2 s: each gets a 408 at the 2 s
    deadline and its connection is closed. Broken: they stayed open as long as the client liked."""
    deadline_seconds, connections = 2.0, 50
    with api_process(
        database_url,
        redis_url,
        log=logs / "deadline-api.log",
        queue_prefix=f"cjbody:{secrets.token_hex(4)}",
        body_read_timeout_seconds=str(deadline_seconds),
    ) as api:
        warm(api, api_key)
        auth = {"Authorization": f"Bearer {api_key}"}
        results: list[tuple[float, bytes | None]] = []
        release = threading.Event()  # the clients keep their sockets until the server's side is counted

        def trickle() -> None:
            with connect(api) as sock:
                started = time.monotonic()
                sock.sendall(head("/v1/batches", 100_000, auth))
                answer = None
                while time.monotonic() - started < 15:
                    answer = early_answer(sock, 0.2)
                    if answer is not None:
                        break
                    try:
                        sock.sendall(b" ")
                    except OSError:
                        answer = read_answer(sock)
                        break
                results.append((time.monotonic() - started, answer))
                release.wait(30)

        threads = [threading.Thread(target=trickle) for _ in range(connections)]
        for thread in threads:
            thread.start()
        wait_until = time.monotonic() + 20
        while len(results) < connections and time.monotonic() < wait_until:
            time.sleep(0.1)
        open_after = [
            c for c in api.process.net_connections() if c.laddr and c.laddr.port == api.port and c.raddr
        ]
        release.set()
        for thread in threads:
            thread.join(30)
    times = sorted(t for t, _ in results)
    statuses = [status_of(a) for _, a in results]
    print(
        f"\n{connections} trickling bodies, deadline {deadline_seconds} s: statuses {sorted(set(statuses), key=str)}, "
        f"cut after {times[0]:.1f}..{times[-1]:.1f} s; connections still open: {len(open_after)}"
    )
    assert statuses == [408] * connections, statuses
    assert times[-1] < deadline_seconds + 8, times
    answer = results[0][1]
    assert answer is not None and body_of(answer)["code"] == "request_timeout"
    assert b"\r\nconnection: close" in answer.lower()
    assert len(open_after) == 0, open_after


def test_a_request_with_a_body_looks_its_key_up_once(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The middleware's tenant (found before the body was read) is the route's: no second look-up."""
    manager = client.app.state.manager  # type: ignore[attr-defined]
    looked_up: list[list[str]] = []
    real = manager.tenant_of_key

    async def counted(keys: list[str]) -> str | None:
        looked_up.append(list(keys))
        return await real(keys)

    monkeypatch.setattr(manager, "tenant_of_key", counted)
    response = client.post("/v1/jobs", json={"url": "https://example.com/looked-up-once"}, headers=auth)
    assert response.status_code == 201, response.text
    assert len(looked_up) == 1, looked_up
    legacy = client.post(
        "/functions/v1/submit-crawl-job",
        json={"url": "https://example.com/looked-up-once-legacy"},
        headers={"apikey": auth["Authorization"].removeprefix("Bearer ")},
    )
    assert legacy.status_code == 200, legacy.text
    assert len(looked_up) == 2, looked_up
    # A GET has no body: its route looks the key up itself.
    assert client.get("/v1/batches", headers=auth).status_code == 200
    assert len(looked_up) == 3, looked_up

"""One valid 50,000-URL batch of long IDN URLs must not freeze a real API process for everyone else.

The attack (issue 10, finding 2): the URL checks of a batch ran on the event loop, 31-40 s of CPU for 50,000
long IDN URLs on distinct hosts, during which ``/healthz`` stalled up to 33.7 s, and the process grew by
800 MiB. Here a thread polls ``/healthz`` every 50 ms while such a batch is submitted to an API process of its
own (``tests.hostile.api_process``: every host is a ``.test`` name its resolver says does not resolve, after
a delay, as a real resolver's NXDOMAIN; no real DNS look-up is possible), and the worst answer time is
asserted far below the broken figure. Figures are printed (``pytest -s``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from crawljobs.submission import request_hash
from tests.hostile.api_process import api_process

BATCH = 50_000
pytestmark = pytest.mark.timeout(600)


def long_idn_urls(count: int, run: str) -> list[str]:
    """Valid URLs, each on a host of its own, with non-ASCII in the host, the path and the query (~260
    characters, ~1,300 once percent-encoded)."""
    return [
        f"https://bücher-{run}-{i}.straße-{i % 97}.例え.test/kategorie/{'ä' * 60}/produkt-{i}"
        f"?q={'ß' * 120}&seite={i % 50}"
        for i in range(count)
    ]


def test_a_big_idn_batch_does_not_stall_the_api(
    database_url: str, redis_url: str, api_key: str, tmp_path: Path
) -> None:
    with api_process(
        database_url,
        redis_url,
        log=tmp_path / "api.log",
        dns_delay=0.05,
        queue_prefix=f"cjbatch:{secrets.token_hex(4)}",
    ) as api:
        auth = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=api.base, timeout=120) as client:
            warm = client.post(
                "/v1/batches", content=json.dumps({"urls": long_idn_urls(10, "warm")}), headers=auth
            )
            assert warm.status_code == 201, warm.text
            body = json.dumps(
                {"urls": long_idn_urls(BATCH, secrets.token_hex(3))}, ensure_ascii=False
            ).encode()
            before = api.rss_mib()

            latencies: list[float] = []
            peak = [before]
            stop = threading.Event()

            def poll() -> None:
                with httpx.Client(base_url=api.base, timeout=120) as health:
                    while not stop.is_set():
                        started = time.perf_counter()
                        health.get("/healthz").raise_for_status()
                        latencies.append(time.perf_counter() - started)
                        peak[0] = max(peak[0], api.rss_mib())
                        stop.wait(0.05)

            poller = threading.Thread(target=poll)
            poller.start()
            try:
                started = time.perf_counter()
                response = client.post("/v1/batches", content=body, headers=auth)
                submit_seconds = time.perf_counter() - started
            finally:
                stop.set()
                poller.join(150)
        assert response.status_code == 201, response.text[:500]
        created = response.json()
        assert len(created["job_ids"]) == BATCH and not created["failures"], created["failures"][:3]

    worst, middle = max(latencies), statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(
        f"\n{BATCH} long IDN URLs ({len(body) / 2**20:.0f} MiB body): submitted in {submit_seconds:.1f} s; "
        f"/healthz worst {worst * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, median {middle * 1000:.0f} ms "
        f"over {len(latencies)} polls; "
        f"API RSS {before:.0f} -> peak {peak[0]:.0f} MiB (+{peak[0] - before:.0f})"
    )
    assert worst < 3.0, f"/healthz stalled {worst:.1f} s (median {middle * 1000:.0f} ms) during the batch"


def test_the_request_hash_is_the_digest_it_always_was() -> None:
    """The hash is now fed piece by piece (no second copy of a batch's text): stored fingerprints of earlier
    batches must still match their replays, so it is the digest of the same JSON text, byte for byte."""
    payload = {
        "urls": [*long_idn_urls(3, "hash"), "https://example.com/\u00e9\u4f8b", None, 7, {"nested": [1.5]}],
        "render": True,
        "max_retries": 2,
        "batch_id": None,
        "callback_url": "https://bücher.example/hook",
        "when": datetime(2026, 1, 2, tzinfo=UTC),  # default=str
    }
    whole = json.dumps(payload, sort_keys=True, default=str).encode()
    assert request_hash(payload) == hashlib.sha256(whole).hexdigest()

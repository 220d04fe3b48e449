"""Clients waiting on jobs through the HTTP API, each in a thread, that wait again when they lose the API.

Half of them use the Python client (``crawljobs.client.Client.wait``), half call ``GET /v1/jobs/{id}/wait``
themselves. A client that cannot reach the API (connection refused or cut, a 5xx) counts a reconnect, pauses
briefly and waits again, until its job is final or its deadline passes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx

from crawljobs.client import Client, ServiceUnavailable

FINAL = ("completed", "error", "cancelled")
RETRY_PAUSE_SECONDS = 0.1
RAW_WAIT_SECONDS = 30


@dataclass
class Waiter:
    job_id: str
    with_client: bool
    status: str | None = None
    answered_at: float | None = None  # time.time() when the final answer arrived
    reconnects: int = 0
    error: str | None = None


class Waiters:
    def __init__(self, base_url: str, api_key: str, job_ids: list[str], deadline_seconds: float) -> None:
        self.base_url, self.api_key = base_url, api_key
        self.deadline = time.time() + deadline_seconds
        self.waiters = [Waiter(job_id, with_client=i % 2 == 0) for i, job_id in enumerate(job_ids)]
        self.threads = [
            threading.Thread(target=self._run, args=(w,), name=f"waiter-{w.job_id}", daemon=True)
            for w in self.waiters
        ]

    def start(self) -> Waiters:
        for thread in self.threads:
            thread.start()
        return self

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, end - time.monotonic()))

    @property
    def reconnected(self) -> int:
        return sum(1 for w in self.waiters if w.reconnects)

    def _run(self, waiter: Waiter) -> None:
        try:
            if waiter.with_client:
                self._wait_with_client(waiter)
            else:
                self._wait_raw(waiter)
        except Exception as exc:  # reported by the test, with the job it was waiting for
            waiter.error = f"{type(exc).__name__}: {exc}"

    def _wait_with_client(self, waiter: Waiter) -> None:
        with Client(self.base_url, self.api_key, timeout=10) as client:
            while True:
                try:
                    job = client.wait(waiter.job_id, timeout=max(1.0, self.deadline - time.time()))
                except ServiceUnavailable:  # ConnectionFailed too: the API is restarting
                    waiter.reconnects += 1
                    if time.time() > self.deadline:
                        raise
                    time.sleep(RETRY_PAUSE_SECONDS)
                    continue
                waiter.status, waiter.answered_at = job.status, time.time()
                return

    def _wait_raw(self, waiter: Waiter) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        timeout = httpx.Timeout(10, read=RAW_WAIT_SECONDS + 10)
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout) as http:
            while time.time() < self.deadline:
                try:
                    response = http.get(
                        f"/v1/jobs/{waiter.job_id}/wait", params={"timeout": RAW_WAIT_SECONDS}
                    )
                except httpx.TransportError:
                    response = None
                if response is None or response.status_code >= 500:
                    waiter.reconnects += 1
                    time.sleep(RETRY_PAUSE_SECONDS)
                    continue
                response.raise_for_status()
                body = response.json()
                if body["status"] in FINAL:
                    waiter.status, waiter.answered_at = body["status"], time.time()
                    return
            raise TimeoutError(f"job {waiter.job_id} not final before the deadline")

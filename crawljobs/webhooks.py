"""Webhook delivery: signed POSTs from the outbox (``webhook_deliveries``), retried with backoff for a day.

Outbox rows are written by the store in the same transaction as the state change they report
(``store.finish_jobs``), so a delivery exists exactly when its job's result does, and survives any restart;
the sender reaches them only through the manager's outbox (``crawljobs.outbox``).
The sweeper runs `WebhookSender.run` beside its sweeps, never inside them: it claims due rows (``FOR UPDATE SKIP
LOCKED``, pushing their next attempt `LEASE_SECONDS` ahead before sending, so two sweepers never send the same
one), sends each in a task of its own, and records the outcome. Every delivery has one deadline for the whole
of it (``CRAWLJOBS_WEBHOOK_TIMEOUT_SECONDS``: resolving, connecting, sending, the answer; httpx's own timeouts are per read, so a
receiver answering a byte a second would never time out), at most `CONCURRENT_SENDS` are in flight and at most
`SENDS_PER_TENANT` of one tenant: a slow receiver holds its own slots for at most the deadline, and the other
tenants' deliveries, the lease reclaims, dispatch and retention never wait for it.

Network rules (DESIGN rule 7) hold at delivery time too: the callback's host is resolved and checked with
`resolve_and_check`, and the request connects to the checked address (the URL's host is replaced by it; the
Host header and, for https, the TLS server name and certificate check keep the original name), so a second
DNS answer cannot point the delivery elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx

from crawljobs.exceptions import UrlRejected
from crawljobs.logs import job_fields
from crawljobs.manager import JobManager
from crawljobs.models import DueDelivery
from crawljobs.urls import resolve_and_check

logger = logging.getLogger(__name__)

# Seconds to wait after each failed attempt: about 23 hours in all, then the delivery is given up.
BACKOFF_SECONDS = (10, 30, 60, 300, 900, 1800, 3600, 3600, 7200, 7200, 14400, 14400, 28800)
# A claimed delivery is not due again for this long (more than a send can take).
LEASE_SECONDS = 60
DELIVERIES_PER_SWEEP = 100
CONCURRENT_SENDS = 20
SENDS_PER_TENANT = 10
# How often the running sender looks for due deliveries while it has nothing to send.
POLL_SECONDS = 1.0
ERROR_CHARS = 500


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Crawljobs-Signature`` value: ``v1=`` and the hex HMAC-SHA256 of ``{timestamp}.{body}``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """True when `signature` is the one `sign` gives (compared in constant time, as bytes: a received header
    may hold any text, and ``hmac.compare_digest`` raises on a str with non-ASCII characters)."""
    expected = sign(secret, timestamp, body).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape"))


def retry_delay(attempts: int) -> float | None:
    """Seconds before the next try after `attempts` failed ones, or None once the schedule is spent."""
    if attempts > len(BACKOFF_SECONDS):
        return None
    return float(BACKOFF_SECONDS[attempts - 1])


def pinned_request(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL with its host replaced by the checked `address`, the Host header, and httpx extensions."""
    parsed = httpx.URL(url)
    host = parsed.host
    pinned = parsed.copy_with(host=address)  # httpx brackets an IPv6 address itself
    host_header = host if parsed.port is None else f"{host}:{parsed.port}"
    extensions: dict[str, Any] = {"sni_hostname": host} if parsed.scheme == "https" else {}
    return str(pinned), {"Host": host_header}, extensions


def _about(delivery: DueDelivery) -> dict[str, str]:
    """The job and batch a delivery is about, for its log records."""
    return job_fields(delivery.job_id, delivery.batch_id)


class WebhookSender:
    def __init__(self, manager: JobManager, *, limit: int = DELIVERIES_PER_SWEEP) -> None:
        self.manager = manager
        self.limit = limit
        self.timeout = manager.settings.webhook_timeout_seconds

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False) as client:
            yield client

    async def deliver_due(self) -> int:
        """One round: send the due deliveries (at most `limit`), each within its deadline; how many were
        delivered. (`run` is the sweeper's way; this is one pass of it, for a single sweep.)"""
        outbox = self.manager.webhooks
        due = await outbox.claim_due(limit=self.limit, lease_seconds=LEASE_SECONDS)
        if not due:
            return 0
        secrets_by_tenant = await outbox.secrets(delivery.tenant for delivery in due)
        limit = asyncio.Semaphore(CONCURRENT_SENDS)
        async with self._client() as client:

            async def one(delivery: DueDelivery) -> bool:
                async with limit:
                    return await self._deliver(client, delivery, secrets_by_tenant[delivery.tenant])

            outcomes = await asyncio.gather(*(one(delivery) for delivery in due))
        return sum(outcomes)

    async def run(self, stop: asyncio.Event, *, poll_seconds: float = POLL_SECONDS) -> None:
        """Send deliveries as they fall due until `stop` is set, each in a task of its own (see the module)."""
        sending: dict[asyncio.Task[bool], str] = {}  # each send's task, and its tenant
        async with self._client() as client:
            try:
                while not stop.is_set():
                    claimed = 0
                    free = CONCURRENT_SENDS - len(sending)
                    if free > 0:
                        try:
                            claimed = await self._start_due(client, sending, free)
                        except Exception:
                            logger.exception("cannot claim webhook deliveries", extra={"action": "webhook"})
                    if claimed and len(sending) < CONCURRENT_SENDS:
                        continue  # more may be due: claim again before waiting
                    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait()), *sending}
                    done, _ = await asyncio.wait(
                        waiters, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in [t for t in done if t in sending]:
                        del sending[task]
                        if not task.cancelled() and task.exception() is not None:  # _deliver records its own
                            logger.error(
                                "a webhook send failed",
                                exc_info=task.exception(),
                                extra={"action": "webhook"},
                            )
                    for waiter in waiters - set(sending) - done:
                        waiter.cancel()
            finally:
                # Stopping: sends in flight get the rest of their deadline (each is bounded by it).
                if sending:
                    await asyncio.gather(*sending, return_exceptions=True)

    async def _start_due(
        self, client: httpx.AsyncClient, sending: dict[asyncio.Task[bool], str], free: int
    ) -> int:
        """Claim up to `free` due deliveries of tenants with room and start sending them; how many started."""
        outbox = self.manager.webhooks
        per_tenant = Counter(sending.values())
        busy = [tenant for tenant, count in per_tenant.items() if count >= SENDS_PER_TENANT]
        due = await outbox.claim_due(limit=free, lease_seconds=LEASE_SECONDS, busy=busy)
        if not due:
            return 0
        start, later = [], []
        for delivery in due:  # one claim may hold more of a tenant than it has room for: those wait
            if per_tenant[delivery.tenant] < SENDS_PER_TENANT:
                per_tenant[delivery.tenant] += 1
                start.append(delivery)
            else:
                later.append(delivery.id)
        await outbox.unclaim(later)
        secrets_by_tenant = await outbox.secrets(delivery.tenant for delivery in start)
        for delivery in start:
            task = asyncio.create_task(
                self._deliver(client, delivery, secrets_by_tenant[delivery.tenant]),
                name=f"webhook-{delivery.id}",
            )
            sending[task] = delivery.tenant
        return len(start)

    async def _deliver(self, client: httpx.AsyncClient, delivery: DueDelivery, secret: str) -> bool:
        delivery_id = delivery.id
        body = json.dumps({"id": str(delivery_id), **delivery.payload}, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        status: int | None = None
        error: str
        try:
            async with asyncio.timeout(self.timeout):
                parsed = httpx.URL(delivery.url)
                addresses = await resolve_and_check(parsed.host, self.manager.policy, self.manager.resolver)
                url, headers, extensions = pinned_request(delivery.url, addresses[0])
                headers.update(
                    {
                        "Content-Type": "application/json",
                        "User-Agent": "crawljobs-webhooks",
                        "X-Crawljobs-Event": delivery.event,
                        "X-Crawljobs-Delivery": str(delivery_id),
                        "X-Crawljobs-Timestamp": timestamp,
                        "X-Crawljobs-Signature": sign(secret, timestamp, body),
                    }
                )
                response = await client.post(url, content=body, headers=headers, extensions=extensions)
            status = response.status_code
            if 200 <= status < 300:
                await self.manager.webhooks.delivered(delivery_id, status=status)
                self.manager.meter.count("webhook_deliveries", "delivered")
                logger.info(
                    "webhook %s delivered",
                    delivery_id,
                    extra={"action": "webhook", "delivery_id": str(delivery_id), **_about(delivery)},
                )
                return True
            error = f"HTTP {status}"
        except UrlRejected as exc:
            error = f"refused by the network rules: {exc.message}"
        except TimeoutError:
            error = f"timed out: the delivery took longer than {self.timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except (
            Exception
        ) as exc:  # a URL httpx cannot use: recorded like any failure, never fatal to the sweep
            logger.exception("webhook %s could not be sent", delivery_id, extra={"action": "webhook"})
            error = f"{type(exc).__name__}: {exc}"
        retry_in = retry_delay(delivery.attempts)
        await self.manager.webhooks.failed(
            delivery_id, status=status, error=error[:ERROR_CHARS], retry_in=retry_in
        )
        self.manager.meter.count("webhook_deliveries", "failed" if retry_in is not None else "gave_up")
        logger.warning(
            "webhook %s attempt %d failed (%s); %s",
            delivery_id,
            delivery.attempts,
            error,
            "giving up" if retry_in is None else f"next try in {retry_in:.0f} s",
            extra={"action": "webhook", "delivery_id": str(delivery_id), **_about(delivery)},
        )
        return False

"""Webhook delivery: signed POSTs from the outbox (``webhook_deliveries``), retried with backoff for a day.

Outbox rows are written by the store in the same transaction as the state change they report
(``store.finish_jobs``), so a delivery exists exactly when its job's result does, and survives any restart;
the sender reaches them only through the manager's outbox (``crawljobs.outbox``).
The sweeper calls `WebhookSender.deliver_due` on every sweep: it claims due rows (``FOR UPDATE SKIP LOCKED``,
pushing their next attempt `LEASE_SECONDS` ahead before sending, so two sweepers never send the same one),
sends them, and records the outcome.

Network rules (DESIGN rule 7) hold at delivery time too: the callback's host is resolved and checked with
`resolve_and_check`, and the request connects to the checked address (the URL's host is replaced by it; the
Host header and, for https, the TLS server name and certificate check keep the original name), so a second
DNS answer cannot point the delivery elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
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
TIMEOUT_SECONDS = 10.0
# A claimed delivery is not due again for this long (more than a send can take).
LEASE_SECONDS = 60
DELIVERIES_PER_SWEEP = 100
CONCURRENT_SENDS = 20
ERROR_CHARS = 500


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Crawljobs-Signature`` value: ``v1=`` and the hex HMAC-SHA256 of ``{timestamp}.{body}``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """True when `signature` is the one `sign` gives (compared in constant time)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


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

    async def deliver_due(self) -> int:
        """Send the due deliveries (at most `limit`); how many were delivered."""
        outbox = self.manager.webhooks
        due = await outbox.claim_due(limit=self.limit, lease_seconds=LEASE_SECONDS)
        if not due:
            return 0
        secrets_by_tenant = await outbox.secrets(delivery.tenant for delivery in due)
        limit = asyncio.Semaphore(CONCURRENT_SENDS)

        async with httpx.AsyncClient(
            timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
        ) as client:

            async def one(delivery: DueDelivery) -> bool:
                async with limit:
                    return await self._deliver(client, delivery, secrets_by_tenant[delivery.tenant])

            outcomes = await asyncio.gather(*(one(delivery) for delivery in due))
        return sum(outcomes)

    async def _deliver(self, client: httpx.AsyncClient, delivery: DueDelivery, secret: str) -> bool:
        delivery_id = delivery.id
        body = json.dumps({"id": str(delivery_id), **delivery.payload}, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        status: int | None = None
        error: str
        try:
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

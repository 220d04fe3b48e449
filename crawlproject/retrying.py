"""Retry decisions as plain functions (Scrapy's ``get_retry_request`` habit): the middleware only wires them in.

An attempt ends in one of four outcomes: ``ok``; ``blocked`` (escalate to the next method); ``transient``
(timeouts, lost connections, 5xx, 429, 408: retry the same method after an exponential backoff with full
jitter, honouring Retry-After); ``permanent`` (other 4xx, bodies over the limit, content that cannot be stored,
refused addresses, names that do not resolve, too many redirects: stop now).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

Outcome = Literal["ok", "blocked", "transient", "permanent"]
Action = Literal["done", "retry", "escalate", "fail"]

TRANSIENT_STATUSES = frozenset(
    {408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 525, 526, 527, 529}
)
TRANSIENT_ERRORS = frozenset(
    {
        "TimeoutError",
        "TCPTimedOutError",
        "DownloadTimeoutError",
        "ConnectionRefusedError",
        "DownloadConnectionRefusedError",
        "ConnectionDone",
        "ConnectionLost",
        "ConnectError",
        "ConnectionResetError",
        "ResponseNeverReceived",
        "ResponseFailed",
        "ResponseDataLossError",
        "PotentialDataLoss",
        "DownloadFailedError",
        "TunnelError",
        "PlaywrightTimeoutError",
    }
)
PERMANENT_ERRORS = frozenset(
    {
        "DNSLookupError",
        "CannotResolveHostError",
        "AddressRefused",
        "AddressForbidden",
        "UnsupportedURLSchemeError",
        "DownloadCancelledError",
    }
)


def _error_name(exception: BaseException | str) -> str:
    return exception if isinstance(exception, str) else type(exception).__name__


def classify(
    *,
    status: int | None,
    exception: BaseException | str | None,
    block_reason: str | None,
    body_too_large: bool = False,
) -> tuple[Outcome, str]:
    """(outcome, human reason) of one attempt."""
    if body_too_large:
        return "permanent", "the page is larger than the body limit"
    if exception is not None:
        name = _error_name(exception)
        text = "" if isinstance(exception, str) else str(exception)
        reason = f"{name}: {text}" if text else name
        if name in PERMANENT_ERRORS:
            return "permanent", reason
        if name in TRANSIENT_ERRORS or "timeout" in name.lower() or "net::ERR_" in text:
            return "transient", reason
        return "transient", reason  # unknown network failures: worth another try
    if block_reason is not None:
        return "blocked", f"blocked: {block_reason}"
    assert status is not None
    if 200 <= status < 300:
        return "ok", f"HTTP {status}"
    if status in TRANSIENT_STATUSES or status >= 500:
        return "transient", f"HTTP {status}"
    return "permanent", f"HTTP {status}"


@dataclass(frozen=True)
class RetryDecision:
    action: Action
    delay: float
    reason: str


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff(attempt: int, *, base_delay: float, max_delay: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, base * 2**(attempt-1))]."""
    return rng.uniform(0, min(max_delay, base_delay * 2 ** max(0, attempt - 1)))


def decide(
    *,
    outcome: Outcome | str,
    reason: str,
    attempt: int,
    max_attempts: int,
    can_escalate: bool,
    retry_after: str | None = None,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
    rng: random.Random | None = None,
) -> RetryDecision:
    """What to do after attempt number `attempt` (1-based) of a job allowed `max_attempts` attempts.

    Escalations on a block are bounded by the ladder, not by the retry budget (the caller passes attempts
    that were not escalations); transient failures retry while attempts remain.
    """
    if outcome == "ok":
        return RetryDecision("done", 0.0, reason)
    if outcome == "permanent":
        return RetryDecision("fail", 0.0, reason)
    if outcome == "blocked":
        if can_escalate:
            return RetryDecision("escalate", 0.0, reason)
        return RetryDecision("fail", 0.0, f"{reason} (at the top of the job's ladder)")
    if attempt >= max_attempts:
        return RetryDecision("fail", 0.0, f"gave up after {attempt} attempts: {reason}")
    wait = parse_retry_after(retry_after)
    if wait is None:
        wait = backoff(attempt, base_delay=base_delay, max_delay=max_delay, rng=rng or random.Random())
    return RetryDecision("retry", min(wait, max_delay), reason)

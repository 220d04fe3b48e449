"""The retry decision as plain functions (the retry middleware only wires them in; DESIGN.md rule 5).

``classify`` turns what happened to one fetch attempt (a status, an exception, a block reason) into an
outcome: ``ok``, ``blocked`` (escalate the method), ``transient`` (retry after a backoff) or ``permanent``
(end the job). ``decide`` turns the outcome and the job's attempt count into an action. Exceptions may be
given as instances or as class names (``"TCPTimedOutError"``, ``"twisted.internet.error.DNSLookupError:
DNS lookup failed: ..."``), so this module imports neither Scrapy nor Twisted nor Playwright.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

Outcome = Literal["ok", "blocked", "transient", "permanent"]
Action = Literal["done", "retry", "escalate", "fail"]

# Statuses worth another try: timeouts, rate limits, server and gateway errors (Cloudflare's 52x included).
TRANSIENT_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600)) - {501, 505}

# Exception class names → (outcome, what it means, decisive). A decisive name settles the outcome; for the
# others (DNS errors, which may be "does not resolve" or "try again"; wrappers such as DownloadFailedError
# or Playwright's Error) the message is consulted first. Names from Python, Twisted, Scrapy, Playwright and
# crawljobs; the first name of an exception's class hierarchy found here wins.
ERROR_CLASSES: dict[str, tuple[Outcome, str, bool]] = {
    # Timeouts.
    "TimeoutError": ("transient", "timeout", True),
    "DownloadTimeoutError": ("transient", "timeout", True),
    "TCPTimedOutError": ("transient", "timeout", True),
    # Connections.
    "ConnectionRefusedError": ("transient", "connection refused", True),
    "DownloadConnectionRefusedError": ("transient", "connection refused", True),
    "ConnectionResetError": ("transient", "connection reset", True),
    "ConnectionAbortedError": ("transient", "connection aborted", True),
    "ConnectionAborted": ("transient", "connection aborted", True),
    "BrokenPipeError": ("transient", "connection lost", True),
    "ConnectionLost": ("transient", "connection lost", True),
    "ConnectionDone": ("transient", "connection closed", True),
    "ConnectionClosed": ("transient", "connection closed", True),
    "ConnectError": ("transient", "connection failed", True),
    "ConnectingCancelledError": ("transient", "connection failed", True),
    "NoRouteError": ("transient", "no route to host", True),
    "TunnelError": ("transient", "proxy tunnel failed", True),
    "ResponseNeverReceived": ("transient", "no response", True),
    "RequestGenerationFailed": ("transient", "request failed", True),
    "RequestTransmissionFailed": ("transient", "request failed", True),
    "ResponseDataLossError": ("transient", "incomplete response", True),
    "PotentialDataLoss": ("transient", "incomplete response", True),
    "_DataLoss": ("transient", "incomplete response", True),
    "TargetClosedError": ("transient", "browser page closed", True),
    "SSLError": ("transient", "TLS error", True),
    # Refused before any byte was sent, or nothing to store: another try cannot help.
    "UrlRejected": ("permanent", "refused by network rules", True),
    "AddressForbidden": ("permanent", "refused by network rules", True),
    "AddressRefused": ("permanent", "refused by network rules", True),
    "NoMethodAvailable": ("permanent", "no fetch method available", True),
    "UnsupportedURLSchemeError": ("permanent", "unsupported URL", True),
    "SchemeNotSupported": ("permanent", "unsupported URL", True),
    "NotSupported": ("permanent", "unsupported URL", True),
    "BodyTooLarge": ("permanent", "body over the size limit", True),
    "ContentNotStorable": ("permanent", "content cannot be stored", True),
    "TooManyRedirects": ("permanent", "too many redirects", True),
    "UnknownHostError": ("permanent", "domain does not resolve", True),
    # Mistakes (ours or the request's) repeat: no retry.
    "ValueError": ("permanent", "invalid request", True),
    "TypeError": ("permanent", "internal error", True),
    "AttributeError": ("permanent", "internal error", True),
    "LookupError": ("permanent", "internal error", True),
    "NameError": ("permanent", "internal error", True),
    "AssertionError": ("permanent", "internal error", True),
    "NotImplementedError": ("permanent", "internal error", True),
    # Depends on the message.
    "DNSLookupError": ("transient", "DNS lookup failed", False),
    "CannotResolveHostError": ("transient", "DNS lookup failed", False),
    "gaierror": ("transient", "DNS lookup failed", False),
    "DownloadCancelledError": ("transient", "download cancelled", False),
    "DownloadFailedError": ("transient", "download failed", False),
    "ResponseFailed": ("transient", "response failed", False),
    "IgnoreRequest": ("permanent", "request dropped", False),
    "OSError": ("transient", "network error", False),
}

# Messages that settle an undecided exception, checked in order (lowercase text).
_PERMANENT_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"larger than download max size|body (?:is )?(?:too large|over the size limit)"),
        "body over the size limit",
    ),
    (re.compile(r"max redirections|too many redirects|err_too_many_redirects"), "too many redirects"),
    (
        re.compile(
            r"no results for hostname lookup|name or service not known|nodename nor servname|"
            r"no address associated with hostname|nxdomain|err_name_not_resolved|\[errno -[25]\]|"
            r"does not resolve"
        ),
        "domain does not resolve",
    ),
    (re.compile(r"err_blocked_by_client|network rules"), "refused by network rules"),
    (re.compile(r"err_unknown_url_scheme|unsupported url scheme"), "unsupported URL"),
    (re.compile(r"download is starting"), "content cannot be stored"),
)
_TRANSIENT_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"temporary failure in name resolution|\[errno -3\]|servfail"), "DNS lookup failed"),
    (re.compile(r"timed?[ _]?out"), "timeout"),
    (
        re.compile(r"connection (?:was )?(?:refused|reset|lost|closed|aborted)|err_connection"),
        "connection failed",
    ),
    (re.compile(r"net::err_"), "browser network error"),
)
_NAME = re.compile(r"[A-Za-z_][\w.]*")
_DETAIL_CHARS = 500


def _describe(exception: BaseException | str) -> tuple[list[str], str]:
    """Class names (most specific first) and message of an exception or of its text."""
    if isinstance(exception, BaseException):
        names = [cls.__name__ for cls in type(exception).__mro__]
        return names, str(exception).strip()
    text = exception.strip()
    head, sep, rest = text.partition(":")
    if _NAME.fullmatch(head) and (not sep or rest.startswith(" ")):
        return [head.rpartition(".")[2]], rest.strip()
    return [], text


def _detail(names: list[str], message: str) -> str:
    detail = f"{names[0]}: {message}" if names and message else (names[0] if names else message)
    return detail if len(detail) <= _DETAIL_CHARS else detail[: _DETAIL_CHARS - 1] + "…"


def _classify_exception(exception: BaseException | str) -> tuple[Outcome, str]:
    names, message = _describe(exception)
    detail = _detail(names, message)
    known = next((ERROR_CLASSES[name] for name in names if name in ERROR_CLASSES), None)
    if known is not None and known[2]:
        return known[0], f"{known[1]} ({detail})"
    text = message.lower()
    for pattern, what in _PERMANENT_MESSAGES:
        if pattern.search(text):
            return "permanent", f"{what} ({detail})"
    if known is not None:
        return known[0], f"{known[1]} ({detail})"
    for pattern, what in _TRANSIENT_MESSAGES:
        if pattern.search(text):
            return "transient", f"{what} ({detail})"
    return "transient", f"error ({detail or 'unknown'})"


def classify(
    *,
    status: int | None,
    exception: BaseException | str | None,
    block_reason: str | None,
    body_too_large: bool = False,
) -> tuple[Outcome, str]:
    """The outcome of one fetch attempt and a reason a person can read.

    In order: a body over the limit is permanent; an exception is classified by its class and message
    (timeouts, connection errors and temporary DNS failures are transient; a name that does not resolve,
    too many redirects, an address refused by the network rules are permanent; anything unknown is
    transient, since retries are bounded); a block reason (``blocks.detect_block``) is a block; then the
    status: 2xx ok, 408/425/429 and 5xx (but 501 and 505) transient, anything else permanent.
    """
    if body_too_large:
        return "permanent", "body over the size limit"
    if exception is not None:
        return _classify_exception(exception)
    if block_reason:
        return "blocked", f"blocked: {block_reason}"
    if status is None:
        raise ValueError("classify needs a status, an exception or a block reason")
    if 200 <= status < 300:
        return "ok", f"status {status}"
    if status in TRANSIENT_STATUSES:
        return "transient", f"status {status}"
    return "permanent", f"status {status}"


@dataclass(frozen=True)
class RetryDecision:
    """What to do after an attempt: ``done``, ``retry`` after ``delay`` seconds, ``escalate`` to the next
    method, or ``fail`` the job; ``reason`` says why."""

    action: Action
    delay: float
    reason: str


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (0 if it has passed).

    None when absent or unreadable. A date without a zone, like ``now`` without one, is taken as UTC.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff(attempt: int, *, base_delay: float, max_delay: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max_delay, base_delay * 2**(attempt-1))]."""
    ceiling = min(max_delay, base_delay * 2.0 ** min(attempt - 1, 64))
    return (rng or random).uniform(0.0, ceiling)


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


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
    """What to do after attempt number ``attempt`` (1-based) of a job allowed ``max_attempts`` (its
    ``max_retries`` + 1): a page that always answers 500 is fetched exactly ``max_attempts`` times.

    ok → done; permanent → fail; blocked → escalate while the ladder has a higher method, else fail
    ("blocked at the ceiling"); transient → retry while an attempt is left, after ``Retry-After`` (capped at
    ``max_delay``) or else an exponential backoff with full jitter, else fail ("gave up after N attempts").

    Escalations are bounded by the ladder (six methods at most), not by the retry budget: the caller counts
    in ``attempt`` only the attempts that were not escalations, so a job with ``maxRetries`` 0 still climbs
    the ladder, and a block never uses up the retries a later transient failure needs.
    """
    if attempt < 1 or max_attempts < 1:
        raise ValueError(f"attempt ({attempt}) and max_attempts ({max_attempts}) start at 1")
    if base_delay < 0 or max_delay < 0:
        raise ValueError("delays cannot be negative")
    if outcome == "ok":
        return RetryDecision("done", 0.0, reason)
    if outcome == "permanent":
        return RetryDecision("fail", 0.0, reason)
    if outcome == "blocked":
        if can_escalate:
            return RetryDecision("escalate", 0.0, reason)
        return RetryDecision("fail", 0.0, f"blocked at the ceiling: {reason}")
    if outcome != "transient":
        raise ValueError(f"unknown outcome {outcome!r}")
    if attempt >= max_attempts:
        return RetryDecision("fail", 0.0, f"gave up after {_attempts(attempt)}: {reason}")
    waited = parse_retry_after(retry_after)
    if waited is not None:
        return RetryDecision("retry", min(waited, max_delay), reason)
    return RetryDecision(
        "retry", backoff(attempt, base_delay=base_delay, max_delay=max_delay, rng=rng), reason
    )

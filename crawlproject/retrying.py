"""The retry decision as plain functions (the retry middleware only wires them in; DESIGN.md rule 5).

``classify`` turns what happened to one fetch attempt (a status, an exception, a ``blocks.Block``) into an
outcome: ``ok``, ``blocked`` (escalate the method), ``transient`` (retry after a backoff) or ``permanent``
(end the job). ``decide`` turns the outcome and the job's attempt count into an action. Exceptions are known
by their classes (``ERROR_CLASSES``: those of Python, Twisted, Scrapy, Playwright and ours, imported where
they live), the most specific class of an exception's hierarchy first, and through what they wrap: Scrapy
re-raises Twisted's errors as its own (``AddressRefused`` as a ``CannotResolveHostError``, a parser's error as
a ``DownloadFailedError`` of a ``ResponseFailed``), keeping the original as the cause.
"""

from __future__ import annotations

import math
import random
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

from OpenSSL.SSL import Error as OpenSSLError
from playwright._impl._errors import TargetClosedError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from scrapy.core.downloader.handlers.http11 import TunnelError
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    NotSupported,
    ResponseDataLossError,
    UnsupportedURLSchemeError,
)
from twisted.internet import error as tx
from twisted.python.failure import Failure
from twisted.web._newclient import _DataLoss
from twisted.web.client import (
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss

from crawljobs.exceptions import UrlRejected
from crawlproject.blocks import Block
from crawlproject.errors import (
    AddressForbidden,
    AddressRefused,
    DecompressedBodyTooLarge,
    ForbiddenByRobots,
    InvalidSelector,
    PageBusyTimeout,
    PageCrashed,
    ResponseHeadersTooLarge,
    TooManyRedirects,
)
from crawlproject.methods import NoMethodAvailable

Outcome = Literal["ok", "blocked", "transient", "permanent"]
Action = Literal["done", "retry", "escalate", "fail"]

# Statuses worth another try: timeouts, rate limits, server and gateway errors (Cloudflare's 52x included).
TRANSIENT_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600)) - {501, 505}

# What Scrapy raises for a body over DOWNLOAD_MAXSIZE (CRAWLJOBS_MAX_BODY_BYTES): its HTTP handlers cancel the
# download, and raise DownloadCancelledError for nothing else.
BODY_TOO_LARGE: tuple[type[BaseException], ...] = (DownloadCancelledError,)


# Failures before the request left the worker: nothing was fetched, no proxy was paid, the attempt costs nothing.
NEVER_SENT: tuple[type[BaseException], ...] = (
    UrlRejected,
    AddressForbidden,
    AddressRefused,
    ForbiddenByRobots,
    NoMethodAvailable,
    tx.DNSLookupError,
    CannotResolveHostError,
    UnsupportedURLSchemeError,
)


@dataclass(frozen=True)
class ErrorClass:
    """Exception classes with one meaning: their outcome and what they mean. A ``decisive`` one settles the
    outcome; for the others (DNS errors, which may be "does not resolve" or "try again"; wrappers such as
    DownloadFailedError) the message is consulted first. A ``named`` one's message is the whole reason (our
    own limits, whose messages name them)."""

    outcome: Outcome
    what: str
    classes: tuple[type[BaseException], ...]
    decisive: bool = True
    named: bool = False


ERROR_CLASSES: tuple[ErrorClass, ...] = (
    # Timeouts.
    ErrorClass(
        "transient",
        "timeout",
        (TimeoutError, tx.TimeoutError, tx.TCPTimedOutError, DownloadTimeoutError, PlaywrightTimeoutError),
    ),
    # Connections.
    ErrorClass(
        "transient",
        "connection refused",
        (ConnectionRefusedError, tx.ConnectionRefusedError, DownloadConnectionRefusedError),
    ),
    ErrorClass("transient", "connection reset", (ConnectionResetError,)),
    ErrorClass("transient", "connection aborted", (ConnectionAbortedError, tx.ConnectionAborted)),
    ErrorClass("transient", "connection lost", (BrokenPipeError, tx.ConnectionLost)),
    ErrorClass("transient", "connection closed", (tx.ConnectionDone, tx.ConnectionClosed)),
    ErrorClass("transient", "connection failed", (tx.ConnectError, tx.ConnectingCancelledError)),
    ErrorClass("transient", "no route to host", (tx.NoRouteError,)),
    ErrorClass("transient", "proxy tunnel failed", (TunnelError,)),
    ErrorClass("transient", "no response", (ResponseNeverReceived,)),
    ErrorClass("transient", "request failed", (RequestGenerationFailed, RequestTransmissionFailed)),
    ErrorClass("transient", "incomplete response", (ResponseDataLossError, PotentialDataLoss, _DataLoss)),
    ErrorClass("transient", "browser page closed", (TargetClosedError,)),
    ErrorClass("transient", "TLS error", (tx.SSLError, ssl.SSLError, OpenSSLError)),
    # The browser's limits (crawlproject.rendering): a page that holds the renderer after it loaded, or makes
    # it crash, does it again on every try. (A render timeout before the page loaded is a TimeoutError above.)
    ErrorClass("permanent", "render timeout", (PageBusyTimeout,)),
    ErrorClass("permanent", "browser page crashed", (PageCrashed,)),
    ErrorClass("permanent", "invalid wait_for selector", (InvalidSelector,), named=True),
    # Refused before any byte was sent, or nothing to store: another try cannot help.
    ErrorClass("permanent", "refused by network rules", (UrlRejected, AddressForbidden, AddressRefused)),
    ErrorClass("permanent", "forbidden by robots.txt", (ForbiddenByRobots,)),
    ErrorClass("permanent", "no fetch method available", (NoMethodAvailable,)),
    ErrorClass("permanent", "unsupported URL", (UnsupportedURLSchemeError, SchemeNotSupported, NotSupported)),
    ErrorClass("permanent", "body over the size limit", BODY_TOO_LARGE),
    ErrorClass("permanent", "response headers too large", (ResponseHeadersTooLarge,), named=True),
    ErrorClass("permanent", "body too large (decompressed)", (DecompressedBodyTooLarge,), named=True),
    ErrorClass("permanent", "too many redirects", (TooManyRedirects,), named=True),
    ErrorClass("permanent", "domain does not resolve", (tx.UnknownHostError,)),
    # Mistakes (ours or the request's) repeat: no retry.
    ErrorClass("permanent", "invalid request", (ValueError,)),
    ErrorClass(
        "permanent",
        "internal error",
        (TypeError, AttributeError, LookupError, NameError, AssertionError, NotImplementedError),
    ),
    # Depends on the message.
    ErrorClass(
        "transient",
        "DNS lookup failed",
        (tx.DNSLookupError, CannotResolveHostError, socket.gaierror),
        decisive=False,
    ),
    ErrorClass("transient", "download failed", (DownloadFailedError,), decisive=False),
    ErrorClass("transient", "response failed", (ResponseFailed,), decisive=False),
    ErrorClass("permanent", "request dropped", (IgnoreRequest,), decisive=False),
    ErrorClass("transient", "network error", (OSError,), decisive=False),
)

_BY_CLASS: dict[type[BaseException], ErrorClass] = {
    cls: known for known in ERROR_CLASSES for cls in known.classes
}

# Messages that settle an undecided exception (or one of no known class), checked in order (lowercase text).
_PERMANENT_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = (
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
_DETAIL_CHARS = 500


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _detail(exception: BaseException) -> str:
    name, message = type(exception).__name__, str(exception).strip()
    return _clip(f"{name}: {message}" if message else name)


def _known(exception: BaseException) -> ErrorClass | None:
    return next((_BY_CLASS[cls] for cls in type(exception).__mro__ if cls in _BY_CLASS), None)


def _chain(exception: BaseException) -> Iterator[BaseException]:
    """The exception, then what it wraps (its cause; the reasons of Twisted's wrappers), outermost first."""
    pending, seen = [exception], set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, (ResponseFailed, RequestGenerationFailed, RequestTransmissionFailed)):
            pending.extend(r.value for r in current.reasons if isinstance(r, Failure) and r.value is not None)
        if current.__cause__ is not None:
            pending.append(current.__cause__)


def cause_of(exception: BaseException) -> BaseException:
    """The exception that settles the outcome: the outermost of the chain whose class is decisive, else the
    exception itself."""
    return next((e for e in _chain(exception) if (k := _known(e)) is not None and k.decisive), exception)


def _classify_exception(exception: BaseException) -> tuple[Outcome, str]:
    cause = cause_of(exception)
    known = _known(cause)
    if known is not None and known.decisive:
        if known.named:
            return known.outcome, _clip(str(cause))
        return known.outcome, f"{known.what} ({_detail(cause)})"
    detail = _detail(exception)
    text = str(exception).lower()
    for pattern, what in _PERMANENT_MESSAGES:
        if pattern.search(text):
            return "permanent", f"{what} ({detail})"
    if known is not None:
        return known.outcome, f"{known.what} ({detail})"
    for pattern, what in _TRANSIENT_MESSAGES:
        if pattern.search(text):
            return "transient", f"{what} ({detail})"
    return "transient", f"error ({detail})"


def classify(
    *, status: int | None, exception: BaseException | None, block: Block | None
) -> tuple[Outcome, str]:
    """The outcome of one fetch attempt and a reason a person can read.

    In order: an exception is classified by its class (``ERROR_CLASSES``) and, for the undecided ones, its
    message (timeouts, connection errors and temporary DNS failures are transient; a name that does not
    resolve, too many redirects, an address refused by the network rules, a body over the size limit are
    permanent; anything unknown is transient, since retries are bounded); a block (``blocks.detect_block``)
    is a block; then the status: 2xx ok, 408/425/429 and 5xx (but 501 and 505) transient, anything else
    permanent.
    """
    if exception is not None:
        return _classify_exception(exception)
    if block is not None:
        return "blocked", f"blocked: {block.reason}"
    if status is None:
        raise ValueError("classify needs a status, an exception or a block")
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

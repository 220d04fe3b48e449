"""Retry decisions (crawlproject.retrying): outcomes of statuses and errors, backoff, Retry-After, exhaustion."""

from __future__ import annotations

import dataclasses
import random
import socket
import ssl
from datetime import UTC, datetime, timedelta, timezone

import pytest
from playwright._impl._errors import TargetClosedError
from playwright.async_api import Error as PlaywrightError
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
from twisted.web.client import RequestTransmissionFailed, ResponseFailed, ResponseNeverReceived
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss

from crawljobs.exceptions import UrlRejected
from crawlproject.blocks import Block
from crawlproject.errors import (
    AddressForbidden,
    AddressRefused,
    DecompressedBodyTooLarge,
    ForbiddenByRobots,
    ResponseHeadersTooLarge,
    TooManyRedirects,
)
from crawlproject.methods import NoMethodAvailable
from crawlproject.retrying import (
    BODY_TOO_LARGE,
    ERROR_CLASSES,
    RetryDecision,
    backoff,
    cause_of,
    classify,
    decide,
    parse_retry_after,
)

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


# --- classify: statuses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 203, 204, 206, 299])
def test_2xx_is_ok(status: int) -> None:
    assert classify(status=status, exception=None, block=None) == ("ok", f"status {status}")


@pytest.mark.parametrize(
    "status", [408, 425, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524, 525, 526, 527, 529, 599]
)
def test_transient_statuses(status: int) -> None:
    assert classify(status=status, exception=None, block=None) == ("transient", f"status {status}")


@pytest.mark.parametrize(
    "status", [100, 301, 302, 304, 400, 401, 402, 403, 404, 405, 410, 413, 414, 418, 422, 451, 501, 505]
)
def test_permanent_statuses(status: int) -> None:
    assert classify(status=status, exception=None, block=None) == ("permanent", f"status {status}")


@pytest.mark.parametrize("status", [200, 403, 429, 503])
def test_a_block_makes_a_block_whatever_the_status(status: int) -> None:
    block = Block("challenge", "cloudflare challenge")
    outcome, reason = classify(status=status, exception=None, block=block)
    assert (outcome, reason) == ("blocked", "blocked: signature: cloudflare challenge")


def test_a_body_over_the_limit_is_permanent_whatever_else() -> None:
    too_large = DownloadCancelledError(
        "Expected to receive 104857600 bytes which is larger than download max size (10485760) in request "
        "<GET http://127.0.0.1:8000/huge?mb=100>."
    )
    assert isinstance(too_large, BODY_TOO_LARGE)
    for status, block in ((200, None), (None, None), (403, Block("status", "status 403"))):
        outcome, reason = classify(status=status, exception=too_large, block=block)
        assert (outcome, reason.partition(" (")[0]) == ("permanent", "body over the size limit")
    # Cancelled in the middle of the body (no Content-Length): Scrapy's message is empty then.
    assert classify(status=None, exception=DownloadCancelledError(), block=None) == (
        "permanent",
        "body over the size limit (DownloadCancelledError)",
    )


def test_classify_needs_something_to_classify() -> None:
    with pytest.raises(ValueError):
        classify(status=None, exception=None, block=None)


# --- classify: the real exception classes of Python, Twisted, Scrapy, Playwright and ours ---------------------


class SlowTimeout(TimeoutError):
    """A subclass of a known class: known through its class hierarchy."""


@pytest.mark.parametrize(
    ("error", "what"),
    [
        (TimeoutError(), "timeout"),
        (SlowTimeout("waited too long"), "timeout"),
        (tx.TimeoutError(), "timeout"),
        (tx.TimeoutError(string="User timeout caused connection failure."), "timeout"),
        (tx.TCPTimedOutError(), "timeout"),
        (
            DownloadTimeoutError("Getting http://127.0.0.1:8000/slow took longer than 180.0 seconds."),
            "timeout",
        ),
        (
            PlaywrightTimeoutError('Timeout 30000ms exceeded. navigating to "http://127.0.0.1:8000/slow"'),
            "timeout",
        ),
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (tx.ConnectionRefusedError(), "connection refused"),
        (
            DownloadConnectionRefusedError("Connection was refused by other side: 111: Connection refused."),
            "connection refused",
        ),
        (ConnectionResetError(104, "Connection reset by peer"), "connection reset"),
        (ConnectionAbortedError(), "connection aborted"),
        (tx.ConnectionAborted(), "connection aborted"),
        (BrokenPipeError(), "connection lost"),
        (tx.ConnectionLost(), "connection lost"),
        (tx.ConnectionDone(), "connection closed"),
        (tx.ConnectError(), "connection failed"),
        (tx.NoRouteError(), "no route to host"),
        (ResponseNeverReceived([Failure(tx.ConnectionDone())]), "no response"),
        (RequestTransmissionFailed([Failure(tx.ConnectionLost())]), "request failed"),
        (ResponseDataLossError("Got data loss in http://127.0.0.1:8000/."), "incomplete response"),
        (PotentialDataLoss(), "incomplete response"),
        (
            TunnelError("Could not open CONNECT tunnel with proxy 127.0.0.1:9001 [{'status': 502}]"),
            "proxy tunnel failed",
        ),
        (TargetClosedError(), "browser page closed"),
        (tx.SSLError(), "TLS error"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "TLS error"),
        (tx.DNSLookupError(), "DNS lookup failed"),
        (
            tx.DNSLookupError(
                "address 'shop.example' not found: [Errno -3] Temporary failure in name resolution."
            ),
            "DNS lookup failed",
        ),
        (tx.DNSLookupError("DNS lookup failed: timeout"), "DNS lookup failed"),
        (socket.gaierror(-3, "Temporary failure in name resolution"), "DNS lookup failed"),
        (
            DownloadFailedError(
                "[<twisted.python.failure.Failure twisted.internet.error.ConnectionLost: "
                "Connection to the other side was lost in a non-clean fashion: Connection lost.>]"
            ),
            "download failed",
        ),
        (OSError("Cannot decompress an empty response"), "network error"),
        (PlaywrightError("net::ERR_CONNECTION_RESET at http://127.0.0.1:8000/"), "connection failed"),
        (PlaywrightError("net::ERR_CONNECTION_REFUSED at http://127.0.0.1:9/"), "connection failed"),
        (
            PlaywrightError("net::ERR_PROXY_CONNECTION_FAILED at http://127.0.0.1:8000/"),
            "browser network error",
        ),
        (PlaywrightError("net::ERR_TIMED_OUT at http://127.0.0.1:8000/"), "timeout"),
        (PlaywrightError("net::ERR_EMPTY_RESPONSE at http://127.0.0.1:8000/"), "browser network error"),
        (Exception("something odd"), "error"),
    ],
    ids=lambda value: (
        f"{type(value).__module__}.{type(value).__name__}" if isinstance(value, BaseException) else ""
    ),
)
def test_transient_errors(error: BaseException, what: str) -> None:
    outcome, reason = classify(status=None, exception=error, block=None)
    assert outcome == "transient"
    assert reason.startswith(f"{what} (")


@pytest.mark.parametrize(
    ("error", "what"),
    [
        (
            tx.DNSLookupError("DNS lookup failed: no results for hostname lookup: shop.invalid."),
            "domain does not resolve",
        ),
        (
            CannotResolveHostError(
                "DNS lookup failed: address 'shop.invalid' not found: [Errno -2] Name or service not known."
            ),
            "domain does not resolve",
        ),
        (socket.gaierror(-2, "Name or service not known"), "domain does not resolve"),
        (PlaywrightError("net::ERR_NAME_NOT_RESOLVED at http://shop.invalid/"), "domain does not resolve"),
        (tx.UnknownHostError(), "domain does not resolve"),
        (IgnoreRequest("max redirections reached"), "too many redirects"),
        (
            PlaywrightError("net::ERR_TOO_MANY_REDIRECTS at http://127.0.0.1:8000/redirect/30"),
            "too many redirects",
        ),
        (PlaywrightError("Download is starting"), "content cannot be stored"),
        (UrlRejected("the address 127.0.0.2 is not allowed"), "refused by network rules"),
        (AddressForbidden("127.0.0.2 is loopback"), "refused by network rules"),
        (
            AddressRefused("host shop.example resolves to a refused address: loopback"),
            "refused by network rules",
        ),
        (PlaywrightError("net::ERR_BLOCKED_BY_CLIENT at http://127.0.0.2:8000/"), "refused by network rules"),
        (ForbiddenByRobots("Forbidden by robots.txt"), "forbidden by robots.txt"),
        (UnsupportedURLSchemeError("Unsupported URL scheme 'gopher'"), "unsupported URL"),
        (
            NotSupported("Unsupported URL scheme 'gopher': no handler available for that scheme"),
            "unsupported URL",
        ),
        (SchemeNotSupported("gopher"), "unsupported URL"),
        (NoMethodAvailable("this job needs the ultra_premium tier"), "no fetch method available"),
        (ValueError("Missing scheme in request url: shop.example"), "invalid request"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "invalid request"),
        (TypeError(), "internal error"),
        (KeyError("job"), "internal error"),
        (AttributeError("x"), "internal error"),
        (IgnoreRequest(), "request dropped"),
    ],
    ids=lambda value: (
        f"{type(value).__module__}.{type(value).__name__}" if isinstance(value, BaseException) else ""
    ),
)
def test_permanent_errors(error: BaseException, what: str) -> None:
    outcome, reason = classify(status=None, exception=error, block=None)
    assert outcome == "permanent"
    assert reason.startswith(f"{what} (")


def test_an_error_takes_precedence_over_a_status() -> None:
    assert classify(status=200, exception=tx.TimeoutError(), block=None)[0] == "transient"


def test_the_reason_names_the_error_and_its_message() -> None:
    _, reason = classify(
        status=None, exception=TimeoutError("User timeout caused connection failure."), block=None
    )
    assert reason == "timeout (TimeoutError: User timeout caused connection failure.)"
    _, reason = classify(status=None, exception=ResponseDataLossError(), block=None)
    assert reason == "incomplete response (ResponseDataLossError)"
    _, reason = classify(status=None, exception=Exception(), block=None)
    assert reason == "error (Exception)"


def test_a_long_message_is_cut() -> None:
    _, reason = classify(status=None, exception=TimeoutError("x" * 10_000), block=None)
    assert len(reason) < 520
    assert reason.endswith("…)")


def test_every_error_class_is_named_once() -> None:
    classes = [cls for known in ERROR_CLASSES for cls in known.classes]
    assert len(classes) == len(set(classes))
    assert all(isinstance(cls, type) and issubclass(cls, BaseException) for cls in classes)


# --- decide ---------------------------------------------------------------------------------------------------


def test_ok_is_done_and_permanent_fails_at_once() -> None:
    assert decide(outcome="ok", reason="status 200", attempt=1, max_attempts=4, can_escalate=True) == (
        RetryDecision("done", 0.0, "status 200")
    )
    assert decide(outcome="permanent", reason="status 404", attempt=1, max_attempts=4, can_escalate=True) == (
        RetryDecision("fail", 0.0, "status 404")
    )


@pytest.mark.parametrize(("attempt", "max_attempts"), [(1, 4), (3, 4), (4, 4), (1, 1), (9, 4)])
def test_a_block_escalates_while_the_ladder_goes_higher(attempt: int, max_attempts: int) -> None:
    # Escalations are bounded by the ladder, not by the retry budget (the caller counts only the attempts
    # that were not escalations).
    decision = decide(
        outcome="blocked",
        reason="blocked: status 403",
        attempt=attempt,
        max_attempts=max_attempts,
        can_escalate=True,
    )
    assert decision == RetryDecision("escalate", 0.0, "blocked: status 403")


def test_a_block_at_the_ceiling_fails() -> None:
    decision = decide(
        outcome="blocked", reason="blocked: status 403", attempt=1, max_attempts=4, can_escalate=False
    )
    assert decision == RetryDecision("fail", 0.0, "blocked at the ceiling: blocked: status 403")


@pytest.mark.parametrize("max_attempts", [1, 2, 3, 4, 5, 11])
def test_a_permanent_500_is_attempted_exactly_max_attempts_times(max_attempts: int) -> None:
    rng = random.Random(7)
    attempts = 0
    while True:
        attempts += 1
        outcome, reason = classify(status=500, exception=None, block=None)
        decision = decide(
            outcome=outcome,
            reason=reason,
            attempt=attempts,
            max_attempts=max_attempts,
            can_escalate=True,
            rng=rng,
        )
        if decision.action != "retry":
            break
        assert 0 <= decision.delay <= 60
    assert attempts == max_attempts
    assert decision.action == "fail"
    plural = "attempt" if max_attempts == 1 else "attempts"
    assert decision.reason == f"gave up after {max_attempts} {plural}: status 500"


def test_an_attempt_past_the_limit_fails() -> None:
    # A restarted worker continues the count kept in the row.
    decision = decide(outcome="transient", reason="status 503", attempt=6, max_attempts=4, can_escalate=True)
    assert decision.action == "fail"


def test_the_jittered_delay_equals_a_uniform_draw_of_the_seeded_rng() -> None:
    for attempt in range(1, 10):
        expected = random.Random(42).uniform(0.0, min(60.0, 2.0 ** (attempt - 1)))
        decision = decide(
            outcome="transient",
            reason="status 503",
            attempt=attempt,
            max_attempts=100,
            can_escalate=False,
            rng=random.Random(42),
        )
        assert decision == RetryDecision("retry", expected, "status 503")


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "bound"),
    [
        (1, 1.0, 60.0, 1.0),
        (2, 1.0, 60.0, 2.0),
        (3, 1.0, 60.0, 4.0),
        (6, 1.0, 60.0, 32.0),
        (7, 1.0, 60.0, 60.0),
        (50, 1.0, 60.0, 60.0),
        (10_000, 1.0, 60.0, 60.0),
        (3, 0.5, 60.0, 2.0),
        (4, 2.0, 10.0, 10.0),
        (1, 0.0, 60.0, 0.0),
    ],
)
def test_backoff_is_full_jitter_up_to_the_capped_exponential(
    attempt: int, base: float, cap: float, bound: float
) -> None:
    rng = random.Random(attempt)
    delays = [backoff(attempt, base_delay=base, max_delay=cap, rng=rng) for _ in range(2000)]
    assert all(0.0 <= delay <= bound for delay in delays)
    if bound:
        assert max(delays) > 0.95 * bound  # reaches up to the bound
        assert min(delays) < 0.05 * bound  # and down to zero: full jitter
        assert 0.4 * bound < sum(delays) / len(delays) < 0.6 * bound


def test_backoff_without_an_rng_uses_the_module_random() -> None:
    assert 0.0 <= backoff(3, base_delay=1.0, max_delay=60.0) <= 4.0


@pytest.mark.parametrize(
    ("header", "delay"), [("7", 7.0), ("0", 0.0), (" 2 ", 2.0), ("1.5", 1.5), ("120", 60.0)]
)
def test_a_429_waits_what_retry_after_says_up_to_the_cap(header: str, delay: float) -> None:
    outcome, reason = classify(status=429, exception=None, block=None)
    decision = decide(
        outcome=outcome,
        reason=reason,
        attempt=1,
        max_attempts=4,
        can_escalate=True,
        retry_after=header,
        rng=random.Random(1),
    )
    assert decision == RetryDecision("retry", delay, "status 429")


def test_retry_after_as_a_date() -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    decision = decide(
        outcome="transient",
        reason="status 503",
        attempt=1,
        max_attempts=4,
        can_escalate=True,
        retry_after=future,
    )
    assert decision.delay == 60.0  # an hour, capped
    decision = decide(
        outcome="transient",
        reason="status 503",
        attempt=1,
        max_attempts=4,
        can_escalate=True,
        retry_after="Wed, 21 Oct 2015 07:28:00 GMT",
        max_delay=30.0,
    )
    assert decision.delay == 0.0  # already passed
    soon = (datetime.now(UTC) + timedelta(seconds=20)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    decision = decide(
        outcome="transient",
        reason="status 503",
        attempt=1,
        max_attempts=4,
        can_escalate=True,
        retry_after=soon,
    )
    assert 15.0 <= decision.delay <= 20.0


@pytest.mark.parametrize("header", ["soon", "", "-5", "Mon, 99 Foo 2026 99:99:99 GMT", "1e3", "nan"])
def test_an_unreadable_retry_after_falls_back_to_backoff(header: str) -> None:
    decision = decide(
        outcome="transient",
        reason="status 429",
        attempt=3,
        max_attempts=4,
        can_escalate=True,
        retry_after=header,
        rng=random.Random(3),
    )
    assert decision == RetryDecision("retry", random.Random(3).uniform(0.0, 4.0), "status 429")


def test_retry_after_does_not_outlive_the_attempts() -> None:
    decision = decide(
        outcome="transient",
        reason="status 429",
        attempt=4,
        max_attempts=4,
        can_escalate=True,
        retry_after="1",
    )
    assert decision == RetryDecision("fail", 0.0, "gave up after 4 attempts: status 429")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempt": 0, "max_attempts": 4},
        {"attempt": 1, "max_attempts": 0},
        {"attempt": 1, "max_attempts": 4, "base_delay": -1.0},
        {"attempt": 1, "max_attempts": 4, "max_delay": -1.0},
    ],
)
def test_decide_rejects_impossible_counts(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        decide(outcome="transient", reason="x", can_escalate=True, **kwargs)  # type: ignore[arg-type]


def test_decide_rejects_an_unknown_outcome() -> None:
    with pytest.raises(ValueError, match="unknown outcome"):
        decide(outcome="maybe", reason="x", attempt=1, max_attempts=4, can_escalate=True)


def test_decisions_are_frozen() -> None:
    decision = RetryDecision("retry", 1.0, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.delay = 2.0  # type: ignore[misc]


# --- parse_retry_after ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("30", 30.0),
        ("  30  ", 30.0),
        ("86400", 86400.0),
        ("2.5", 2.5),
        ("Sun, 29 Nov 2026 12:00:30 GMT", 30.0),  # IMF-fixdate
        ("Sunday, 29-Nov-26 12:01:00 GMT", 60.0),  # RFC 850
        ("Sun Nov 29 12:00:10 2026", 10.0),  # asctime, no zone: UTC
        ("Sun, 29 Nov 2026 13:00:05 +0100", 5.0),  # an offset
        ("Sun, 29 Nov 2026 11:00:00 GMT", 0.0),  # passed
    ],
)
def test_parse_retry_after(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "-1", "+5", "1e3", "nan", "inf", "soon", "30 seconds", "Sun, 32 Nov 2026 12:00:00 GMT"],
)
def test_parse_retry_after_rejects_what_it_cannot_read(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_parse_retry_after_with_a_naive_or_zoned_now() -> None:
    assert parse_retry_after("Sun, 29 Nov 2026 12:00:30 GMT", NOW.replace(tzinfo=None)) == 30.0
    tokyo = NOW.astimezone(timezone(timedelta(hours=9)))
    assert parse_retry_after("Sun, 29 Nov 2026 12:00:30 GMT", tokyo) == 30.0


def test_parse_retry_after_defaults_to_the_current_time() -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=100)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    seconds = parse_retry_after(soon)
    assert seconds is not None
    assert 95.0 <= seconds <= 100.0


# --- classify: what Scrapy wraps ------------------------------------------------------------------------------


def _wrapped(outer: Exception, inner: BaseException) -> Exception:
    """``outer`` raised ``from`` ``inner``, as Scrapy re-raises Twisted's errors as its own."""
    try:
        raise outer from inner
    except Exception as exc:
        return exc


def test_our_limits_are_named_permanent_errors_through_scrapys_wrappers() -> None:
    headers = ResponseHeadersTooLarge("response headers too large (over 65536 bytes)")
    failed = ResponseFailed([Failure(headers)])
    error = _wrapped(DownloadFailedError(str(failed)), failed)
    assert classify(status=None, exception=error, block=None) == (
        "permanent",
        "response headers too large (over 65536 bytes)",
    )
    for limit in (
        DecompressedBodyTooLarge("body too large (decompressed): the page inflates past 10 bytes"),
        TooManyRedirects("too many redirects (more than 10)"),
    ):
        assert classify(status=None, exception=limit, block=None) == ("permanent", str(limit))


def test_a_refused_answer_wrapped_as_a_lookup_failure_is_still_a_refusal() -> None:
    refused = AddressRefused("host shop.example resolves to 127.0.0.2, which is loopback")
    error = _wrapped(CannotResolveHostError(f"DNS lookup failed: {refused}"), refused)
    outcome, reason = classify(status=None, exception=error, block=None)
    assert (outcome, reason.partition(" (")[0]) == ("permanent", "refused by network rules")
    assert cause_of(error) is refused


def test_a_wrapped_connection_loss_is_named_by_what_it_wraps() -> None:
    lost = tx.ConnectionLost()
    failed = ResponseFailed([Failure(lost)])
    error = _wrapped(DownloadFailedError(str(failed)), failed)
    outcome, reason = classify(status=None, exception=error, block=None)
    assert (outcome, reason.partition(" (")[0]) == ("transient", "connection lost")

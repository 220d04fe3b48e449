"""How the browser engine's own ends of a render are classified (crawlproject.errors, crawlproject.retrying)."""

from __future__ import annotations

import pytest
from scrapy.exceptions import IgnoreRequest

from crawlproject.errors import (
    NavigationFailed,
    PageBusyTimeout,
    PageCrashed,
    RenderAbandoned,
    RenderedPageTooLarge,
    RenderTimeout,
)
from crawlproject.retrying import BODY_TOO_LARGE, classify


@pytest.mark.parametrize(
    ("error", "outcome", "what"),
    [
        # Passed the deadline before the page loaded: a timeout like any other.
        (RenderTimeout("the page was not rendered within 60 s"), "transient", "timeout"),
        # Loaded, then held the renderer: the page does it again on every try.
        (
            PageBusyTimeout("its scripts still held the browser 60 s after it opened"),
            "permanent",
            "render timeout",
        ),
        (PageCrashed("the page's renderer crashed"), "permanent", "browser page crashed"),
        (
            RenderedPageTooLarge("the rendered page is at least 52428973 bytes"),
            "permanent",
            "body over the size limit",
        ),
        # Left on Chromium's error page: read by its message.
        (
            NavigationFailed(
                "the page was left on Chromium's error page: http://x/: net::ERR_CONNECTION_REFUSED"
            ),
            "transient",
            "connection failed",
        ),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else "",
)
def test_render_errors(error: BaseException, outcome: str, what: str) -> None:
    assert classify(status=None, exception=error, block=None) == (
        outcome,
        f"{what} ({type(error).__name__}: {error})",
    )


def test_a_rendered_page_over_the_limit_is_the_http_engines_body_too_large() -> None:
    assert isinstance(RenderedPageTooLarge("x"), BODY_TOO_LARGE)


def test_an_abandoned_render_is_a_dropped_request_never_an_error_class_of_its_own() -> None:
    # The retry middleware returns before classifying it; the spider's errback writes nothing for it.
    assert isinstance(RenderAbandoned("x"), IgnoreRequest)

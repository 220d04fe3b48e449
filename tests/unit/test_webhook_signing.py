"""Webhook signatures, the retry schedule and address pinning, without services."""

from __future__ import annotations

import hashlib
import hmac

from crawljobs.webhooks import BACKOFF_SECONDS, pinned_request, retry_delay, sign, verify


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"event":"job.completed"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", "1700000000", body) == f"v1={expected}"
    assert verify("s3cret", "1700000000", body, f"v1={expected}")
    assert not verify("s3cret", "1700000001", body, f"v1={expected}")
    assert not verify("other", "1700000000", body, f"v1={expected}")
    assert not verify("s3cret", "1700000000", body + b" ", f"v1={expected}")
    assert not verify("s3cret", "1700000000", body, "v1=é")  # any received text: False, never a TypeError


def test_backoff_lasts_about_a_day_then_gives_up() -> None:
    assert retry_delay(1) == 10
    assert retry_delay(2) == 30
    assert retry_delay(len(BACKOFF_SECONDS)) == BACKOFF_SECONDS[-1]
    assert retry_delay(len(BACKOFF_SECONDS) + 1) is None
    assert 20 * 3600 <= sum(BACKOFF_SECONDS) <= 26 * 3600


def test_requests_connect_to_the_checked_address_and_keep_the_name() -> None:
    url, headers, extensions = pinned_request("https://hooks.example.com/in?x=1", "93.184.215.14")
    assert (url, headers, extensions) == (
        "https://93.184.215.14/in?x=1",
        {"Host": "hooks.example.com"},
        {"sni_hostname": "hooks.example.com"},
    )
    url, headers, extensions = pinned_request("http://hooks.example.com:8080/", "2001:db8::1")
    assert (url, headers, extensions) == (
        "http://[2001:db8::1]:8080/",
        {"Host": "hooks.example.com:8080"},
        {},
    )

"""The dashboard over HTTP (httpx through the app, real PostgreSQL and Redis): the session cookie's flags, its
expiry and revocation with the key, CSRF refusals, the API refusing the cookie, tenant isolation of every page,
the security headers of its pages and of crawled HTML (the browser side is tests/acceptance/test_dashboard.py)."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from crawljobs.config import Settings
from crawljobs.keys import create_key, hash_key
from crawljobs.manager import JobManager
from crawljobs.models import SubmitOptions
from service.dashboard.session import SESSION_COOKIE, Session, Signer
from tests.integration.conftest import make_client, run_with_manager

PAGES = ("/", "/submit", "/batches", "/webhooks")


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def sign_in(client: TestClient, key: str) -> Any:
    form = client.get("/sign-in")
    assert form.status_code == 200
    return client.post(
        "/sign-in",
        data={"api_key": key, "csrf_token": csrf_of(form.text), "next": "/batches"},
        follow_redirects=False,
    )


@pytest.fixture
def browser(settings: Settings) -> Iterator[TestClient]:
    """A client that keeps cookies, as a browser does (base URL https: the cookie is Secure there)."""
    with TestClient(
        make_client(settings).app, base_url="https://testserver", raise_server_exceptions=False
    ) as client:
        yield client


def seed(settings: Settings, tenant: str) -> dict[str, Any]:
    """A batch with a completed job (HTML and all) and a delivery, of `tenant`, written as a worker would."""

    async def body(manager: JobManager) -> dict[str, Any]:
        batch_id = f"b-{tenant}-{secrets.token_hex(3)}"
        submitted = await manager.submit_batch(
            tenant=tenant,
            urls=["https://example.com/one", "https://example.com/two"],
            options=SubmitOptions(callback_url="https://example.com/hook"),
            batch_id=batch_id,
        )
        job_id = submitted.job_ids[0]
        assert job_id is not None
        return {"batch_id": batch_id, "job_id": job_id}

    seeded: dict[str, Any] = run_with_manager(settings, body)
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE crawl_jobs SET status = 'processing', attempt = 1 WHERE id = %s", (seeded["job_id"],)
        )
        conn.execute(
            "UPDATE crawl_jobs SET status = 'completed', html = %s, html_length = 40, content_type = 'text/html',"
            " completed_at = now() WHERE id = %s",
            ("<title>t</title><script>x()</script>", seeded["job_id"]),
        )
        row = conn.execute(
            "INSERT INTO webhook_deliveries (tenant, event, job_id, url, payload, gave_up_at)"
            " VALUES (%s, 'job.completed', %s, 'https://example.com/hook', '{}', now()) RETURNING id",
            (tenant, seeded["job_id"]),
        ).fetchone()
        assert row is not None
        seeded["delivery_id"] = row[0]
    return seeded


def test_signing_in_sets_a_strict_httponly_secure_cookie_and_pages_need_it(
    browser: TestClient, api_key: str
) -> None:
    for page in PAGES:
        refused = browser.get(page, follow_redirects=False)
        assert refused.status_code == 303 and refused.headers["location"].startswith("/sign-in"), page
    answer = sign_in(browser, api_key)
    assert answer.status_code == 303 and answer.headers["location"] == "/batches"
    cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE + "="))
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "max-age", "path"} <= flags, cookie
    assert "samesite=strict" in cookie.lower()
    assert api_key not in cookie  # the cookie holds the key's hash, never the key
    for page in ("/submit", "/batches", "/webhooks"):
        shown = browser.get(page)
        assert shown.status_code == 200, (page, shown.text[:500])
        assert shown.headers["cache-control"] == "no-store"


def test_the_overview_says_loudly_that_no_worker_is_connected(browser: TestClient, api_key: str) -> None:
    sign_in(browser, api_key)
    page = browser.get("/")
    assert page.status_code == 200
    assert '<p class="notice problem loud" role="alert"><strong>No workers connected.</strong>' in page.text
    for status in ("pending", "processing", "completed", "error", "cancelled"):
        assert f'data-count="{status}"' in page.text


def test_a_wrong_key_is_refused_with_the_api_message_and_no_cookie(browser: TestClient) -> None:
    answer = sign_in(browser, "cj_not-a-key")
    assert answer.status_code == 401
    assert "the API key is not valid" in answer.text
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")


def test_sign_in_without_its_csrf_token_is_refused(browser: TestClient, api_key: str) -> None:
    browser.get("/sign-in")
    answer = browser.post("/sign-in", data={"api_key": api_key, "csrf_token": "x"}, follow_redirects=False)
    assert answer.status_code == 401 and "not sent from this page" in answer.text
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")


def test_a_token_or_cookie_that_is_not_ascii_is_refused_not_a_500(browser: TestClient, api_key: str) -> None:
    """hmac.compare_digest raises on str with non-ASCII characters: a form field or cookie is the client's
    text, so the checks compare bytes (DESIGN rule 8: no request makes the service answer 500)."""
    browser.get("/sign-in")
    answer = browser.post("/sign-in", data={"api_key": api_key, "csrf_token": "é"}, follow_redirects=False)
    assert answer.status_code == 401 and "not sent from this page" in answer.text
    sign_in(browser, api_key)
    answer = browser.post("/sign-out", data={"csrf_token": "jeton-é"}, follow_redirects=False)
    assert answer.status_code == 403 and "CSRF" in answer.text
    browser.cookies.clear()
    browser.cookies.set(SESSION_COOKIE, "e30.signature-é", domain="testserver")
    answer = browser.get("/batches", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/sign-in")


def test_every_action_without_its_csrf_token_is_refused_and_changes_nothing(
    browser: TestClient, api_key: str, settings: Settings
) -> None:
    seeded = seed(settings, "tenant-a")
    sign_in(browser, api_key)
    other = Signer("some-other-secret-that-is-long-enough-000000").csrf_token("nonce")
    actions = [
        f"/batches/{seeded['batch_id']}/cancel",
        f"/batches/{seeded['batch_id']}/retry-failed",
        f"/jobs/{seeded['job_id']}/cancel",
        f"/webhooks/{seeded['delivery_id']}/redeliver",
        "/submit/job",
        "/submit/batch",
        "/sign-out",
    ]
    for action in actions:
        for data in ({}, {"csrf_token": other}, {"csrf_token": ""}):
            answer = browser.post(
                action, data={**data, "url": "https://example.com/x"}, follow_redirects=False
            )
            assert answer.status_code == 403, (action, data, answer.status_code)
            assert "CSRF" in answer.text
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        statuses = conn.execute(
            "SELECT status, count(*) FROM crawl_jobs WHERE batch_id = %s GROUP BY 1", (seeded["batch_id"],)
        ).fetchall()
        jobs = conn.execute("SELECT count(*) FROM crawl_jobs WHERE tenant = 'tenant-a'").fetchone()
        gave_up = conn.execute(
            "SELECT gave_up_at IS NOT NULL FROM webhook_deliveries WHERE id = %s", (seeded["delivery_id"],)
        ).fetchone()
    assert dict(statuses) == {"completed": 1, "pending": 1}
    assert jobs == (2,)
    assert gave_up == (True,)
    assert browser.get("/batches").status_code == 200  # still signed in: sign-out was refused too


def test_with_its_token_an_action_works_and_sign_out_ends_the_session(
    browser: TestClient, api_key: str, settings: Settings
) -> None:
    seeded = seed(settings, "tenant-a")
    sign_in(browser, api_key)
    page = browser.get(f"/batches/{seeded['batch_id']}")
    assert page.status_code == 200
    answer = browser.post(
        f"/batches/{seeded['batch_id']}/cancel",
        data={"csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert "1 job cancelled" in browser.get(answer.headers["location"]).text
    redelivered = browser.post(
        f"/webhooks/{seeded['delivery_id']}/redeliver",
        data={"csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert redelivered.status_code == 303
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT gave_up_at, attempts, next_attempt_at <= now() FROM webhook_deliveries WHERE id = %s",
            (seeded["delivery_id"],),
        ).fetchone()
    assert row == (None, 0, True)
    out = browser.post("/sign-out", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert out.status_code == 303
    assert browser.get("/batches", follow_redirects=False).status_code == 303


def test_the_session_ends_when_its_key_is_revoked_and_when_it_expires(
    browser: TestClient, database_url: str, settings: Settings
) -> None:
    key = create_key(database_url, name="revoked-later", tenant="tenant-a")
    sign_in(browser, key)
    assert browser.get("/batches").status_code == 200
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_hash = %s", (hash_key(key),))
    gone = browser.get("/batches", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"].startswith("/sign-in")
    # A POST is refused before its body is read, and sent to sign in again.
    posted = browser.post("/sign-out", data={"csrf_token": "x"}, follow_redirects=False)
    assert posted.status_code == 303 and "reason=expired" in posted.headers["location"]

    # An expired cookie, signed with the app's key, is refused too.
    fresh = create_key(database_url, name="expires", tenant="tenant-a")
    signer: Signer = browser.app.state.dashboard_signer  # type: ignore[attr-defined]
    stale = Session("tenant-a", hash_key(fresh), expires=1, nonce="n" * 16)
    browser.cookies.set(SESSION_COOKIE, signer.session_cookie(stale), domain="testserver")
    assert browser.get("/batches", follow_redirects=False).status_code == 303
    # And so is a cookie whose tenant was changed (its signature no longer holds).
    live = signer.session_cookie(Session("tenant-a", hash_key(fresh), expires=2**40, nonce="n" * 16))
    _payload, mac = live.split(".")
    forged = Signer("x" * 40).session_cookie(Session("tenant-b", hash_key(fresh), 2**40, "n" * 16))
    browser.cookies.set(SESSION_COOKIE, forged.split(".")[0] + "." + mac, domain="testserver")
    assert browser.get("/batches", follow_redirects=False).status_code == 303
    browser.cookies.set(SESSION_COOKIE, live, domain="testserver")
    assert browser.get("/batches").status_code == 200


def test_the_api_does_not_take_the_session_cookie(browser: TestClient, api_key: str) -> None:
    sign_in(browser, api_key)
    assert browser.get("/batches").status_code == 200
    assert browser.get("/v1/batches").status_code == 401
    assert browser.post("/v1/jobs", json={"url": "https://example.com/a"}).status_code == 401
    assert (
        browser.post("/functions/v1/submit-crawl-job", json={"url": "https://example.com/a"}).status_code
        == 401
    )


def test_every_page_shows_only_the_tenants_own_data(
    settings: Settings, api_key: str, other_api_key: str
) -> None:
    mine = seed(settings, "tenant-a")
    theirs = seed(settings, "tenant-b")
    with make_client(settings) as a:
        sign_in(a, api_key)
        page = a.get(f"/batches/{mine['batch_id']}").text
        token = csrf_of(page)
        for path in ("/batches", f"/batches?search={mine['batch_id']}"):
            shown = a.get(path).text
            assert mine["batch_id"] in shown and theirs["batch_id"] not in shown, path
        shown = a.get("/webhooks").text
        assert str(mine["delivery_id"]) in shown and str(theirs["delivery_id"]) not in shown
        assert str(theirs["job_id"]) not in a.get("/").text
        for path in (
            f"/batches/{theirs['batch_id']}",
            f"/batches/{theirs['batch_id']}/export?format=csv",
            f"/jobs/{theirs['job_id']}",
            f"/jobs/{theirs['job_id']}/source",
            f"/events/batches/{theirs['batch_id']}",
            f"/events/jobs/{theirs['job_id']}",
        ):
            assert a.get(path).status_code == 404, path
        for path in (
            f"/batches/{theirs['batch_id']}/cancel",
            f"/batches/{theirs['batch_id']}/retry-failed",
            f"/jobs/{theirs['job_id']}/cancel",
            f"/webhooks/{theirs['delivery_id']}/redeliver",
        ):
            assert a.post(path, data={"csrf_token": token}).status_code == 404, path
        # Mine ended (its pending job cancelled), theirs unseen: the page's one stream says so and ends.
        assert a.post(f"/batches/{mine['batch_id']}/cancel", data={"csrf_token": token}).status_code == 200
        with a.stream("GET", f"/events/batches?id={theirs['batch_id']}&id={mine['batch_id']}") as stream:
            text = "".join(stream.iter_text())
        assert mine["batch_id"] in text and theirs["batch_id"] not in text
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM crawl_jobs WHERE batch_id = %s AND status = 'cancelled'",
            (theirs["batch_id"],),
        ).fetchone()
    assert row == (0,)


def test_pages_carry_a_nonce_policy_and_crawled_html_is_sandboxed(
    browser: TestClient, api_key: str, settings: Settings, auth: dict[str, str]
) -> None:
    seeded = seed(settings, "tenant-a")
    sign_in(browser, api_key)
    page = browser.get(f"/jobs/{seeded['job_id']}")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce and f'nonce="{nonce.group(1)}"' in page.text
    assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>x()</script>" not in page.text and "&lt;script&gt;x()&lt;/script&gt;" in page.text
    assert re.search(r"<iframe[^>]* sandbox src=", page.text)
    assert re.findall(r"<script\b[^>]*>", page.text) == [re.search(r"<script\b[^>]*>", page.text).group(0)]  # type: ignore[union-attr]
    assert browser.get("/sign-in").headers["content-security-policy"].count("nonce-") == 1
    for source in (
        browser.get(f"/jobs/{seeded['job_id']}/source"),
        browser.get(f"/v1/jobs/{seeded['job_id']}/html", headers=auth),
    ):
        assert source.status_code == 200
        assert source.headers["content-security-policy"] == (
            "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
        )
        assert source.headers["x-content-type-options"] == "nosniff"
        assert source.headers["referrer-policy"] == "no-referrer"
        assert source.text == "<title>t</title><script>x()</script>"


def test_the_about_page_keeps_the_api_links(client: TestClient) -> None:
    about = client.get("/about")
    sign_in_page = client.get("/sign-in")
    for page in (about.text, sign_in_page.text):
        for link in ("/docs", "/redoc", "/openapi.json", "/healthz", "/readyz"):
            assert f'href="{link}"' in page
    assert client.get("/", follow_redirects=False).headers["location"] == "/sign-in"


def test_a_refused_submission_shows_the_reason_of_each_line(browser: TestClient, api_key: str) -> None:
    sign_in(browser, api_key)
    token = csrf_of(browser.get("/submit").text)
    text = "https://example.com/good\n\nftp://example.com/bad\nhttp://10.0.0.1/private\n"
    answer = browser.post(
        "/submit/batch",
        data={"csrf_token": token, "batch_id": f"pasted-{uuid.uuid4().hex[:6]}"},
        files={"file": ("urls.txt", text.encode(), "text/plain")},
    )
    assert answer.status_code == 201, answer.text[:2000]
    assert "1 of 3 URLs queued" in answer.text
    rows = re.findall(
        r'<tr><td class="num">(\d+)</td><td class="url">([^<]*)</td><td>([^<]*)</td></tr>', answer.text
    )
    assert [(line, url) for line, url, _ in rows] == [
        ("3", "ftp://example.com/bad"),
        ("4", "http://10.0.0.1/private"),
    ]
    assert all(reason for _, _, reason in rows)
    refused = browser.post(
        "/submit/job", data={"csrf_token": token, "url": "ftp://example.com/x", "max_retries": "99"}
    )
    assert refused.status_code == 422 and "max_retries" in refused.text


def test_an_uploaded_file_is_taken_up_to_the_batch_limit_and_refused_past_it(
    settings: Settings, api_key: str
) -> None:
    tight = Settings(**{**settings.model_dump(), "max_batch_size": 5})
    with TestClient(make_client(tight).app, raise_server_exceptions=False) as client:
        sign_in(client, api_key)
        token = csrf_of(client.get("/submit").text)
        lines = [f"https://example.com/limit/{n}" for n in range(6)]
        over = client.post(
            "/submit/batch",
            data={"csrf_token": token},
            files={"file": ("urls.txt", "\n".join(lines).encode(), "text/plain")},
        )
        assert over.status_code == 413
        assert "the batch has 6 URLs, more than the limit of 5" in over.text
        at = client.post(
            "/submit/batch",
            data={"csrf_token": token},
            files={
                "file": ("urls.txt", "# a comment\n" + "\n".join(lines[:5]).encode().decode(), "text/plain")
            },
        )
        assert at.status_code == 201 and "5 of 5 URLs queued" in at.text
        not_text = client.post(
            "/submit/batch",
            data={"csrf_token": token},
            files={"file": ("urls.bin", b"\xff\xfe\x00", "text/plain")},
        )
        assert not_text.status_code == 422 and "not UTF-8" in not_text.text


def test_sign_in_goes_back_to_a_page_of_this_site_only(browser: TestClient, api_key: str) -> None:
    for target, expected in (
        ("/batches?page=1", "/batches?page=1"),
        ("//evil.example/", "/"),
        ("/\t/evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("", "/"),
    ):
        browser.cookies.clear()
        form = browser.get("/sign-in")
        answer = browser.post(
            "/sign-in",
            data={"api_key": api_key, "csrf_token": csrf_of(form.text), "next": target},
            follow_redirects=False,
        )
        assert answer.status_code == 303 and answer.headers["location"] == expected, target


def test_a_new_tenant_sees_an_empty_overview_whatever_the_others_have(
    browser: TestClient, settings: Settings, database_url: str
) -> None:
    seed(settings, "tenant-a")
    key = create_key(database_url, name=f"empty-{secrets.token_hex(3)}")
    sign_in(browser, key)
    page = browser.get("/").text
    counts = dict(re.findall(r'data-count="(\w+)">([\d,]+)<', page))
    assert counts == {s: "0" for s in ("pending", "processing", "completed", "error", "cancelled")}
    assert "Nothing spent today." in page
    assert "No batches yet." in browser.get("/batches").text
    assert "No deliveries yet" in browser.get("/webhooks").text


def test_a_live_stream_ends_when_the_sessions_key_is_revoked(settings: Settings, database_url: str) -> None:
    quick = Settings(**{**settings.model_dump(), "key_recheck_seconds": 0.2})
    key = create_key(database_url, name=f"streamed-{secrets.token_hex(3)}", tenant="tenant-a")
    seeded = seed(settings, "tenant-a")
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT id FROM crawl_jobs WHERE batch_id = %s AND status = 'pending'", (seeded["batch_id"],)
        ).fetchone()
    assert row is not None
    with TestClient(make_client(quick).app, raise_server_exceptions=False) as client:
        sign_in(client, key)
        for path in (f"/events/jobs/{row[0]}", f"/events/batches/{seeded['batch_id']}", "/events/overview"):
            with client.stream("GET", path) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                said = ""
                for chunk in stream.iter_text():
                    said += chunk
                    if "event: " in said and "revoked" not in said:
                        with psycopg.connect(database_url, autocommit=True) as conn:
                            conn.execute(
                                "UPDATE api_keys SET revoked_at = now() WHERE key_hash = %s AND revoked_at IS NULL",
                                (hash_key(key),),
                            )
                        said += "(revoked)"
                    if "event: error" in said:
                        break
            assert "event: error" in said and "unauthorized" in said, (path, said)
            with psycopg.connect(database_url, autocommit=True) as conn:  # the key back for the next stream
                conn.execute("UPDATE api_keys SET revoked_at = NULL WHERE key_hash = %s", (hash_key(key),))

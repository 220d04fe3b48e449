"""The dashboard's session: an API key exchanged for a signed, expiring cookie, and the CSRF tokens of its forms.

The cookie holds the tenant, the SHA-256 hash of the key it was opened with (never the key: a stolen cookie
is not an API key), when it expires and a random nonce, signed with HMAC-SHA256 by the dashboard's key
(``CRAWLJOBS_DASHBOARD_SECRET``, or one kept in the database, made on first use, shared by every API
process). Every request checks the signature, the expiry, and asks the database whether the key is still
valid and still the tenant's (one indexed lookup, the same the API does per request): revoking the key ends
its sessions at once. It is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it),
Path=/, and Secure when the request came over HTTPS.

Every form that changes something carries a CSRF token, an HMAC of the session's nonce: a request without the
right one is refused before it does anything. The sign-in form has no session yet: its token is bound to a
random nonce in a short-lived cookie of its own (a page elsewhere cannot sign a browser into an attacker's
account). The API's key auth never looks at these cookies (``service.deps`` reads only headers).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response

from crawljobs.manager import JobManager

SESSION_COOKIE = "crawljobs_session"
SIGNIN_COOKIE = "crawljobs_signin"
SIGNIN_COOKIE_SECONDS = 3600
CSRF_FIELD = "csrf_token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its tenant, the hash of its key, when it ends, and its CSRF nonce."""

    tenant: str
    key_hash: bytes
    expires: int
    nonce: str


def _same(given: str, expected: str) -> bool:
    """A constant-time comparison of a client's text with ours: as bytes, since ``hmac.compare_digest`` raises
    on a str with non-ASCII characters (a form field or a cookie can hold any)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


class Signer:
    """Signs and checks cookies and CSRF tokens with the dashboard's key (HMAC-SHA256)."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"crawljobs-dashboard\0" + secret.encode()).digest()

    def _mac(self, purpose: str, value: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest())

    def session_cookie(self, session: Session) -> str:
        body = {"t": session.tenant, "k": session.key_hash.hex(), "e": session.expires, "n": session.nonce}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._mac('session', payload)}"

    def read_session(self, cookie: str, *, now: float | None = None) -> Session | None:
        """The session a cookie holds if its signature is ours and it has not expired, else None."""
        payload, _, mac = cookie.partition(".")
        if not payload or not _same(mac, self._mac("session", payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
            session = Session(str(body["t"]), bytes.fromhex(body["k"]), int(body["e"]), str(body["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= (time.time() if now is None else now):
            return None
        return session

    def csrf_token(self, nonce: str, *, purpose: str = "csrf") -> str:
        return self._mac(purpose, nonce)

    def csrf_valid(self, nonce: str, token: str | None, *, purpose: str = "csrf") -> bool:
        return bool(token) and _same(str(token), self.csrf_token(nonce, purpose=purpose))


async def signer_of(connection: HTTPConnection) -> Signer:
    """The app's signer, made on first use from the setting or the key kept in the database."""
    state = connection.app.state
    signer: Signer | None = getattr(state, "dashboard_signer", None)
    if signer is None:
        manager: JobManager = state.manager
        secret = manager.settings.dashboard_secret or await manager.dashboard_secret(
            new_secret=secrets.token_urlsafe(48)
        )
        signer = state.dashboard_signer = Signer(secret)
    return signer


def new_session(tenant: str, key_hash: bytes, seconds: int) -> Session:
    return Session(tenant, key_hash, int(time.time()) + seconds, secrets.token_urlsafe(16))


async def current_session(connection: HTTPConnection) -> Session | None:
    """The request's session if its cookie is valid, unexpired, and its key still the tenant's (not revoked)."""
    cookie = connection.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    session = (await signer_of(connection)).read_session(cookie)
    if session is None:
        return None
    manager: JobManager = connection.app.state.manager
    if await manager.tenant_of_key_hash(session.key_hash) != session.tenant:
        return None
    return session


def _secure(connection: HTTPConnection) -> bool:
    return connection.url.scheme == "https"


def set_session_cookie(
    response: Response, connection: HTTPConnection, signer: Signer, session: Session
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        signer.session_cookie(session),
        max_age=max(0, session.expires - int(time.time())),
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(connection),
    )


def clear_session_cookie(response: Response, connection: HTTPConnection) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(connection)
    )


def signin_nonce(connection: HTTPConnection) -> tuple[str, bool]:
    """The sign-in form's nonce from its cookie, or a new one (and True: the cookie must be set)."""
    nonce = connection.cookies.get(SIGNIN_COOKIE)
    if nonce and 16 <= len(nonce) <= 64:
        return nonce, False
    return secrets.token_urlsafe(16), True


def set_signin_cookie(response: Response, connection: HTTPConnection, nonce: str) -> None:
    response.set_cookie(
        SIGNIN_COOKIE,
        nonce,
        max_age=SIGNIN_COOKIE_SECONDS,
        path="/sign-in",
        httponly=True,
        samesite="strict",
        secure=_secure(connection),
    )

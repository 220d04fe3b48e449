"""What every dashboard page shares: the templates, the security headers, the session dependencies, the route
class that turns refusals into pages, and the CSRF check of every form.

Every page is sent with a Content-Security-Policy whose scripts need a nonce made for that response (the
dashboard's one script file carries it; no inline script, no inline style, no other origin), with
``Cache-Control: no-store`` (a page holds a tenant's data), ``X-Content-Type-Options: nosniff``, no framing
by anyone (``frame-ancestors 'none'``) and ``Referrer-Policy: same-origin``. Jinja2 escapes every value it
writes (autoescape on): a crawled title or URL is text, never markup.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.routing import BaseRoute, Match

from crawljobs import __version__
from crawljobs.exceptions import CrawlJobsError
from crawljobs.manager import JobManager
from service.crawled import CRAWLED_HTML_HEADERS
from service.dashboard.session import CSRF_FIELD, Session, current_session, signer_of
from service.errors import status_for

HERE = Path(__file__).parent
STATIC_PREFIX = "/dashboard-static"

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def page_policy(nonce: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


def security_headers(nonce: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": page_policy(nonce),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
    }


def _age(value: datetime | None) -> str:
    """How long ago, in words a person reads at a glance ("3 min ago")."""
    if value is None:
        return "—"
    seconds = int((datetime.now(UTC) - value).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


templates.filters["age"] = _age
templates.filters["when"] = _when
templates.filters["iso"] = _iso
templates.filters["urlpart"] = lambda value: quote(str(value), safe="")
templates.globals["version"] = __version__
templates.globals["static"] = STATIC_PREFIX


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    session: Session | None = None,
) -> HTMLResponse:
    """A page: the template with the request, the session (its CSRF token) and a fresh nonce."""
    nonce = secrets.token_urlsafe(16)
    session = session or getattr(request.state, "dashboard_session", None)
    signer = getattr(request.app.state, "dashboard_signer", None)
    csrf = signer.csrf_token(session.nonce) if session is not None and signer is not None else ""
    body = templates.get_template(template).render(
        request=request,
        session=session,
        csrf_field=CSRF_FIELD,
        csrf_token=csrf,
        nonce=nonce,
        path=request.url.path,
        **(context or {}),
    )
    return HTMLResponse(body, status_code=status, headers=security_headers(nonce))


class SignInRequired(Exception):
    """No valid session: the browser is sent to the sign-in page."""


class CsrfRefused(Exception):
    """A form came without its CSRF token (or with another session's)."""


def sign_in_redirect(request: HTTPConnection, *, reason: str | None = None) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    method = request.scope.get("method", "GET")
    query = f"?next={quote(target, safe='')}" if method == "GET" and target != "/" else ""
    if reason:
        query += ("&" if query else "?") + f"reason={quote(reason)}"
    response = RedirectResponse(f"/sign-in{query}", status_code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


class DashboardRoute(APIRoute):
    """A dashboard route: a refusal is a page (or a redirect to sign in), never the API's JSON; its POSTs are
    authenticated by the session cookie before their body is read (``service.limits``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body_auth = self._body_auth

    async def _body_auth(self, connection: HTTPConnection) -> str | Response | None:
        if self.path == "/sign-in":
            return None
        session = await current_session(connection)
        if session is None:
            return sign_in_redirect(connection, reason="expired")
        return session.tenant

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return sign_in_redirect(request)
            except CsrfRefused:
                return render(
                    request,
                    "error.html",
                    {
                        "title": "Refused",
                        "message": "This form was not sent from this dashboard's own page (its CSRF token is "
                        "missing or wrong), so nothing was changed. Reload the page and try again.",
                    },
                    status=403,
                )
            except CrawlJobsError as exc:
                status = status_for(exc)
                if status == 500:
                    raise
                return render(
                    request, "error.html", {"title": exc.code, "message": exc.message}, status=status
                )
            except RequestValidationError as exc:
                messages = [
                    f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}"
                    for e in exc.errors()
                ]
                return render(
                    request,
                    "error.html",
                    {"title": "Not valid", "message": "; ".join(messages[:5])},
                    status=422,
                )

        return guarded


def body_auth_of(
    routes: Sequence[BaseRoute],
) -> Callable[[HTTPConnection], Awaitable[tuple[bool, str | Response | None]]]:
    """The check ``service.limits`` runs before it reads the body of a request to one of ``routes`` (the
    dashboard's forms): the session's tenant, nothing for the sign-in form, else a redirect to sign in."""

    async def check(connection: HTTPConnection) -> tuple[bool, str | Response | None]:
        if not any(route.matches(connection.scope)[0] is Match.FULL for route in routes):
            return False, None
        if connection.url.path == "/sign-in":
            return True, None
        await signer_of(connection)
        session = await current_session(connection)
        if session is None:
            return True, sign_in_redirect(connection, reason="expired")
        return True, session.tenant

    return check


def get_manager(request: Request) -> JobManager:
    manager: JobManager = request.app.state.manager
    return manager


async def optional_session(request: Request) -> Session | None:
    await signer_of(request)
    session = await current_session(request)
    request.state.dashboard_session = session
    return session


async def required_session(request: Request) -> Session:
    session = await optional_session(request)
    if session is None:
        raise SignInRequired()
    return session


ManagerDep = Annotated[JobManager, Depends(get_manager)]
SessionDep = Annotated[Session, Depends(required_session)]
OptionalSessionDep = Annotated[Session | None, Depends(optional_session)]


async def check_csrf(request: Request, session: Session) -> None:
    """Refuse a form whose CSRF token is not this session's (before the form changes anything)."""
    form = await request.form()
    token = form.get(CSRF_FIELD)
    signer = await signer_of(request)
    if not isinstance(token, str) or not signer.csrf_valid(session.nonce, token):
        raise CsrfRefused()


async def csrf_session(request: Request, session: SessionDep) -> Session:
    """The session of a form that changes something, its CSRF token checked."""
    await check_csrf(request, session)
    return session


CsrfSessionDep = Annotated[Session, Depends(csrf_session)]


__all__ = ["CRAWLED_HTML_HEADERS"]

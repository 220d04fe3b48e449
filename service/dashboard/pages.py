"""The dashboard's pages and forms (docs/DASHBOARD.md): sign-in, overview, submit, batches, one batch, one job
and its sandboxed HTML, webhooks; each action a POST with its CSRF token, answered by a redirect (303) back to
the page with a notice, so a reload never repeats it."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError

from crawljobs.exceptions import CrawlJobsError, InvalidRequest, NotFound
from crawljobs.keys import hash_key
from crawljobs.models import STATUSES
from service.dashboard import data, forms
from service.dashboard.session import (
    SIGNIN_COOKIE,
    clear_session_cookie,
    new_session,
    set_session_cookie,
    set_signin_cookie,
    signer_of,
    signin_nonce,
)
from service.dashboard.web import (
    CRAWLED_HTML_HEADERS,
    CsrfSessionDep,
    DashboardRoute,
    ManagerDep,
    OptionalSessionDep,
    SessionDep,
    render,
)
from service.errors import status_for
from service.routes.batches import export_stream
from service.routes.common import parse_job_id
from service.routes.home import LINKS
from service.schemas import BATCH_ID_PATTERN, BatchCreate, JobCreate

router = APIRouter(include_in_schema=False, route_class=DashboardRoute)

BATCHES_PER_PAGE = 25
JOBS_PER_PAGE = 50
DELIVERIES_PER_PAGE = 50
# The escaped source shown on the job page: its first characters (the whole is a download away).
SOURCE_PREVIEW_CHARS = 200_000

StatusFilter = Literal["pending", "processing", "completed", "error", "cancelled"]


def _back(path: str, notice: str, *, kind: str = "ok") -> RedirectResponse:
    """Back to a page after an action, with what happened said there (``?notice=``)."""
    joiner = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{joiner}{kind}={quote(notice)}", status_code=303)


def _notices(request: Request) -> dict[str, str | None]:
    return {"notice": request.query_params.get("ok"), "problem": request.query_params.get("problem")}


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this site only (never //elsewhere or a scheme)."""
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and all(" " < ch < "\x7f" for ch in target)  # a browser drops tabs and newlines: "/\t/x" is "//x"
    ):
        return target
    return "/"


# -- sign-in, sign-out, the overview -------------------------------------------------------------


@router.api_route("/", methods=["GET", "HEAD"])
async def overview(request: Request, manager: ManagerDep, session: OptionalSessionDep) -> Response:
    """The overview for a signed-in browser; anyone else is sent to the sign-in page (which links the docs)."""
    if session is None:
        return RedirectResponse("/sign-in", status_code=303)
    found = await data.overview(manager, tenant=session.tenant)
    return render(request, "overview.html", {"overview": found, "title": "Overview", **_notices(request)})


@router.get("/sign-in")
async def sign_in_form(request: Request, session: OptionalSessionDep) -> Response:
    signer = await signer_of(request)
    nonce, fresh = signin_nonce(request)
    reason = request.query_params.get("reason")
    context = {
        "title": "Sign in",
        "links": LINKS,
        "next": _safe_next(request.query_params.get("next")),
        "signin_token": signer.csrf_token(nonce, purpose="signin"),
        "signed_in_as": session.tenant if session else None,
        "problem": "Your session ended (expired, signed out, or its key was revoked): sign in again."
        if reason == "expired"
        else None,
    }
    response = render(request, "sign_in.html", context, session=None)
    if fresh:
        set_signin_cookie(response, request, nonce)
    return response


@router.post("/sign-in")
async def sign_in(
    request: Request,
    manager: ManagerDep,
    api_key: Annotated[str, Form(max_length=512)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
    next_path: Annotated[str, Form(alias="next", max_length=2048)] = "/",
) -> Response:
    signer = await signer_of(request)
    nonce = request.cookies.get(SIGNIN_COOKIE, "")
    problem = None
    tenant = None
    if not nonce or not signer.csrf_valid(nonce, csrf_token, purpose="signin"):
        problem = "This form expired or was not sent from this page: nothing was done. Try again."
    elif not api_key.strip():
        problem = "Enter an API key."
    else:
        tenant = await manager.tenant_of_key([api_key.strip()])
        if tenant is None:
            problem = "the API key is not valid"  # the API's own words (service.deps)
    if tenant is None:
        fresh = signin_nonce(request)[0] if nonce else None
        nonce = fresh or nonce or signin_nonce(request)[0]
        context = {
            "title": "Sign in",
            "links": LINKS,
            "next": _safe_next(next_path),
            "signin_token": signer.csrf_token(nonce, purpose="signin"),
            "problem": problem,
        }
        response = render(request, "sign_in.html", context, status=401 if problem else 200, session=None)
        set_signin_cookie(response, request, nonce)
        return response
    session = new_session(tenant, hash_key(api_key.strip()), manager.settings.dashboard_session_seconds)
    signed_in = RedirectResponse(_safe_next(next_path), status_code=303)
    set_session_cookie(signed_in, request, signer, session)
    signed_in.delete_cookie(SIGNIN_COOKIE, path="/sign-in")
    return signed_in


@router.post("/sign-out")
async def sign_out(request: Request, session: CsrfSessionDep) -> Response:
    response = RedirectResponse("/sign-in", status_code=303)
    clear_session_cookie(response, request)
    return response


# -- submit -----------------------------------------------------------------------------------


def _submit_context(**extra: Any) -> dict[str, Any]:
    return {
        "title": "Submit",
        "job_controls": forms.JOB_CONTROLS,
        "batch_controls": forms.BATCH_CONTROLS,
        "values": {},
        **extra,
    }


@router.get("/submit")
async def submit_page(request: Request, manager: ManagerDep, session: SessionDep) -> Response:
    context = _submit_context(max_batch=manager.settings.max_batch_size, **_notices(request))
    return render(request, "submit.html", context)


@router.post("/submit/job")
async def submit_job(request: Request, manager: ManagerDep, session: CsrfSessionDep) -> Response:
    form = await request.form()
    values = {"url": str(form.get("url") or "").strip(), **forms.option_values(form, JobCreate)}
    try:
        body = JobCreate.model_validate(values)
        submission = await manager.submit_job(tenant=session.tenant, url=body.url, options=body.options())
    except ValidationError as exc:
        return _refused_submit(request, manager, "job", forms.problems(exc), values)
    except InvalidRequest as exc:
        return _refused_submit(request, manager, "job", [exc.message], values, status=status_for(exc))
    return _back(f"/jobs/{submission.job.id}", "Job submitted.")


def _refused_submit(
    request: Request,
    manager: ManagerDep,
    which: str,
    problems: list[str],
    values: dict[str, Any],
    *,
    status: int = 422,
    **extra: Any,
) -> Response:
    context = _submit_context(
        max_batch=manager.settings.max_batch_size,
        refused=which,
        problems=problems,
        values=values,
        **extra,
    )
    return render(request, "submit.html", context, status=status)


@router.post("/submit/batch")
async def submit_batch(request: Request, manager: ManagerDep, session: CsrfSessionDep) -> Response:
    form = await request.form()
    text = str(form.get("urls") or "")
    upload = form.get("file")
    if upload is not None and not isinstance(upload, str):
        raw = await upload.read()
        if raw:
            try:
                text = (text + "\n" if text.strip() else "") + raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                return _refused_submit(
                    request, manager, "batch", ["the file is not UTF-8 text (one URL a line)"], {"urls": text}
                )
    lines = forms.split_urls(text)
    batch_id = str(form.get("batch_id") or "").strip() or None
    values: dict[str, Any] = {
        "urls": [url for _, url in lines],
        **forms.option_values(form, BatchCreate),
        "batch_id": batch_id,
    }
    shown = {**values, "urls": text if len(text) < 1_000_000 else ""}
    limit = manager.settings.max_batch_size
    if not lines:
        return _refused_submit(request, manager, "batch", ["urls: paste or upload at least one URL"], shown)
    if len(lines) > limit:
        problem = f"the batch has {len(lines):,} URLs, more than the limit of {limit:,}"
        return _refused_submit(request, manager, "batch", [problem], shown, status=413)
    try:
        body = BatchCreate.model_validate(values)
        submission = await manager.submit_batch(
            tenant=session.tenant, urls=body.urls, options=body.options(), batch_id=body.batch_id
        )
    except ValidationError as exc:
        return _refused_submit(request, manager, "batch", forms.problems(exc), shown)
    except CrawlJobsError as exc:
        if isinstance(exc, NotFound):
            raise
        refused = exc.details.get("failures") if isinstance(exc.details, dict) else None
        rows = _refused_lines(refused, lines) if isinstance(refused, list) else []
        return _refused_submit(
            request, manager, "batch", [exc.message], shown, status=status_for(exc), refused_lines=rows
        )
    refused_rows = [
        {"line": lines[f.index][0], "url": f.url, "reason": f.reason} for f in submission.failures
    ]
    context = {
        "title": "Batch submitted",
        "submission": submission,
        "refused_lines": refused_rows,
    }
    return render(request, "submitted.html", context, status=201)


def _refused_lines(failures: list[Any], lines: list[tuple[int, str]]) -> list[dict[str, Any]]:
    rows = []
    for failure in failures:
        if (
            isinstance(failure, dict)
            and isinstance(failure.get("index"), int)
            and failure["index"] < len(lines)
        ):
            rows.append(
                {
                    "line": lines[failure["index"]][0],
                    "url": failure.get("url"),
                    "reason": failure.get("reason"),
                }
            )
    return rows


# -- batches ----------------------------------------------------------------------------------


@router.get("/batches")
async def batches_page(
    request: Request,
    manager: ManagerDep,
    session: SessionDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    search: Annotated[str, Query(max_length=128)] = "",
) -> Response:
    search = search.strip()
    batches, total = await data.batches(
        manager,
        tenant=session.tenant,
        limit=BATCHES_PER_PAGE,
        offset=(page - 1) * BATCHES_PER_PAGE,
        search=search or None,
    )
    context = {
        "title": "Batches",
        "batches": batches,
        "total": total,
        "page": page,
        "pages": max(1, -(-total // BATCHES_PER_PAGE)),
        "search": search,
        **_notices(request),
    }
    return render(request, "batches.html", context)


@router.get("/batches/{batch_id}")
async def batch_page(
    request: Request,
    manager: ManagerDep,
    session: SessionDep,
    batch_id: str,
    status: StatusFilter | None = None,
    search: Annotated[str, Query(max_length=512)] = "",
    after: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    _check_batch_id(batch_id)
    batch = await manager.get_batch(tenant=session.tenant, batch_id=batch_id)
    page = await data.jobs_page(
        manager,
        tenant=session.tenant,
        batch_id=batch_id,
        status=status,
        search=search.strip() or None,
        after=after or None,
        limit=JOBS_PER_PAGE,
    )
    context = {
        "title": f"Batch {batch_id}",
        "batch": batch,
        "jobs": page.jobs,
        "next_after": page.next_after,
        "status": status,
        "statuses": STATUSES,
        "search": search.strip(),
        "after": after,
        **_notices(request),
    }
    fragment = request.query_params.get("fragment") == "jobs"
    return render(request, "batch_jobs.html" if fragment else "batch.html", context)


def _check_batch_id(batch_id: str) -> None:
    if not re.fullmatch(BATCH_ID_PATTERN, batch_id):
        raise NotFound(f"batch {batch_id[:128]!r} not found")


@router.post("/batches/{batch_id}/retry-failed")
async def retry_failed(batch_id: str, manager: ManagerDep, session: CsrfSessionDep) -> Response:
    _check_batch_id(batch_id)
    count = await manager.retry_failed(tenant=session.tenant, batch_id=batch_id)
    noun = "job" if count == 1 else "jobs"
    return _back(f"/batches/{quote(batch_id)}", f"{count} failed {noun} put back in the queue.")


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, manager: ManagerDep, session: CsrfSessionDep) -> Response:
    _check_batch_id(batch_id)
    count = await manager.cancel_batch(tenant=session.tenant, batch_id=batch_id)
    noun = "job" if count == 1 else "jobs"
    return _back(f"/batches/{quote(batch_id)}", f"{count} {noun} cancelled.")


@router.get("/batches/{batch_id}/export")
async def export_batch(
    batch_id: str,
    manager: ManagerDep,
    session: SessionDep,
    export_format: Annotated[Literal["ndjson", "csv"], Query(alias="format")] = "ndjson",
) -> Response:
    """The API's export (``GET /v1/batches/{id}/export``), the same code, as a download of the page."""
    _check_batch_id(batch_id)
    await manager.get_batch(tenant=session.tenant, batch_id=batch_id)
    stream, media_type = export_stream(
        manager, tenant=session.tenant, batch_id=batch_id, export_format=export_format
    )
    filename = batch_id.replace(":", "_")
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}.{export_format}"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    return StreamingResponse(stream, media_type=media_type, headers=headers)


# -- one job ------------------------------------------------------------------------------------


@router.get("/jobs/{job_id}")
async def job_page(request: Request, manager: ManagerDep, session: SessionDep, job_id: str) -> Response:
    job = await manager.get_job(tenant=session.tenant, job_id=parse_job_id(job_id), with_html=True)
    deliveries = await manager.webhook_deliveries(
        tenant=session.tenant, job_id=job.id, batch_id=None, limit=DELIVERIES_PER_PAGE, offset=0
    )
    html = job.html or ""
    context = {
        "title": f"Job {job.id}",
        "job": job,
        "deliveries": deliveries,
        "source_preview": html[:SOURCE_PREVIEW_CHARS],
        "source_cut": len(html) > SOURCE_PREVIEW_CHARS,
        **_notices(request),
    }
    return render(request, "job.html", context)


@router.get("/jobs/{job_id}/source")
async def job_source(
    manager: ManagerDep, session: SessionDep, job_id: str, download: bool = False
) -> Response:
    """The crawled HTML for the job page's ``<iframe sandbox>``, under the crawled-document headers; with
    ``download=1`` as a file."""
    job = await manager.get_job(
        tenant=session.tenant, job_id=parse_job_id(job_id), with_html=True, with_attempts=False
    )
    if job.html is None:
        raise NotFound(f"job {job.id} has no HTML (status {job.status})")
    headers = dict(CRAWLED_HTML_HEADERS)
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{job.id}.html"'
    html_like = (job.content_type or "text/html").split(";")[0].strip().lower() in (
        "text/html",
        "application/xhtml+xml",
    )
    media_type = "text/html; charset=utf-8" if html_like else "text/plain; charset=utf-8"
    return Response(job.html, media_type=media_type, headers=headers)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, manager: ManagerDep, session: CsrfSessionDep) -> Response:
    job = await manager.cancel_job(tenant=session.tenant, job_id=parse_job_id(job_id))
    said = "Job cancelled." if job.status == "cancelled" else f"The job had already ended ({job.status})."
    return _back(f"/jobs/{job.id}", said)


# -- webhooks -------------------------------------------------------------------------------------


@router.get("/webhooks")
async def webhooks_page(
    request: Request,
    manager: ManagerDep,
    session: SessionDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    deliveries = await manager.webhook_deliveries(
        tenant=session.tenant,
        job_id=None,
        batch_id=None,
        limit=DELIVERIES_PER_PAGE + 1,
        offset=(page - 1) * DELIVERIES_PER_PAGE,
    )
    context = {
        "title": "Webhooks",
        "deliveries": deliveries[:DELIVERIES_PER_PAGE],
        "more": len(deliveries) > DELIVERIES_PER_PAGE,
        "page": page,
        **_notices(request),
    }
    return render(request, "webhooks.html", context)


@router.post("/webhooks/{delivery_id}/redeliver")
async def redeliver(delivery_id: str, manager: ManagerDep, session: CsrfSessionDep) -> Response:
    try:
        parsed = uuid.UUID(delivery_id)
    except ValueError:
        raise NotFound(f"webhook delivery {delivery_id[:100]!r} not found") from None
    delivery = await manager.redeliver(tenant=session.tenant, delivery_id=parsed)
    return _back("/webhooks", f"Delivery {delivery.id} will be sent again now.")

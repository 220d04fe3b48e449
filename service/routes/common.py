"""What the route modules share: documented error responses, id parsing, and the worker runs on demand."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from crawljobs.exceptions import JobNotFound
from crawljobs.processing import ProcessingFailed, ProcessingRuns, ProcessSummary, process_pending
from service.schemas import ErrorOut

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing or invalid API key."},
    422: {"model": ErrorOut, "description": "Invalid input; `details` names the fields."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such job or batch."}
}
RUN_ERRORS: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorOut,
        "description": "Too many worker runs are going, of this tenant or of this API process; `Retry-After` "
        "says when to try again.",
        "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    },
    503: {"model": ErrorOut, "description": "The worker run did not finish."},
}
SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "The batch id or Idempotency-Key is taken."},
    413: {"model": ErrorOut, "description": "The body or the batch is over the limit."},
}


def _invalid(where: str, message: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": (where,), "msg": message, "type": kind}])


async def read_params(request: Request, model: type[M], *, body_required: bool = False) -> M:
    """A legacy route's parameters: the query string's, overridden by a JSON object body's, validated. A body
    is held to what FastAPI holds a body to (JSON, an object, a JSON content type), and a value that is not
    valid is refused wherever it is, even where the other place's value would win."""
    query: dict[str, Any] = {k: v for k, v in request.query_params.items() if k in model.model_fields}
    body: dict[str, Any] = {}
    raw = await request.body()
    if raw:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            raise _invalid(
                "body", "the body must be JSON (Content-Type: application/json)", "model_attributes_type"
            )
        try:
            parsed = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, RecursionError) as exc:
            # Answered as FastAPI's own body parsing is (service/errors.py): a 422 json_invalid naming why.
            raise HTTPException(400, "There was an error parsing the body") from exc
        except ValueError as exc:  # not JSON, or an integer longer than Python converts (named there too)
            if "digits" in str(exc):
                raise HTTPException(400, "There was an error parsing the body") from exc
            raise _invalid("body", "the request body is not valid JSON", "json_invalid") from None
        if parsed is None and not query:
            raise _invalid("body", "Field required", "missing")
        if parsed is not None and not isinstance(parsed, dict):
            raise _invalid("body", "the body must be a JSON object", "model_attributes_type")
        body = {k: v for k, v in (parsed or {}).items() if k in model.model_fields}
    elif body_required and not query:
        raise _invalid("body", "Field required", "missing")
    try:
        if query.keys() & body.keys():
            model.model_validate({**body, **query})  # the query string's values, checked too
        return model.model_validate({**query, **body})
    except ValidationError as exc:
        where = "body" if body or not query else "query"
        raise RequestValidationError(
            [{**error, "loc": (where, *error["loc"])} for error in exc.errors()]
        ) from None


def legacy_body(model: type[M]) -> tuple[Any, dict[str, Any]]:
    """A legacy POST body read leniently: documented as the JSON body it is (``openapi_extra``), its fields also
    taken from the query string when the body lacks them (the old functions read either, and
    ``supabase.functions.invoke('name?x=1')`` sends no body). Returns (the dependency, the OpenAPI to add)."""

    async def dependency(request: Request) -> M:
        return await read_params(request, model, body_required=True)

    document = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
    return Depends(dependency), document


def parse_job_id(value: str) -> uuid.UUID:
    """A job id from a path or query; anything that is not a UUID names no job (404)."""
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        raise JobNotFound(f"job {value[:100]!r} not found") from None


# How often a request running a worker looks whether its client is still there.
DISCONNECT_CHECK_SECONDS = 1.0


async def watched(work: Awaitable[T], *, every: float, check: Callable[[], Awaitable[None]]) -> T:
    """The result of ``work``, with ``check`` awaited every ``every`` seconds while it runs. When ``check``
    raises, ``work`` is cancelled and awaited to its end, and the error goes on."""
    task = asyncio.ensure_future(work)
    try:
        while not (await asyncio.wait({task}, timeout=every))[0]:
            await check()
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})


def get_processing_runs(request: Request) -> ProcessingRuns:
    """The app's bound on worker runs, made on first use (one per app, so one per API process)."""
    state = request.app.state
    runs: ProcessingRuns | None = getattr(state, "processing_runs", None)
    if runs is None:
        runs = state.processing_runs = ProcessingRuns.from_settings(state.settings)
    return runs


ProcessingRunsDep = Annotated[ProcessingRuns, Depends(get_processing_runs)]


async def run_worker(
    request: Request, runs: ProcessingRuns, *, tenant: str, batch_size: int
) -> ProcessSummary:
    """A worker run on ``tenant``'s pending jobs, within the bound of ``runs`` (ProcessingBusy beyond it),
    stopped if the client goes away: nobody would read its answer, and its slot is free again at once
    (``process_pending`` stops its child when it is cancelled)."""

    async def client_still_there() -> None:
        if await request.is_disconnected():
            raise ProcessingFailed("the client went away; the worker run was stopped")

    with runs.slot(tenant):
        run = process_pending(request.app.state.settings, batch_size=batch_size, tenant=tenant)
        return await watched(run, every=DISCONNECT_CHECK_SECONDS, check=client_still_there)

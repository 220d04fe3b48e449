"""Every error leaves the service as JSON: ``{"success": false, "code": ..., "error": ..., "details": ...}``.

``success`` and ``error`` keep the legacy clients' checks working; ``code`` is stable for programs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from crawljobs.exceptions import (
    BatchAlreadyExists,
    BatchTooLarge,
    CrawlJobsError,
    DatabaseUnavailable,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    RequestTooLarge,
    Unauthorized,
)
from crawljobs.exposition import MetricsClosed
from crawljobs.processing import ProcessingBusy, ProcessingFailed
from crawljobs.store.pool import UNAVAILABLE

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: tuple[tuple[type[CrawlJobsError], int], ...] = (
    (BatchTooLarge, 413),
    (RequestTooLarge, 413),
    (InvalidRequest, 422),
    (NotFound, 404),
    (BatchAlreadyExists, 409),
    (IdempotencyConflict, 409),
    (Unauthorized, 401),
    (MetricsClosed, 403),
    (DatabaseUnavailable, 503),
    (ProcessingBusy, 429),
    (RateLimited, 429),
    (ProcessingFailed, 503),
)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"success": False, "code": code, "error": message}
    if details:
        body["details"] = details
    return body


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers or None)


def status_for(exc: CrawlJobsError) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return status
    return 500


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or (str(loc[0]) if loc else "body")


async def _crawljobs_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CrawlJobsError)
    status = status_for(exc)
    if status == 500:
        logger.exception("unexpected crawljobs error", exc_info=exc)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, ProcessingBusy | RateLimited) else None
    return error_response(status, exc.code, exc.message, exc.details or None, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        field = _field_path(loc)
        if err.get("type") == "json_invalid":
            field = "body"
        details.append({"field": field, "message": err.get("msg", "invalid"), "type": err.get("type")})
    if details and details[0]["type"] == "json_invalid":
        message = "the request body is not valid JSON"
    elif details:
        message = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    else:
        message = "the request is not valid"
    return error_response(422, "validation_error", message, details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # FastAPI answers a JSON body that is not UTF-8, nested deeper than the parser goes, or holding an integer
    # longer than Python converts, with a bare 400
    # ("There was an error parsing the body"); both are bodies that do not parse, so they get the same answer
    # as any other: 422 validation_error, type json_invalid.
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        return _invalid_json(f"the request body is not valid JSON: {exc.__cause__.reason} (it must be UTF-8)")
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        return _invalid_json("the request body is not valid JSON: it is nested too deeply")
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError) and "digits" in str(exc.__cause__):
        # Python's limit on integer conversion (sys.get_int_max_str_digits(), 4,300 by default).
        return _invalid_json(
            f"the request body is not valid JSON here: a number in it has more than "
            f"{sys.get_int_max_str_digits()} digits"
        )
    code = HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # RFC 9110: a 405 lists every method of the path. Starlette names only the first route that matched
        # the path, which is wrong where two routes share one (GET and POST /v1/batches).
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route fully matches for this path (asked of each route: included routers too)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]


def _invalid_json(message: str) -> JSONResponse:
    details = [{"field": "body", "message": message, "type": "json_invalid"}]
    return error_response(422, "validation_error", message, details)


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    logger.error("database unavailable: %s", exc)
    return error_response(503, "database_unavailable", "the database cannot be reached; try again shortly")


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error occurred")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CrawlJobsError, _crawljobs_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for unavailable in UNAVAILABLE:
        app.add_exception_handler(unavailable, _database_error)
    app.add_exception_handler(Exception, _unexpected)

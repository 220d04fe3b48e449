"""The errors of the client: typed from the API's status and ``code``, all under `ClientError`."""

from __future__ import annotations

from typing import Any

import httpx

from crawljobs.client.models import Batch, Job


class ClientError(Exception):
    """The root of every error this client raises."""


class CrawlJobsAPIError(ClientError):
    """The API answered with an error: ``status`` (HTTP), ``code`` (stable), ``message`` (human)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})" if status else f"{message} ({code})")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class InvalidRequest(CrawlJobsAPIError):
    """422 (or 400): the request was malformed or its URLs were refused; ``details`` names the fields."""


class Unauthorized(CrawlJobsAPIError):
    """401: the API key is missing or not valid."""


class NotFound(CrawlJobsAPIError):
    """404: no such job or batch (for this tenant)."""


class Conflict(CrawlJobsAPIError):
    """409: the batch id is taken, or the Idempotency-Key was used for another request."""


class TooLarge(CrawlJobsAPIError):
    """413: the request body or the batch is over the service's limit."""


class ServiceUnavailable(CrawlJobsAPIError):
    """503 (the service cannot reach its database) or any 5xx."""


class ConnectionFailed(ServiceUnavailable):
    """The API could not be reached at all (refused, reset, timed out); ``status`` is 0."""


ERROR_BY_STATUS: dict[int, type[CrawlJobsAPIError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: InvalidRequest,
}


class WaitTimeout(ClientError):
    """A wait ran out before the job (or every job of the batch) was final. ``job`` or ``batch`` holds it
    as it stood then."""

    def __init__(self, message: str, *, job: Job | None = None, batch: Batch | None = None) -> None:
        super().__init__(message)
        self.job = job
        self.batch = batch


def error_for(response: httpx.Response) -> CrawlJobsAPIError:
    """The typed error of an API error response (JSON ``{"code", "error", "details"}`` or anything else)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "code" in body:
        code, message, details = str(body["code"]), str(body.get("error", "")), body.get("details")
    else:
        code, message, details = "http_error", response.text[:200] or response.reason_phrase, None
    status = response.status_code
    kind = ERROR_BY_STATUS.get(status) or (ServiceUnavailable if status >= 500 else CrawlJobsAPIError)
    return kind(status, code, message, details)


def stream_error(body: dict[str, Any]) -> CrawlJobsAPIError:
    """The typed error of a stream's final ``event: error`` (an error body; ``unauthorized``: a revoked key)."""
    code, message = str(body.get("code", "stream_error")), str(body.get("error", "the stream ended"))
    if code == "unauthorized":
        return Unauthorized(401, code, message, body.get("details"))
    return CrawlJobsAPIError(0, code, message, body.get("details"))


def route_missing(exc: NotFound) -> bool:
    """A 404 from the router itself (the route does not exist), not a missing job or batch."""
    return exc.code == "not_found"

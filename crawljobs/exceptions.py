"""The exceptions of crawljobs: one root, typed children, HTTP status chosen only in the routes."""

from __future__ import annotations

from typing import Any


class CrawlJobsError(Exception):
    """Something went wrong in crawljobs."""

    code = "crawljobs_error"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        super().__init__(message or (self.__doc__ or self.code).strip())
        self.details = details

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidRequest(CrawlJobsError):
    """The request is not valid."""

    code = "invalid_request"


class InvalidOption(InvalidRequest):
    """A submission option is out of what this deployment allows (its field is in the details)."""

    code = "validation_error"


class UrlRejected(InvalidRequest):
    """The URL is not allowed."""

    code = "url_rejected"


class NoValidUrls(InvalidRequest):
    """None of the batch's URLs was accepted."""

    code = "no_valid_urls"


class BatchTooLarge(InvalidRequest):
    """The batch has more URLs than allowed."""

    code = "batch_too_large"


class InvalidStatus(InvalidRequest):
    """Not a job status: one of pending, processing, completed, error, cancelled."""

    code = "invalid_status"


class InvalidCursor(InvalidRequest):
    """Not a cursor this listing gave: pass back the `next_after` of the previous page."""

    code = "invalid_cursor"


class NotFound(CrawlJobsError):
    """Not found."""

    code = "not_found"


class JobNotFound(NotFound):
    """No such job."""

    code = "job_not_found"


class BatchNotFound(NotFound):
    """No such batch."""

    code = "batch_not_found"


class DeliveryNotFound(NotFound):
    """No such webhook delivery."""

    code = "delivery_not_found"


class BatchAlreadyExists(CrawlJobsError):
    """A batch with this id already exists."""

    code = "batch_exists"


class IdempotencyConflict(CrawlJobsError):
    """This Idempotency-Key was already used for a different request."""

    code = "idempotency_conflict"


class DatabaseUnavailable(CrawlJobsError):
    """The database cannot be reached."""

    code = "database_unavailable"


class Unauthorized(CrawlJobsError):
    """A valid API key is required: send `Authorization: Bearer <key>` (or the legacy `apikey` header)."""

    code = "unauthorized"


class RateLimited(CrawlJobsError):
    """This API key has made more requests than CRAWLJOBS_RATE_LIMIT_PER_SECOND allows."""

    code = "rate_limited"

    def __init__(self, message: str | None = None, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestTooLarge(CrawlJobsError):
    """The request body is too large."""

    code = "request_too_large"

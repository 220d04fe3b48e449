"""What the route modules share: documented error responses and id parsing."""

from __future__ import annotations

import uuid
from typing import Any

from crawljobs.exceptions import JobNotFound
from service.schemas import ErrorOut

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing or invalid API key."},
    422: {"model": ErrorOut, "description": "Invalid input; `details` names the fields."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such job or batch."}
}
SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "The batch id or Idempotency-Key is taken."},
    413: {"model": ErrorOut, "description": "The body or the batch is over the limit."},
}


def parse_job_id(value: str) -> uuid.UUID:
    """A job id from a path or query; anything that is not a UUID names no job (404)."""
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        raise JobNotFound(f"job {value[:100]!r} not found") from None

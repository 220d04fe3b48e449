"""What the spider hands to the pipeline: the outcome of one job, with every attempt it made."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from crawlproject.context import ClaimedJob


@dataclass
class JobResult:
    job: ClaimedJob
    status: Literal["completed", "error"]
    html: str | None = None
    http_status: int | None = None
    final_url: str | None = None
    content_type: str | None = None
    success_method: str | None = None
    error_message: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def processing_time_ms(self) -> int:
        return int((time.monotonic() - self.job.started) * 1000)


def failure_result(job: ClaimedJob, reason: str, *, http_status: int | None = None) -> JobResult:
    return JobResult(
        job=job, status="error", error_message=reason, http_status=http_status, attempts=job.attempts
    )

"""What the spider hands to the pipeline: the outcome of one job, with every attempt it made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from crawljobs.lifecycle import AttemptRecord, ClaimedJob, ResultRecord


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
    attempts: list[AttemptRecord] = field(default_factory=list)

    def record(self) -> ResultRecord:
        """The result as the lifecycle writes it, fenced by the attempt the job is at now."""
        return ResultRecord(
            id=self.job.id,
            attempt=self.job.attempt,
            status=self.status,
            processing_time_ms=self.job.elapsed_ms,
            cost=self.job.cost,
            html=self.html,
            http_status=self.http_status,
            final_url=self.final_url,
            content_type=self.content_type,
            success_method=self.success_method,
            error_message=self.error_message,
        )


def failure_result(job: ClaimedJob, reason: str, *, http_status: int | None = None) -> JobResult:
    return JobResult(
        job=job, status="error", error_message=reason, http_status=http_status, attempts=job.attempts
    )

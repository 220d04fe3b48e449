"""What an API process counts for /metrics: submit calls and the URLs they accepted or refused, by route family.

Counts go to the process's `MetricsBuffer` (``app.state.meter``, made by the app's lifespan), which adds them to
Redis a second after the first of them (``crawljobs.metrics``): a submission never waits on it. (The manager
counts cancellations into the same buffer.)
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Literal, TypeVar

from fastapi import Depends, Request

from crawljobs.exceptions import CrawlJobsError, NoValidUrls, UrlRejected
from crawljobs.metrics import MetricsBuffer
from crawljobs.models import BatchSubmission, JobSubmission

Family = Literal["v1", "legacy"]
Kind = Literal["job", "batch"]
S = TypeVar("S", JobSubmission, BatchSubmission)


def get_meter(request: Request) -> MetricsBuffer:
    meter: MetricsBuffer = request.app.state.meter
    return meter


MeterDep = Annotated[MetricsBuffer, Depends(get_meter)]


def _refused(exc: CrawlJobsError) -> int:
    if isinstance(exc, NoValidUrls):
        return len(exc.details.get("failures") or ())
    # A refused callback URL is a UrlRejected too, naming another field: no crawl URL was refused.
    return 1 if isinstance(exc, UrlRejected) and exc.details.get("field") == "url" else 0


async def counted(meter: MetricsBuffer, family: Family, kind: Kind, submitting: Awaitable[S]) -> S:
    """The submission ``submitting`` makes, counted; a typed error counts as rejected (with the URLs it
    refused), and is raised on."""
    try:
        submission = await submitting
    except CrawlJobsError as exc:
        meter.count("submissions", family, kind, "rejected")
        meter.count("submitted_urls", family, "refused", n=_refused(exc))
        meter.flush_soon()
        raise
    _count(meter, family, submission)
    meter.flush_soon()
    return submission


def _count(meter: MetricsBuffer, family: Family, submission: JobSubmission | BatchSubmission) -> None:
    if isinstance(submission, JobSubmission):
        meter.count("submissions", family, "job", "replayed" if submission.replayed else "created")
        if not submission.replayed:
            meter.count("submitted_urls", family, "accepted")
        return
    meter.count("submissions", family, "batch", "replayed" if submission.replayed else "created")
    if not submission.replayed:
        meter.count("submitted_urls", family, "accepted", n=submission.success_count)
        meter.count("submitted_urls", family, "refused", n=submission.failed_count)

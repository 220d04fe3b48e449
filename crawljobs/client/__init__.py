"""The Python client of the crawljobs HTTP API: `Client` (sync) and `AsyncClient` (async), on httpx.

Both are configured by arguments or by the environment: ``CRAWLJOBS_URL`` (default ``http://127.0.0.1:8000``)
and ``CRAWLJOBS_API_KEY``. Answers are frozen dataclasses (`Job`, `Batch`, `BatchSubmission`, `BatchPage`);
errors are typed from the API's status and ``code`` (`NotFound`, `Unauthorized`, `Conflict`, `TooLarge`,
`InvalidRequest`, `ServiceUnavailable`, all `CrawlJobsAPIError`). The legacy workflow — submit, wait with a
timeout, carry on — is two lines::

    with Client() as client:
        job = client.wait(client.submit(url).id, timeout=300)

`wait` raises `WaitTimeout` (carrying the job as it stands) when the job is still unfinished at the deadline;
a job that ends in ``error`` or ``cancelled`` is returned, not raised: check ``job.ok``.

Waiting uses the API's ``GET /v1/jobs/{id}/wait`` and ``GET /v1/batches/{id}/wait`` (woken by the job's
completion, no polling), asking again while the server's own cap (``CRAWLJOBS_MAX_WAIT_SECONDS``) is shorter
than the caller's timeout. Against a server without those routes (a 404 whose code is the generic
``not_found``, not ``job_not_found``/``batch_not_found``) it falls back to reading the job or batch every
``poll_interval`` seconds.

The package: `models` (the answers), `errors`, `operations` (what both clients share), `sync_client`,
`async_client`.
"""

from crawljobs.client.async_client import AsyncClient
from crawljobs.client.errors import (
    ClientError,
    Conflict,
    ConnectionFailed,
    CrawlJobsAPIError,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    TooLarge,
    Unauthorized,
    WaitTimeout,
    error_for,
)
from crawljobs.client.models import (
    FINAL_STATUSES,
    Attempt,
    Batch,
    BatchCounts,
    BatchPage,
    BatchSubmission,
    Delivery,
    Failure,
    Job,
    Progress,
)
from crawljobs.client.operations import (
    API_KEY_VARIABLE,
    DEFAULT_URL,
    URL_VARIABLE,
    BatchOptions,
    ExportFormat,
    SubmitOptions,
)
from crawljobs.client.sync_client import Client

__all__ = [
    "API_KEY_VARIABLE",
    "DEFAULT_URL",
    "FINAL_STATUSES",
    "URL_VARIABLE",
    "AsyncClient",
    "Attempt",
    "Batch",
    "BatchCounts",
    "BatchOptions",
    "BatchPage",
    "BatchSubmission",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "CrawlJobsAPIError",
    "Delivery",
    "ExportFormat",
    "Failure",
    "InvalidRequest",
    "Job",
    "NotFound",
    "Progress",
    "ServiceUnavailable",
    "SubmitOptions",
    "TooLarge",
    "Unauthorized",
    "WaitTimeout",
    "error_for",
]

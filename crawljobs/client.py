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
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, Self

import httpx

from crawljobs import __version__

DEFAULT_URL = "http://127.0.0.1:8000"
URL_VARIABLE = "CRAWLJOBS_URL"
API_KEY_VARIABLE = "CRAWLJOBS_API_KEY"
FINAL_STATUSES = frozenset({"completed", "error", "cancelled"})
ExportFormat = Literal["ndjson", "csv", "json"]

# Seconds allowed on top of a wait's own timeout for the answer to arrive.
WAIT_GRACE_SECONDS = 10.0
# Jobs per request when reading a batch page by page (the API's largest page for a JSON export).
EXPORT_PAGE_SIZE = 500


# -- results -----------------------------------------------------------------------------------------


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class Attempt:
    """One fetch attempt of a job: the method used and how it went."""

    attempt: int
    method: str
    started_at: datetime | None
    duration_ms: int | None
    http_status: int | None
    outcome: str
    error: str | None
    worker: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Attempt:
        return cls(
            attempt=data["attempt"],
            method=data["method"],
            started_at=_time(data.get("started_at")),
            duration_ms=data.get("duration_ms"),
            http_status=data.get("http_status"),
            outcome=data["outcome"],
            error=data.get("error"),
            worker=data.get("worker"),
        )


@dataclass(frozen=True)
class Job:
    """A crawl job as the API reports it. ``html`` is set only when asked for (``include_html``, exports);
    ``index`` (its place in the submitted list) only in exports."""

    id: str
    url: str
    status: str
    batch_id: str | None
    render: bool
    premium: bool
    ultra_premium: bool
    attempt: int
    max_attempts: int
    max_retries: int
    created_at: datetime | None
    updated_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    dispatched: bool
    html_length: int | None
    processing_time_ms: int | None
    success_method: str | None
    http_status: int | None
    final_url: str | None
    content_type: str | None
    error_message: str | None
    cost: float
    attempts: tuple[Attempt, ...] = ()
    html: str | None = None
    index: int | None = None

    @property
    def is_final(self) -> bool:
        """Completed, error or cancelled: the job will not change again (unless retried)."""
        return self.status in FINAL_STATUSES

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        return cls(
            id=data["id"],
            url=data["url"],
            status=data["status"],
            batch_id=data.get("batch_id"),
            render=bool(data.get("render", False)),
            premium=bool(data.get("premium", False)),
            ultra_premium=bool(data.get("ultra_premium", False)),
            attempt=data.get("attempt", 0),
            max_attempts=data.get("max_attempts", 0),
            max_retries=data.get("max_retries", 0),
            created_at=_time(data.get("created_at")),
            updated_at=_time(data.get("updated_at")),
            started_at=_time(data.get("started_at")),
            completed_at=_time(data.get("completed_at")),
            dispatched=bool(data.get("dispatched", False)),
            html_length=data.get("html_length"),
            processing_time_ms=data.get("processing_time_ms"),
            success_method=data.get("success_method"),
            http_status=data.get("http_status"),
            final_url=data.get("final_url"),
            content_type=data.get("content_type"),
            error_message=data.get("error_message"),
            cost=float(data.get("cost") or 0.0),
            attempts=tuple(Attempt.from_json(a) for a in data.get("attempts") or ()),
            html=data.get("html"),
            index=data.get("index"),
        )


@dataclass(frozen=True)
class BatchCounts:
    pending: int
    processing: int
    completed: int
    error: int
    cancelled: int
    total: int

    @property
    def final(self) -> int:
        return self.completed + self.error + self.cancelled

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchCounts:
        return cls(**{name: int(data.get(name, 0)) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Batch:
    """A batch's counts and progress; ``jobs`` holds the page of jobs the read asked for (if any)."""

    batch_id: str
    created_at: datetime | None
    last_updated: datetime | None
    render: bool
    premium: bool
    ultra_premium: bool
    counts: BatchCounts
    progress: int
    jobs: tuple[Job, ...] = ()

    @property
    def is_done(self) -> bool:
        """Every job is final."""
        return self.counts.final >= self.counts.total

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Batch:
        return cls(
            batch_id=data["batch_id"],
            created_at=_time(data.get("created_at")),
            last_updated=_time(data.get("last_updated")),
            render=bool(data.get("render", False)),
            premium=bool(data.get("premium", False)),
            ultra_premium=bool(data.get("ultra_premium", False)),
            counts=BatchCounts.from_json(data.get("counts") or {}),
            progress=int(data.get("progress", 0)),
            jobs=tuple(Job.from_json(j) for j in data.get("jobs") or ()),
        )


@dataclass(frozen=True)
class Failure:
    """A URL of a batch that was refused: its index in the submitted list and why."""

    index: int
    url: str
    reason: str


@dataclass(frozen=True)
class BatchSubmission:
    batch_id: str
    total: int
    accepted: int
    rejected: int
    failures: tuple[Failure, ...]
    job_ids: tuple[str | None, ...]  # one per submitted URL, in order; None where refused
    dispatched: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchSubmission:
        return cls(
            batch_id=data["batch_id"],
            total=data["total"],
            accepted=data["accepted"],
            rejected=data["rejected"],
            failures=tuple(Failure(f["index"], f["url"], f["reason"]) for f in data.get("failures") or ()),
            job_ids=tuple(data.get("job_ids") or ()),
            dispatched=bool(data.get("dispatched", False)),
        )


@dataclass(frozen=True)
class BatchPage:
    """A page of the tenant's batches, newest first; ``total`` counts them all."""

    batches: tuple[Batch, ...]
    total: int
    limit: int
    offset: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchPage:
        return cls(
            batches=tuple(Batch.from_json(b) for b in data["batches"]),
            total=data["total"],
            limit=data["limit"],
            offset=data["offset"],
        )


# -- errors ------------------------------------------------------------------------------------------


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


def _route_missing(exc: NotFound) -> bool:
    """A 404 from the router itself (the route does not exist), not a missing job or batch."""
    return exc.code == "not_found"


# -- what both clients share -------------------------------------------------------------------------


def _settings(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    url = base_url or os.environ.get(URL_VARIABLE) or DEFAULT_URL
    key = api_key if api_key is not None else os.environ.get(API_KEY_VARIABLE) or None
    return url.rstrip("/"), key


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"crawljobs-client/{__version__}", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _submission_body(
    *, render: bool, premium: bool, ultra_premium: bool, max_retries: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"render": render, "premium": premium, "ultra_premium": ultra_premium}
    if max_retries is not None:
        body["max_retries"] = max_retries
    return body


def _idempotency(key: str | None) -> dict[str, str] | None:
    return {"Idempotency-Key": key} if key else None


def _parse_ndjson_line(line: str) -> Job | None:
    return Job.from_json(json.loads(line)) if line.strip() else None


def _check_format(export_format: str) -> None:
    if export_format not in ("ndjson", "csv", "json"):
        raise ValueError(f"format must be ndjson, csv or json, not {export_format!r}")


# -- the sync client ---------------------------------------------------------------------------------


class Client:
    """The crawljobs API, synchronously. Use it as a context manager (or call `close()`).

    ``timeout`` bounds every ordinary request; waits get their own timeout plus a grace period.
    ``poll_interval`` is used only against a server without the wait routes.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        poll_interval: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url, self.api_key = _settings(base_url, api_key)
        self.poll_interval = poll_interval
        self._http = httpx.Client(
            base_url=self.base_url, headers=_headers(self.api_key), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionFailed(0, "connection_failed", f"cannot reach {self.base_url}: {exc}") from exc
        if response.is_error:
            raise error_for(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # submit

    def submit(
        self,
        url: str,
        *,
        render: bool = False,
        premium: bool = False,
        ultra_premium: bool = False,
        max_retries: int | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit one URL; the job comes back pending (or, for a replayed idempotency key, as it stands)."""
        body = _submission_body(
            render=render, premium=premium, ultra_premium=ultra_premium, max_retries=max_retries
        )
        body["url"] = url
        return Job.from_json(self._json("POST", "/v1/jobs", json=body, headers=_idempotency(idempotency_key)))

    def submit_batch(
        self,
        urls: Iterable[str],
        *,
        render: bool = False,
        premium: bool = False,
        ultra_premium: bool = False,
        max_retries: int | None = None,
        batch_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> BatchSubmission:
        """Submit many URLs as one batch; refused URLs are listed in ``failures``, the rest are queued."""
        body = _submission_body(
            render=render, premium=premium, ultra_premium=ultra_premium, max_retries=max_retries
        )
        body["urls"] = list(urls)
        if batch_id is not None:
            body["batch_id"] = batch_id
        return BatchSubmission.from_json(
            self._json("POST", "/v1/batches", json=body, headers=_idempotency(idempotency_key))
        )

    # read

    def get(self, job_id: str, *, include_html: bool = False) -> Job:
        params = {"include_html": "true"} if include_html else None
        return Job.from_json(self._json("GET", f"/v1/jobs/{job_id}", params=params))

    def html(self, job_id: str) -> str:
        """The fetched HTML of a completed job (`NotFound` if it has none)."""
        return self._request("GET", f"/v1/jobs/{job_id}/html").text

    def get_batch(
        self, batch_id: str, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> Batch:
        """A batch's counts, with a page of its jobs (optionally only those in ``status``)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return Batch.from_json(self._json("GET", f"/v1/batches/{batch_id}", params=params))

    def batches(self, limit: int = 25, offset: int = 0) -> BatchPage:
        """The tenant's batches, newest first."""
        return BatchPage.from_json(
            self._json("GET", "/v1/batches", params={"limit": limit, "offset": offset})
        )

    # wait

    def wait(self, job_id: str, *, timeout: float) -> Job:
        """The job once it is final; `WaitTimeout` (with the job as it stands) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                data = self._json(
                    "GET",
                    f"/v1/jobs/{job_id}/wait",
                    params={"timeout": remaining},
                    timeout=remaining + WAIT_GRACE_SECONDS,
                )
            except NotFound as exc:
                if not _route_missing(exc):
                    raise
                return self._poll_job(job_id, deadline)
            job = Job.from_json(data)  # `timed_out` aside: final or not is what counts
            if job.is_final:
                return job
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g} s", job=job)
            # The server's cap (CRAWLJOBS_MAX_WAIT_SECONDS) was shorter than ours: ask again for the rest.

    def _poll_job(self, job_id: str, deadline: float) -> Job:
        """The fallback for a server without the wait route: read the job until final or the deadline."""
        while True:
            job = self.get(job_id)
            if job.is_final:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"job {job_id} is still {job.status}", job=job)
            time.sleep(min(self.poll_interval, remaining))

    def wait_batch(self, batch_id: str, *, timeout: float) -> Batch:
        """The batch once every job is final; `WaitTimeout` (with its counts as they stand) otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                data = self._json(
                    "GET",
                    f"/v1/batches/{batch_id}/wait",
                    params={"timeout": remaining},
                    timeout=remaining + WAIT_GRACE_SECONDS,
                )
            except NotFound as exc:
                if not _route_missing(exc):
                    raise
                return self._poll_batch(batch_id, deadline)
            batch = Batch.from_json(data)
            if batch.is_done:
                return batch
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"batch {batch_id} is {batch.progress}% done after {timeout:g} s", batch=batch
                )

    def _poll_batch(self, batch_id: str, deadline: float) -> Batch:
        while True:
            batch = self.get_batch(batch_id, limit=1)
            if batch.is_done:
                return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"batch {batch_id} is {batch.progress}% done", batch=batch)
            time.sleep(min(self.poll_interval, remaining))

    # results

    def iter_results(self, batch_id: str) -> Iterator[Job]:
        """Every job of the batch in submission order, with its HTML and ``index``, streamed (NDJSON export)."""
        try:
            with self._http.stream("GET", f"/v1/batches/{batch_id}/export", params={"format": "ndjson"}) as r:
                if r.is_error:
                    r.read()
                    raise error_for(r)
                for line in r.iter_lines():
                    job = _parse_ndjson_line(line)
                    if job is not None:
                        yield job
        except httpx.TransportError as exc:
            raise ConnectionFailed(0, "connection_failed", f"cannot reach {self.base_url}: {exc}") from exc

    def export(self, batch_id: str, path: str | Path | IO[bytes], *, format: ExportFormat = "ndjson") -> int:
        """Write the batch's export to ``path`` (a file name or a binary file); returns the bytes written.

        ``ndjson`` (with HTML) and ``csv`` (metadata) are the API's streams, written as they arrive; ``json``
        reads the API's pages of jobs and writes one JSON array of them.
        """
        _check_format(format)
        if isinstance(path, str | Path):
            with open(path, "wb") as out:
                return self._export_to(batch_id, out, format)
        return self._export_to(batch_id, path, format)

    def _export_to(self, batch_id: str, out: IO[bytes], export_format: str) -> int:
        route = f"/v1/batches/{batch_id}/export"
        if export_format == "json":
            written, offset, first = out.write(b"["), 0, True
            while True:
                page = self._json(
                    "GET", route, params={"format": "json", "limit": EXPORT_PAGE_SIZE, "offset": offset}
                )
                for item in page["jobs"]:
                    written += out.write((b"\n" if first else b",\n") + json.dumps(item).encode())
                    first = False
                offset += len(page["jobs"])
                if not page["jobs"] or offset >= page["total"]:
                    return written + out.write(b"\n]\n")
        written = 0
        try:
            with self._http.stream("GET", route, params={"format": export_format}) as response:
                if response.is_error:
                    response.read()
                    raise error_for(response)
                for chunk in response.iter_bytes():
                    written += out.write(chunk)
        except httpx.TransportError as exc:
            raise ConnectionFailed(0, "connection_failed", f"cannot reach {self.base_url}: {exc}") from exc
        return written

    # change

    def retry_failed(self, batch_id: str) -> int:
        """Put the batch's failed jobs back to pending; returns how many."""
        return int(self._json("POST", f"/v1/batches/{batch_id}/retry-failed")["retried"])

    def cancel(self, job_id: str) -> Job:
        """Cancel a pending or processing job; returns the job as it now stands (a final job is unchanged)."""
        return Job.from_json(self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def cancel_batch(self, batch_id: str) -> int:
        """Cancel the batch's pending and processing jobs; returns how many were cancelled."""
        return int(self._json("POST", f"/v1/batches/{batch_id}/cancel")["cancelled"])


# -- the async client --------------------------------------------------------------------------------


class AsyncClient:
    """The crawljobs API for asyncio: the same methods as `Client`, as coroutines (``iter_results`` is an
    async iterator). Use it as an async context manager (or await `aclose()`)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        poll_interval: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url, self.api_key = _settings(base_url, api_key)
        self.poll_interval = poll_interval
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=_headers(self.api_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionFailed(0, "connection_failed", f"cannot reach {self.base_url}: {exc}") from exc
        if response.is_error:
            raise error_for(response)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._request(method, path, **kwargs)).json()

    async def submit(
        self,
        url: str,
        *,
        render: bool = False,
        premium: bool = False,
        ultra_premium: bool = False,
        max_retries: int | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        body = _submission_body(
            render=render, premium=premium, ultra_premium=ultra_premium, max_retries=max_retries
        )
        body["url"] = url
        return Job.from_json(
            await self._json("POST", "/v1/jobs", json=body, headers=_idempotency(idempotency_key))
        )

    async def submit_batch(
        self,
        urls: Iterable[str],
        *,
        render: bool = False,
        premium: bool = False,
        ultra_premium: bool = False,
        max_retries: int | None = None,
        batch_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> BatchSubmission:
        body = _submission_body(
            render=render, premium=premium, ultra_premium=ultra_premium, max_retries=max_retries
        )
        body["urls"] = list(urls)
        if batch_id is not None:
            body["batch_id"] = batch_id
        return BatchSubmission.from_json(
            await self._json("POST", "/v1/batches", json=body, headers=_idempotency(idempotency_key))
        )

    async def get(self, job_id: str, *, include_html: bool = False) -> Job:
        params = {"include_html": "true"} if include_html else None
        return Job.from_json(await self._json("GET", f"/v1/jobs/{job_id}", params=params))

    async def html(self, job_id: str) -> str:
        return (await self._request("GET", f"/v1/jobs/{job_id}/html")).text

    async def get_batch(
        self, batch_id: str, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> Batch:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return Batch.from_json(await self._json("GET", f"/v1/batches/{batch_id}", params=params))

    async def batches(self, limit: int = 25, offset: int = 0) -> BatchPage:
        return BatchPage.from_json(
            await self._json("GET", "/v1/batches", params={"limit": limit, "offset": offset})
        )

    async def wait(self, job_id: str, *, timeout: float) -> Job:  # noqa: ASYNC109 - the server waits
        """As `Client.wait`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                data = await self._json(
                    "GET",
                    f"/v1/jobs/{job_id}/wait",
                    params={"timeout": remaining},
                    timeout=remaining + WAIT_GRACE_SECONDS,
                )
            except NotFound as exc:
                if not _route_missing(exc):
                    raise
                return await self._poll_job(job_id, deadline)
            job = Job.from_json(data)  # `timed_out` aside: final or not is what counts
            if job.is_final:
                return job
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g} s", job=job)

    async def _poll_job(self, job_id: str, deadline: float) -> Job:
        while True:
            job = await self.get(job_id)
            if job.is_final:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"job {job_id} is still {job.status}", job=job)
            await asyncio.sleep(min(self.poll_interval, remaining))

    async def wait_batch(self, batch_id: str, *, timeout: float) -> Batch:  # noqa: ASYNC109
        """As `Client.wait_batch`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                data = await self._json(
                    "GET",
                    f"/v1/batches/{batch_id}/wait",
                    params={"timeout": remaining},
                    timeout=remaining + WAIT_GRACE_SECONDS,
                )
            except NotFound as exc:
                if not _route_missing(exc):
                    raise
                return await self._poll_batch(batch_id, deadline)
            batch = Batch.from_json(data)
            if batch.is_done:
                return batch
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"batch {batch_id} is {batch.progress}% done after {timeout:g} s", batch=batch
                )

    async def _poll_batch(self, batch_id: str, deadline: float) -> Batch:
        while True:
            batch = await self.get_batch(batch_id, limit=1)
            if batch.is_done:
                return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"batch {batch_id} is {batch.progress}% done", batch=batch)
            await asyncio.sleep(min(self.poll_interval, remaining))

    async def iter_results(self, batch_id: str) -> AsyncIterator[Job]:
        """As `Client.iter_results`: every job of the batch with its HTML, streamed."""
        try:
            async with self._http.stream(
                "GET", f"/v1/batches/{batch_id}/export", params={"format": "ndjson"}
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise error_for(response)
                async for line in response.aiter_lines():
                    job = _parse_ndjson_line(line)
                    if job is not None:
                        yield job
        except httpx.TransportError as exc:
            raise ConnectionFailed(0, "connection_failed", f"cannot reach {self.base_url}: {exc}") from exc

    async def export(
        self, batch_id: str, path: str | Path | IO[bytes], *, format: ExportFormat = "ndjson"
    ) -> int:
        """As `Client.export` (the file is written with blocking writes, chunk by chunk)."""
        _check_format(format)
        if isinstance(path, str | Path):
            with open(path, "wb") as out:  # noqa: ASYNC230 - chunked writes of a download
                return await self._export_to(batch_id, out, format)
        return await self._export_to(batch_id, path, format)

    async def _export_to(self, batch_id: str, out: IO[bytes], export_format: str) -> int:
        route = f"/v1/batches/{batch_id}/export"
        if export_format == "json":
            written, offset, first = out.write(b"["), 0, True
            while True:
                page = await self._json(
                    "GET", route, params={"format": "json", "limit": EXPORT_PAGE_SIZE, "offset": offset}
                )
                for item in page["jobs"]:
                    written += out.write((b"\n" if first else b",\n") + json.dumps(item).encode())
                    first = False
                offset += len(page["jobs"])
                if not page["jobs"] or offset >= page["total"]:
                    return written + out.write(b"\n]\n")
        written = 0
        try:
            async with self._http.stream("GET", route, params={"format": export_format}) as response:
                if response.is_error:
                    await response.aread()
                    raise error_for(response)
                async for chunk in response.aiter_bytes():
                    written += out.write(chunk)
        except httpx.TransportError as exc:
            raise ConnectionFailed(0, "connection_failed", f"cannot reach {self.base_url}: {exc}") from exc
        return written

    async def retry_failed(self, batch_id: str) -> int:
        return int((await self._json("POST", f"/v1/batches/{batch_id}/retry-failed"))["retried"])

    async def cancel(self, job_id: str) -> Job:
        return Job.from_json(await self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    async def cancel_batch(self, batch_id: str) -> int:
        return int((await self._json("POST", f"/v1/batches/{batch_id}/cancel"))["cancelled"])

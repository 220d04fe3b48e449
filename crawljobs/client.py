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
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Generic, Literal, Self, TypedDict, TypeVar, Unpack, cast

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

T = TypeVar("T")
R = TypeVar("R")


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


@dataclass(frozen=True)
class Progress:
    """One event of a batch's live progress (`Client.follow`): its counts and progress; ``done`` on the last."""

    counts: BatchCounts
    progress: int
    done: bool

    @classmethod
    def from_event(cls, event: str, data: str) -> Progress:
        body = json.loads(data)
        return cls(BatchCounts.from_json(body), int(body.get("progress", 0)), event == "done")


class _EventParser:
    """Server-sent events, a line at a time: `feed` returns the `Progress` an event completes, if any."""

    def __init__(self) -> None:
        self.event, self.data = "message", ""

    def feed(self, line: str) -> Progress | None:
        if line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            self.data = line[5:].strip()
        elif line == "":
            event, data = self.event, self.data
            self.event, self.data = "message", ""
            if data and event in ("counts", "done"):
                return Progress.from_event(event, data)
        return None  # a comment (keep-alive) or a field of an event still coming


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery from the tenant's log: its event, where it went, and how it went so far."""

    id: str
    event: str
    job_id: str | None
    batch_id: str | None
    url: str
    status: str  # pending, delivered or failed (given up)
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime | None
    payload: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Delivery:
        return cls(
            id=data["id"],
            event=data["event"],
            job_id=data.get("job_id"),
            batch_id=data.get("batch_id"),
            url=data["url"],
            status=data["status"],
            attempts=int(data.get("attempts") or 0),
            last_status=data.get("last_status"),
            last_error=data.get("last_error"),
            next_attempt_at=_time(data.get("next_attempt_at")),
            delivered_at=_time(data.get("delivered_at")),
            created_at=_time(data.get("created_at")),
            payload=data.get("payload") or {},
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


# -- what both clients share: the operations, apart from any transport ----------------------------------
#
# Each operation is a generator: it yields what it needs done (`_Send` a request, `_Sleep`), is sent the
# response (a typed API error is thrown into it instead) and returns its result. `Client` and `AsyncClient`
# run the same operations, one with blocking I/O and one with asyncio; only streaming reads are their own.


class SubmitOptions(TypedDict, total=False):
    """The options of a submission, as keyword arguments of `submit` and `submit_batch`."""

    render: bool  # start with the headless browser
    premium: bool  # start at the premium proxy tier
    ultra_premium: bool  # start at the ultra-premium proxy tier
    obey_robots: bool  # obey the site's robots.txt
    max_retries: int | None  # retries after the first attempt (the server's default when None)
    callback_url: str | None  # receives signed webhooks (job.completed, job.failed, batch.completed)
    idempotency_key: str | None  # a replay with the same key answers the first response


class BatchOptions(SubmitOptions, total=False):
    batch_id: str | None  # your own id for the batch (409 if taken, unless the same idempotency key)


@dataclass(frozen=True)
class _Send:
    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] | None = None
    timeout: float | None = None  # None: the client's own


@dataclass(frozen=True)
class _Sleep:
    seconds: float


_Step = _Send | _Sleep
Operation = Generator[_Step, Any, T]


def _settings(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    url = base_url or os.environ.get(URL_VARIABLE) or DEFAULT_URL
    key = api_key if api_key is not None else os.environ.get(API_KEY_VARIABLE) or None
    return url.rstrip("/"), key


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"crawljobs-client/{__version__}", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


@dataclass(frozen=True)
class _Done(Generic[T]):
    value: T


def _advance(operation: Operation[T], response: httpx.Response | None) -> _Step | _Done[T]:
    """Resume an operation with the response to its last request (None after a sleep, or to start it); an
    error response is thrown into it as its typed error. Its next step, or `_Done` with its result."""
    try:
        if response is not None and response.is_error:
            return operation.throw(error_for(response))
        return operation.send(response)
    except StopIteration as done:
        return _Done(cast(T, done.value))


def _request_kwargs(step: _Send) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"params": step.params, "json": step.json, "headers": step.headers}
    if step.timeout is not None:
        kwargs["timeout"] = step.timeout
    return kwargs


def _unreachable(base_url: str, exc: httpx.TransportError) -> ConnectionFailed:
    return ConnectionFailed(0, "connection_failed", f"cannot reach {base_url}: {exc}")


def _call(step: _Send) -> Generator[_Step, Any, httpx.Response]:
    response: httpx.Response = yield step
    return response


def _json(step: _Send) -> Generator[_Step, Any, Any]:
    return (yield from _call(step)).json()


def _submission(options: Mapping[str, object]) -> tuple[dict[str, Any], dict[str, str] | None]:
    """The JSON body and headers of a submission: the options that are set, the key as a header."""
    body: dict[str, Any] = {name: value for name, value in options.items() if value is not None}
    key = body.pop("idempotency_key", None)
    return body, {"Idempotency-Key": key} if key else None


def _submit(url: str, options: SubmitOptions) -> Operation[Job]:
    body, headers = _submission(options)
    return Job.from_json(
        (yield from _json(_Send("POST", "/v1/jobs", json={**body, "url": url}, headers=headers)))
    )


def _submit_batch(urls: Iterable[str], options: BatchOptions) -> Operation[BatchSubmission]:
    body, headers = _submission(options)
    step = _Send("POST", "/v1/batches", json={**body, "urls": list(urls)}, headers=headers)
    return BatchSubmission.from_json((yield from _json(step)))


def _get(job_id: str, include_html: bool) -> Operation[Job]:
    params = {"include_html": "true"} if include_html else None
    return Job.from_json((yield from _json(_Send("GET", f"/v1/jobs/{job_id}", params=params))))


def _html(job_id: str) -> Operation[str]:
    return (yield from _call(_Send("GET", f"/v1/jobs/{job_id}/html"))).text


def _get_batch(batch_id: str, status: str | None, limit: int, offset: int) -> Operation[Batch]:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if status:
        params["status"] = status
    return Batch.from_json((yield from _json(_Send("GET", f"/v1/batches/{batch_id}", params=params))))


def _batches(limit: int, offset: int) -> Operation[BatchPage]:
    step = _Send("GET", "/v1/batches", params={"limit": limit, "offset": offset})
    return BatchPage.from_json((yield from _json(step)))


def _until_final(
    wait_path: str,
    parse: Callable[[Any], R],
    read: Callable[[], Operation[R]],
    is_final: Callable[[R], bool],
    timed_out: Callable[[R, str], WaitTimeout],
    timeout: float,
    poll_interval: float,
) -> Operation[R]:
    """A job or a batch once final. Asks the server to wait (again, while its cap is shorter than ``timeout``);
    against a server without the wait route, reads it every ``poll_interval`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        step = _Send("GET", wait_path, params={"timeout": remaining}, timeout=remaining + WAIT_GRACE_SECONDS)
        try:
            found = parse((yield from _json(step)))  # `timed_out` aside: final or not is what counts
        except NotFound as exc:
            if not _route_missing(exc):
                raise
            break
        if is_final(found):
            return found
        if time.monotonic() >= deadline:
            raise timed_out(found, f" after {timeout:g} s")
    while True:
        found = yield from read()
        if is_final(found):
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise timed_out(found, "")
        yield _Sleep(min(poll_interval, remaining))


def _wait(job_id: str, timeout: float, poll_interval: float) -> Operation[Job]:
    return (
        yield from _until_final(
            f"/v1/jobs/{job_id}/wait",
            Job.from_json,
            lambda: _get(job_id, False),
            lambda job: job.is_final,
            lambda job, after: WaitTimeout(f"job {job_id} is still {job.status}{after}", job=job),
            timeout,
            poll_interval,
        )
    )


def _wait_batch(batch_id: str, timeout: float, poll_interval: float) -> Operation[Batch]:
    return (
        yield from _until_final(
            f"/v1/batches/{batch_id}/wait",
            Batch.from_json,
            lambda: _get_batch(batch_id, None, 1, 0),
            lambda batch: batch.is_done,
            lambda batch, after: WaitTimeout(
                f"batch {batch_id} is {batch.progress}% done{after}", batch=batch
            ),
            timeout,
            poll_interval,
        )
    )


def _export_json(batch_id: str, out: IO[bytes]) -> Operation[int]:
    """The batch's jobs, read page by page, written to ``out`` as one JSON array; the bytes written."""
    written, offset, first = out.write(b"["), 0, True
    while True:
        params = {"format": "json", "limit": EXPORT_PAGE_SIZE, "offset": offset}
        page = yield from _json(_Send("GET", f"/v1/batches/{batch_id}/export", params=params))
        for item in page["jobs"]:
            written += out.write((b"\n" if first else b",\n") + json.dumps(item).encode())
            first = False
        offset += len(page["jobs"])
        if not page["jobs"] or offset >= page["total"]:
            return written + out.write(b"\n]\n")


def _retry_failed(batch_id: str) -> Operation[int]:
    return int((yield from _json(_Send("POST", f"/v1/batches/{batch_id}/retry-failed")))["retried"])


def _cancel(job_id: str) -> Operation[Job]:
    return Job.from_json((yield from _json(_Send("POST", f"/v1/jobs/{job_id}/cancel"))))


def _cancel_batch(batch_id: str) -> Operation[int]:
    return int((yield from _json(_Send("POST", f"/v1/batches/{batch_id}/cancel")))["cancelled"])


def _deliveries(
    job_id: str | None, batch_id: str | None, limit: int, offset: int
) -> Operation[list[Delivery]]:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if job_id is not None:
        params["job_id"] = job_id
    if batch_id is not None:
        params["batch_id"] = batch_id
    data = yield from _json(_Send("GET", "/v1/webhooks/deliveries", params=params))
    return [Delivery.from_json(d) for d in data["deliveries"]]


def _webhook_secret() -> Operation[str]:
    return str((yield from _json(_Send("GET", "/v1/webhooks/secret")))["secret"])


def _stream_route(batch_id: str, export_format: str) -> tuple[str, dict[str, str]]:
    if export_format not in ("ndjson", "csv", "json"):
        raise ValueError(f"format must be ndjson, csv or json, not {export_format!r}")
    return f"/v1/batches/{batch_id}/export", {"format": export_format}


def _stream_timeout(read_timeout: float | None) -> dict[str, Any]:
    """The request option of a stream whose reads may wait ``read_timeout`` seconds (default: the client's)."""
    return {} if read_timeout is None else {"timeout": httpx.Timeout(30.0, read=read_timeout)}


def _parse_ndjson_line(line: str) -> Job | None:
    return Job.from_json(json.loads(line)) if line.strip() else None


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

    def _run(self, operation: Operation[T]) -> T:
        step = _advance(operation, None)
        while not isinstance(step, _Done):
            if isinstance(step, _Sleep):
                time.sleep(step.seconds)
                step = _advance(operation, None)
                continue
            try:
                response = self._http.request(step.method, step.path, **_request_kwargs(step))
            except httpx.TransportError as exc:
                raise _unreachable(self.base_url, exc) from exc
            step = _advance(operation, response)
        return step.value

    # submit

    def submit(self, url: str, **options: Unpack[SubmitOptions]) -> Job:
        """Submit one URL (options: `SubmitOptions`); the job comes back pending (or, for a replayed
        idempotency key, as it stands)."""
        return self._run(_submit(url, options))

    def submit_batch(self, urls: Iterable[str], **options: Unpack[BatchOptions]) -> BatchSubmission:
        """Submit many URLs as one batch (options: `BatchOptions`); refused URLs are listed in ``failures``,
        the rest are queued."""
        return self._run(_submit_batch(urls, options))

    # read

    def get(self, job_id: str, *, include_html: bool = False) -> Job:
        return self._run(_get(job_id, include_html))

    def html(self, job_id: str) -> str:
        """The fetched HTML of a completed job (`NotFound` if it has none)."""
        return self._run(_html(job_id))

    def get_batch(
        self, batch_id: str, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> Batch:
        """A batch's counts, with a page of its jobs (optionally only those in ``status``)."""
        return self._run(_get_batch(batch_id, status, limit, offset))

    def batches(self, limit: int = 25, offset: int = 0) -> BatchPage:
        """The tenant's batches, newest first."""
        return self._run(_batches(limit, offset))

    def wait(self, job_id: str, *, timeout: float) -> Job:
        """The job once it is final; `WaitTimeout` (with the job as it stands) after ``timeout`` seconds."""
        return self._run(_wait(job_id, timeout, self.poll_interval))

    def wait_batch(self, batch_id: str, *, timeout: float) -> Batch:
        """The batch once every job is final; `WaitTimeout` (with its counts as they stand) otherwise."""
        return self._run(_wait_batch(batch_id, timeout, self.poll_interval))

    def deliveries(
        self, *, job_id: str | None = None, batch_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Delivery]:
        """The tenant's webhook deliveries (of one job or batch if given), newest first."""
        return self._run(_deliveries(job_id, batch_id, limit, offset))

    def webhook_secret(self) -> str:
        """The secret that signs this tenant's webhooks (check them with `crawljobs.webhooks.verify`)."""
        return self._run(_webhook_secret())

    # results

    def iter_results(self, batch_id: str) -> Iterator[Job]:
        """Every job of the batch in submission order, with its HTML and ``index``, streamed (NDJSON export)."""
        with self._stream(*_stream_route(batch_id, "ndjson")) as response:
            for line in response.iter_lines():
                job = _parse_ndjson_line(line)
                if job is not None:
                    yield job

    def follow(self, batch_id: str, *, timeout: float | None = None) -> Iterator[Progress]:
        """The batch's progress as it changes, pushed by the server (``GET /v1/batches/{id}/events``): a
        `Progress` at once and on every change, the last one with ``done`` set. With ``timeout``, `WaitTimeout`
        (carrying no batch) when no event came for that long — the server sends one at least every 15 s."""
        parser = _EventParser()
        with self._stream(f"/v1/batches/{batch_id}/events", {}, read_timeout=timeout) as response:
            try:
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
                        if event.done:
                            return
            except httpx.ReadTimeout:
                raise WaitTimeout(f"batch {batch_id}: no progress for {timeout:g} s") from None

    def export(self, batch_id: str, path: str | Path | IO[bytes], *, format: ExportFormat = "ndjson") -> int:
        """Write the batch's export to ``path`` (a file name or a binary file); returns the bytes written.

        ``ndjson`` (with HTML) and ``csv`` (metadata) are the API's streams, written as they arrive; ``json``
        reads the API's pages of jobs and writes one JSON array of them.
        """
        route, params = _stream_route(batch_id, format)
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(path, "wb")) if isinstance(path, str | Path) else path
            if format == "json":
                return self._run(_export_json(batch_id, out))
            with self._stream(route, params) as response:
                return sum(out.write(chunk) for chunk in response.iter_bytes())

    @contextlib.contextmanager
    def _stream(
        self, route: str, params: dict[str, str], *, read_timeout: float | None = None
    ) -> Iterator[httpx.Response]:
        """A streamed GET, its errors typed as `_run`'s are."""
        try:
            with self._http.stream("GET", route, params=params, **_stream_timeout(read_timeout)) as response:
                if response.is_error:
                    response.read()
                    raise error_for(response)
                yield response
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc

    # change

    def retry_failed(self, batch_id: str) -> int:
        """Put the batch's failed jobs back to pending; returns how many."""
        return self._run(_retry_failed(batch_id))

    def cancel(self, job_id: str) -> Job:
        """Cancel a pending or processing job; returns the job as it now stands (a final job is unchanged)."""
        return self._run(_cancel(job_id))

    def cancel_batch(self, batch_id: str) -> int:
        """Cancel the batch's pending and processing jobs; returns how many were cancelled."""
        return self._run(_cancel_batch(batch_id))


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

    async def _run(self, operation: Operation[T]) -> T:
        step = _advance(operation, None)
        while not isinstance(step, _Done):
            if isinstance(step, _Sleep):
                await asyncio.sleep(step.seconds)
                step = _advance(operation, None)
                continue
            try:
                response = await self._http.request(step.method, step.path, **_request_kwargs(step))
            except httpx.TransportError as exc:
                raise _unreachable(self.base_url, exc) from exc
            step = _advance(operation, response)
        return step.value

    async def submit(self, url: str, **options: Unpack[SubmitOptions]) -> Job:
        return await self._run(_submit(url, options))

    async def submit_batch(self, urls: Iterable[str], **options: Unpack[BatchOptions]) -> BatchSubmission:
        return await self._run(_submit_batch(urls, options))

    async def get(self, job_id: str, *, include_html: bool = False) -> Job:
        return await self._run(_get(job_id, include_html))

    async def html(self, job_id: str) -> str:
        return await self._run(_html(job_id))

    async def get_batch(
        self, batch_id: str, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> Batch:
        return await self._run(_get_batch(batch_id, status, limit, offset))

    async def batches(self, limit: int = 25, offset: int = 0) -> BatchPage:
        return await self._run(_batches(limit, offset))

    async def wait(self, job_id: str, *, timeout: float) -> Job:  # noqa: ASYNC109 - the server waits
        return await self._run(_wait(job_id, timeout, self.poll_interval))

    async def wait_batch(self, batch_id: str, *, timeout: float) -> Batch:  # noqa: ASYNC109
        return await self._run(_wait_batch(batch_id, timeout, self.poll_interval))

    async def deliveries(
        self, *, job_id: str | None = None, batch_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Delivery]:
        return await self._run(_deliveries(job_id, batch_id, limit, offset))

    async def webhook_secret(self) -> str:
        return await self._run(_webhook_secret())

    async def iter_results(self, batch_id: str) -> AsyncIterator[Job]:
        """As `Client.iter_results`: every job of the batch with its HTML, streamed."""
        async with self._stream(*_stream_route(batch_id, "ndjson")) as response:
            async for line in response.aiter_lines():
                job = _parse_ndjson_line(line)
                if job is not None:
                    yield job

    async def follow(
        self,
        batch_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the stream's read timeout
    ) -> AsyncIterator[Progress]:
        """As `Client.follow`."""
        parser = _EventParser()
        async with self._stream(f"/v1/batches/{batch_id}/events", {}, read_timeout=timeout) as response:
            try:
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
                        if event.done:
                            return
            except httpx.ReadTimeout:
                raise WaitTimeout(f"batch {batch_id}: no progress for {timeout:g} s") from None

    async def export(
        self, batch_id: str, path: str | Path | IO[bytes], *, format: ExportFormat = "ndjson"
    ) -> int:
        """As `Client.export` (the file is written with blocking writes, chunk by chunk)."""
        route, params = _stream_route(batch_id, format)
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(path, "wb")) if isinstance(path, str | Path) else path  # noqa: ASYNC230
            if format == "json":
                return await self._run(_export_json(batch_id, out))
            async with self._stream(route, params) as response:
                return sum([out.write(chunk) async for chunk in response.aiter_bytes()])

    @contextlib.asynccontextmanager
    async def _stream(
        self, route: str, params: dict[str, str], *, read_timeout: float | None = None
    ) -> AsyncIterator[httpx.Response]:
        try:
            async with self._http.stream(
                "GET", route, params=params, **_stream_timeout(read_timeout)
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise error_for(response)
                yield response
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc

    async def retry_failed(self, batch_id: str) -> int:
        return await self._run(_retry_failed(batch_id))

    async def cancel(self, job_id: str) -> Job:
        return await self._run(_cancel(job_id))

    async def cancel_batch(self, batch_id: str) -> int:
        return await self._run(_cancel_batch(batch_id))

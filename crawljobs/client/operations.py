"""What both clients share: the operations, apart from any transport.

Each operation is a generator: it yields what it needs done (`Send` a request, `Sleep`), is sent the response
(a typed API error is thrown into it instead) and returns its result. `Client` and `AsyncClient` run the same
operations, one with blocking I/O and one with asyncio; only streaming reads are their own.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any, Generic, Literal, TypedDict, TypeVar, cast

import httpx

from crawljobs import __version__
from crawljobs.client.errors import ConnectionFailed, NotFound, WaitTimeout, error_for, route_missing
from crawljobs.client.models import Batch, BatchPage, BatchSubmission, Delivery, Job

DEFAULT_URL = "http://127.0.0.1:8000"
URL_VARIABLE = "CRAWLJOBS_URL"
API_KEY_VARIABLE = "CRAWLJOBS_API_KEY"
ExportFormat = Literal["ndjson", "csv", "json"]

# Seconds allowed on top of a wait's own timeout for the answer to arrive.
WAIT_GRACE_SECONDS = 10.0
# Jobs per request when reading a batch page by page (the API's largest page for a JSON export).
EXPORT_PAGE_SIZE = 500

T = TypeVar("T")
R = TypeVar("R")


class SubmitOptions(TypedDict, total=False):
    """The options of a submission, as keyword arguments of `submit` and `submit_batch`."""

    render: bool  # start with the headless browser
    premium: bool  # start at the premium proxy tier
    ultra_premium: bool  # start at the ultra-premium proxy tier
    obey_robots: bool  # obey the site's robots.txt
    max_retries: int | None  # retries after the first attempt (the server's default when None)
    callback_url: str | None  # receives signed webhooks (job.completed, job.failed, batch.completed)
    wait_for: str | None  # when rendered: wait until this CSS selector matches
    wait_ms: int | None  # when rendered: wait this many milliseconds after the page settled
    idempotency_key: str | None  # a replay with the same key answers the first response


class BatchOptions(SubmitOptions, total=False):
    batch_id: str | None  # your own id for the batch (409 if taken, unless the same idempotency key)


@dataclass(frozen=True)
class Send:
    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] | None = None
    timeout: float | None = None  # None: the client's own


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Send | Sleep
Operation = Generator[Step, Any, T]


def client_settings(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    url = base_url or os.environ.get(URL_VARIABLE) or DEFAULT_URL
    key = api_key if api_key is not None else os.environ.get(API_KEY_VARIABLE) or None
    return url.rstrip("/"), key


def client_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"crawljobs-client/{__version__}", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


@dataclass(frozen=True)
class Done(Generic[T]):
    value: T


def advance(operation: Operation[T], response: httpx.Response | None) -> Step | Done[T]:
    """Resume an operation with the response to its last request (None after a sleep, or to start it); an
    error response is thrown into it as its typed error. Its next step, or `Done` with its result."""
    try:
        if response is not None and response.is_error:
            return operation.throw(error_for(response))
        return operation.send(response)
    except StopIteration as done:
        return Done(cast(T, done.value))


def request_kwargs(step: Send) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"params": step.params, "json": step.json, "headers": step.headers}
    if step.timeout is not None:
        kwargs["timeout"] = step.timeout
    return kwargs


def unreachable(base_url: str, exc: httpx.TransportError) -> ConnectionFailed:
    return ConnectionFailed(0, "connection_failed", f"cannot reach {base_url}: {exc}")


def _call(step: Send) -> Generator[Step, Any, httpx.Response]:
    response: httpx.Response = yield step
    return response


def _json(step: Send) -> Generator[Step, Any, Any]:
    return (yield from _call(step)).json()


def _submission(options: Mapping[str, object]) -> tuple[dict[str, Any], dict[str, str] | None]:
    """The JSON body and headers of a submission: the options that are set, the key as a header."""
    body: dict[str, Any] = {name: value for name, value in options.items() if value is not None}
    key = body.pop("idempotency_key", None)
    return body, {"Idempotency-Key": key} if key else None


def submit(url: str, options: SubmitOptions) -> Operation[Job]:
    body, headers = _submission(options)
    return Job.from_json(
        (yield from _json(Send("POST", "/v1/jobs", json={**body, "url": url}, headers=headers)))
    )


def submit_batch(urls: Iterable[str], options: BatchOptions) -> Operation[BatchSubmission]:
    body, headers = _submission(options)
    step = Send("POST", "/v1/batches", json={**body, "urls": list(urls)}, headers=headers)
    return BatchSubmission.from_json((yield from _json(step)))


def get(job_id: str, include_html: bool) -> Operation[Job]:
    params = {"include_html": "true"} if include_html else None
    return Job.from_json((yield from _json(Send("GET", f"/v1/jobs/{job_id}", params=params))))


def html(job_id: str) -> Operation[str]:
    return (yield from _call(Send("GET", f"/v1/jobs/{job_id}/html"))).text


def get_batch(batch_id: str, status: str | None, limit: int, offset: int) -> Operation[Batch]:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if status:
        params["status"] = status
    return Batch.from_json((yield from _json(Send("GET", f"/v1/batches/{batch_id}", params=params))))


def batches(limit: int, offset: int) -> Operation[BatchPage]:
    step = Send("GET", "/v1/batches", params={"limit": limit, "offset": offset})
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
        step = Send("GET", wait_path, params={"timeout": remaining}, timeout=remaining + WAIT_GRACE_SECONDS)
        try:
            found = parse((yield from _json(step)))  # `timed_out` aside: final or not is what counts
        except NotFound as exc:
            if not route_missing(exc):
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
        yield Sleep(min(poll_interval, remaining))


def wait(job_id: str, timeout: float, poll_interval: float) -> Operation[Job]:
    return (
        yield from _until_final(
            f"/v1/jobs/{job_id}/wait",
            Job.from_json,
            lambda: get(job_id, False),
            lambda job: job.is_final,
            lambda job, after: WaitTimeout(f"job {job_id} is still {job.status}{after}", job=job),
            timeout,
            poll_interval,
        )
    )


def wait_batch(batch_id: str, timeout: float, poll_interval: float) -> Operation[Batch]:
    return (
        yield from _until_final(
            f"/v1/batches/{batch_id}/wait",
            Batch.from_json,
            lambda: get_batch(batch_id, None, 1, 0),
            lambda batch: batch.is_done,
            lambda batch, after: WaitTimeout(
                f"batch {batch_id} is {batch.progress}% done{after}", batch=batch
            ),
            timeout,
            poll_interval,
        )
    )


def export_json(batch_id: str, out: IO[bytes]) -> Operation[int]:
    """The batch's jobs, read page by page, written to ``out`` as one JSON array; the bytes written."""
    written, offset, first = out.write(b"["), 0, True
    while True:
        params = {"format": "json", "limit": EXPORT_PAGE_SIZE, "offset": offset}
        page = yield from _json(Send("GET", f"/v1/batches/{batch_id}/export", params=params))
        for item in page["jobs"]:
            written += out.write((b"\n" if first else b",\n") + json.dumps(item).encode())
            first = False
        offset += len(page["jobs"])
        if not page["jobs"] or offset >= page["total"]:
            return written + out.write(b"\n]\n")


def retry_failed(batch_id: str) -> Operation[int]:
    return int((yield from _json(Send("POST", f"/v1/batches/{batch_id}/retry-failed")))["retried"])


def cancel(job_id: str) -> Operation[Job]:
    return Job.from_json((yield from _json(Send("POST", f"/v1/jobs/{job_id}/cancel"))))


def cancel_batch(batch_id: str) -> Operation[int]:
    return int((yield from _json(Send("POST", f"/v1/batches/{batch_id}/cancel")))["cancelled"])


def deliveries(
    job_id: str | None, batch_id: str | None, limit: int, offset: int
) -> Operation[list[Delivery]]:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if job_id is not None:
        params["job_id"] = job_id
    if batch_id is not None:
        params["batch_id"] = batch_id
    data = yield from _json(Send("GET", "/v1/webhooks/deliveries", params=params))
    return [Delivery.from_json(d) for d in data["deliveries"]]


def webhook_secret() -> Operation[str]:
    return str((yield from _json(Send("GET", "/v1/webhooks/secret")))["secret"])


def stream_route(batch_id: str, export_format: str) -> tuple[str, dict[str, str]]:
    if export_format not in ("ndjson", "csv", "json"):
        raise ValueError(f"format must be ndjson, csv or json, not {export_format!r}")
    return f"/v1/batches/{batch_id}/export", {"format": export_format}


def stream_timeout(read_timeout: float | None) -> dict[str, Any]:
    """The request option of a stream whose reads may wait ``read_timeout`` seconds (default: the client's)."""
    return {} if read_timeout is None else {"timeout": httpx.Timeout(30.0, read=read_timeout)}


def parse_ndjson_line(line: str) -> Job | None:
    return Job.from_json(json.loads(line)) if line.strip() else None

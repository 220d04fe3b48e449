"""`Client`: the crawljobs API with blocking I/O."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Self, Unpack

import httpx

from crawljobs.client import operations as ops
from crawljobs.client.errors import WaitTimeout, error_for, stream_error
from crawljobs.client.models import Batch, BatchPage, BatchSubmission, Delivery, EventParser, Job, Progress
from crawljobs.client.operations import BatchOptions, ExportFormat, Operation, SubmitOptions, T


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
        self.base_url, self.api_key = ops.client_settings(base_url, api_key)
        self.poll_interval = poll_interval
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=ops.client_headers(self.api_key),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, operation: Operation[T]) -> T:
        step = ops.advance(operation, None)
        while not isinstance(step, ops.Done):
            if isinstance(step, ops.Sleep):
                time.sleep(step.seconds)
                step = ops.advance(operation, None)
                continue
            try:
                response = self._http.request(step.method, step.path, **ops.request_kwargs(step))
            except httpx.TransportError as exc:
                raise ops.unreachable(self.base_url, exc) from exc
            step = ops.advance(operation, response)
        return step.value

    # submit

    def submit(self, url: str, **options: Unpack[SubmitOptions]) -> Job:
        """Submit one URL (options: `SubmitOptions`); the job comes back pending (or, for a replayed
        idempotency key, as it stands)."""
        return self._run(ops.submit(url, options))

    def submit_batch(self, urls: Iterable[str], **options: Unpack[BatchOptions]) -> BatchSubmission:
        """Submit many URLs as one batch (options: `BatchOptions`); refused URLs are listed in ``failures``,
        the rest are queued."""
        return self._run(ops.submit_batch(urls, options))

    # read

    def get(self, job_id: str, *, include_html: bool = False) -> Job:
        return self._run(ops.get(job_id, include_html))

    def html(self, job_id: str) -> str:
        """The fetched HTML of a completed job (`NotFound` if it has none)."""
        return self._run(ops.html(job_id))

    def get_batch(
        self, batch_id: str, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> Batch:
        """A batch's counts, with a page of its jobs (optionally only those in ``status``)."""
        return self._run(ops.get_batch(batch_id, status, limit, offset))

    def batches(self, limit: int = 25, offset: int = 0) -> BatchPage:
        """The tenant's batches, newest first."""
        return self._run(ops.batches(limit, offset))

    def wait(self, job_id: str, *, timeout: float) -> Job:
        """The job once it is final; `WaitTimeout` (with the job as it stands) after ``timeout`` seconds."""
        return self._run(ops.wait(job_id, timeout, self.poll_interval))

    def wait_batch(self, batch_id: str, *, timeout: float) -> Batch:
        """The batch once every job is final; `WaitTimeout` (with its counts as they stand) otherwise."""
        return self._run(ops.wait_batch(batch_id, timeout, self.poll_interval))

    def deliveries(
        self, *, job_id: str | None = None, batch_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Delivery]:
        """The tenant's webhook deliveries (of one job or batch if given), newest first."""
        return self._run(ops.deliveries(job_id, batch_id, limit, offset))

    def webhook_secret(self) -> str:
        """The secret that signs this tenant's webhooks (check them with `crawljobs.webhooks.verify`)."""
        return self._run(ops.webhook_secret())

    # results

    def iter_results(self, batch_id: str) -> Iterator[Job]:
        """Every job of the batch in submission order, with its HTML and ``index``, streamed (NDJSON export)."""
        with self._stream(*ops.stream_route(batch_id, "ndjson")) as response:
            for line in response.iter_lines():
                job = ops.parse_ndjson_line(line)
                if job is not None:
                    yield job

    def follow(self, batch_id: str, *, timeout: float | None = None) -> Iterator[Progress]:
        """The batch's progress as it changes, pushed by the server (``GET /v1/batches/{id}/events``): a
        `Progress` at once and on every change, the last one with ``done`` set. With ``timeout``, `WaitTimeout`
        (carrying no batch) when no event came for that long — the server sends one at least every 15 s."""
        parser = EventParser()
        with self._stream(f"/v1/batches/{batch_id}/events", {}, read_timeout=timeout) as response:
            try:
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if parser.error is not None:  # the server ended the stream (a revoked key)
                        raise stream_error(parser.error)
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
        route, params = ops.stream_route(batch_id, format)
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(path, "wb")) if isinstance(path, str | Path) else path
            if format == "json":
                return self._run(ops.export_json(batch_id, out))
            with self._stream(route, params) as response:
                return sum(out.write(chunk) for chunk in response.iter_bytes())

    @contextlib.contextmanager
    def _stream(
        self, route: str, params: dict[str, str], *, read_timeout: float | None = None
    ) -> Iterator[httpx.Response]:
        """A streamed GET, its errors typed as `_run`'s are."""
        try:
            with self._http.stream(
                "GET", route, params=params, **ops.stream_timeout(read_timeout)
            ) as response:
                if response.is_error:
                    response.read()
                    raise error_for(response)
                yield response
        except httpx.TransportError as exc:
            raise ops.unreachable(self.base_url, exc) from exc

    # change

    def retry_failed(self, batch_id: str) -> int:
        """Put the batch's failed jobs back to pending; returns how many."""
        return self._run(ops.retry_failed(batch_id))

    def cancel(self, job_id: str) -> Job:
        """Cancel a pending or processing job; returns the job as it now stands (a final job is unchanged)."""
        return self._run(ops.cancel(job_id))

    def cancel_batch(self, batch_id: str) -> int:
        """Cancel the batch's pending and processing jobs; returns how many were cancelled."""
        return self._run(ops.cancel_batch(batch_id))

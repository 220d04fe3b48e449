"""`AsyncClient`: the crawljobs API for asyncio, the same operations as `Client`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import IO, Self, Unpack

import httpx

from crawljobs.client import operations as ops
from crawljobs.client.errors import WaitTimeout, error_for, stream_error
from crawljobs.client.models import Batch, BatchPage, BatchSubmission, Delivery, EventParser, Job, Progress
from crawljobs.client.operations import BatchOptions, ExportFormat, Operation, SubmitOptions, T


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
        self.base_url, self.api_key = ops.client_settings(base_url, api_key)
        self.poll_interval = poll_interval
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=ops.client_headers(self.api_key),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, operation: Operation[T]) -> T:
        step = ops.advance(operation, None)
        while not isinstance(step, ops.Done):
            if isinstance(step, ops.Sleep):
                await asyncio.sleep(step.seconds)
                step = ops.advance(operation, None)
                continue
            try:
                response = await self._http.request(step.method, step.path, **ops.request_kwargs(step))
            except httpx.TransportError as exc:
                raise ops.unreachable(self.base_url, exc) from exc
            step = ops.advance(operation, response)
        return step.value

    async def submit(self, url: str, **options: Unpack[SubmitOptions]) -> Job:
        return await self._run(ops.submit(url, options))

    async def submit_batch(self, urls: Iterable[str], **options: Unpack[BatchOptions]) -> BatchSubmission:
        return await self._run(ops.submit_batch(urls, options))

    async def get(self, job_id: str, *, include_html: bool = False) -> Job:
        return await self._run(ops.get(job_id, include_html))

    async def html(self, job_id: str) -> str:
        return await self._run(ops.html(job_id))

    async def get_batch(
        self, batch_id: str, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> Batch:
        return await self._run(ops.get_batch(batch_id, status, limit, offset))

    async def batches(self, limit: int = 25, offset: int = 0) -> BatchPage:
        return await self._run(ops.batches(limit, offset))

    async def wait(self, job_id: str, *, timeout: float) -> Job:  # noqa: ASYNC109 - the server waits
        return await self._run(ops.wait(job_id, timeout, self.poll_interval))

    async def wait_batch(self, batch_id: str, *, timeout: float) -> Batch:  # noqa: ASYNC109
        return await self._run(ops.wait_batch(batch_id, timeout, self.poll_interval))

    async def deliveries(
        self, *, job_id: str | None = None, batch_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Delivery]:
        return await self._run(ops.deliveries(job_id, batch_id, limit, offset))

    async def webhook_secret(self) -> str:
        return await self._run(ops.webhook_secret())

    async def iter_results(self, batch_id: str) -> AsyncIterator[Job]:
        """As `Client.iter_results`: every job of the batch with its HTML, streamed."""
        async with self._stream(*ops.stream_route(batch_id, "ndjson")) as response:
            async for line in response.aiter_lines():
                job = ops.parse_ndjson_line(line)
                if job is not None:
                    yield job

    async def follow(
        self,
        batch_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the stream's read timeout
    ) -> AsyncIterator[Progress]:
        """As `Client.follow`."""
        parser = EventParser()
        async with self._stream(f"/v1/batches/{batch_id}/events", {}, read_timeout=timeout) as response:
            try:
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if parser.error is not None:  # the server ended the stream (a revoked key)
                        raise stream_error(parser.error)
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
        route, params = ops.stream_route(batch_id, format)
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(path, "wb")) if isinstance(path, str | Path) else path  # noqa: ASYNC230
            if format == "json":
                return await self._run(ops.export_json(batch_id, out))
            async with self._stream(route, params) as response:
                return sum([out.write(chunk) async for chunk in response.aiter_bytes()])

    @contextlib.asynccontextmanager
    async def _stream(
        self, route: str, params: dict[str, str], *, read_timeout: float | None = None
    ) -> AsyncIterator[httpx.Response]:
        try:
            async with self._http.stream(
                "GET", route, params=params, **ops.stream_timeout(read_timeout)
            ) as response:
                if response.is_error:
                    await response.aread()
                    raise error_for(response)
                yield response
        except httpx.TransportError as exc:
            raise ops.unreachable(self.base_url, exc) from exc

    async def retry_failed(self, batch_id: str) -> int:
        return await self._run(ops.retry_failed(batch_id))

    async def cancel(self, job_id: str) -> Job:
        return await self._run(ops.cancel(job_id))

    async def cancel_batch(self, batch_id: str) -> int:
        return await self._run(ops.cancel_batch(batch_id))

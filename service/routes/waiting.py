"""Waiting for results without polling: a job, a batch, a batch's live counts, and the legacy wait.

Every wait is woken by the job's completion (PostgreSQL LISTEN/NOTIFY through ``crawljobs.hub``), not by a
poll, and is cut to ``CRAWLJOBS_MAX_WAIT_SECONDS``. A wait that runs out answers 200 with the job or batch as
it stands and says so (``timed_out`` / ``timedOut``): a timeout is an answer, not an error.

A wait or a stream outlives the moment its API key was checked, so it checks the key again every
``CRAWLJOBS_KEY_RECHECK_SECONDS``: once the key is revoked, a wait answers 401 and a stream sends
``event: error`` (the error body, code ``unauthorized``) and ends. The re-checks of one key are shared by
every wait and stream of that API process that holds it (``KeyRechecks``): one query per key and interval,
however many of them it has.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from crawljobs.exceptions import Unauthorized
from crawljobs.hub import CompletionHub
from crawljobs.manager import JobManager
from crawljobs.reader import JobReader
from crawljobs.waiting import wait_for_batch, wait_for_job
from service import streams
from service.deps import ManagerDep, TenantDep, apikey_scheme, bearer_scheme
from service.routes.common import ERRORS, NOT_FOUND, legacy_body, parse_job_id, watched
from service.schemas import (
    BATCH_ID_PATTERN,
    BatchWaited,
    JobWaited,
    LegacyJob,
    LegacyWaited,
    LegacyWaitForJob,
)
from service.schemas.v1 import batch_fields, job_fields

router = APIRouter(tags=["waiting"])

T = TypeVar("T")


def get_hub(request: Request) -> CompletionHub:
    hub: CompletionHub = request.app.state.hub
    return hub


def get_job_reader(request: Request) -> JobReader:
    reader: JobReader = request.app.state.job_reader
    return reader


HubDep = Annotated[CompletionHub, Depends(get_hub)]
JobReaderDep = Annotated[JobReader, Depends(get_job_reader)]


class KeyRechecks:
    """The tenant of a request's keys, asked of the database at most once per ``every`` seconds per set of
    keys, and answered from memory to every other wait or stream that asks meanwhile."""

    def __init__(self, manager: JobManager, every: float) -> None:
        self.manager = manager
        self.every = every
        self._known: dict[tuple[str, ...], tuple[str | None, float]] = {}
        self._lock = asyncio.Lock()

    async def tenant_of(self, keys: tuple[str, ...]) -> str | None:
        async with self._lock:
            now = time.monotonic()
            known = self._known.get(keys)
            if known is not None and now - known[1] < self.every:
                return known[0]
            # Forget what is too old to be used again, so keys that stopped asking do not pile up.
            self._known = {k: v for k, v in self._known.items() if now - v[1] < self.every}
            tenant = await self.manager.tenant_of_key(keys)
            self._known[keys] = (tenant, time.monotonic())
            return tenant


def get_key_rechecks(request: Request, manager: ManagerDep) -> KeyRechecks:
    state = request.app.state
    rechecks: KeyRechecks | None = getattr(state, "key_rechecks", None)
    if rechecks is None:
        rechecks = state.key_rechecks = KeyRechecks(manager, state.settings.key_recheck_seconds)
    return rechecks


@dataclass(frozen=True)
class KeyCheck:
    """The keys a request came with and the tenant they were found to belong to, to check again later."""

    rechecks: KeyRechecks
    keys: tuple[str, ...]
    tenant: str

    @property
    def every(self) -> float:
        return self.rechecks.every

    async def valid(self) -> bool:
        """The keys still belong to the tenant (none was revoked since)."""
        return await self.rechecks.tenant_of(self.keys) == self.tenant

    async def ensure_valid(self) -> None:
        if not await self.valid():
            raise Unauthorized("the API key was revoked while the request waited")

    async def guard(self, wait: Awaitable[T]) -> T:
        """``wait``, cut short by a 401 once the key is revoked."""
        return await watched(wait, every=self.every, check=self.ensure_valid)


def get_key_check(
    tenant: TenantDep,
    rechecks: Annotated[KeyRechecks, Depends(get_key_rechecks)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    apikey: Annotated[str | None, Depends(apikey_scheme)],
) -> KeyCheck:
    # The keys in the order get_tenant tried them (FastAPI resolves each scheme once per request).
    keys = tuple(k for k in (bearer.credentials if bearer else None, apikey) if k)
    return KeyCheck(rechecks, keys, tenant)


KeyCheckDep = Annotated[KeyCheck, Depends(get_key_check)]

BatchIdPath = Annotated[str, Path(pattern=BATCH_ID_PATTERN)]
Timeout = Annotated[
    float,
    Query(
        alias="timeout",
        ge=0,
        description="Seconds to wait at most (cut to CRAWLJOBS_MAX_WAIT_SECONDS); 0 answers at once.",
    ),
]
DEFAULT_TIMEOUT_SECONDS = 30.0


def _cap(manager: ManagerDep, seconds: float) -> float:
    return min(seconds, manager.settings.max_wait_seconds)


@router.get(
    "/v1/jobs/{job_id}/wait",
    response_model=JobWaited,
    response_model_exclude_unset=True,
    responses={**ERRORS, **NOT_FOUND},
)
async def wait_job(
    job_id: str,
    manager: ManagerDep,
    key: KeyCheckDep,
    hub: HubDep,
    reader: JobReaderDep,
    wait_seconds: Timeout = DEFAULT_TIMEOUT_SECONDS,
) -> JobWaited:
    """The job once it is final (completed, error, cancelled), or as it stands when `timeout` runs out.

    `timed_out` says which; `waited_ms` is how long the request waited. A job already final answers at once.
    A key revoked while the request waits ends it with a 401.
    """
    waited = await key.guard(
        wait_for_job(
            hub,
            reader,
            tenant=key.tenant,
            job_id=parse_job_id(job_id),
            max_seconds=_cap(manager, wait_seconds),
        )
    )
    fields = job_fields(waited.job, with_attempts=True, with_html=False)
    return JobWaited(**fields, timed_out=waited.timed_out, waited_ms=waited.waited_ms)


@router.get("/v1/batches/{batch_id}/wait", response_model=BatchWaited, responses={**ERRORS, **NOT_FOUND})
async def wait_batch(
    batch_id: BatchIdPath,
    manager: ManagerDep,
    key: KeyCheckDep,
    hub: HubDep,
    wait_seconds: Timeout = DEFAULT_TIMEOUT_SECONDS,
) -> BatchWaited:
    """The batch's counts once every job is final, or as they stand when `timeout` runs out (`timed_out`).

    A key revoked while the request waits ends it with a 401.
    """
    waited = await key.guard(
        wait_for_batch(
            hub, manager, tenant=key.tenant, batch_id=batch_id, max_seconds=_cap(manager, wait_seconds)
        )
    )
    return BatchWaited(**batch_fields(waited.batch), timed_out=waited.timed_out, waited_ms=waited.waited_ms)


@router.get(
    "/v1/batches/{batch_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **ERRORS, **NOT_FOUND},
)
async def batch_event_stream(
    batch_id: BatchIdPath, manager: ManagerDep, key: KeyCheckDep, hub: HubDep
) -> StreamingResponse:
    """Server-sent events of a batch's progress.

    `event: counts` with the counts and progress as JSON at once and whenever they change (at most about ten
    a second), `event: done` with the final counts when every job is final, then the stream ends. A
    `: keep-alive` comment is sent after 15 quiet seconds. If the API key is revoked meanwhile, `event: error`
    with an error body (`code`: `unauthorized`) is the last event.
    """
    await manager.get_batch(tenant=key.tenant, batch_id=batch_id)  # 404 before the stream starts
    return streams.batch_stream(
        hub, manager, tenant=key.tenant, batch_id=batch_id, key_valid=key.valid, recheck_seconds=key.every
    )


WAIT_BODY, WAIT_DOCUMENT = legacy_body(LegacyWaitForJob)


@router.post(
    "/functions/v1/wait-for-crawl-job",
    response_model=LegacyWaited,
    response_model_exclude_unset=True,
    responses={**ERRORS, **NOT_FOUND},
    tags=["legacy"],
    openapi_extra=WAIT_DOCUMENT,
)
async def wait_for_crawl_job(
    manager: ManagerDep,
    key: KeyCheckDep,
    hub: HubDep,
    reader: JobReaderDep,
    body: Annotated[LegacyWaitForJob, WAIT_BODY],
) -> LegacyWaited:
    """Wait until a job is final, woken by its completion (`pollingIntervalMs` is accepted and ignored). The
    fields may come in the query string instead of the body, as the old function read them.

    `maxWaitTimeMs` is cut to CRAWLJOBS_MAX_WAIT_SECONDS. On a timeout the answer is still `success: true`
    with the job as it stands, plus `timedOut: true` and a `message` naming its status. A key revoked while
    the request waits ends it with a 401.
    """
    limit_ms = min(body.maxWaitTimeMs, manager.settings.max_wait_seconds * 1000)
    waited = await key.guard(
        wait_for_job(
            hub,
            reader,
            tenant=key.tenant,
            job_id=parse_job_id(body.jobId),
            max_seconds=limit_ms / 1000,
            with_attempts=False,
        )
    )
    job = LegacyJob.from_job(waited.job)
    if not waited.timed_out:  # `timedOut` and `message` unset: left out of the answer
        return LegacyWaited(success=True, job=job, waitTime=waited.waited_ms)
    message = f"Timed out after {round(limit_ms)} ms; the job is still {waited.job.status}"
    return LegacyWaited(success=True, job=job, waitTime=waited.waited_ms, timedOut=True, message=message)

"""Submission: a job or a batch checked, committed once (idempotently), then dispatched.

URLs are checked under the deployment's network rules and limits; a submission that repeats an Idempotency-Key
with the same request answers the original one, with another request it is refused (IdempotencyConflict).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from crawljobs import store
from crawljobs.config import Settings
from crawljobs.dispatch import PRIORITY_SINGLE, Dispatcher
from crawljobs.exceptions import (
    BatchAlreadyExists,
    BatchTooLarge,
    IdempotencyConflict,
    InvalidOption,
    NoValidUrls,
    UrlRejected,
)
from crawljobs.ids import new_job_id, new_job_ids
from crawljobs.logs import job_fields
from crawljobs.models import BatchSubmission, Job, JobSubmission, Rejection, SubmitOptions
from crawljobs.urls import NetworkPolicy, Resolver, UrlCheck, check_urls

logger = logging.getLogger(__name__)

DEFAULTS = SubmitOptions()


def new_batch_id() -> str:
    """A generated batch id in the legacy style (``batch-`` and 16 hex digits)."""
    return f"batch-{secrets.token_hex(8)}"


def request_hash(payload: dict[str, Any]) -> str:
    """A stable digest of a submission, to tell an idempotent replay from a different request.

    The digest of ``json.dumps(payload, sort_keys=True, default=str)``, fed piece by piece: the whole text of a
    50,000-URL batch would be another copy of it (100 MiB and more for long IDN URLs).
    """
    digest = hashlib.sha256()
    for piece in _HASHED_JSON.iterencode(payload):
        digest.update(piece.encode())
    return digest.hexdigest()


_HASHED_JSON = json.JSONEncoder(sort_keys=True, default=str)


def job_columns(options: SubmitOptions, max_retries: int) -> dict[str, Any]:
    """The columns a submission's options set on each of its jobs (the callback URL aside: it is checked)."""
    return {
        "render": options.render,
        "premium": options.premium,
        "ultra_premium": options.ultra_premium,
        "obey_robots": options.obey_robots,
        "max_retries": max_retries,
    }


def wait_columns(options: SubmitOptions) -> dict[str, Any]:
    """What a render of the submission's jobs waits for (crawlproject/settling.py); both None by default."""
    return {"wait_for": options.wait_for, "wait_ms": options.wait_ms}


# The longest CSS selector a job may wait for.
MAX_SELECTOR_CHARS = 1000


def check_waits(options: SubmitOptions, settings: Settings) -> None:
    """Refuse render waits that cannot be honoured (InvalidOption, a 422 naming the field), before anything is
    written: a wait longer than CRAWLJOBS_RENDER_MAX_WAIT_MS would be cut short in silence."""
    if options.wait_ms is not None:
        if isinstance(options.wait_ms, bool) or not isinstance(options.wait_ms, int) or options.wait_ms < 0:
            raise InvalidOption("wait_ms: must be a whole number of milliseconds >= 0", field="wait_ms")
        if options.wait_ms > settings.render_max_wait_ms:
            raise InvalidOption(
                f"wait_ms: at most {settings.render_max_wait_ms} ms (CRAWLJOBS_RENDER_MAX_WAIT_MS), "
                f"not {options.wait_ms}",
                field="wait_ms",
            )
    if options.wait_for is not None:
        selector = options.wait_for
        if not isinstance(selector, str) or not selector.strip():
            raise InvalidOption("wait_for: must be a non-empty CSS selector", field="wait_for")
        if len(selector) > MAX_SELECTOR_CHARS:
            raise InvalidOption(
                f"wait_for: a selector of at most {MAX_SELECTOR_CHARS} characters, not {len(selector)}",
                field="wait_for",
            )
        if any(ord(char) < 32 or ord(char) == 127 for char in selector):
            raise InvalidOption("wait_for: control characters are not allowed", field="wait_for")
        if settings.render_max_wait_ms == 0:
            raise InvalidOption(
                "wait_for: this deployment allows no render waits (CRAWLJOBS_RENDER_MAX_WAIT_MS=0)",
                field="wait_for",
            )


def stored_response(submission: BatchSubmission) -> dict[str, Any]:
    """What is kept to answer an idempotent replay (the job ids are read back from the rows).

    A replay reads only ``total`` and ``failures``, so rows stored before ``batch_id`` was named so still replay.
    """
    return {
        "batch_id": submission.batch_id,
        "total": submission.total,
        "failures": [dataclasses.asdict(f) for f in submission.failures],
    }


class Submitter:
    def __init__(
        self,
        *,
        pool: store.Pool,
        settings: Settings,
        policy: NetworkPolicy,
        resolver: Resolver,
        dispatcher: Dispatcher,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.policy = policy
        self.resolver = resolver
        self.dispatcher = dispatcher

    async def check_urls(self, urls: Sequence[object]) -> UrlCheck:
        """Normalise and check submitted URLs under this deployment's network rules and limits."""
        return await check_urls(
            urls,
            self.policy,
            max_length=self.settings.max_url_length,
            resolver=self.resolver,
            dns_timeout=self.settings.dns_timeout_seconds,
        )

    async def check_callback_url(self, callback_url: object | None) -> str | None:
        """The normalised callback URL (same network rules as crawl URLs), or UrlRejected naming it."""
        if callback_url is None:
            return None
        check = await self.check_urls([callback_url])
        if check.rejected:
            reason = check.rejected[0][2]
            raise UrlRejected(f"callback_url: {reason}", field="callback_url")
        return check.accepted[0][1]

    def max_retries(self, options: SubmitOptions) -> int:
        return self.settings.max_retries if options.max_retries is None else options.max_retries

    async def submit_job(
        self,
        *,
        tenant: str,
        url: object,
        options: SubmitOptions = DEFAULTS,
        idempotency_key: str | None = None,
    ) -> JobSubmission:
        """Check one URL, commit its job, dispatch it on the priority list."""
        check_waits(options, self.settings)
        check = await self.check_urls([url])
        if check.rejected:
            raise UrlRejected(check.rejected[0][2], field="url")
        checked = dataclasses.replace(
            options,
            max_retries=self.max_retries(options),
            callback_url=await self.check_callback_url(options.callback_url),
        )
        if idempotency_key is not None:
            replay = await self._replay_job(
                tenant=tenant, idempotency_key=idempotency_key, url=check.accepted[0][1], options=checked
            )
            if replay is not None:
                return replay
        try:
            async with self.pool.connection() as conn:
                row = await store.insert_job(
                    conn,
                    job_id=new_job_id(),
                    tenant=tenant,
                    url=check.accepted[0][1],
                    **job_columns(checked, self.max_retries(checked)),
                    priority=PRIORITY_SINGLE,
                    idempotency_key=idempotency_key,
                    callback_url=checked.callback_url,
                    **wait_columns(checked),
                )
        except IdempotencyConflict:
            # Two requests with one key raced: the winner's job is the answer.
            assert idempotency_key is not None
            replay = await self._replay_job(
                tenant=tenant, idempotency_key=idempotency_key, url=check.accepted[0][1], options=checked
            )
            if replay is None:
                raise
            return replay
        job = Job.from_row(row)
        dispatched = await self.dispatcher.dispatch([job.id], priority=True)
        if not dispatched:
            job = dataclasses.replace(job, dispatched_at=None)
        logger.info("job %s accepted", job.id, extra={"action": "submit_job", **job_fields(job.id)})
        return JobSubmission(job=job, dispatched=dispatched)

    async def _replay_job(
        self, *, tenant: str, idempotency_key: str, url: str, options: SubmitOptions
    ) -> JobSubmission | None:
        async with self.pool.connection() as conn:
            row = await store.find_job_by_idempotency_key(
                conn, tenant=tenant, idempotency_key=idempotency_key
            )
        if row is None:
            return None
        wanted = {"url": url, **dataclasses.asdict(options)}
        if any(row[name] != value for name, value in wanted.items()):
            raise IdempotencyConflict(
                "this Idempotency-Key was already used for a different job", job_id=str(row["id"])
            )
        return JobSubmission(
            job=Job.from_row(row), dispatched=row["dispatched_at"] is not None, replayed=True
        )

    async def submit_batch(
        self,
        *,
        tenant: str,
        urls: Sequence[object],
        options: SubmitOptions = DEFAULTS,
        batch_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> BatchSubmission:
        """Check a batch's URLs, commit the good ones in one transaction (COPY), then dispatch them.

        Bad URLs are reported by index; a batch with no good URL raises NoValidUrls and writes nothing.
        """
        check_waits(options, self.settings)
        columns = job_columns(options, self.max_retries(options))
        hashed: dict[str, Any] = {"urls": list(urls), **columns, "batch_id": batch_id}
        # Only when given, as the callback URL below: the hashes of earlier batches stay as they were.
        hashed.update({name: value for name, value in wait_columns(options).items() if value is not None})
        if (
            options.callback_url is not None
        ):  # only when given: the hashes of earlier batches stay as they were
            hashed["callback_url"] = options.callback_url
        fingerprint = await asyncio.to_thread(request_hash, hashed)  # CPU: off the event loop
        if idempotency_key is not None:
            replay = await self._replay_batch(
                tenant=tenant, idempotency_key=idempotency_key, fingerprint=fingerprint
            )
            if replay is not None:
                return replay
        if len(urls) > self.settings.max_batch_size:
            raise BatchTooLarge(
                f"a batch may hold at most {self.settings.max_batch_size} URLs; this one has {len(urls)}",
                limit=self.settings.max_batch_size,
            )
        if batch_id is not None:
            async with self.pool.connection() as conn:
                if await store.find_batch(conn, tenant=tenant, batch_id=batch_id) is not None:
                    raise BatchAlreadyExists(f"batch {batch_id!r} already exists", batch_id=batch_id)
        callback = await self.check_callback_url(options.callback_url)
        check = await self.check_urls(urls)
        failures = tuple(Rejection(index, raw, reason) for index, raw, reason in check.rejected)
        if not check.accepted:
            raise NoValidUrls(
                "none of the batch's URLs was accepted",
                failures=[dataclasses.asdict(f) for f in failures],
            )
        batch_id = batch_id or new_batch_id()
        ids = new_job_ids(len(check.accepted))
        id_texts = [str(job_id) for job_id in ids]
        job_ids: list[uuid.UUID | None] = [None] * len(urls)
        for job_id, (index, _url) in zip(ids, check.accepted, strict=True):
            job_ids[index] = job_id
        submission = BatchSubmission(
            batch_id=batch_id, total=len(urls), job_ids=tuple(job_ids), failures=failures, dispatched=True
        )
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await store.insert_batch(
                    conn,
                    tenant=tenant,
                    batch_id=batch_id,
                    total=len(check.accepted),
                    **columns,
                    idempotency_key=idempotency_key,
                    request_hash=fingerprint,
                    response=stored_response(submission),
                    callback_url=callback,
                )
                await store.copy_jobs(
                    conn,
                    tenant=tenant,
                    batch_id=batch_id,
                    jobs=[
                        (text, index, url)
                        for text, (index, url) in zip(id_texts, check.accepted, strict=True)
                    ],
                    **columns,
                    dispatched_at=datetime.now(UTC),
                    **wait_columns(options),
                )
        except BatchAlreadyExists:
            if idempotency_key is not None:
                replay = await self._replay_batch(
                    tenant=tenant, idempotency_key=idempotency_key, fingerprint=fingerprint
                )
                if replay is not None:
                    return replay
            raise
        if not await self.dispatcher.dispatch_batch(tenant, batch_id, id_texts):
            submission = dataclasses.replace(submission, dispatched=False)
        logger.info(
            "batch %s accepted: %d jobs, %d refused",
            batch_id,
            len(ids),
            len(failures),
            extra={"action": "submit_batch", "batch_id": batch_id},
        )
        return submission

    async def _replay_batch(
        self, *, tenant: str, idempotency_key: str, fingerprint: str
    ) -> BatchSubmission | None:
        async with self.pool.connection() as conn:
            row = await store.find_batch_by_idempotency_key(
                conn, tenant=tenant, idempotency_key=idempotency_key
            )
            if row is None:
                return None
            if row["request_hash"] != fingerprint:
                raise IdempotencyConflict(
                    "this Idempotency-Key was already used for a different batch", batch_id=row["batch_id"]
                )
            id_rows = await store.batch_job_ids(conn, tenant=tenant, batch_id=row["batch_id"])
        stored = row["response"]
        job_ids: list[uuid.UUID | None] = [None] * int(stored["total"])
        for id_row in id_rows:
            job_ids[id_row["batch_index"]] = id_row["id"]
        failures = tuple(Rejection(f["index"], f["url"], f["reason"]) for f in stored["failures"])
        return BatchSubmission(
            batch_id=row["batch_id"],
            total=int(stored["total"]),
            job_ids=tuple(job_ids),
            failures=failures,
            dispatched=True,
            replayed=True,
        )

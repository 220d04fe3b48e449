"""The answers of the API as frozen dataclasses, each read from its JSON by ``from_json``.

Their fields are the API's own (``tests/unit/test_client_schema.py`` checks them against the server's OpenAPI
schema, both ways).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

FINAL_STATUSES = frozenset({"completed", "error", "cancelled"})


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
    obey_robots: bool
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
    wait_for: str | None = None
    wait_ms: int | None = None
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
            obey_robots=bool(data.get("obey_robots", False)),
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
            wait_for=data.get("wait_for"),
            wait_ms=data.get("wait_ms"),
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


class EventParser:
    """Server-sent events, a line at a time: `feed` returns the `Progress` an event completes, if any. A stream
    the server ends with ``event: error`` (its API key was revoked) leaves the error body in `error`."""

    def __init__(self) -> None:
        self.event, self.data = "message", ""
        self.error: dict[str, Any] | None = None

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
            if event == "error":
                body = json.loads(data) if data else {}
                self.error = body if isinstance(body, dict) else {"error": str(body)}
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
    gave_up_at: datetime | None
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
            gave_up_at=_time(data.get("gave_up_at")),
            created_at=_time(data.get("created_at")),
            payload=data.get("payload") or {},
        )

"""Request bodies (validated strictly: a wrong type is a 422 naming the field) and documented responses."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

BATCH_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
BatchIdField = Annotated[StrictStr, Field(pattern=BATCH_ID_PATTERN, description="1 to 128 of A-Za-z0-9._:-")]
RetriesField = Annotated[StrictInt, Field(ge=0, le=20, description="Retries after the first attempt.")]
EXAMPLE_URL = "https://www.example.com/products/123"


# -- /v1 ---------------------------------------------------------------------------------------------


class JobCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"url": EXAMPLE_URL, "render": True, "premium": False}]},
    )
    url: StrictStr = Field(description="http or https, at most 8 KB.")
    render: StrictBool = Field(default=False, description="Start with the headless browser.")
    premium: StrictBool = Field(default=False, description="Start at the premium proxy tier.")
    ultra_premium: StrictBool = Field(default=False, description="Start at the ultra-premium proxy tier.")
    obey_robots: StrictBool = Field(default=False, description="Obey the site's robots.txt.")
    max_retries: RetriesField | None = None
    callback_url: StrictStr | None = Field(
        default=None, description="POSTed signed JSON when the job ends (see Webhooks in the README)."
    )


class BatchCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "urls": ["https://example.com/page1", "https://example.com/page2"],
                    "render": False,
                    "batch_id": "catalog-2026-11-29",
                }
            ]
        },
    )
    urls: list[Any] = Field(
        min_length=1, description="Up to the batch limit (default 50,000). Bad ones are reported by index."
    )
    render: StrictBool = False
    premium: StrictBool = False
    ultra_premium: StrictBool = False
    obey_robots: StrictBool = False
    max_retries: RetriesField | None = None
    batch_id: BatchIdField | None = None
    callback_url: StrictStr | None = Field(
        default=None, description="POSTed signed JSON as each job ends and when the batch is done."
    )


class Failure(BaseModel):
    index: int
    url: str
    reason: str


class BatchCreated(BaseModel):
    batch_id: str
    total: int
    accepted: int
    rejected: int
    failures: list[Failure]
    job_ids: list[str | None] = Field(description="One per submitted URL, in order; null where refused.")
    dispatched: bool


class AttemptOut(BaseModel):
    attempt: int
    method: str
    started_at: str
    duration_ms: int | None
    http_status: int | None
    outcome: str
    error: str | None
    worker: str | None


class JobOut(BaseModel):
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
    created_at: str
    updated_at: str
    started_at: str | None
    completed_at: str | None
    dispatched: bool
    html_length: int | None
    processing_time_ms: int | None
    success_method: str | None
    http_status: int | None
    final_url: str | None
    content_type: str | None
    error_message: str | None
    cost: float
    attempts: list[AttemptOut] | None = None
    html: str | None = None


class Counts(BaseModel):
    pending: int
    processing: int
    completed: int
    error: int
    cancelled: int
    total: int


class BatchOut(BaseModel):
    batch_id: str
    created_at: str
    last_updated: str
    render: bool
    premium: bool
    ultra_premium: bool
    counts: Counts
    progress: int = Field(description="Percent of jobs in a final state, rounded down.")


class BatchDetail(BatchOut):
    jobs: list[JobOut]
    limit: int
    offset: int


class BatchList(BaseModel):
    batches: list[BatchOut]
    total: int
    limit: int
    offset: int


class RetryResult(BaseModel):
    batch_id: str
    retried: int


class CancelResult(BaseModel):
    batch_id: str
    cancelled: int = Field(
        description="Jobs cancelled now (pending or processing); final jobs are left alone."
    )


class ExportedJob(JobOut):
    index: int = Field(description="The job's index in the submitted list.")


class BatchExportPage(BaseModel):
    batch_id: str
    total: int
    limit: int
    offset: int
    jobs: list[ExportedJob]


class ProcessRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"batch_size": 5}]})
    batch_size: StrictInt = Field(default=5, ge=1, le=1000)


class ProcessResult(BaseModel):
    processed: int
    completed: int
    failed: int
    message: str


class ErrorOut(BaseModel):
    success: bool = False
    code: str
    error: str
    details: Any = None


# -- /functions/v1 (the legacy contract) -----------------------------------------------------------


class LegacySubmitJob(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"url": EXAMPLE_URL, "premium": False, "ultraPremium": True, "render": True}]
        },
    )
    url: StrictStr
    premium: StrictBool = False
    ultraPremium: StrictBool = False
    render: StrictBool = False
    obeyRobots: StrictBool = False
    maxRetries: RetriesField | None = None
    callbackUrl: StrictStr | None = None


class LegacySubmitBatch(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "urls": ["https://example.com/page1", "https://example.com/page2"],
                    "premium": False,
                    "ultraPremium": True,
                    "render": True,
                    "batchId": "optional-custom-batch-id",
                }
            ]
        },
    )
    urls: list[Any] = Field(min_length=1)
    premium: StrictBool = False
    ultraPremium: StrictBool = False
    render: StrictBool = False
    obeyRobots: StrictBool = False
    batchId: BatchIdField | None = None
    maxRetries: RetriesField | None = None
    callbackUrl: StrictStr | None = None


class LegacyRetryFailed(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"batchId": "batch-67890"}]})
    batchId: BatchIdField


class LegacySubmitted(BaseModel):
    success: bool
    jobId: str
    status: str
    message: str


class LegacyBatchSubmitted(BaseModel):
    success: bool
    batchId: str
    total: int
    successCount: int
    failedCount: int
    failures: list[Failure]


class LegacyJob(BaseModel):
    id: str
    url: str
    status: str
    created_at: str
    updated_at: str
    completed_at: str | None
    html_length: int | None
    processing_time_ms: int | None
    success_method: str | None


class LegacyJobResult(BaseModel):
    success: bool
    job: LegacyJob
    html: str | None


class LegacyCounts(BaseModel):
    pending: int
    processing: int
    completed: int
    error: int
    total: int


class LegacyBatchStatus(BaseModel):
    success: bool
    counts: LegacyCounts
    progress: int
    urls: list[LegacyJob]


class LegacyBatchSummary(BaseModel):
    batch_id: str
    total: int
    pending: int
    processing: int
    completed: int
    error: int
    progress: int
    created_at: str
    last_updated: str


class LegacyBatchList(BaseModel):
    batches: list[LegacyBatchSummary]
    total: int
    limit: int
    offset: int


class LegacyRetried(BaseModel):
    success: bool
    count: int
    message: str


class LegacyProcess(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"batchSize": 5}]})
    batchSize: StrictInt = Field(default=5, ge=1, le=1000)


class LegacyProcessed(BaseModel):
    success: bool
    processed: int
    message: str


# -- waiting ---------------------------------------------------------------------------------------


class JobWaited(JobOut):
    timed_out: bool = Field(description="True when the wait ended before the job was final.")
    waited_ms: int


class BatchWaited(BatchOut):
    timed_out: bool = Field(description="True when the wait ended before every job was final.")
    waited_ms: int


class LegacyWaitForJob(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"jobId": "uuid-here", "maxWaitTimeMs": 300000, "pollingIntervalMs": 5000}]
        },
    )
    jobId: StrictStr
    maxWaitTimeMs: float = Field(default=300_000, ge=0, description="Capped by CRAWLJOBS_MAX_WAIT_SECONDS.")
    pollingIntervalMs: float | None = Field(
        default=None, ge=0, description="Accepted and ignored: the wait is woken by the job's completion."
    )


class LegacyWaited(BaseModel):
    success: bool
    job: LegacyJob
    waitTime: int
    timedOut: bool | None = Field(default=None, description="Present (true) only when the wait timed out.")
    message: str | None = Field(default=None, description="Present only when the wait timed out.")

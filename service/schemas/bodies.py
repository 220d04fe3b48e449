"""Request bodies, validated strictly: a wrong type is a 422 naming the field. Each submission body gives its
`SubmitOptions`, so a route passes one object to the manager."""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from crawljobs.models import SubmitOptions

BATCH_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
BatchIdField = Annotated[StrictStr, Field(pattern=BATCH_ID_PATTERN, description="1 to 128 of A-Za-z0-9._:-")]
RetriesField = Annotated[StrictInt, Field(ge=0, le=20, description="Retries after the first attempt.")]
EXAMPLE_URL = "https://www.example.com/products/123"
# What a render waits for after the page loaded (the deployment's CRAWLJOBS_RENDER_MAX_WAIT_MS is checked at
# submission: a longer wait_ms is a 422 too).
WaitForField = Annotated[
    StrictStr | None,
    Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="When the page is rendered: wait until this CSS selector matches an element (at most "
        "CRAWLJOBS_RENDER_MAX_WAIT_MS); a page where it never appears fails the attempt.",
    ),
]
WaitMsField = Annotated[
    StrictInt | None,
    Field(
        default=None,
        ge=0,
        description="When the page is rendered: wait this many milliseconds after it settled (at most "
        "CRAWLJOBS_RENDER_MAX_WAIT_MS).",
    ),
]


class Submits:
    """A submission body: its `SubmitOptions`, read from the fields `OPTION_FIELDS` names (option -> field)."""

    OPTION_FIELDS: ClassVar[dict[str, str]] = {f.name: f.name for f in fields(SubmitOptions)}

    def options(self) -> SubmitOptions:
        return SubmitOptions(**{option: getattr(self, name) for option, name in self.OPTION_FIELDS.items()})


class LegacySubmits(Submits):
    OPTION_FIELDS: ClassVar[dict[str, str]] = {
        "render": "render",
        "premium": "premium",
        "ultra_premium": "ultraPremium",
        "obey_robots": "obeyRobots",
        "max_retries": "maxRetries",
        "callback_url": "callbackUrl",
        "wait_for": "waitFor",
        "wait_ms": "waitMs",
    }


# -- /v1 ---------------------------------------------------------------------------------------------


class JobCreate(Submits, BaseModel):
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
    wait_for: WaitForField = None
    wait_ms: WaitMsField = None


class BatchCreate(Submits, BaseModel):
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
    wait_for: WaitForField = None
    wait_ms: WaitMsField = None


class ProcessRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"batch_size": 5}]})
    batch_size: StrictInt = Field(default=5, ge=1, le=1000)


# -- /functions/v1 (the legacy contract) -----------------------------------------------------------


class LegacySubmitJob(LegacySubmits, BaseModel):
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
    waitFor: WaitForField = None  # extensions of the contract, as maxRetries
    waitMs: WaitMsField = None


class LegacySubmitBatch(LegacySubmits, BaseModel):
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
    waitFor: WaitForField = None  # extensions of the contract, as maxRetries
    waitMs: WaitMsField = None


class LegacyRetryFailed(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"batchId": "batch-67890"}]})
    batchId: BatchIdField


class LegacyProcess(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"batchSize": 5}]})
    batchSize: StrictInt = Field(default=5, ge=1, le=1000)


# -- the legacy read routes' parameters --------------------------------------------------------------
# The old functions read their parameters from the query string or the JSON body, whatever the method; a POST
# is what `supabase.functions.invoke` sends by default. Each model is what a read takes, from either place (the
# body's value wins when both name one); unknown names are ignored, as the old functions ignored them.

# A legacy batch status lists every job of the batch unless paged; a batch holds at most this many.
LEGACY_ALL_JOBS = 1_000_000


class LegacyJobLookup(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"jobId": "uuid-here"}]})
    jobId: StrictStr = Field(max_length=100)


class LegacyBatchLookup(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"batchId": "batch-12345"}]})
    batchId: BatchIdField
    limit: int = Field(default=LEGACY_ALL_JOBS, ge=1, le=LEGACY_ALL_JOBS)
    offset: int = Field(default=0, ge=0, le=10_000_000)


class LegacyBatchPage(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"limit": 25, "offset": 0}]})
    limit: int = Field(default=25, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10_000_000)


# -- waiting ---------------------------------------------------------------------------------------


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

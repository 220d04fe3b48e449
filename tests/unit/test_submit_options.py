"""Each submission body gives the core one `SubmitOptions`: the /v1 names and the legacy ones alike."""

from __future__ import annotations

import pytest

from crawljobs.models import SubmitOptions
from service.schemas import BatchCreate, JobCreate, LegacySubmitBatch, LegacySubmitJob

SubmissionBody = JobCreate | BatchCreate | LegacySubmitJob | LegacySubmitBatch
EVERY_OPTION = SubmitOptions(
    render=True,
    premium=True,
    ultra_premium=True,
    obey_robots=True,
    max_retries=3,
    callback_url="https://hooks.example.com/h",
    wait_for="#price",
    wait_ms=1500,
)
V1 = {
    "render": True,
    "premium": True,
    "ultra_premium": True,
    "obey_robots": True,
    "max_retries": 3,
    "callback_url": "https://hooks.example.com/h",
    "wait_for": "#price",
    "wait_ms": 1500,
}
LEGACY = {
    "render": True,
    "premium": True,
    "ultraPremium": True,
    "obeyRobots": True,
    "maxRetries": 3,
    "callbackUrl": "https://hooks.example.com/h",
    "waitFor": "#price",
    "waitMs": 1500,
}


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (JobCreate, {"url": "https://example.com/", **V1}),
        (BatchCreate, {"urls": ["https://example.com/"], **V1}),
        (LegacySubmitJob, {"url": "https://example.com/", **LEGACY}),
        (LegacySubmitBatch, {"urls": ["https://example.com/"], **LEGACY}),
    ],
)
def test_a_body_gives_every_option(body: type[SubmissionBody], fields: dict[str, object]) -> None:
    assert body.model_validate(fields).options() == EVERY_OPTION
    only_urls = {name: value for name, value in fields.items() if name in ("url", "urls")}
    assert body.model_validate(only_urls).options() == SubmitOptions()

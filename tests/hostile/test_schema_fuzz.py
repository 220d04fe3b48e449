"""Schemathesis against the API's own OpenAPI schema: no 5xx, and every answer is one the schema documents.

The app runs in-process (ASGI) on real PostgreSQL and Redis, with the suite's fake resolver: generated URLs
never reach a real DNS server, and no worker runs, so nothing submitted is fetched. Every operation is a test
of its own (``test_operation[POST /v1/jobs]``...), each with all of Schemathesis's checks: status codes,
content types, headers and bodies conform to the schema, schema-valid requests are accepted, schema-violating
ones refused, authentication is enforced (probed without and with a wrong key), 405s list the allowed methods.

Deterministic by default: derandomized, with Schemathesis's coverage phase (boundary values, missing and
wrongly typed fields) and ``HOSTILE_FUZZ_EXAMPLES`` (default 10) random examples per operation. For a longer
hunt: ``HOSTILE_FUZZ_EXAMPLES=500 pytest tests/hostile/test_schema_fuzz.py`` (not ``CRAWLJOBS_``-prefixed:
the test conftest strips those).

Left out: ``POST /v1/jobs/process`` and ``POST /functions/v1/process-crawl-jobs``, which start a real worker
run that would fetch (and resolve with the system's DNS) whatever the fuzzer submitted. Their input
validation is covered in ``test_bodies.py``. And the POST forms of the legacy reads, whose parameters come from
the query string or the body, either (OpenAPI cannot say "one of the two"): their GET forms are fuzzed, and
both ways, conflicts and bad values of the POST forms are tested in ``tests/integration/test_legacy_api.py``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from starlette.types import Receive, Scope, Send

from crawljobs.config import Settings
from crawljobs.keys import generate_key
from service.app import create_app
from tests.hostile.conftest import hostile_resolver, store_key

EXAMPLES = int(os.environ.get("HOSTILE_FUZZ_EXAMPLES", "10"))
FUZZ_KEY = generate_key()
METRICS_TOKEN = secrets.token_urlsafe(16)

pytestmark = [
    # Raised inside Schemathesis's own strategies; nothing of ours to fix.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
    # A longer hunt takes longer per operation than the suite's default limit.
    pytest.mark.timeout(max(120, EXAMPLES * 3)),
]


class AppSlot:
    """The ASGI app Schemathesis calls: it hands each request to the app of the running test.

    The schema is read at import time (to make one test per operation), before the test's database exists.
    """

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "no app installed: use the `installed_app` fixture"
        await self.app(scope, receive, send)


SLOT = AppSlot()

CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {"deterministic": True, "max-examples": EXAMPLES, "database": "none"},
        # An event stream of a batch that never finishes would not end: one event is enough to check it.
        "max-stream-events": 1,
        "auth": {
            "openapi": {"HTTPBearer": {"bearer": FUZZ_KEY}, "MetricsToken": {"bearer": METRICS_TOKEN}},
        },
        "operations": [
            {
                # A submitted URL passes the schema as any string; the network rules (DNS, private
                # addresses, IDNA) cannot be written in a schema, so a schema-valid URL may still be a 422.
                "include-path-regex": "^/v1/(jobs|batches)$|/submit-crawl-",
                "checks": {"positive_data_acceptance": {"expected-statuses": ["2XX", 401, 409, 413, 422]}},
            }
        ],
    }
)


def _schema_document() -> dict[str, Any]:
    # The document only: no connection is made until the app's lifespan starts.
    return create_app(Settings(database_url="postgresql://unused.invalid/schema")).openapi()


_loaded = schemathesis.openapi.from_dict(_schema_document(), config=CONFIG)
_loaded.app = SLOT
LEGACY_READS_BY_POST = {
    ("POST", "/functions/v1/get-crawl-job"),
    ("POST", "/functions/v1/get-crawl-jobs-batch"),
    ("POST", "/functions/v1/list-crawl-job-batches"),
}
schema = _loaded.exclude(path_regex="/process(-crawl-jobs)?$").exclude(
    method="POST", path_regex="^/functions/v1/(get-crawl-job|get-crawl-jobs-batch|list-crawl-job-batches)$"
)


@pytest.fixture
def installed_app(settings: Settings, database_url: str) -> Iterator[None]:
    store_key(database_url, FUZZ_KEY, tenant="hostile-fuzz")
    values: dict[str, Any] = {**settings.model_dump(), "max_wait_seconds": 0.05}
    if "metrics_token" in Settings.model_fields:  # /metrics is then protected, as its schema says
        values["metrics_token"] = METRICS_TOKEN
    SLOT.app = create_app(Settings(**values), resolver=hostile_resolver)
    try:
        yield
    finally:
        SLOT.app = None


def test_every_operation_is_fuzzed_but_the_worker_runs_and_the_reads_by_post() -> None:
    paths = _schema_document()["paths"]
    every = {(method.upper(), path) for path, item in paths.items() for method in item}
    fuzzed = {(op.method.upper(), op.path) for op in (r.ok() for r in schema.get_all_operations())}
    left_out = {
        ("POST", "/v1/jobs/process"),
        ("POST", "/functions/v1/process-crawl-jobs"),
        *LEGACY_READS_BY_POST,
    }
    assert every - fuzzed == left_out


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_operation(case: Any, installed_app: None) -> None:
    case.call_and_validate()

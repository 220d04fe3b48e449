"""The client's models against the server's OpenAPI schema: the same fields both ways, nullable where the
server may send null. A field added to a response model and not to the client (or the reverse) fails here."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

from crawljobs import client
from crawljobs.config import Settings
from service.app import create_app

# Client model -> (the schema it reads, fields of the schema it leaves out, fields it has of its own).
RESPONSES: dict[type, tuple[str, set[str], set[str]]] = {
    client.Attempt: ("AttemptOut", set(), set()),
    # One Job for every rendering: the export's (ExportedJob: JobOut and its `index`) has all the fields.
    client.Job: ("ExportedJob", set(), set()),
    client.BatchCounts: ("Counts", set(), set()),
    # A batch read from the list, a wait or a page: BatchOut, and the page's jobs (not its limit and offset).
    client.Batch: ("BatchDetail", {"limit", "offset"}, set()),
    client.Failure: ("Failure", set(), set()),
    client.BatchSubmission: ("BatchCreated", set(), set()),
    client.BatchPage: ("BatchList", set(), set()),
    client.Delivery: ("DeliveryOut", set(), set()),
}
# Submission options (keyword arguments) -> the request body they fill; the key goes as a header, the URLs
# as the first argument.
REQUESTS: dict[Any, tuple[str, set[str], set[str]]] = {
    client.SubmitOptions: ("JobCreate", {"url"}, {"idempotency_key"}),
    client.BatchOptions: ("BatchCreate", {"urls"}, {"idempotency_key"}),
}


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    app = create_app(Settings(database_url="postgresql://nobody@127.0.0.1:9/none"))
    found: dict[str, Any] = app.openapi()["components"]["schemas"]
    return found


def _nullable(schema: dict[str, Any]) -> bool:
    return any(choice.get("type") == "null" for choice in schema.get("anyOf", ()))


def _allows_none(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


@pytest.mark.parametrize("model", RESPONSES, ids=lambda m: m.__name__)
def test_client_model_has_the_fields_of_its_schema(model: type, schemas: dict[str, Any]) -> None:
    name, left_out, own = RESPONSES[model]
    properties: dict[str, Any] = schemas[name]["properties"]
    fields = {f.name for f in dataclasses.fields(model)}
    assert fields - own == set(properties) - left_out, f"client.{model.__name__} and {name} disagree"
    hints = typing.get_type_hints(model)
    for field, schema in properties.items():
        if field in fields and _nullable(schema):
            assert _allows_none(hints[field]), (
                f"{name}.{field} may be null: client.{model.__name__} refuses it"
            )


@pytest.mark.parametrize("options", REQUESTS, ids=lambda o: o.__name__)
def test_client_options_are_the_fields_of_the_body(options: Any, schemas: dict[str, Any]) -> None:
    name, positional, own = REQUESTS[options]
    properties: dict[str, Any] = schemas[name]["properties"]
    assert set(typing.get_type_hints(options)) - own == set(properties) - positional


def test_every_client_answer_is_checked(schemas: dict[str, Any]) -> None:
    """A new answer model in the client needs its line above."""
    answers = {
        value
        for value in vars(client).values()
        if isinstance(value, type) and dataclasses.is_dataclass(value) and value is not client.Progress
    }
    assert answers == set(
        RESPONSES
    )  # Progress is read from the event stream, which OpenAPI does not describe

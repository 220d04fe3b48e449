"""The submit forms, made from the API's own request bodies: each field of ``JobCreate`` / ``BatchCreate`` is a
control (a flag a checkbox, a number a number box, a text a text box), so options that other work adds to the
API appear in the dashboard without a change here, and the form's values are checked by the very models the
API checks, with the API's messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from service.schemas import BatchCreate, JobCreate

# Fields that are not options of a submission (the URLs themselves, the batch's id: asked for separately).
NOT_OPTIONS = frozenset({"url", "urls", "batch_id"})


@dataclass(frozen=True)
class Control:
    name: str
    label: str
    kind: str  # "checkbox", "number", "text", "url"
    help: str
    minimum: int | None = None
    maximum: int | None = None


def _kind(annotation: Any) -> str:
    types = {a for a in (get_args(annotation) or (annotation,)) if a is not type(None)}
    names = {getattr(t, "__name__", str(t)) for t in types} | {str(t) for t in types}
    if any("bool" in n for n in names):
        return "checkbox"
    if any("int" in n for n in names):
        return "number"
    return "text"


def controls(model: type[BaseModel]) -> list[Control]:
    found = []
    for name, field in model.model_fields.items():
        if name in NOT_OPTIONS:
            continue
        kind = _kind(field.annotation)
        if name.endswith("_url"):
            kind = "url"
        minimum = maximum = None
        for rule in field.metadata:
            minimum = getattr(rule, "ge", minimum)
            maximum = getattr(rule, "le", maximum)
        label = name.replace("_", " ").capitalize().replace("Max retries", "Retry limit")
        found.append(Control(name, label, kind, field.description or "", minimum, maximum))
    return found


JOB_CONTROLS = controls(JobCreate)
BATCH_CONTROLS = controls(BatchCreate)


def option_values(form: FormData, model: type[BaseModel]) -> dict[str, Any]:
    """The options of a submit form as the API's JSON body would carry them (an empty box: not given)."""
    values: dict[str, Any] = {}
    for control in controls(model):
        raw = form.get(control.name)
        if control.kind == "checkbox":
            values[control.name] = raw is not None
        elif isinstance(raw, str) and raw.strip():
            if control.kind == "number":
                try:
                    values[control.name] = int(raw.strip())
                except ValueError:
                    values[control.name] = raw.strip()  # refused by the model, with its message
            else:
                values[control.name] = raw.strip()
    return values


def problems(error: ValidationError) -> list[str]:
    """A model's refusal in the API's words (``field: message``)."""
    return [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors()]


def split_urls(text: str) -> list[tuple[int, str]]:
    """The URLs of a pasted list or an uploaded file with their line numbers: one a line, blank lines and
    ``#`` comments skipped."""
    return [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#")
    ]

"""The configuration reference (docs/CONFIGURATION.md), generated from the settings object.

``python -m crawljobs.configref --write`` writes it; ``--check`` exits 1 when the file and the code differ (a
unit test does the same, so a setting added without regenerating fails the suite). Run without arguments it
prints the reference.

Every field of ``crawljobs.config.Settings`` is one row: its environment variable, type (with its bounds),
default and description. The description is the field's ``Field(description=...)``, else what the comments of
config.py say of it (``entries``); a field with neither is an error: every setting is documented. Sections follow
the comment blocks that open each group of fields in config.py (a comment after a blank line; its first
sentence is the title, the rest a note under it).
"""

from __future__ import annotations

import argparse
import ast
import enum
import inspect
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from crawljobs.config import Settings

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "CONFIGURATION.md"
COMMAND = "python -m crawljobs.configref --write"

HEADER = f"""# Configuration reference

<!-- Generated from crawljobs/config.py by `{COMMAND}`: do not edit by hand. -->

Every setting is an environment variable prefixed `CRAWLJOBS_`, read by every process (API, workers,
sweeper, CLI) from one settings object, `crawljobs.config.Settings`. Lists are comma-separated; booleans are
`true` or `false`. A value that does not fit its type or bounds stops the process at start with a message
naming it (`crawljobs: bad configuration: ...`, exit 2). Generated from the code by `{COMMAND}`; a test
fails when this page and the code differ.

The test suite reads `CRAWLJOBS_TEST_DATABASE_URL` and `CRAWLJOBS_TEST_REDIS_URL` (and strips every other
`CRAWLJOBS_` variable); the benchmarks read `CRAWLJOBS_BENCH_DATABASE_URL` and `CRAWLJOBS_BENCH_REDIS_URL`;
the client and the CLI read `CRAWLJOBS_URL` and `CRAWLJOBS_API_KEY`. None of those is a setting of the
system itself.
"""


class MissingDescription(Exception):
    """A setting with neither a description nor a comment above it."""


@dataclass(frozen=True)
class Entry:
    section: str
    section_note: str
    env: str
    type: str
    default: str
    description: str


def _source_lines(settings: type[BaseSettings]) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """The settings module's lines and, for each field of the class, the 0-based first and last line of its
    definition."""
    source = inspect.getsource(sys.modules[settings.__module__])
    tree = ast.parse(source)
    spans: dict[str, tuple[int, int]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == settings.__name__:
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                    last = statement.end_lineno or statement.lineno
                    spans[statement.target.id] = (statement.lineno - 1, last - 1)
    return source.splitlines(), spans


def _comment_above(lines: list[str], start: int) -> tuple[list[str], bool]:
    """The comment block right above line `start`, and whether a blank line (or the class line) precedes it."""
    block: list[str] = []
    index = start - 1
    while index >= 0 and lines[index].strip().startswith("#"):
        block.insert(0, lines[index].strip().lstrip("#").strip())
        index -= 1
    opens = index < 0 or not lines[index].strip() or lines[index].rstrip().endswith(":")
    return block, opens


def _first_sentence(text: str) -> tuple[str, str]:
    """A section comment's title and the rest: up to its first ". " or ": " outside parentheses and code."""
    depth, code = 0, False
    for index, char in enumerate(text):
        if char == "`":
            code = not code
        elif not code and char == "(":
            depth += 1
        elif not code and char == ")":
            depth = max(0, depth - 1)
        elif not code and depth == 0 and char in ".:" and text[index + 1 : index + 2] == " ":
            return text[:index], text[index + 1 :].strip()
    return text.rstrip("."), ""


def _as_cell(comment: str) -> str:
    """A comment's sentence as a table cell: lower case first, like the descriptions ("The prefix" -> "the
    prefix"; "URL..." and "`json`" kept)."""
    if len(comment) > 1 and comment[0].isupper() and comment[1].islower():
        return comment[0].lower() + comment[1:]
    return comment


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (types.UnionType, typing.Union):
        names = [_type_name(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        return " or ".join(names)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin is list:
        return "comma-separated list"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(f"`{member.value}`" for member in annotation)
    return {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        Path: "path",
    }.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for attribute, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attribute, None)
            if value is not None and isinstance(
                item, annotated_types.Ge | annotated_types.Gt | annotated_types.Le | annotated_types.Lt
            ):
                parts.append(f"{sign} {value}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            parts.append(f"matching `{pattern}`")
    return ", ".join(parts)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, list | tuple) and not value:
        return "empty"
    if isinstance(value, list | tuple):
        return "`" + ",".join(str(item) for item in value) + "`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    return f"`{value}`"


def entries(settings: type[BaseSettings] = Settings) -> list[Entry]:
    """Every setting in the order of config.py, with its section and description.

    A field's description is its ``Field(description=...)``. Without one, the comments of config.py say it: a
    comment block right above a run of fields (no blank line between them) describes the first of the run,
    and the others point to it; a comment block after a blank line opens a section (its first sentence the
    title; the rest describes the run of fields below it the same way, or, when the first of them has a
    description, is a note under the title). A field with none of these is an error."""
    lines, spans = _source_lines(settings)
    prefix = settings.model_config.get("env_prefix", "")
    section, note = "General", ""
    run_first, run_text = "", ""
    previous_end: int | None = None
    result = []

    def env(name: str) -> str:
        return f"{prefix}{name}".upper()

    for name, field in settings.model_fields.items():
        start, end = spans.get(name, (-1, -1))
        comment, opens = _comment_above(lines, start) if start >= 0 else ([], False)
        if comment and opens:  # a new section; the rest of its comment describes its first fields, if need be
            section, rest = _first_sentence(" ".join(comment))
            note, run_text = (rest, "") if field.description else ("", rest)
            run_first = name
        elif comment:  # a comment for the fields right below it
            run_first, run_text = name, " ".join(comment)
        elif previous_end is None or start != previous_end + 1:  # after a blank line: a run of its own
            run_first, run_text = name, ""
        previous_end = end
        if field.description:
            description = field.description
        elif run_text:
            description = _as_cell(run_text) if run_first == name else f"see `{env(run_first)}` above"
        else:
            raise MissingDescription(
                f"setting {name!r} has no description: give it Field(description=...) in crawljobs/config.py"
            )
        kind = _type_name(field.annotation)
        bounds = _bounds(field)
        result.append(
            Entry(
                section=section,
                section_note=note,
                env=env(name),
                type=f"{kind} ({bounds})" if bounds else kind,
                default=_default(field),
                description=description.rstrip(".").replace("|", "\\|").replace("\n", " "),
            )
        )
    return result


def render(settings: type[BaseSettings] = Settings) -> str:
    """docs/CONFIGURATION.md as it should be."""
    out = [HEADER]
    current = None
    for entry in entries(settings):
        if entry.section != current:
            current = entry.section
            note = f"{entry.section_note}\n\n" if entry.section_note else ""
            out.append(f"\n## {current}\n\n{note}| variable | type | default | meaning |\n|---|---|---|---|")
        out.append(f"| `{entry.env}` | {entry.type} | {entry.default} | {entry.description} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crawljobs.configref", description=__doc__.splitlines()[0]
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"write {REFERENCE.relative_to(ROOT)}")
    group.add_argument("--check", action="store_true", help="exit 1 if the file differs from the code")
    args = parser.parse_args(argv)
    try:
        text = render()
    except MissingDescription as exc:
        print(f"configref: {exc}", file=sys.stderr)
        return 2
    if args.write:
        REFERENCE.write_text(text, encoding="utf-8")
        print(f"wrote {REFERENCE.relative_to(ROOT)} ({len(entries())} settings)", file=sys.stderr)
        return 0
    if args.check:
        current = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
        if current != text:
            print(
                f"configref: {REFERENCE.relative_to(ROOT)} is out of date: run `{COMMAND}`", file=sys.stderr
            )
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

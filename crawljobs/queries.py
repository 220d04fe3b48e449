"""The named SQL blocks of ``crawljobs/sql/queries.sql``, loaded once.

A block starts with ``-- name --`` and a comment line saying what it does; Python calls it by name.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a .sql file into its named blocks."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries


@cache
def _queries() -> dict[str, str]:
    return parse_queries(resources.files("crawljobs.sql").joinpath("queries.sql").read_text(encoding="utf-8"))


def query(name: str) -> str:
    """The SQL text of the named block."""
    return _queries()[name]

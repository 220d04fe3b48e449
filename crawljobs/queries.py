"""The named SQL blocks of ``crawljobs/sql/queries.sql``, loaded once.

A block starts with ``-- name --`` and a comment line saying what it does; Python calls it by name. A block
may name another block as ``{name}`` (a fragment, such as the one column list of a job): it is replaced by that
block's text when the file is loaded, so each shape is written once. A ``{name}`` that is no block is left for
psycopg's ``sql.SQL(...).format`` (an identifier such as the LISTEN channel).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)
_FRAGMENT = re.compile(r"\{([a-z_]+)\}")


def parse_queries(text: str) -> dict[str, str]:
    """Split a .sql file into its named blocks."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")

    def expand(match: re.Match[str]) -> str:
        fragment = match.group(1)
        if fragment not in queries:  # not a block: a placeholder of psycopg's sql.SQL (``LISTEN {channel}``)
            return match.group(0)
        if _FRAGMENT.search(queries[fragment]):
            raise ValueError(f"fragment {fragment!r} names another block (a fragment must name none)")
        return queries[fragment]

    return {name: _FRAGMENT.sub(expand, body) for name, body in queries.items()}


@cache
def _queries() -> dict[str, str]:
    return parse_queries(resources.files("crawljobs.sql").joinpath("queries.sql").read_text(encoding="utf-8"))


def query(name: str) -> str:
    """The SQL text of the named block."""
    return _queries()[name]

"""Applies the numbered ``.sql`` migrations in ``crawljobs/migrations`` once each, in order.

Idempotent, and safe to run concurrently: the whole run holds a transaction-level advisory lock, so a second
``crawljobs migrate`` waits for the first and then finds nothing left to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

logger = logging.getLogger(__name__)

# An arbitrary constant naming "crawljobs schema migrations" for pg_advisory_xact_lock.
MIGRATION_LOCK_ID = 0x63726A6F62  # "crjob"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The migrations shipped with the package, sorted by version."""
    found = []
    for entry in resources.files("crawljobs.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


def migrate(conninfo: str) -> list[str]:
    """Apply every migration not applied yet; return the names of those applied now."""
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=False) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for migration in load_migrations():
            if migration.version in done:
                continue
            logger.info("applying migration %s", migration.name, extra={"action": "migrate"})
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied_now.append(migration.name)
        conn.commit()
    return applied_now

"""`crawljobs migrate`: idempotent, and concurrent runs do not collide."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from crawljobs.migrate import load_migrations, migrate


@pytest.fixture
def empty_database(pg_admin_url: str) -> Iterator[str]:
    name = f"cjtest_empty_{secrets.token_hex(4)}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo("", **{**conninfo_to_dict(pg_admin_url), "dbname": name})
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_migrate_is_idempotent(empty_database: str) -> None:
    assert migrate(empty_database) == [m.name for m in load_migrations()]
    assert migrate(empty_database) == []


def test_concurrent_migrate_processes(empty_database: str) -> None:
    env = {"CRAWLJOBS_DATABASE_URL": empty_database, "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "crawljobs.cli", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    applied = [err for _out, err in outputs if "applied 0 migration" not in err]
    assert len(applied) == 1  # exactly one run did the work
    with psycopg.connect(empty_database) as conn:
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [v[0] for v in versions] == [m.version for m in load_migrations()]

"""The services every integration test stands on: PostgreSQL and Redis, configured or embedded.

With ``CRAWLJOBS_TEST_DATABASE_URL`` and ``CRAWLJOBS_TEST_REDIS_URL`` set (as in CI) the tests use those
servers; without them they start an embedded PostgreSQL and Redis under /tmp for the session. Either way each
test module gets a fresh database cloned from a template migrated once, and each test its own Redis key prefix,
deleted afterwards.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from crawljobs.config import Settings
from crawljobs.embedded import EmbeddedRedis, start_postgres, start_redis
from crawljobs.keys import create_key
from crawljobs.migrate import migrate

TEST_DATABASE_VARIABLE = "CRAWLJOBS_TEST_DATABASE_URL"
TEST_REDIS_VARIABLE = "CRAWLJOBS_TEST_REDIS_URL"


def _strip_environment() -> None:
    """No CRAWLJOBS_ variable of the developer's shell may reach a test (pydantic-settings ignores case)."""
    for name in list(os.environ):
        if name.upper().startswith("CRAWLJOBS_") and name not in (
            TEST_DATABASE_VARIABLE,
            TEST_REDIS_VARIABLE,
        ):
            del os.environ[name]


_strip_environment()


def _short_tempdir(prefix: str) -> Path:
    # Under /tmp, not pytest's deep tmp_path: a unix socket path must stay under ~100 bytes.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def database_url_for(admin_url: str, dbname: str) -> str:
    """``admin_url`` pointed at another database (works for TCP URLs and pgserver's socket URLs alike)."""
    return make_conninfo(admin_url, dbname=dbname)


def _run_admin(admin_url: str, statement: sql.Composable) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A PostgreSQL URL allowed to create and drop databases."""
    configured = os.environ.get(TEST_DATABASE_VARIABLE)
    if configured:
        yield configured
        return
    directory = _short_tempdir("cjpg")
    try:
        with start_postgres(directory, cleanup="delete") as server:
            yield server.url
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    configured = os.environ.get(TEST_REDIS_VARIABLE)
    if configured:
        yield configured
        return
    directory = _short_tempdir("cjrd")
    try:
        with start_redis(directory, persistent=False) as server:
            yield server.url
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    """The name of a database migrated once per session, the template of every test module's database."""
    name = f"cjtest_tpl_{secrets.token_hex(4)}"
    _run_admin(pg_admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrate(database_url_for(pg_admin_url, name))
        yield name
    finally:
        _run_admin(
            pg_admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="module")
def database_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    """A fresh migrated database for this test module."""
    name = f"cjtest_{secrets.token_hex(4)}"
    _run_admin(
        pg_admin_url,
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template_db)),
    )
    try:
        yield database_url_for(pg_admin_url, name)
    finally:
        _run_admin(
            pg_admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def drop_prefix(redis_url: str, prefix: str) -> None:
    """Delete every Redis key under ``prefix``."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start : start + 1000])
    finally:
        client.close()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"cjtest:{secrets.token_hex(6)}"
    yield prefix
    drop_prefix(redis_url, prefix)


@pytest.fixture
def settings(database_url: str, redis_url: str, redis_prefix: str) -> Settings:
    return Settings(
        database_url=database_url, redis_url=redis_url, queue_prefix=redis_prefix, allowed_networks=[]
    )


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[[], EmbeddedRedis]]:
    """Starts throwaway Redis servers (embedded, not persistent) that a test may stop for real; all are stopped
    and deleted after the test."""
    started: list[EmbeddedRedis] = []

    def start() -> EmbeddedRedis:
        directory = _short_tempdir("cjrd")
        try:
            server = start_redis(directory, persistent=False)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


# API keys of two tenants, for a module's database: "tenant-a" (`api_key`, `auth`) and "tenant-b".


@pytest.fixture(scope="module")
def api_key(database_url: str) -> str:
    return create_key(database_url, name="tenant-a")


@pytest.fixture(scope="module")
def other_api_key(database_url: str) -> str:
    return create_key(database_url, name="tenant-b")


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def other_auth(other_api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {other_api_key}"}

"""Fixtures of the hostile-input suite: the API in-process on real PostgreSQL and Redis, two tenants' keys,
and a tripwire that fails the test if anything tries a real DNS look-up.

Every name the API resolves goes through ``hostile_resolver`` (the integration tests' fake DNS plus a few
names of this suite's own); unknown names do not resolve, which the API accepts at submit time (the worker
checks them again at fetch time). No worker runs here: nothing submitted is ever fetched.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fastapi.routing
import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from crawljobs.config import Settings
from crawljobs.keys import hash_key
from crawljobs.queue import QueueKeys
from service.app import create_app
from tests.conftest import drop_prefix
from tests.integration.conftest import FAKE_DNS

# The integration tests' names, and names of this suite's own: IDN hosts (in their punycode form, the form the
# API resolves) and names that resolve to each kind of refused address.
HOSTILE_DNS: dict[str, list[str]] = {
    **FAKE_DNS,
    "xn--bcher-kva.example": ["93.184.215.20"],  # bücher.example
    "xn--r8jz45g.xn--zckzah": ["93.184.215.21"],  # 例え.テスト
    "xn--bcher-kva.evil.example": ["192.168.7.7"],  # bücher.evil.example, a private address
    "rebind.example.com": ["172.16.5.5"],
    "linklocal.example.com": ["169.254.10.10"],
    "metadata.example.com": ["169.254.169.254"],
    "v6loopback.example.com": ["::1"],
    "ula.example.com": ["fd12:3456:789a::1"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
}


# Every name the API asked the fake resolver for, in order (tests clear it before they look).
LOOKUPS: list[str] = []


async def hostile_resolver(host: str) -> list[str]:
    LOOKUPS.append(host)
    try:
        return HOSTILE_DNS[host]
    except KeyError:
        raise OSError(f"fake DNS: {host} does not resolve") from None


def _is_local(host: object) -> bool:
    """An address, a unix socket path or localhost (a test database URL may name it): no DNS server asked."""
    if host is None:
        return True
    text = host.decode() if isinstance(host, bytes) else str(host)
    if text.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text.startswith("/")  # a unix socket path
    return True


@pytest.fixture(autouse=True)
def no_real_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fails the test if any code in this process asks the system resolver for a name.

    PostgreSQL and Redis are reached by address (127.0.0.1 or a unix socket); the API resolves only through
    ``hostile_resolver``. A name reaching ``socket.getaddrinfo`` would be a packet to a real DNS server.
    """
    asked: list[str] = []
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_local(host):
            asked.append(str(host))
            raise socket.gaierror(socket.EAI_NONAME, "the hostile suite allows no real DNS look-up")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    yield asked
    assert asked == [], f"real DNS look-ups attempted: {asked}"


def store_key(conninfo: str, key: str, *, tenant: str) -> None:
    """Store a key chosen by the caller (``create_key`` makes its own), once."""
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "INSERT INTO api_keys (id, tenant, name, key_hash, key_prefix) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (uuid.uuid4(), tenant, tenant, hash_key(key), key[:10]),
        )


@dataclass(frozen=True)
class ApiRoute:
    path: str
    methods: frozenset[str]
    takes_body: bool


def api_routes() -> list[ApiRoute]:
    """Every route of the app, read from the app itself (no connection is made)."""
    app = create_app(Settings(database_url="postgresql://unused.invalid/routes"))
    # FastAPI 0.16x keeps included routers whole in app.routes; iter_route_contexts walks into them.
    contexts: Any = getattr(fastapi.routing, "iter_route_contexts", lambda routes: routes)(app.routes)
    return [
        ApiRoute(route.path, frozenset(route.methods), _takes_body(route))
        for route in contexts
        if route.methods and route.path
    ]


def _takes_body(route: Any) -> bool:
    """A body FastAPI reads for the route, or one the route reads itself and documents as required (the legacy
    routes that also take their fields from the query string: service.routes.common.legacy_body)."""
    if getattr(route, "body_field", None) is not None:
        return True
    extra = getattr(route, "openapi_extra", None) or {}
    return bool(extra.get("requestBody", {}).get("required"))


def make_client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings, resolver=hostile_resolver), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def hostile_settings(database_url: str, redis_url: str) -> Iterator[Settings]:
    """Settings shared by a module's tests (one app per module: starting one costs more than most tests here).

    No network is allowed: every private address is refused. The module's Redis keys are deleted afterwards.
    """
    prefix = f"cjhostile:{secrets.token_hex(6)}"
    yield Settings(database_url=database_url, redis_url=redis_url, queue_prefix=prefix, allowed_networks=[])
    drop_prefix(redis_url, prefix)


@pytest.fixture(scope="module")
def client(hostile_settings: Settings) -> Iterator[TestClient]:
    with make_client(hostile_settings) as test_client:
        yield test_client


TABLES = ("crawl_jobs", "crawl_batches", "crawl_attempts", "webhook_deliveries", "tenant_secrets")


def row_counts(database_url: str) -> dict[str, int]:
    """Rows of every table a request could write, to show a refused request left nothing behind."""
    counts = {}
    with psycopg.connect(database_url) as conn:
        for table in TABLES:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row is not None
            counts[table] = row[0]
    return counts


@pytest.fixture
def footprint(database_url: str, redis_url: str, hostile_settings: Settings) -> Callable[[], dict[str, int]]:
    """What a request could leave behind: rows of every table, and the length of each dispatch list."""
    keys = QueueKeys.for_prefix(hostile_settings.queue_prefix)

    def measure() -> dict[str, int]:
        counts = row_counts(database_url)
        client = redis.Redis.from_url(redis_url)
        try:
            for key in keys.depth:
                counts[key] = int(client.llen(key))
        finally:
            client.close()
        return counts

    return measure

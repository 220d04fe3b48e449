"""Fixtures for the API's integration tests: an app on real PostgreSQL and Redis, keys of two tenants."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from psycopg_pool import AsyncConnectionPool

from crawljobs.config import Settings
from crawljobs.manager import JobManager
from crawljobs.queue import redis_client as async_redis_client
from service.app import create_app

# Names the tests may use, with the addresses a fake resolver gives them. No test looks up a real name:
# a DNS query would leave the machine.
FAKE_DNS = {
    "example.com": ["93.184.215.14"],
    "www.example.com": ["93.184.215.14"],
    "shop.example.org": ["93.184.215.15"],
    "internal.example.com": ["10.1.2.3"],
    "loopback.example.com": ["127.0.0.1"],
    "mixed.example.com": ["93.184.215.16", "192.168.1.10"],
}


async def fake_resolver(host: str) -> list[str]:
    try:
        return FAKE_DNS[host]
    except KeyError:
        raise OSError(f"fake DNS: {host} does not resolve") from None


def run_with_manager(settings: Settings, body: Callable[[JobManager], Coroutine[Any, Any, Any]]) -> Any:
    """Run `body` with a new job manager on the settings' database and Redis: a worker, the sweeper or
    another API process in small, as far as the database can tell."""

    async def main() -> Any:
        assert settings.database_url is not None
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.database_url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
        )
        await pool.open()
        client = async_redis_client(settings.redis_url) if settings.redis_url else None
        try:
            return await body(JobManager(pool=pool, redis=client, settings=settings, resolver=fake_resolver))
        finally:
            if client is not None:
                await client.aclose()
            await pool.close()

    return asyncio.run(main())


def make_client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings, resolver=fake_resolver), raise_server_exceptions=False)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with make_client(settings) as test_client:
        yield test_client


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()

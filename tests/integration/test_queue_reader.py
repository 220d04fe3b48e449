"""The daemon's queue reader (crawlproject.feed) on a real Redis: the priority list first, batches, messages that
are not job ids dropped, popped messages given back in their order."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from crawljobs.queue import QueueKeys, redis_client
from crawlproject.feed import Popped, QueueReader


def test_the_priority_list_first_then_the_bulk_list_in_batches(redis_url: str, redis_prefix: str) -> None:
    keys = QueueKeys.for_prefix(redis_prefix)
    bulk = [uuid.uuid4() for _ in range(5)]
    single = uuid.uuid4()

    async def scenario() -> None:
        redis = redis_client(redis_url)
        try:
            await redis.rpush(keys.bulk, *map(str, bulk))
            await redis.rpush(keys.priority, str(single), "not-a-job-id", '{"url": "http://127.0.0.2/"}')
            reader = QueueReader(redis, keys)

            first = await reader.pop(10)
            assert first is not None
            assert (first.key, first.ids) == (
                keys.priority,
                [single],
            )  # the rest of it dropped, not raised on
            second = await reader.pop(3)
            assert second is not None
            assert (second.key, second.ids) == (keys.bulk, bulk[:3])

            await reader.give_back(second)
            assert await redis.lrange(keys.bulk, 0, -1) == [str(i).encode() for i in bulk]
            third = await reader.pop(10)
            assert third is not None and third.ids == bulk
        finally:
            await redis.aclose()

    asyncio.run(scenario())


def test_an_idle_reader_takes_a_job_pushed_while_it_waits(redis_url: str, redis_prefix: str) -> None:
    keys = QueueKeys.for_prefix(redis_prefix)
    job_id = uuid.uuid4()

    async def scenario() -> None:
        redis, pusher = redis_client(redis_url), redis_client(redis_url)
        try:
            name = f"reader-{redis_prefix}"
            await redis.client_setname(name)
            reader = QueueReader(redis, keys)
            waiting = asyncio.create_task(_next(reader))
            while not await _in_blpop(pusher, name):  # noqa: ASYNC110 (the reader sits in BLPOP: nothing was there)
                await asyncio.sleep(0.01)
            await pusher.rpush(keys.bulk, str(job_id))
            popped = await waiting
            assert (popped.key, popped.ids) == (keys.bulk, [job_id])
        finally:
            await redis.aclose()
            await pusher.aclose()

    asyncio.run(scenario())


async def _next(reader: QueueReader) -> Popped:
    """What the reader pops next, however many idle waits (of IDLE_BLOCK_SECONDS) that takes."""
    while (popped := await reader.pop(10)) is None:
        pass
    return popped


async def _in_blpop(redis: Redis, name: str) -> bool:
    return any(
        client.get("name") == name and client.get("cmd") == "blpop" for client in await redis.client_list()
    )

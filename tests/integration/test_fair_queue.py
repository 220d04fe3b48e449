"""The fair scheduler (crawljobs.queue) on a real Redis: batches taken in turns by tenant and by batch, single jobs
first, reclaimed jobs and given-back messages at the heads, the backlog list counting what waits, a full tenant
passed over, an idle reader woken by a batch, and FIFO order again with fair shares off."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import redis

from crawljobs.config import Settings
from crawljobs.manager import JobManager
from crawljobs.queue import Queued, QueueKeys, Scheduler, redis_client
from crawljobs.testing import queue_depth, queued_ids
from crawlproject.feed import Popped, QueueReader
from tests.integration.conftest import run_with_manager


def ids(n: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


def with_scheduler(redis_url: str, prefix: str, body: Callable[[Scheduler], Coroutine[Any, Any, Any]]) -> Any:
    async def main() -> Any:
        client = redis_client(redis_url)
        try:
            return await body(Scheduler(client, QueueKeys.for_prefix(prefix)))
        finally:
            await client.aclose()

    return asyncio.run(main())


async def drain(scheduler: Scheduler, want: int) -> list[uuid.UUID]:
    """Pop `want` at a time until nothing is left; the ids in the order they came."""
    taken: list[uuid.UUID] = []
    while groups := await scheduler.pop(want):
        taken += [uuid.UUID(m.decode() if isinstance(m, bytes) else m) for g in groups for m in g.messages]
    return taken


def test_tenants_then_batches_take_turns(redis_url: str, redis_prefix: str) -> None:
    big, second, other = ids(200), ids(10), ids(10)

    async def body(scheduler: Scheduler) -> list[uuid.UUID]:
        await scheduler.push_all([Queued(i, "a", "big") for i in big])
        await scheduler.push_all([Queued(i, "a", "second") for i in second])
        await scheduler.push_all([Queued(i, "b", "other") for i in other])
        return await drain(scheduler, 7)

    order = with_scheduler(redis_url, redis_prefix, body)
    assert sorted(order) == sorted(big + second + other)  # nothing lost, nothing twice
    position = {job_id: n for n, job_id in enumerate(order)}
    # Tenant b has half the turns while both wait; tenant a's turns alternate between its two batches.
    assert max(position[i] for i in other) < 2 * len(other)
    assert max(position[i] for i in second) < 4 * len(second)
    # Within a batch, submission order.
    assert [i for i in order if i in set(big)] == big
    assert [i for i in order if i in set(other)] == other


def test_single_jobs_first_and_the_backlog_counts_what_waits(redis_url: str, redis_prefix: str) -> None:
    batch, singles = ids(30), ids(3)
    keys = QueueKeys.for_prefix(redis_prefix)
    sync = redis.Redis.from_url(redis_url)

    async def body(scheduler: Scheduler) -> tuple[list[uuid.UUID], int, int]:
        await scheduler.push_all([Queued(i, "a", "x") for i in batch])
        await scheduler.redis.rpush(keys.priority, *map(str, singles))
        depth = queue_depth(sync, keys)
        first = await drain(scheduler, 2)
        return first, depth, queue_depth(sync, keys)

    try:
        order, before, after = with_scheduler(redis_url, redis_prefix, body)
        assert before == 33  # LLEN priority + bulk + backlog: what an outside scaler reads
        assert order[:3] == singles and order[3:] == batch
        assert after == 0
        # Once empty, nothing of the fair scheduler is left behind.
        assert sorted(k.decode() for k in sync.scan_iter(match=f"{redis_prefix}:queue:*")) == []
    finally:
        sync.close()


def test_the_only_batch_is_popped_whole_in_one_call(redis_url: str, redis_prefix: str) -> None:
    batch = ids(250)

    async def body(scheduler: Scheduler) -> list[int]:
        await scheduler.push_all([Queued(i, "a", "x") for i in batch])
        sizes = []
        while groups := await scheduler.pop(100):
            sizes.append(sum(len(g.messages) for g in groups))
        return sizes

    assert with_scheduler(redis_url, redis_prefix, body) == [100, 100, 50]


def test_front_pushes_and_give_backs_go_to_the_head(redis_url: str, redis_prefix: str) -> None:
    batch, reclaimed = ids(10), ids(2)

    async def body(scheduler: Scheduler) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        await scheduler.push_all([Queued(i, "a", "x") for i in batch])
        await scheduler.push_all([Queued(i, "a", "x") for i in reclaimed], front=True)
        (group,) = await scheduler.pop(4)
        taken = [uuid.UUID(m.decode()) for m in group.messages]  # type: ignore[union-attr]
        await scheduler.give_back(group, taken)  # the claim failed: back in the same order
        return taken, await drain(scheduler, 100)

    taken, order = with_scheduler(redis_url, redis_prefix, body)
    assert taken == reclaimed + batch[:2]
    assert order == reclaimed + batch


def test_a_full_tenant_is_passed_over_until_its_mark_expires(redis_url: str, redis_prefix: str) -> None:
    full, other = ids(5), ids(5)

    async def body(scheduler: Scheduler) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        await scheduler.push_all([Queued(i, "a", "x") for i in full])
        await scheduler.push_all([Queued(i, "b", "y") for i in other])
        await scheduler.mark_full(["a"], seconds=0.5)
        while_full = await drain(scheduler, 3)
        await asyncio.sleep(0.6)
        return while_full, await drain(scheduler, 3)

    while_full, later = with_scheduler(redis_url, redis_prefix, body)
    assert while_full == other
    assert later == full


def test_an_idle_reader_is_woken_by_a_batch_dispatch(settings: Settings, redis_url: str) -> None:
    keys = QueueKeys.for_prefix(settings.queue_prefix)

    async def body(manager: JobManager) -> tuple[Popped, list[uuid.UUID]]:
        reader_client = redis_client(redis_url)
        try:
            name = f"reader-{settings.queue_prefix}"
            await reader_client.client_setname(name)
            reader = QueueReader(reader_client, keys)
            waiting = asyncio.create_task(reader.pop(10))
            assert manager.redis is not None
            while not any(  # noqa: ASYNC110 (the reader must be in BLPOP before the batch arrives)
                c.get("name") == name and c.get("cmd") == "blpop" for c in await manager.redis.client_list()
            ):
                await asyncio.sleep(0.01)
            submission = await manager.submit_batch(
                tenant="t", urls=[f"https://example.com/{i}" for i in range(3)]
            )
            popped = await waiting  # within this one wait, not the next (no IDLE_BLOCK_SECONDS poll)
            return popped, [i for i in submission.job_ids if i is not None]
        finally:
            await reader_client.aclose()

    popped, submitted = run_with_manager(settings, body)
    assert popped is not None and popped.ids == submitted


def test_with_fair_shares_off_batches_queue_in_one_fifo_list(settings: Settings, redis_client: Any) -> None:
    fifo = Settings(**{**settings.model_dump(), "fair_shares": False})
    keys = QueueKeys.for_prefix(fifo.queue_prefix)

    async def body(manager: JobManager) -> list[uuid.UUID]:
        first = await manager.submit_batch(tenant="a", urls=[f"https://example.com/a{i}" for i in range(5)])
        second = await manager.submit_batch(tenant="b", urls=[f"https://example.com/b{i}" for i in range(2)])
        return [i for s in (first, second) for i in s.job_ids if i is not None]

    submitted = run_with_manager(fifo, body)
    assert [uuid.UUID(m.decode()) for m in redis_client.lrange(keys.bulk, 0, -1)] == submitted
    assert queued_ids(redis_client, keys) == submitted
    assert not redis_client.exists(keys.tenants)


def test_claims_racing_for_one_tenant_never_pass_its_limit(settings: Settings) -> None:
    capped = Settings(**{**settings.model_dump(), "tenant_max_in_flight": 3})

    async def body(manager: JobManager) -> tuple[int, list[int], int]:
        submission = await manager.submit_batch(
            tenant="capped", urls=[f"https://example.com/c{i}" for i in range(10)]
        )
        other = await manager.submit_batch(tenant="free", urls=["https://example.com/f"])
        job_ids = [i for i in (*submission.job_ids, *other.job_ids) if i is not None]
        claimers = [manager.leases(worker_id=f"racer-{n}") for n in range(4)]
        # Each claims a different share (as workers popping different messages do): only the claim lock keeps
        # them from each seeing room for three.
        results = await asyncio.gather(*(c.claim_within(job_ids[n::4]) for n, c in enumerate(claimers)))
        claimed = [len(jobs) for jobs, _ in results]
        waiting = {job.id for _, left in results for job in left}
        free = sum(1 for jobs, _ in results for job in jobs if job.tenant == "free")
        for c in claimers:
            await c.release_all()
        return sum(claimed) - free, claimed, len(waiting)

    capped_claimed, _, waiting = run_with_manager(capped, body)
    assert capped_claimed == 3  # four claimers at once: three in all
    assert waiting == 7  # the rest left pending, to queue again

"""The lifecycle in the core (crawljobs.lifecycle): the one retry-budget rule, and DESIGN rule 6 held by the
database itself, against real PostgreSQL."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from crawljobs.config import Settings
from crawljobs.lifecycle import Leases, reclaim_expired_leases
from crawljobs.manager import JobManager
from crawljobs.models import SubmitOptions
from crawljobs.queries import parse_queries
from crawljobs.testing import FakeWorker
from crawlproject.retrying import decide
from tests.integration.conftest import run_with_manager


async def _submit(manager: JobManager, *, max_retries: int | None = None) -> uuid.UUID:
    submission = await manager.submit_job(
        tenant="t", url=f"https://example.com/{uuid.uuid4()}", options=SubmitOptions(max_retries=max_retries)
    )
    return submission.job.id


def test_escalations_and_a_lost_worker_leave_the_transient_budget_whole(settings: Settings) -> None:
    # The knot of issue 9: with the default budget (3 retries), a job that escalated three times and then lost
    # its worker once used to be failed "worker lost". Each now spends only its own limit.
    async def body(manager: JobManager) -> None:
        job_id = await _submit(manager)
        first = FakeWorker(manager.pool, worker="first")
        (job,) = await first.claim([job_id])
        for _ in range(3):  # three blocks: three escalations
            assert await first.leases.next_attempt(job, retry=False)
        assert (job.attempt, job.retries) == (4, 0)
        await first.die([job_id])

        reclaimed = await reclaim_expired_leases(
            manager.pool, limit=10, max_lost_leases=manager.settings.max_lost_leases
        )
        assert reclaimed.pending == (job_id,) and reclaimed.lost == ()

        second = Leases(manager.pool, worker_id="second", lease_seconds=30)
        (again,) = await second.claim([job_id])
        assert (again.attempt, again.retries, again.lost_leases) == (5, 0, 1)
        # A transient failure now has every retry the job was given: three more tries, then it gives up.
        for expected_try in range(1, again.max_tries):
            decision = decide(
                outcome="transient",
                reason="status 503",
                attempt=again.tries,
                max_attempts=again.max_tries,
                can_escalate=True,
            )
            assert (decision.action, again.tries) == ("retry", expected_try)
            assert await second.next_attempt(again, retry=True)
        assert again.retries == again.max_retries == 3
        final = decide(
            outcome="transient",
            reason="status 503",
            attempt=again.tries,
            max_attempts=again.max_tries,
            can_escalate=True,
        )
        assert final.action == "fail" and final.reason == "gave up after 4 attempts: status 503"

    run_with_manager(settings, body)


def test_lost_leases_are_bounded_by_their_own_limit(settings: Settings, database_url: str) -> None:
    limited = Settings(**{**settings.model_dump(), "max_lost_leases": 2})

    async def body(manager: JobManager) -> uuid.UUID:
        job_id = await _submit(manager, max_retries=0)
        for loss in range(1, 4):
            await FakeWorker(manager.pool, worker=f"dies-{loss}").die([job_id])
            reclaimed = await reclaim_expired_leases(manager.pool, limit=10, max_lost_leases=2)
            if loss <= 2:
                assert reclaimed.pending == (job_id,), loss
            else:
                assert reclaimed.lost == (job_id,)
        return job_id

    job_id = run_with_manager(limited, body)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT status, lost_leases, retries, error_message FROM crawl_jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert row == ("error", 3, 0, "worker lost: the job lost its worker 3 times")


def test_an_explicit_retry_gives_a_fresh_budget(settings: Settings, database_url: str) -> None:
    async def body(manager: JobManager) -> list[uuid.UUID]:
        submission = await manager.submit_batch(tenant="t", urls=["https://example.com/retry-me"])
        ids = [i for i in submission.job_ids if i is not None]
        worker = FakeWorker(manager.pool)
        await worker.die(ids)
        await reclaim_expired_leases(manager.pool, limit=10, max_lost_leases=3)
        assert await worker.fail(ids, attempt=4) == ids  # three retries spent, then failed
        assert await manager.retry_failed(tenant="t", batch_id=submission.batch_id) == 1
        return ids

    ids = run_with_manager(settings, body)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT status, attempt, retries, lost_leases FROM crawl_jobs WHERE id = %s", (ids[0],)
        ).fetchone()
    assert row == ("pending", 4, 0, 0)


FORBIDDEN = [
    ("pending", "completed"),
    ("pending", "error"),
    ("completed", "pending"),
    ("completed", "processing"),
    ("cancelled", "pending"),
    ("cancelled", "completed"),
    ("error", "completed"),
    ("error", "pending"),  # without an explicit retry
]


@pytest.mark.parametrize(("before", "after"), FORBIDDEN)
def test_the_database_refuses_a_forbidden_status_change(
    settings: Settings, database_url: str, before: str, after: str
) -> None:
    async def body(manager: JobManager) -> uuid.UUID:
        job_id = await _submit(manager)
        worker = FakeWorker(manager.pool)
        if before == "completed":
            await worker.complete([job_id])
        elif before == "error":
            await worker.fail([job_id])
        elif before == "cancelled":
            await manager.cancel_job(tenant="t", job_id=job_id)
        return job_id

    job_id = run_with_manager(settings, body)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT status FROM crawl_jobs WHERE id = %s", (job_id,)).fetchone() == (before,)
        with pytest.raises(psycopg.errors.CheckViolation, match=f"may not go from {before} to {after}"):
            conn.execute("UPDATE crawl_jobs SET status = %s WHERE id = %s", (after, job_id))
        conn.rollback()
        assert conn.execute("SELECT status FROM crawl_jobs WHERE id = %s", (job_id,)).fetchone() == (before,)


def test_the_allowed_moves_pass_the_trigger(settings: Settings, database_url: str) -> None:
    async def body(manager: JobManager) -> None:
        leases = Leases(manager.pool, worker_id="w", lease_seconds=30)
        ids = [await _submit(manager) for _ in range(3)]
        claimed = await leases.claim(ids)  # pending -> processing
        assert [job.id for job in claimed] == ids
        assert await leases.release_all() == 3  # processing -> pending
        await manager.cancel_job(tenant="t", job_id=ids[0])  # pending -> cancelled
        worker = FakeWorker(manager.pool)
        assert await worker.complete([ids[1]]) == [ids[1]]  # processing -> completed
        assert await worker.fail([ids[2]]) == [ids[2]]  # processing -> error

    run_with_manager(settings, body)


def test_a_fragment_is_written_once_and_named_by_the_blocks() -> None:
    text = "-- cols --\n-- The columns.\na, b\n\n-- one --\n-- Uses it.\nSELECT {cols} FROM t;\n"
    assert parse_queries(text) == {"cols": "a, b", "one": "SELECT a, b FROM t"}
    # A name that is no block stays for psycopg's sql.SQL; a fragment may not name another block.
    assert parse_queries("-- listen --\n-- A channel.\nLISTEN {channel};\n") == {"listen": "LISTEN {channel}"}
    with pytest.raises(ValueError, match="fragment 'cols' names another block"):
        parse_queries(
            "-- a --\n-- A.\nx\n\n-- cols --\n-- Nested.\n{a}, b\n\n-- one --\n-- B.\nSELECT {cols};\n"
        )

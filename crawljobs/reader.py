"""The job waiters' re-reads, coalesced: whoever asks while a read is being prepared or made joins the next one.

One NOTIFY can wake a thousand waiters at once (``crawljobs.hub``); each re-reading on its own would queue a
thousand checkouts of the shared pool (two queries each with the attempts). Here they become one query per
``batch_size`` ids (and one for the attempts), on one connection.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid

from crawljobs.exceptions import JobNotFound
from crawljobs.manager import JobManager
from crawljobs.models import Job

# Job re-reads coalesced into one query: at most this many ids per query.
READ_BATCH = 500

# A job id -> (attempts wanted, the futures of the waiters asking for it).
Asking = dict[uuid.UUID, tuple[bool, list[asyncio.Future[Job | None]]]]


class JobReader:
    """Reads jobs by id for the waiters of one process, many at a time (see the module)."""

    def __init__(self, manager: JobManager, *, batch_size: int = READ_BATCH) -> None:
        self.manager = manager
        self.batch_size = batch_size
        self._queue: Asking = {}
        self._task: asyncio.Task[None] | None = None

    async def read(self, *, tenant: str, job_id: uuid.UUID, with_attempts: bool) -> Job:
        """The job as it is now; JobNotFound when it does not exist or is another tenant's."""
        future: asyncio.Future[Job | None] = asyncio.get_running_loop().create_future()
        wanted, futures = self._queue.get(job_id, (False, []))
        futures.append(future)
        self._queue[job_id] = (wanted or with_attempts, futures)
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="job-reader")
        job = await future
        if job is None or job.tenant != tenant:
            raise JobNotFound(f"job {job_id} not found")
        return job

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # the other waiters woken by the same notification ask meanwhile
            while self._queue:
                ids = list(itertools.islice(self._queue, self.batch_size))
                batch = {job_id: self._queue.pop(job_id) for job_id in ids}
                try:
                    jobs = await self._fetch(batch)
                except Exception as exc:  # the waiters raise it (a 503 for a database error)
                    for _wanted, futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for job_id, (_wanted, futures) in batch.items():
                    for future in futures:
                        if not future.done():
                            future.set_result(jobs.get(job_id))
        finally:
            self._task = None

    async def _fetch(self, batch: Asking) -> dict[uuid.UUID, Job]:
        with_attempts = [job_id for job_id, (wanted, _f) in batch.items() if wanted]
        return await self.manager.jobs_by_id(list(batch), with_attempts=with_attempts)

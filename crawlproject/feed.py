"""The daemon's queue reader: job messages popped from Redis, the priority list first, then the fair scheduler's
batches in turns, then the bulk list (``crawljobs.queue``).

While there is work it takes up to a batch with one script call (one round trip, whichever lists the ids come
from); while idle it blocks on BLPOP over the priority list, the wake list and the bulk list for at most
``IDLE_BLOCK_SECONDS``, so a job pushed to an idle worker is picked up at once without polling Redis hard (a
batch's dispatch pushes wake tokens: the batch lists themselves are not known in advance). Messages whose jobs
could not be claimed (the database restarting, their tenant at its limit) are given back to the head of their
list. Redis only carries hints (DESIGN rule 1): a message that is not a job id is dropped, never raised on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from crawljobs.queue import Group, Queued, QueueKeys, Scheduler, decode_message

logger = logging.getLogger(__name__)

IDLE_BLOCK_SECONDS = 1
# How long a tenant found at CRAWLJOBS_TENANT_MAX_IN_FLIGHT is passed over in the rotation (a job of it ending
# makes room sooner, but every claim of it would be refused until one does).
FULL_MARK_SECONDS = 0.5


@dataclass(frozen=True)
class Part:
    """The job ids among the messages popped from one list."""

    group: Group
    ids: list[uuid.UUID]


@dataclass(frozen=True)
class Popped:
    """What one pop took, list by list (a fair pop takes from several batches' lists)."""

    parts: tuple[Part, ...]

    @property
    def ids(self) -> list[uuid.UUID]:
        return [job_id for part in self.parts for job_id in part.ids]

    @property
    def key(self) -> str:
        """The list of the first part (the only one, but for a fair pop across batches)."""
        return self.parts[0].group.key

    def only(self, wanted: Iterable[uuid.UUID]) -> Popped:
        """The same pop with only the `wanted` ids (those to give back)."""
        keep = set(wanted)
        return Popped(tuple(Part(p.group, [i for i in p.ids if i in keep]) for p in self.parts))


class QueueReader:
    def __init__(self, redis: aioredis.Redis, keys: QueueKeys) -> None:
        self.redis = redis
        self.keys = keys
        self.scheduler = Scheduler(redis, keys)

    async def pop(self, want: int) -> Popped | None:
        """Up to ``want`` messages (the priority list's, else the batches' in turns, else the bulk list's),
        else one after waiting a little; None when nothing came. Raises what Redis raises (the caller waits and
        tries again)."""
        groups = await self.scheduler.pop(want)
        if groups:
            return self._parsed(groups)
        watched = [self.keys.priority, self.keys.wake, self.keys.bulk]
        popped = await self.redis.blpop(watched, timeout=IDLE_BLOCK_SECONDS)
        if not popped:
            return None
        key_bytes, message = popped
        key = key_bytes.decode() if isinstance(key_bytes, bytes) else str(key_bytes)
        if key == self.keys.wake:  # a batch arrived: take from the scheduler now
            groups = await self.scheduler.pop(want)
            return self._parsed(groups) if groups else None
        return self._parsed([Group(key, "", [message])])

    @staticmethod
    def _parsed(groups: list[Group]) -> Popped:
        parts = []
        dropped = 0
        for group in groups:
            ids = [job_id for job_id in map(decode_message, group.messages) if job_id is not None]
            dropped += len(group.messages) - len(ids)
            parts.append(Part(group, ids))
        if dropped:
            logger.warning("dropped %d messages that are not job ids", dropped)
        return Popped(tuple(parts))

    async def wait_again(self, waiting: Sequence[Queued]) -> None:
        """Jobs left pending because their tenant is at CRAWLJOBS_TENANT_MAX_IN_FLIGHT: back to the heads of
        their batches' lists in the fair scheduler (single jobs too, in their tenant's list for jobs without a
        batch: on the priority list they would be popped first again and again), and their tenants passed
        over in the rotation for ``FULL_MARK_SECONDS``. No wake tokens: nobody could take them now."""
        try:
            await self.scheduler.push_all(
                [Queued(j.id, j.tenant, j.batch_id) for j in waiting], front=True, wake=False
            )
            await self.scheduler.mark_full((j.tenant for j in waiting), seconds=FULL_MARK_SECONDS)
        except Exception as exc:  # Redis down: they stay pending and the sweeper dispatches them again
            logger.warning(
                "cannot queue %d waiting jobs again: %s", len(waiting), exc, extra={"action": "pop"}
            )

    async def give_back(self, popped: Popped) -> None:
        """Put the popped job messages back at the head of their lists, in their order (when Redis is down
        too, the sweeper dispatches their jobs again: they stay pending)."""
        try:
            for part in popped.parts:
                await self.scheduler.give_back(part.group, part.ids)
        except Exception as exc:
            logger.warning("cannot give back %d messages: %s", len(popped.ids), exc, extra={"action": "pop"})

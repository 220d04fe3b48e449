"""The daemon's queue reader: job messages popped from the Redis lists, the priority list first.

While there is work it takes up to a batch with one LPOP per list; while idle it blocks on BLPOP over both lists
for at most ``IDLE_BLOCK_SECONDS``, so a job pushed to an idle worker is picked up at once without polling Redis
hard. Messages whose jobs could not be claimed (the database restarting) are given back to the head of their
list. Redis only carries hints (DESIGN rule 1): a message that is not a job id is dropped, never raised on.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis

from crawljobs.queue import QueueKeys, decode_message, encode_message

logger = logging.getLogger(__name__)

IDLE_BLOCK_SECONDS = 1


@dataclass(frozen=True)
class Popped:
    """The job ids among the messages popped from one list."""

    key: str
    ids: list[uuid.UUID]


class QueueReader:
    def __init__(self, redis: aioredis.Redis, keys: QueueKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def pop(self, want: int) -> Popped | None:
        """Up to ``want`` messages from the first list that has any, else one after waiting a little; None
        when nothing came. Raises what Redis raises (the caller waits and tries again)."""
        for key in self.keys.in_order:
            messages = await self.redis.lpop(key, want)
            if messages:
                return self._parsed(key, messages if isinstance(messages, list) else [messages])
        popped = await self.redis.blpop(list(self.keys.in_order), timeout=IDLE_BLOCK_SECONDS)
        if not popped:
            return None
        key_bytes, message = popped
        key = key_bytes.decode() if isinstance(key_bytes, bytes) else str(key_bytes)
        return self._parsed(key, [message])

    @staticmethod
    def _parsed(key: str, messages: list[bytes | str]) -> Popped:
        ids = [job_id for job_id in map(decode_message, messages) if job_id is not None]
        if len(ids) < len(messages):
            logger.warning("dropped %d messages that are not job ids", len(messages) - len(ids))
        return Popped(key, ids)

    async def give_back(self, popped: Popped) -> None:
        """Put the popped job messages back at the head of their list, in their order (when Redis is down too,
        the sweeper dispatches their jobs again: they stay pending)."""
        try:
            await self.redis.lpush(popped.key, *[encode_message(job_id) for job_id in reversed(popped.ids)])
        except Exception as exc:
            logger.warning("cannot give back %d messages: %s", len(popped.ids), exc, extra={"action": "pop"})

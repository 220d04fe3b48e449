"""The Redis side of dispatch: key templates and the message format, shared by the API and the workers.

Redis only carries hints (DESIGN rule 1): a message is a job id that *may* be ready. Single jobs go to the
priority list and batch jobs to the bulk list; a worker always takes from the priority list first, so a single
job never waits behind a large batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

PRIORITY_KEY = "{prefix}:queue:priority"
BULK_KEY = "{prefix}:queue:bulk"
DOMAIN_METHOD_KEY = "{prefix}:domain-method"
# The prefix of the sessions per tenant, tier and domain (crawlproject/sessions.py).
SESSION_KEY = "{prefix}:session"

# How many ids go into one RPUSH.
PUSH_CHUNK = 5000


@dataclass(frozen=True)
class QueueKeys:
    priority: str
    bulk: str

    @classmethod
    def for_prefix(cls, prefix: str) -> QueueKeys:
        return cls(PRIORITY_KEY.format(prefix=prefix), BULK_KEY.format(prefix=prefix))

    @property
    def in_order(self) -> tuple[str, str]:
        """The lists in the order a worker reads them."""
        return (self.priority, self.bulk)


def encode_message(job_id: uuid.UUID | str) -> str:
    """A job message: the job id's canonical text."""
    return job_id if isinstance(job_id, str) else str(job_id)


def decode_message(raw: bytes | str) -> uuid.UUID | None:
    """The job id in a message, or None for anything that is not one (never raises)."""
    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else raw
        return uuid.UUID(text.strip())
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None


def chunks(ids: Sequence[uuid.UUID | str], size: int = PUSH_CHUNK) -> list[list[str]]:
    """Messages for ``ids`` in RPUSH-sized chunks."""
    messages = [encode_message(job_id) for job_id in ids]
    return [messages[i : i + size] for i in range(0, len(messages), size)]


def redis_client(url: str) -> aioredis.Redis:
    """An asyncio Redis client that fails fast when Redis is down (redis-py 8 otherwise retries with backoff
    for seconds on every call, which would hold up a submission that only needs to know Redis is down)."""
    return aioredis.Redis.from_url(
        url, socket_connect_timeout=2, socket_timeout=10, retry=Retry(NoBackoff(), 0), retry_on_error=[]
    )

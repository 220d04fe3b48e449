"""The Redis side of dispatch: key templates, the message format and the fair scheduler, shared by the API and
the workers.

Redis only carries hints (DESIGN rule 1): a message is a job id that *may* be ready. A worker always takes from
the priority list (single jobs) first, so a single job never waits behind a batch. Batch jobs wait in the **fair
scheduler** (fair shares, ``CRAWLJOBS_FAIR_SHARES``, on by default): a list per batch, a rotation of the ready
batches of each tenant and a rotation of the tenants with ready batches; one pop (a Lua script, one round trip)
takes up to N ids in turns — a tenant at a time, and within a tenant a batch at a time — so a 20-URL batch is
not stuck behind another tenant's 50,000, nor behind its own tenant's. Off, batch jobs go to one FIFO list (the
bulk list), which workers still read (last), so either setting and a change of it lose nothing.

The keys, under ``<prefix>`` (``CRAWLJOBS_QUEUE_PREFIX``):

- ``<prefix>:queue:priority`` — single jobs' ids (a list);
- ``<prefix>:queue:bulk`` — batch jobs' ids in one FIFO list, with fair shares off;
- ``<prefix>:queue:batch:<tenant>:<batch_id>`` — one batch's ids (a list; ``:`` and ``%`` in the tenant are
  escaped as ``%3A`` and ``%25``); ``<prefix>:queue:tenant:<tenant>`` — the rotation of that tenant's batches
  with ids waiting (their list keys); ``<prefix>:queue:tenants`` — the rotation of tenants with batches waiting
  (their rotation keys);
- ``<prefix>:queue:backlog`` — one element (``1``) per id waiting in the batch lists: its length is their
  number, for an outside scaler (KEDA's Redis list scaler) and for the sweeper's count of lost messages;
- ``<prefix>:queue:wake`` — a few tokens pushed with each batch dispatch: idle workers block on it (BLPOP over
  the priority list, it and the bulk list), since a blocking pop cannot wait on lists it does not know;
- ``<prefix>:queue:tenant:<tenant>:full`` — set for a moment by a worker whose claim found the tenant at
  ``CRAWLJOBS_TENANT_MAX_IN_FLIGHT``: the pop passes the tenant over in the rotation until it expires.

The queued work is therefore ``LLEN priority + LLEN bulk + LLEN backlog``. Every change to the fair structure is
one script (atomic), so its rotations always name exactly the batch lists that hold ids; a script that finds the
structure empty also clears the backlog and the wake tokens, so any drift ends with the next empty queue.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

PRIORITY_KEY = "{prefix}:queue:priority"
BULK_KEY = "{prefix}:queue:bulk"
TENANTS_KEY = "{prefix}:queue:tenants"
BACKLOG_KEY = "{prefix}:queue:backlog"
WAKE_KEY = "{prefix}:queue:wake"
TENANT_KEY = "{prefix}:queue:tenant:{tenant}"
BATCH_KEY = "{prefix}:queue:batch:{tenant}:{batch}"
FULL_SUFFIX = ":full"
DOMAIN_METHOD_KEY = "{prefix}:domain-method"
# The prefix of the sessions per tenant, tier and domain (crawlproject/sessions.py).
SESSION_KEY = "{prefix}:session"

# How many ids go into one RPUSH (and one script call: Lua's unpack has a limit near 8,000).
PUSH_CHUNK = 5000
# Wake tokens kept at most: as many idle workers as this wake at once when a batch arrives.
WAKE_TOKENS = 64


def _escaped(tenant: str) -> str:
    return tenant.replace("%", "%25").replace(":", "%3A")


@dataclass(frozen=True)
class QueueKeys:
    priority: str
    bulk: str
    prefix: str = ""

    @classmethod
    def for_prefix(cls, prefix: str) -> QueueKeys:
        return cls(PRIORITY_KEY.format(prefix=prefix), BULK_KEY.format(prefix=prefix), prefix)

    @property
    def in_order(self) -> tuple[str, str]:
        """The plain lists in the order a worker reads them (the fair scheduler's batches between them)."""
        return (self.priority, self.bulk)

    @property
    def tenants(self) -> str:
        return TENANTS_KEY.format(prefix=self.prefix)

    @property
    def backlog(self) -> str:
        return BACKLOG_KEY.format(prefix=self.prefix)

    @property
    def wake(self) -> str:
        return WAKE_KEY.format(prefix=self.prefix)

    @property
    def depth(self) -> tuple[str, str, str]:
        """The lists whose lengths add up to the queued work: priority, bulk and the fair scheduler's backlog."""
        return (self.priority, self.bulk, self.backlog)

    def tenant(self, tenant: str) -> str:
        """The rotation of a tenant's batches."""
        return TENANT_KEY.format(prefix=self.prefix, tenant=_escaped(tenant))

    def batch(self, tenant: str, batch_id: str | None) -> str:
        """A batch's list (jobs without a batch, waiting because their tenant was full: batch id '')."""
        return BATCH_KEY.format(prefix=self.prefix, tenant=_escaped(tenant), batch=batch_id or "")


@dataclass(frozen=True)
class Queued:
    """A job's place in the queue: who it belongs to (a batch job goes to its batch's list)."""

    id: uuid.UUID | str
    tenant: str
    batch_id: str | None
    urgent: bool = False


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


# -- the fair scheduler ------------------------------------------------------------------------------------

# KEYS: the batch's list, its tenant's rotation, the tenants' rotation, the backlog, the wake list.
# ARGV: front (1: to the heads, as reclaimed jobs go), wake (how many wake tokens), then the ids in order.
# A batch whose list was empty joins its tenant's rotation, a tenant whose rotation was empty the tenants';
# with front, at the head of each (their jobs were due already); LPOS also puts back any entry found missing.
PUSH_SCRIPT = """
local batch, rotation, tenants, backlog, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local front = ARGV[1] == '1'
local n = #ARGV - 2
if n <= 0 then return 0 end
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
if front then
  local reversed = {}
  for i = n, 1, -1 do reversed[#reversed + 1] = ids[i] end
  redis.call('LPUSH', batch, unpack(reversed))
else
  redis.call('RPUSH', batch, unpack(ids))
end
local tokens = {}
for i = 1, n do tokens[i] = '1' end
redis.call('RPUSH', backlog, unpack(tokens))
if not redis.call('LPOS', rotation, batch) then
  if front then redis.call('LPUSH', rotation, batch) else redis.call('RPUSH', rotation, batch) end
end
if not redis.call('LPOS', tenants, rotation) then
  if front then redis.call('LPUSH', tenants, rotation) else redis.call('RPUSH', tenants, rotation) end
end
local w = math.min(tonumber(ARGV[2]), n)
if w > 0 then
  local wakes = {}
  for i = 1, w do wakes[i] = '1' end
  redis.call('RPUSH', wake, unpack(wakes))
  redis.call('LTRIM', wake, -tonumber(ARGV[2]), -1)
end
return n
"""

# KEYS: the priority list, the bulk list, the tenants' rotation, the backlog, the wake list.
# ARGV: how many ids at most, the suffix of a full tenant's mark.
# Returns groups, flat: source key, rotation key ('' for a plain list), count, ids... The priority list first
# (alone, as before); then turns: the tenant at the head of the rotation gives ids of the batch at the head of
# its own rotation — its share of what is still wanted, split between the tenants and its batches, at least one
# (all of it when one tenant has one batch: no turns to take; a few Redis calls per turn, not per id) — the
# batch and the tenant go to the tails of their rotations, or leave them when they have nothing more; a tenant
# marked full is passed over. The bulk list (fair shares off, or left from before) last.
POP_SCRIPT = """
local priority, bulk, tenants, backlog, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local want = tonumber(ARGV[1])
local full = ARGV[2]
local out = {}
local got = redis.call('LPOP', priority, want)
if got then
  out[1] = priority; out[2] = ''; out[3] = #got
  for i = 1, #got do out[#out + 1] = got[i] end
  return out
end
local groups = {}
local order = {}
local taken = 0
local passed = 0
while taken < want do
  local ntenants = redis.call('LLEN', tenants)
  if ntenants == 0 or passed >= ntenants then break end
  local rotation = redis.call('LINDEX', tenants, 0)
  if redis.call('EXISTS', rotation .. full) == 1 then
    redis.call('LMOVE', tenants, tenants, 'LEFT', 'RIGHT')
    passed = passed + 1
  else
    passed = 0
    local batch = redis.call('LINDEX', rotation, 0)
    if not batch then
      redis.call('LPOP', tenants)
    else
      local quantum = math.max(1, math.floor((want - taken) / (ntenants * redis.call('LLEN', rotation))))
      local ids = redis.call('LPOP', batch, quantum)
      if ids then
        local group = groups[batch]
        if not group then
          group = {rotation = rotation, ids = {}}
          groups[batch] = group
          order[#order + 1] = batch
        end
        for i = 1, #ids do group.ids[#group.ids + 1] = ids[i] end
        taken = taken + #ids
      end
      if redis.call('LLEN', batch) == 0 then
        redis.call('LPOP', rotation)
      else
        redis.call('LMOVE', rotation, rotation, 'LEFT', 'RIGHT')
      end
      if redis.call('LLEN', rotation) == 0 then
        redis.call('LPOP', tenants)
      else
        redis.call('LMOVE', tenants, tenants, 'LEFT', 'RIGHT')
      end
    end
  end
end
if taken > 0 then redis.call('LPOP', backlog, taken) end
if redis.call('LLEN', tenants) == 0 then
  redis.call('DEL', backlog)
  redis.call('DEL', wake)
end
if taken > 0 then
  for _, batch in ipairs(order) do
    local group = groups[batch]
    out[#out + 1] = batch; out[#out + 1] = group.rotation; out[#out + 1] = #group.ids
    for i = 1, #group.ids do out[#out + 1] = group.ids[i] end
  end
  return out
end
got = redis.call('LPOP', bulk, want)
if got then
  out[1] = bulk; out[2] = ''; out[3] = #got
  for i = 1, #got do out[#out + 1] = got[i] end
end
return out
"""


@dataclass(frozen=True)
class Group:
    """Messages popped from one list: ``rotation`` is the tenant rotation of a batch list ('' for a plain list)."""

    key: str
    rotation: str
    messages: list[bytes | str]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_groups(reply: Sequence[bytes | str | int]) -> list[Group]:
    """The pop script's flat reply as groups."""
    groups: list[Group] = []
    i = 0
    while i < len(reply):
        key, rotation, count = _text(reply[i]), _text(reply[i + 1]), int(reply[i + 2])  # type: ignore[arg-type]
        messages = [m for m in reply[i + 3 : i + 3 + count] if not isinstance(m, int)]
        groups.append(Group(key, rotation, messages))
        i += 3 + count
    return groups


class Scheduler:
    """The fair scheduler's two operations on one Redis client: push a batch's ids (to the tails, or with
    `front` to the heads) and pop up to N ids in turns. The scripts are sent by EVALSHA (loaded again after a
    restart or a SCRIPT FLUSH)."""

    def __init__(self, redis: aioredis.Redis, keys: QueueKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._push = redis.register_script(PUSH_SCRIPT)
        self._pop = redis.register_script(POP_SCRIPT)

    async def push(
        self,
        pipe: aioredis.client.Pipeline,
        tenant: str,
        batch_id: str | None,
        ids: Sequence[uuid.UUID | str],
        *,
        front: bool = False,
        wake: bool = True,
    ) -> None:
        """Queue the push of one batch's ids on `pipe` (chunked; with `front` the last chunk first)."""
        parts = chunks(ids)
        if front:
            parts.reverse()
        keys = [self.keys.batch(tenant, batch_id), self.keys.tenant(tenant), self.keys.tenants]
        keys += [self.keys.backlog, self.keys.wake]
        for part in parts:
            await self._push(
                keys=keys, args=["1" if front else "0", WAKE_TOKENS if wake else 0, *part], client=pipe
            )

    async def push_all(self, jobs: Iterable[Queued], *, front: bool = False, wake: bool = True) -> None:
        """Push jobs of any batches and tenants, each to its batch's list, in one pipeline."""
        by_batch: dict[tuple[str, str | None], list[uuid.UUID | str]] = {}
        for job in jobs:
            by_batch.setdefault((job.tenant, job.batch_id), []).append(job.id)
        if not by_batch:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for (tenant, batch_id), ids in by_batch.items():
                await self.push(pipe, tenant, batch_id, ids, front=front, wake=wake)
            await pipe.execute()

    async def pop(self, want: int) -> list[Group]:
        """Up to `want` messages: the priority list's, else the batches' in turns, else the bulk list's."""
        keys = [self.keys.priority, self.keys.bulk, self.keys.tenants, self.keys.backlog, self.keys.wake]
        reply = await self._pop(keys=keys, args=[want, FULL_SUFFIX])
        return parse_groups(reply)

    async def give_back(self, group: Group, ids: Sequence[uuid.UUID]) -> None:
        """Messages popped but not claimed back to the head of the list they came from, in their order."""
        if not ids:
            return
        messages = [encode_message(job_id) for job_id in ids]
        if not group.rotation:
            await self.redis.lpush(group.key, *reversed(messages))
            return
        keys = [group.key, group.rotation, self.keys.tenants, self.keys.backlog, self.keys.wake]
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in reversed(chunks(messages)):
                await self._push(keys=keys, args=["1", 0, *part], client=pipe)
            await pipe.execute()

    async def mark_full(self, tenants: Iterable[str], *, seconds: float) -> None:
        """Pass these tenants over in the rotation for `seconds` (their claims found them at their limit)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for tenant in set(tenants):
                pipe.set(self.keys.tenant(tenant) + FULL_SUFFIX, "1", px=max(1, int(seconds * 1000)))
            await pipe.execute()


# Every queued message, read atomically (tests, the fault harness, an operator's look): the priority list, the
# batches' lists through the rotations, the bulk list. KEYS: priority, bulk, tenants.
QUEUED_SCRIPT = """
local out = {}
local function add(key)
  for _, m in ipairs(redis.call('LRANGE', key, 0, -1)) do out[#out + 1] = m end
end
add(KEYS[1])
for _, rotation in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  for _, batch in ipairs(redis.call('LRANGE', rotation, 0, -1)) do add(batch) end
end
add(KEYS[2])
return out
"""

"""The per-key request rate limit (CRAWLJOBS_RATE_LIMIT_PER_SECOND, CRAWLJOBS_RATE_LIMIT_BURST): a token bucket
per API key, in Redis.

In Redis rather than in each API process: API processes sit behind one address, a client's requests land on any
of them, and buckets per process would let a key through at the limit times the number of processes (and reset
with each restart). A bucket is one small hash (``<prefix>:ratelimit:<key hash>``: tokens and when they were
counted), refilled at the rate up to the burst and spent by one script (one round trip, atomic, Redis's own
clock so that the API processes' clocks need not agree); it expires once it would be full again. Redis down:
requests are let through (a hint being gone must not shut every client out; the other limits still hold).
"""

from __future__ import annotations

import logging
import math

import redis.asyncio as aioredis

from crawljobs.exceptions import RateLimited

logger = logging.getLogger(__name__)

BUCKET_KEY = "{prefix}:ratelimit:{key}"

# KEYS: the bucket. ARGV: rate (tokens a second), burst. Returns 0 when a token was taken, else the
# milliseconds until one will be there.
TAKE_SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if not tokens then tokens, at = burst, ms end
tokens = math.min(burst, tokens + (ms - at) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ms', ms)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return wait
"""


def default_burst(rate: float) -> int:
    """Ten seconds' worth of requests, at least one."""
    return max(1, math.ceil(rate * 10))


class RateLimiter:
    def __init__(self, redis: aioredis.Redis | None, prefix: str, *, rate: float, burst: int | None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.rate = rate
        self.burst = burst if burst is not None else default_burst(rate)
        self._take = redis.register_script(TAKE_SCRIPT) if redis is not None else None

    async def take(self, key_hash: str) -> None:
        """Spend one request of this key, or RateLimited (with the seconds until the next one may come)."""
        if self._take is None:
            return
        try:
            wait_ms = int(
                await self._take(
                    keys=[BUCKET_KEY.format(prefix=self.prefix, key=key_hash)], args=[self.rate, self.burst]
                )
            )
        except (aioredis.RedisError, OSError) as exc:
            logger.warning("rate limit not checked (Redis): %s", exc, extra={"action": "rate_limit"})
            return
        if wait_ms > 0:
            raise RateLimited(
                f"this API key may make {self.rate:g} requests a second (bursts of {self.burst}); "
                "retry after the time in Retry-After",
                retry_after=max(1, math.ceil(wait_ms / 1000)),
            )

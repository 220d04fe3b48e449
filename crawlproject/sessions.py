"""Sessions per domain: a challenge passed once is not paid for again.

When a render passes a JavaScript challenge (``settling``: the page looked like one, navigated itself, and no
longer does), the cookies the browser then holds for the page's URL and the profile that earned them (for now
the User-Agent it sent: the stand-in for the browser profile) are kept in Redis, shared by every worker, per
**tenant**, domain and proxy tier, for ``CRAWLJOBS_SESSION_TTL_SECONDS``:
``<prefix>:session:<len(tenant)>:<tenant>:<tier>:<domain>`` (the length makes the key unambiguous whatever the
tenant's name holds). Per tenant as the domain memory is (``memory``): one tenant's cookies are its own, and
never reach another tenant's jobs, any more than its browser contexts do (``SessionMiddleware`` gives every
tenant contexts of its own).

Later jobs of the tenant's domain use the session of the tier they fetch through:

- the ladder starts them at the cheapest non-browser method of a tier that has a session when the domain's
  memory would start them in that tier's browser (``cheaper_start``): the rest of a batch goes at HTTP cost;
- the ``http`` engine (and any other non-browser engine) sends the cookies as a ``Cookie`` header and the
  profile's User-Agent, through the proxy that earned them when it is still in the tier's pool;
- a browser context gets the cookies before its page opens (``rendering``).

A request that carried a session and was blocked (``blocks``) retires it (only that session: a newer one kept
meanwhile by another worker stays), and the job climbs as it would have; the browser passing the challenge
again keeps a new one. Off with ``CRAWLJOBS_SESSION_TTL_SECONDS=0``.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from scrapy import Request
from scrapy.crawler import Crawler

from crawljobs.lifecycle import ClaimedJob
from crawljobs.queue import SESSION_KEY
from crawlproject.config import WorkerConfig
from crawlproject.context import WorkerContext
from crawlproject.methods import TIERS, Method, Tier, domain_of

logger = logging.getLogger(__name__)

# request.meta: the session a request carries (its cookies and profile applied), and the headers it set.
SESSION = "crawljobs_session"
SESSION_HEADERS = "crawljobs_session_headers"
# request.meta, left by a render that passed a challenge: the browser's cookies for the page and its agent.
EARNED = "crawljobs_earned_session"

MAX_COOKIES = 50
MAX_COOKIE_BYTES = 8192  # the Cookie header of a session at most (servers refuse larger heads)

# Compare-and-delete: retire the session only if it is still the one that was blocked.
_RETIRE = """
local value = redis.call('GET', KEYS[1])
if value and cjson.decode(value)['id'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Session:
    """Cookies that passed a domain's challenge, and the profile (User-Agent) and proxy that earned them."""

    id: str
    tier: Tier
    domain: str
    cookies: tuple[dict[str, Any], ...]
    user_agent: str | None = None
    proxy: str | None = None  # host:port of the proxy that earned it (None: the direct tier)
    created_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "tier": self.tier,
                "domain": self.domain,
                "cookies": list(self.cookies),
                "user_agent": self.user_agent,
                "proxy": self.proxy,
                "created_at": self.created_at,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Session | None:
        try:
            data = json.loads(text)
            cookies = tuple(
                c for c in data["cookies"] if isinstance(c, dict) and "name" in c and "value" in c
            )
            tier = data["tier"]
            if tier not in TIERS:
                return None
            return cls(
                id=str(data["id"]),
                tier=tier,
                domain=str(data["domain"]),
                cookies=cookies,
                user_agent=data.get("user_agent"),
                proxy=data.get("proxy"),
                created_at=float(data.get("created_at") or 0),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def cookie_header(self, url: str, *, now: float | None = None) -> str | None:
        """The ``Cookie`` header the browser would send to ``url`` with these cookies (RFC 6265 matching of
        domain, path, Secure and expiry), or None when none applies."""
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
        path = parts.path or "/"
        now = time.time() if now is None else now
        pairs = []
        for cookie in sorted(self.cookies, key=lambda c: -len(str(c.get("path") or "/"))):
            domain = str(cookie.get("domain") or "").lower()
            if domain.startswith("."):
                if not (host == domain[1:] or host.endswith(domain)):
                    continue
            elif host != domain:
                continue
            cookie_path = str(cookie.get("path") or "/")
            if not (path == cookie_path or path.startswith(cookie_path.rstrip("/") + "/")):
                continue
            if cookie.get("secure") and parts.scheme != "https":
                continue
            expires = cookie.get("expires")
            if isinstance(expires, int | float) and 0 < expires <= now:
                continue
            pairs.append(f"{cookie['name']}={cookie['value']}")
        header = "; ".join(pairs)
        return header[:MAX_COOKIE_BYTES] if header else None


def session_key(prefix: str, tenant: str, tier: str, domain: str) -> str:
    return f"{prefix}:{len(tenant)}:{tenant}:{tier}:{domain}"


def proxy_identity(proxy_url: str | None) -> str | None:
    """host:port of a proxy URL (its credentials are never stored)."""
    if not proxy_url:
        return None
    parts = urlsplit(proxy_url)
    return f"{parts.hostname}:{parts.port}"


def cheaper_start(ladder: Sequence[Method], index: int, tiers_with_sessions: set[str]) -> int:
    """Where a job starts when its domain has sessions: a browser method of a tier with a session gives way
    to that tier's cheapest other method on the ladder (the session passes the challenge at HTTP cost)."""
    method = ladder[index]
    if method.engine != "browser" or method.tier not in tiers_with_sessions:
        return index
    for position, other in enumerate(ladder):
        if other.tier == method.tier and other.engine != "browser":
            return position
    return index


class Sessions:
    """The sessions of one crawler, on the worker context's Redis client (see the module docstring)."""

    _KEY: ClassVar[str] = "_crawljobs_sessions"

    def __init__(self, redis: Callable[[], aioredis.Redis | None], prefix: str, ttl: int) -> None:
        self._redis = redis
        self.prefix = prefix
        self.ttl = ttl

    @classmethod
    def of(cls, crawler: Crawler) -> Sessions:
        sessions: Sessions | None = getattr(crawler, cls._KEY, None)
        if sessions is None:
            settings = WorkerConfig.of(crawler).settings
            context = WorkerContext.of(crawler)
            ttl = settings.session_ttl_seconds
            sessions = cls(
                lambda: context.redis if ttl > 0 else None,
                SESSION_KEY.format(prefix=settings.queue_prefix),
                ttl,
            )
            setattr(crawler, cls._KEY, sessions)
        return sessions

    def key(self, tenant: str, tier: str, url: str) -> str:
        return session_key(self.prefix, tenant, tier, domain_of(url))

    async def tiers(self, jobs: Sequence[ClaimedJob]) -> list[set[str]]:
        """For each job, the tiers its tenant holds a session of for its domain (one round-trip for all)."""
        redis = self._redis()
        if redis is None or not jobs:
            return [set() for _ in jobs]
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for job in jobs:
                    for tier in TIERS:
                        pipe.exists(self.key(job.tenant, tier, job.url))
                found = await pipe.execute()
        except Exception as exc:
            logger.info("sessions unavailable: %s", exc)
            return [set() for _ in jobs]
        return [{tier for j, tier in enumerate(TIERS) if found[i * len(TIERS) + j]} for i in range(len(jobs))]

    async def recall(self, tenant: str, tier: str, url: str) -> Session | None:
        redis = self._redis()
        if redis is None:
            return None
        try:
            value = await redis.get(self.key(tenant, tier, url))
        except Exception as exc:
            logger.info("sessions unavailable: %s", exc)
            return None
        return Session.from_json(value) if value else None

    async def keep(
        self,
        job: ClaimedJob,
        tier: Tier,
        url: str,
        cookies: Sequence[dict[str, Any]],
        *,
        user_agent: str | None,
        proxy: str | None,
    ) -> Session | None:
        redis = self._redis()
        if redis is None or not cookies:
            return None
        session = Session(
            id=secrets.token_hex(8),
            tier=tier,
            domain=domain_of(url),
            cookies=tuple(dict(c) for c in cookies[:MAX_COOKIES]),
            user_agent=user_agent[:512] if user_agent else None,
            proxy=proxy_identity(proxy),
        )
        try:
            await redis.set(self.key(job.tenant, tier, url), session.to_json(), ex=self.ttl)
        except Exception as exc:
            logger.info("sessions unavailable: %s", exc)
            return None
        logger.info(
            "kept a session of %d cookies for %s (%s)",
            len(session.cookies),
            session.domain,
            tier,
            extra={"job_id": str(job.id), "action": "session_kept"},
        )
        return session

    async def retire(self, job: ClaimedJob, session: Session) -> None:
        redis = self._redis()
        if redis is None:
            return
        key = session_key(self.prefix, job.tenant, session.tier, session.domain)
        try:
            await redis.eval(_RETIRE, 1, key, session.id)
        except Exception as exc:
            logger.info("sessions unavailable: %s", exc)
            return
        logger.info(
            "retired the session for %s (%s): its request was blocked",
            session.domain,
            session.tier,
            extra={"job_id": str(job.id), "action": "session_retired"},
        )


class SessionMiddleware:
    """Applies a tenant's session of the domain to the request's method (cookies and profile for the http
    engines, cookies for the browser's context), and gives every tenant browser contexts of its own."""

    def __init__(self, crawler: Crawler) -> None:
        self.sessions = Sessions.of(crawler)
        self.plan = WorkerContext.of(crawler).plan

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SessionMiddleware:
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        job: ClaimedJob | None = request.meta.get("job")
        if job is None:
            return None
        meta = request.meta
        method: Method = meta["ladder"][meta["method_index"]]
        for name in meta.pop(SESSION_HEADERS, ()):  # what an earlier attempt's session set
            request.headers.pop(name, None)
        meta.pop(SESSION, None)
        meta.pop(EARNED, None)
        if method.engine == "browser":
            # The cookie jar is the context's: one tenant's cookies must never be sent for another's jobs.
            context = meta.get("playwright_context")
            if context:
                meta["playwright_context"] = f"{context}@{len(job.tenant)}:{job.tenant}"
        session = await self.sessions.recall(job.tenant, method.tier, request.url)
        if session is None:
            return None
        meta[SESSION] = session
        if method.engine == "browser":
            return None  # its cookies go into the context (rendering), its profile is the browser's own
        header = session.cookie_header(request.url)
        if header is None:
            return None
        request.headers["Cookie"] = header
        applied = ["Cookie"]
        if session.user_agent:
            request.headers["User-Agent"] = session.user_agent
            applied.append("User-Agent")
        meta[SESSION_HEADERS] = applied
        if session.proxy is not None and method.tier != "direct":
            pool = self.plan.pools.get(method.tier)
            same = (
                next((url for url in pool.urls if proxy_identity(url) == session.proxy), None)
                if pool
                else None
            )
            if same is not None:
                meta["proxy"] = meta["crawljobs_proxy"] = same
        return None

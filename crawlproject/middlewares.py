"""Downloader middlewares of the crawl worker.

- ``FetchMethodMiddleware`` applies a request's current method: a proxy of its tier for the http and impersonate
  engines (the latter marked for ``impersonate.ImpersonateHandler``), a Playwright context (one per proxy) for
  the browser engine.
- ``NetworkGuardMiddleware`` refuses targets the network rules forbid before anything is sent: literal
  addresses, and for proxied and browser requests the resolved host (direct http requests are checked by
  ``GuardedResolver`` on the very address they connect to). Redirects pass through it again.
- ``JobRetryMiddleware`` decides, after each attempt, whether the job is done, retried (backoff), escalated
  to the next method, or failed; it records every attempt and starts each new one through the fenced store.
- ``DecompressionMiddleware``, ``JobRedirectMiddleware`` and ``JobMetaRefreshMiddleware`` are Scrapy's, but
  a body that inflates past the size limit or a redirect chain over the limit fails the attempt (a typed
  error in ``request.meta[LIMIT_FAILURE]``, read by ``JobRetryMiddleware``) instead of raising IgnoreRequest
  from ``process_response``, which no middleware sees: no attempt was recorded, and Scrapy's text was the
  job's error.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.httpcompression import HttpCompressionMiddleware
from scrapy.downloadermiddlewares.redirect import MetaRefreshMiddleware, RedirectMiddleware
from scrapy.exceptions import CannotResolveHostError, IgnoreRequest
from scrapy.http import Response, TextResponse
from twisted.internet.error import DNSLookupError

from crawljobs.exceptions import UrlRejected
from crawljobs.lifecycle import AttemptRecord, ClaimedJob
from crawljobs.urls import NetworkPolicy, parse_ip_literal, resolve_and_check
from crawlproject.blocks import DEFAULT_RULES, Block, detect_block
from crawlproject.config import WorkerConfig
from crawlproject.context import WorkerContext
from crawlproject.egress import REFUSED_HEADER
from crawlproject.errors import (
    AddressForbidden,
    AddressRefused,
    DecompressedBodyTooLarge,
    ForbiddenByRobots,
    RenderAbandoned,
    TooManyRedirects,
)
from crawlproject.impersonate import META_KEY as IMPERSONATE
from crawlproject.items import JobResult, failure_result
from crawlproject.memory import DomainMemory
from crawlproject.methods import Method, next_method
from crawlproject.resolver import GuardedResolver
from crawlproject.retrying import BODY_TOO_LARGE, NEVER_SENT, Outcome, cause_of, classify, decide
from crawlproject.sessions import EARNED, SESSION, Session, Sessions
from crawlproject.settling import SELECTOR_MISSING

logger = logging.getLogger(__name__)


# Where a middleware that ran before JobRetryMiddleware leaves the error that failed the attempt.
LIMIT_FAILURE = "crawljobs_limit_failure"

# The headers the block rules read (decoding all of a response's headers for each page cost more).
BLOCK_HEADERS = tuple({signature.header for signature in DEFAULT_RULES.header_signatures})


def block_headers(response: Response) -> dict[str, str]:
    found = {}
    for name in BLOCK_HEADERS:
        value = response.headers.get(name)
        if value is not None:
            found[name] = value.decode("latin-1")
    return found


def current_method(request: Request) -> Method:
    method: Method = request.meta["ladder"][request.meta["method_index"]]
    return method


class FetchMethodMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.context = WorkerContext.of(crawler)
        self.plan = self.context.plan
        self.identities = WorkerConfig.of(crawler).identities

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> FetchMethodMiddleware:
        return cls(crawler)

    def process_request(self, request: Request) -> None:
        if "job" not in request.meta:
            return None
        method = current_method(request)
        meta = request.meta
        meta["crawljobs_started"] = time.monotonic()
        meta["crawljobs_started_at"] = datetime.now(UTC)
        proxy = self.plan.pools[method.tier].pick() if method.tier != "direct" else None
        meta["crawljobs_proxy"] = proxy
        if method.engine in ("http", "impersonate"):
            meta.pop("playwright", None)
            if method.engine == "impersonate":
                meta[IMPERSONATE] = (
                    True  # crawlproject.impersonate: curl, with Chrome's handshake and headers
                )
            else:
                meta.pop(IMPERSONATE, None)
            if proxy is None:
                meta.pop("proxy", None)
                request.headers.pop(b"Proxy-Authorization", None)
            else:
                meta["proxy"] = proxy
            return None
        meta.pop("proxy", None)
        meta.pop(IMPERSONATE, None)
        request.headers.pop(b"Proxy-Authorization", None)
        meta["playwright"] = True
        meta["playwright_page_goto_kwargs"] = {"wait_until": "load"}
        if proxy is None:
            # Direct: through the egress guard, which checks every connection Chromium opens (redirect hops
            # included, which Playwright's request interception never sees) on the address it connects to.
            guard = self.context.egress
            if guard is None:  # WorkerContext.manager() starts it before any request: fail closed anyway
                raise AddressForbidden("the browser's egress guard is not running")
            name = "direct-guarded"
            proxy_option = guard.playwright_proxy
        else:
            parts = urlsplit(proxy)
            name = f"{method.tier}-{parts.hostname}-{parts.port}"
            proxy_option = {
                "server": f"{parts.scheme}://{parts.hostname}:{parts.port}",
                "username": parts.username or "",
                "password": parts.password or "",
            }
        # One profile per context (crawlproject.profiles): the context's options say it, the page's CDP
        # override (crawlproject.rendering) says the rest.
        identities = self.identities
        profile = identities.for_context(method.tier, name)
        meta["crawljobs_profile"] = profile
        meta["playwright_context"] = f"{name}-{profile.key}"
        meta["playwright_context_kwargs"] = {
            "proxy": proxy_option,
            **profile.context_options(launch_region=identities.region),
        }
        return None


class NetworkGuardMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        self.policy: NetworkPolicy = WorkerConfig.of(crawler).network

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> NetworkGuardMiddleware:
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        host = urlsplit(request.url).hostname or ""
        literal = parse_ip_literal(host)
        if literal is not None:
            reason = self.policy.refusal(literal)
            if reason is not None:
                raise AddressForbidden(reason)
            return None
        if request.meta.get("proxy") or request.meta.get("playwright"):
            try:
                await resolve_and_check(host, self.policy)
            except UrlRejected as exc:
                raise AddressForbidden(exc.message) from None
        return None


class JobRetryMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.context = WorkerContext.of(crawler)
        self.plan = self.context.plan
        self.max_body_bytes = WorkerConfig.of(crawler).max_body_bytes
        self._memory = DomainMemory.of(crawler)
        self._sessions = Sessions.of(crawler)
        self.rng = random.Random()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> JobRetryMiddleware:
        return cls(crawler)

    async def memory(self) -> DomainMemory:
        """The domain memory, on the context's Redis client (opened first)."""
        await self.context.manager()
        return self._memory

    def _record(
        self,
        request: Request,
        job: ClaimedJob,
        *,
        status: int | None,
        outcome: str,
        error: str | None,
        charged: bool = True,
    ) -> None:
        """Record the attempt; it costs its method's weight unless the request never left (``charged``)."""
        method = current_method(request)
        started = request.meta.get("crawljobs_started", time.monotonic())
        if charged:
            job.cost += self.plan.cost(method)
        job.attempts.append(
            AttemptRecord(
                job_id=job.id,
                attempt=job.attempt,
                method=method.name,
                worker=self.context.worker_id,
                started_at=request.meta.get("crawljobs_started_at", datetime.now(UTC)),
                duration_ms=int((time.monotonic() - started) * 1000),
                http_status=status,
                outcome=outcome,
                error=error,
            )
        )
        stats = self.crawler.stats
        if stats is not None:
            stats.inc_value(f"crawljobs/attempts/{method.name}/{outcome}")
        proxy = request.meta.get("crawljobs_proxy")
        if proxy is not None:
            self.plan.pools[method.tier].report(proxy, ok=outcome in ("ok", "permanent"))

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        job: ClaimedJob | None = request.meta.get("job")
        if job is None:
            return response
        outcome: Outcome
        failure: Exception | None = request.meta.pop(LIMIT_FAILURE, None)
        # Set by this attempt's render only (crawlproject.settling): the job's wait_for never matched.
        selector_missing: str | None = request.meta.pop(SELECTOR_MISSING, None)
        if failure is not None:
            request.meta["crawljobs_block"] = None
            outcome, reason = classify(status=None, exception=failure, block=None)
            return await self._after_attempt(
                request, job, outcome=outcome, reason=reason, status=response.status, response=response
            )
        method = current_method(request)
        raw_type = response.headers.get(b"Content-Type")
        content_type = raw_type.decode("latin-1") if raw_type else None
        block = detect_block(
            status=response.status,
            headers=block_headers(response),
            body=response.body,
            content_type=content_type,
            rendered=method.engine == "browser",
        )
        request.meta["crawljobs_block"] = block  # what _escalation_target reads
        outcome, reason = classify(status=response.status, exception=None, block=block)
        if method.engine == "browser" and method.tier == "direct" and response.headers.get(REFUSED_HEADER):
            # The egress guard refused what the browser asked for (a redirect, say): not a block to climb.
            text = " ".join(response.text.split()) if isinstance(response, TextResponse) else ""
            outcome, reason = "permanent", text[:300] or "refused by the network rules"
        if outcome == "ok" and selector_missing is not None:
            # Not a block, but not the page the job asked for: it named the element it needs.
            outcome, reason = "permanent", selector_missing
        html: str | None = None
        if outcome == "ok":
            if not isinstance(response, TextResponse):
                outcome, reason = (
                    "permanent",
                    f"content of type {content_type or 'unknown'} cannot be stored as text",
                )
            else:
                html = response.text.replace("\x00", "")
        retry_after = response.headers.get(b"Retry-After")
        return await self._after_attempt(
            request,
            job,
            outcome=outcome,
            reason=reason,
            status=response.status,
            retry_after=retry_after.decode("latin-1") if retry_after else None,
            response=response,
            html=html,
            content_type=content_type,
        )

    async def process_exception(self, request: Request, exception: Exception) -> Request | Response | None:
        job: ClaimedJob | None = request.meta.get("job")
        if job is None or isinstance(exception, RenderAbandoned):
            return None  # (a render the worker closed: the job is not its own any more, or given back)
        request.meta["crawljobs_block"] = None
        outcome: Outcome
        cause = cause_of(exception)
        if isinstance(cause, (DNSLookupError, CannotResolveHostError)) and not isinstance(
            cause, AddressRefused
        ):
            # Twisted's endpoint reports a name whose answer the resolver refused as one with no results.
            resolver = GuardedResolver.installed()
            refusal = resolver.refusal(urlsplit(request.url).hostname or "") if resolver else None
            cause = AddressRefused(refusal) if refusal is not None else cause
        if isinstance(cause, (AddressForbidden, AddressRefused)):
            outcome, reason = "permanent", f"refused by the network rules: {cause}"
        elif isinstance(cause, ForbiddenByRobots):
            outcome, reason = "permanent", "forbidden by the site's robots.txt"
        elif isinstance(cause, BODY_TOO_LARGE):
            outcome = "permanent"
            reason = f"the page is larger than CRAWLJOBS_MAX_BODY_BYTES ({self.max_body_bytes} bytes)"
        else:
            outcome, reason = classify(status=None, exception=exception, block=None)
        # A name that does not resolve, an address the rules refuse, robots.txt's no: nothing was fetched (and
        # no proxy paid), so the attempt is recorded at no cost.
        charged = not isinstance(cause, NEVER_SENT)
        result = await self._after_attempt(
            request, job, outcome=outcome, reason=reason, status=None, charged=charged
        )
        return result if isinstance(result, Request) else None

    async def _after_attempt(
        self,
        request: Request,
        job: ClaimedJob,
        *,
        outcome: Outcome,
        reason: str,
        status: int | None,
        retry_after: str | None = None,
        response: Response | None = None,
        html: str | None = None,
        content_type: str | None = None,
        charged: bool = True,
    ) -> Request | Response:
        error = None if outcome == "ok" else reason
        self._record(request, job, status=status, outcome=outcome, error=error, charged=charged)
        await self._sessions_after(request, job, outcome)
        ladder: list[Method] = request.meta["ladder"]
        index: int = request.meta["method_index"]
        target = self._escalation_target(ladder, index, request.meta.get("crawljobs_block"))
        # The retry budget (crawljobs.lifecycle): transient failures spend the job's retries, blocks climb the
        # ladder and spend none; a lost lease is the sweeper's to count.
        decision = decide(
            outcome=outcome,
            reason=reason,
            attempt=job.tries,
            max_attempts=job.max_tries,
            can_escalate=target is not None,
            retry_after=retry_after,
            rng=self.rng,
        )
        if decision.action in ("escalate", "retry"):
            if decision.action == "escalate":
                assert target is not None
                index = target
            elif decision.delay > 0:
                await asyncio.sleep(decision.delay)
            if not await self.context.leases.next_attempt(job, retry=decision.action == "retry"):
                raise IgnoreRequest(f"job {job.id} is no longer held by this worker")
            meta = {**request.meta, "method_index": index}
            meta.pop("redirect_times", None)
            meta.pop("redirect_urls", None)
            return request.replace(url=job.url, meta=meta, dont_filter=True)
        method = ladder[index]
        if decision.action == "done" and response is not None:
            request.meta["crawljobs_result"] = JobResult(
                job=job,
                status="completed",
                html=html,
                http_status=status,
                final_url=response.url,
                content_type=content_type,
                success_method=method.name,
                attempts=job.attempts,
            )
            if not (job.render or job.premium or job.ultra_premium):
                await (await self.memory()).remember(job, method)
        else:
            request.meta["crawljobs_result"] = failure_result(job, decision.reason, http_status=status)
        if response is not None:
            return response
        raise IgnoreRequest(decision.reason)

    async def _sessions_after(self, request: Request, job: ClaimedJob, outcome: Outcome) -> None:
        """Sessions (``crawlproject.sessions``): a blocked request retires the session it carried; a render
        that passed a challenge keeps what it earned for the tenant's later jobs of the domain."""
        used: Session | None = request.meta.get(SESSION)
        earned = request.meta.pop(EARNED, None)
        if outcome == "blocked" and used is not None:
            await self.context.manager()
            await self._sessions.retire(job, used)
        elif outcome == "ok" and earned is not None:
            await self.context.manager()
            await self._sessions.keep(
                job,
                current_method(request).tier,
                earned["url"],
                earned["cookies"],
                user_agent=earned.get("user_agent"),
                proxy=request.meta.get("crawljobs_proxy"),
            )

    @staticmethod
    def _escalation_target(ladder: list[Method], index: int, block: Block | None) -> int | None:
        """The next method up; for a page that needs JavaScript, the next browser method."""
        needs_browser = block is not None and block.kind == "needs_javascript"
        return next_method(ladder, index, engine="browser" if needs_browser else None)


class DecompressionMiddleware(HttpCompressionMiddleware):
    def process_response(
        self, request: Request, response: Response, spider: Spider | None = None
    ) -> Request | Response:
        try:
            return super().process_response(request, response)
        except IgnoreRequest:  # Scrapy's raises it for nothing but a body over DOWNLOAD_MAXSIZE once inflated
            limit = request.meta.get("download_maxsize", self._max_size)
            request.meta[LIMIT_FAILURE] = DecompressedBodyTooLarge(
                f"body too large (decompressed): the page inflates past CRAWLJOBS_MAX_BODY_BYTES ({limit} bytes)"
            )
            return response


class JobRedirectMiddleware(RedirectMiddleware):
    def process_response(
        self, request: Request, response: Response, spider: Spider | None = None
    ) -> Request | Response:
        try:
            return super().process_response(request, response)
        except IgnoreRequest:  # raised for nothing but a chain over REDIRECT_MAX_TIMES
            request.meta[LIMIT_FAILURE] = TooManyRedirects(
                f"too many redirects (more than {self.max_redirect_times})"
            )
            return response


class JobMetaRefreshMiddleware(MetaRefreshMiddleware):
    def process_response(
        self, request: Request, response: Response, spider: Spider | None = None
    ) -> Request | Response:
        try:
            return super().process_response(request, response)
        except IgnoreRequest:  # the same limit, for <meta http-equiv="refresh"> chains
            request.meta[LIMIT_FAILURE] = TooManyRedirects(
                f"too many redirects (more than {self.max_redirect_times})"
            )
            return response

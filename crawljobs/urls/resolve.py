"""The look-ups and address checks of submit time (`check_urls`) and of fetch time (`resolve_and_check`).

Submit time resolves each distinct hostname once, within a time bound, and refuses what resolves to a refused
address; fetch time resolves again and hands the worker only addresses that were checked, which defeats DNS
rebinding.
"""

from __future__ import annotations

import asyncio
import logging
import re
import reprlib
import socket
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from crawljobs.exceptions import UrlRejected
from crawljobs.urls.hosts import address_text, parse_ip_literal
from crawljobs.urls.normalise import DEFAULT_MAX_LENGTH, normalize_url_and_host
from crawljobs.urls.policy import (
    NetworkPolicy,
    check_host,
    local_addresses,
    resolved_refusal,
    with_allow_hint,
)

logger = logging.getLogger(__name__)

Resolver = Callable[[str], Awaitable[list[str]]]
"""Resolve a host name to a list of address strings; raise OSError when it does not resolve."""

DNS_CONCURRENCY = 32
INLINE_URLS = 16  # a check of so few URLs (a job, a callback URL) runs on the event loop: a thread costs more
CHECK_CHUNK = 500  # URLs normalised per turn of the checking thread (a few tens of milliseconds)
_CHECKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="url-check")
_RAW_INPUT_CHARS = 300  # how much of the raw input a rejection reports


async def system_resolver(host: str) -> list[str]:
    """The addresses the system resolver gives for `host`, each once, in its order; OSError if none."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except UnicodeError as exc:  # the stdlib's IDNA codec refuses the name (a label too long...)
        raise OSError(f"cannot resolve {host!r}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_and_check(
    host: str, policy: NetworkPolicy, resolver: Resolver = system_resolver
) -> list[str]:
    """For fetch time: the addresses of `host`, all checked; connect to one of them, never look up again.

    Raises UrlRejected when any address is refused (a name answering both public and private addresses is
    treated as hostile) or when the host does not resolve. An IP literal is checked without a look-up; an
    always-local name (``localhost``) gives the addresses it means that the policy allows.
    """
    addr = parse_ip_literal(host)
    if addr is not None:
        reason = policy.refusal(addr)
        if reason is not None:
            raise UrlRejected(reason)
        return [address_text(addr)]
    bare = host.lower().rstrip(".")
    local = local_addresses(bare, policy)
    if local is not None:
        return [address_text(a) for a in local]
    try:
        addresses = list(dict.fromkeys(await resolver(host)))
    except (OSError, ValueError) as exc:  # ValueError: a name the resolver cannot even encode
        raise UrlRejected(f"host {host} does not resolve") from exc
    if not addresses:
        raise UrlRejected(f"host {host} does not resolve")
    reason = resolved_refusal(host, addresses, policy)
    if reason is not None:
        raise UrlRejected(reason)
    return addresses


# --- Submit time --------------------------------------------------------------------------------------------


@dataclass
class UrlCheck:
    """The outcome of `check_urls`, both lists in input order."""

    accepted: list[tuple[int, str]] = field(default_factory=list)  # (index in input, normalised URL)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (index, raw input, reason)


# What JSON text cannot carry (a lone surrogate is not UTF-8) and PostgreSQL cannot store (NUL, in text or jsonb).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _raw_text(raw: object) -> str:
    """The submitted input as a refusal reports it: clipped, with NUL and lone surrogates written as escapes
    (the report is sent back as JSON and kept with the batch in PostgreSQL)."""
    text = raw if isinstance(raw, str) else reprlib.repr(raw)
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text[:_RAW_INPUT_CHARS])


async def _resolve_all(hosts: Sequence[str], resolver: Resolver, seconds: float) -> dict[str, list[str]]:
    """The addresses of each host that resolved within `seconds` (a host that failed is left out).

    `DNS_CONCURRENCY` tasks take the hosts in turn. Not a task per host waiting on a semaphore: at the deadline
    each cancelled waiter is looked for in the semaphore's queue, which for 50,000 hosts held the event loop
    14 s (and the tasks took 80 MiB).
    """
    resolved: dict[str, list[str]] = {}
    if not hosts:
        return resolved
    todo = iter(hosts)
    answered = 0

    async def resolve_in_turn() -> None:
        nonlocal answered
        this = asyncio.current_task()
        assert this is not None
        for host in todo:
            try:
                resolved[host] = await resolver(host)
            except OSError:
                pass
            except asyncio.CancelledError:
                if this.cancelling():  # the deadline
                    raise
                # The resolver cancelled itself: as good as unresolvable.
            except Exception as exc:
                logger.warning("resolver failed for %s: %r", host, exc, extra={"action": "dns"})
            answered += 1

    tasks = [asyncio.create_task(resolve_in_turn()) for _ in range(min(DNS_CONCURRENCY, len(hosts)))]
    _done, pending = await asyncio.wait(tasks, timeout=seconds)
    for task in pending:
        task.cancel()
    if pending:
        logger.info(
            "DNS timed out for %d of %d hosts", len(hosts) - answered, len(hosts), extra={"action": "dns"}
        )
    return dict(resolved)  # a copy: what a cancelled task might still add is not part of the answer


class _Syntax:
    """The first step of `check_urls`: every URL normalised and its host judged without a look-up."""

    def __init__(self, policy: NetworkPolicy, max_length: int) -> None:
        self.policy = policy
        self.max_length = max_length
        self.outcome: list[str | tuple[str, str]] = []  # normalised URL, or (raw, reason)
        self.to_resolve: dict[str, list[int]] = {}
        self.verdicts: dict[str, bool | str] = {}  # host -> no look-up needed / needs one / the refusal

    def check(self, raw_urls: Sequence[object]) -> None:
        for raw in raw_urls:
            index = len(self.outcome)
            try:
                url, host, addr = normalize_url_and_host(raw, self.max_length)
                verdict = self.verdicts.get(host)
                if verdict is None:
                    try:
                        verdict = check_host(host, addr, self.policy)
                    except UrlRejected as exc:
                        verdict = exc.message
                    self.verdicts[host] = verdict
                if isinstance(verdict, str):
                    raise UrlRejected(verdict)
                if not verdict:
                    self.to_resolve.setdefault(host, []).append(index)
            except UrlRejected as exc:
                self.outcome.append((_raw_text(raw), exc.message))
            else:
                self.outcome.append(url)

    def result(self, raw_urls: Sequence[object], resolved: dict[str, list[str]]) -> UrlCheck:
        """The check, once `resolved` holds the addresses of the hosts that resolved."""
        for host, addresses in resolved.items():
            reason = resolved_refusal(host, addresses, self.policy)
            if reason is not None:
                for index in self.to_resolve[host]:
                    self.outcome[index] = (_raw_text(raw_urls[index]), with_allow_hint(reason))
        result = UrlCheck()
        for index, item in enumerate(self.outcome):
            if isinstance(item, str):
                result.accepted.append((index, item))
            else:
                result.rejected.append((index, item[0], item[1]))
        return result


async def check_urls(
    raw_urls: Sequence[object],
    policy: NetworkPolicy,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    resolver: Resolver = system_resolver,
    dns_timeout: float = 2.0,
) -> UrlCheck:
    """Normalise and check a batch of submitted URLs; every one ends in exactly one of the two lists.

    Refuses malformed URLs, literal addresses the policy refuses and always-local names, then resolves each
    distinct remaining host once (at most `DNS_CONCURRENCY` at a time, the whole step bounded by
    `dns_timeout`) and refuses every URL whose host resolves to any refused address.

    A host that does not resolve, whose resolver fails, or whose resolution does not finish in time is
    ACCEPTED: the API may not see the DNS the workers see, and the worker checks the address again at fetch
    time (`resolve_and_check`), failing the job then. This step only turns obvious cases into a 4xx early.

    Normalising is CPU work (IDNA, percent-encoding: up to a few hundred microseconds a URL), so more than
    `INLINE_URLS` URLs are normalised off the event loop, in one thread shared by every check of the process
    (`CHECK_CHUNK` URLs at a time, so that concurrent checks take turns and a cancelled one stops soon): the
    loop goes on answering other requests meanwhile. One thread: under the GIL a second one would not check
    faster, and the default executor stays free for the system resolver's look-ups.
    """
    syntax = _Syntax(policy, max_length)
    if len(raw_urls) <= INLINE_URLS:
        syntax.check(raw_urls)
        resolved = await _resolve_all(list(syntax.to_resolve), resolver, dns_timeout)
        return syntax.result(raw_urls, resolved)
    loop = asyncio.get_running_loop()
    for start in range(0, len(raw_urls), CHECK_CHUNK):
        await loop.run_in_executor(_CHECKER, syntax.check, raw_urls[start : start + CHECK_CHUNK])
    resolved = await _resolve_all(list(syntax.to_resolve), resolver, dns_timeout)
    return await loop.run_in_executor(_CHECKER, syntax.result, raw_urls, resolved)

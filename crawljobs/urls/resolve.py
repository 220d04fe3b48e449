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
from dataclasses import dataclass, field

from crawljobs.exceptions import UrlRejected
from crawljobs.urls.hosts import address_text, parse_ip_literal
from crawljobs.urls.normalise import DEFAULT_MAX_LENGTH, normalize_url_and_host
from crawljobs.urls.policy import NetworkPolicy, check_host, local_addresses, resolved_refusal

logger = logging.getLogger(__name__)

Resolver = Callable[[str], Awaitable[list[str]]]
"""Resolve a host name to a list of address strings; raise OSError when it does not resolve."""

DNS_CONCURRENCY = 32
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
    """The addresses of each host that resolved within `seconds` (a host that failed is left out)."""
    limit = asyncio.Semaphore(DNS_CONCURRENCY)

    async def resolve(host: str) -> list[str]:
        async with limit:
            return await resolver(host)

    tasks = {asyncio.create_task(resolve(host), name=f"resolve {host}"): host for host in hosts}
    done, pending = await asyncio.wait(tasks.keys(), timeout=seconds)
    for task in pending:
        task.cancel()
    if pending:
        logger.info("DNS timed out for %d of %d hosts", len(pending), len(tasks), extra={"action": "dns"})
    resolved = {}
    for task in done:
        if task.cancelled():  # the resolver cancelled itself: as good as unresolvable
            continue
        exc = task.exception()
        if exc is None:
            resolved[tasks[task]] = task.result()
        elif not isinstance(exc, OSError):
            logger.warning("resolver failed for %s: %r", tasks[task], exc, extra={"action": "dns"})
    return resolved


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
    """
    outcome: list[str | tuple[str, str]] = []  # normalised URL, or (raw, reason)
    to_resolve: dict[str, list[int]] = {}
    verdicts: dict[str, bool | str] = {}  # host -> no look-up needed / needs one / the refusal
    for index, raw in enumerate(raw_urls):
        try:
            url, host, addr = normalize_url_and_host(raw, max_length)
            verdict = verdicts.get(host)
            if verdict is None:
                try:
                    verdict = check_host(host, addr, policy)
                except UrlRejected as exc:
                    verdict = exc.message
                verdicts[host] = verdict
            if isinstance(verdict, str):
                raise UrlRejected(verdict)
            if not verdict:
                to_resolve.setdefault(host, []).append(index)
        except UrlRejected as exc:
            outcome.append((_raw_text(raw), exc.message))
        else:
            outcome.append(url)

    if to_resolve:
        resolved = await _resolve_all(list(to_resolve), resolver, dns_timeout)
        for host, addresses in resolved.items():
            reason = resolved_refusal(host, addresses, policy)
            if reason is not None:
                for index in to_resolve[host]:
                    outcome[index] = (_raw_text(raw_urls[index]), reason)

    result = UrlCheck()
    for index, item in enumerate(outcome):
        if isinstance(item, str):
            result.accepted.append((index, item))
        else:
            result.rejected.append((index, item[0], item[1]))
    return result

"""Fetch methods and the ladder a job climbs when a site blocks it (pure logic, no Scrapy, no I/O).

A method is an engine (``http``: Scrapy's downloader, ``impersonate``: curl with Chrome's TLS handshake, HTTP/2
and navigation headers, ``browser``: Chromium through scrapy-playwright) and a proxy tier (``direct``, ``premium``, ``ultra_premium``). The operator sets the order of the methods and a
ceiling; a job's flags set its floor (``render`` → browser only, ``premium`` → no direct tier,
``ultraPremium`` → the ultra-premium tier only); a tier without proxies is skipped. What is left, in order,
is the job's ladder: it starts at the cheapest method that worked for the job's domain (or one step lower now
and then, to find out whether a cheaper method works again) and climbs one step per block.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args
from urllib.parse import urlsplit

from crawljobs.exceptions import CrawlJobsError

Engine = Literal["http", "impersonate", "browser"]
Tier = Literal["direct", "premium", "ultra_premium"]

ENGINES: tuple[Engine, ...] = get_args(Engine)
TIERS: tuple[Tier, ...] = get_args(Tier)

# The configuration variables a tier's proxies come from, named in errors.
PROXY_VARIABLES: dict[Tier, str] = {
    "premium": "CRAWLJOBS_PREMIUM_PROXIES",
    "ultra_premium": "CRAWLJOBS_ULTRA_PREMIUM_PROXIES",
}


class NoMethodAvailable(CrawlJobsError):
    """No fetch method fits this job."""

    code = "no_method_available"


@dataclass(frozen=True, order=False)
class Method:
    """One way to fetch a page: an engine through a proxy tier."""

    engine: Engine
    tier: Tier

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r} (engines: {', '.join(ENGINES)})")
        if self.tier not in TIERS:
            raise ValueError(f"unknown tier {self.tier!r} (tiers: {', '.join(TIERS)})")

    @property
    def name(self) -> str:
        """``engine:tier``, the form stored in ``success_method`` and in attempts."""
        return f"{self.engine}:{self.tier}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str) -> Method:
        """``"browser:premium"`` → ``Method("browser", "premium")``; surrounding spaces and case are ignored."""
        if not isinstance(text, str):
            raise ValueError(f"not a fetch method: {text!r}")
        engine, sep, tier = text.strip().lower().partition(":")
        if not sep or engine not in ENGINES or tier not in TIERS:
            raise ValueError(
                f"unknown fetch method {text!r} (a method is engine:tier, "
                f"engines {', '.join(ENGINES)}; tiers {', '.join(TIERS)})"
            )
        return cls(engine, tier)


# The impersonate engine is the first rung of each tier: it fetched about as many pages a second as the http
# engine for no more CPU per page (bench/crawl.py, medians of 3 interleaved runs on a loaded 2-core machine:
# 1.30x the pages/s and 0.92x the CPU per page in one invocation, 0.95x and 0.97x in another), and a site that
# refuses Python's TLS handshake lets it through. The http engine stays a method to name in
# CRAWLJOBS_LADDER (``http:direct,impersonate:direct,...``).
DEFAULT_ORDER: tuple[Method, ...] = (
    Method("impersonate", "direct"),
    Method("browser", "direct"),
    Method("impersonate", "premium"),
    Method("browser", "premium"),
    Method("impersonate", "ultra_premium"),
    Method("browser", "ultra_premium"),
)

# Every method has a default cost, in the default order or not. The impersonate engine moves what the http
# engine moves (a proxy's bandwidth is the cost of its tier) for no more CPU: it costs what http costs.
DEFAULT_COSTS: dict[str, float] = {
    "impersonate:direct": 1,
    "browser:direct": 5,
    "impersonate:premium": 10,
    "browser:premium": 25,
    "impersonate:ultra_premium": 30,
    "browser:ultra_premium": 75,
    "http:direct": 1,
    "http:premium": 10,
    "http:ultra_premium": 30,
}


def _items(text: str) -> list[str]:
    """The non-empty items of a comma-separated text."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _parse_order(text: str | None) -> tuple[Method, ...]:
    items = _items(text or "")
    if not items:
        return DEFAULT_ORDER
    order: list[Method] = []
    for item in items:
        try:
            method = Method.parse(item)
        except ValueError as exc:
            raise ValueError(f"fetch order: {exc}") from None
        if method in order:
            raise ValueError(f"fetch order: {method.name} appears twice")
        order.append(method)
    return tuple(order)


def _parse_costs(text: str | None) -> dict[str, float]:
    costs = dict(DEFAULT_COSTS)
    if text is None or not text.strip():
        return costs
    seen: set[str] = set()
    for item in _items(text):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"method costs: {item!r} is not method=cost")
        try:
            name = Method.parse(key).name
        except ValueError as exc:
            raise ValueError(f"method costs: {exc}") from None
        if name in seen:
            raise ValueError(f"method costs: {name} appears twice")
        seen.add(name)
        try:
            cost = float(value.strip())
        except ValueError:
            raise ValueError(f"method costs: the cost of {name} is not a number: {value.strip()!r}") from None
        if not math.isfinite(cost) or cost < 0:
            raise ValueError(f"method costs: the cost of {name} must be a finite number >= 0, not {cost}")
        costs[name] = cost
    return costs


def _has_proxies(proxies: Iterable[str]) -> bool:
    return any(isinstance(proxy, str) and proxy.strip() for proxy in proxies)


@dataclass(frozen=True)
class LadderConfig:
    """The operator's fetch ladder: the order of methods, the ceiling, the costs and the usable tiers."""

    order: tuple[Method, ...] = DEFAULT_ORDER
    ceiling: Method = DEFAULT_ORDER[-1]
    costs: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_COSTS))
    available_tiers: frozenset[Tier] = frozenset({"direct"})

    def __post_init__(self) -> None:
        if not self.order:
            raise ValueError("fetch order: no method given")
        if len(set(self.order)) != len(self.order):
            raise ValueError("fetch order: a method appears twice")
        if self.ceiling not in self.order:
            raise ValueError(
                f"fetch ceiling {self.ceiling.name} is not in the fetch order "
                f"({', '.join(method.name for method in self.order)})"
            )
        for method in self.order:
            cost = self.costs.get(method.name)
            if cost is None:
                raise ValueError(f"method costs: no cost for {method.name}")
            if not math.isfinite(cost) or cost < 0:
                raise ValueError(f"method costs: the cost of {method.name} must be a finite number >= 0")
        if "direct" not in self.available_tiers:
            raise ValueError("the direct tier is always available")
        if not self.usable:
            wanted = sorted({method.tier for method in self.climbable} - self.available_tiers)
            raise ValueError(
                "no method of the fetch order up to the ceiling is usable: "
                + "; ".join(f"{PROXY_VARIABLES[tier]} is empty" for tier in wanted if tier in PROXY_VARIABLES)
            )

    @classmethod
    def from_values(
        cls,
        order: str | None,
        ceiling: str | None,
        costs: str | None,
        premium_proxies: Sequence[str],
        ultra_premium_proxies: Sequence[str],
    ) -> LadderConfig:
        """The ladder from configuration text; a contradiction raises ``ValueError`` (at start, not per job).

        ``order``: comma-separated methods (``"http:direct,browser:direct"``), unset or blank → DEFAULT_ORDER.
        ``ceiling``: one method of the order, unset or blank → the last one. ``costs``:
        ``"http:direct=1,browser:direct=5"``, overriding DEFAULT_COSTS for the methods named. The direct tier
        is always available, another tier only if it has at least one proxy.
        """
        parsed_order = _parse_order(order)
        if ceiling is None or not ceiling.strip():
            parsed_ceiling = parsed_order[-1]
        else:
            try:
                parsed_ceiling = Method.parse(ceiling)
            except ValueError as exc:
                raise ValueError(f"fetch ceiling: {exc}") from None
        tiers: set[Tier] = {"direct"}
        if _has_proxies(premium_proxies):
            tiers.add("premium")
        if _has_proxies(ultra_premium_proxies):
            tiers.add("ultra_premium")
        return cls(
            order=parsed_order,
            ceiling=parsed_ceiling,
            costs=_parse_costs(costs),
            available_tiers=frozenset(tiers),
        )

    @property
    def climbable(self) -> tuple[Method, ...]:
        """The order cut at the ceiling (included)."""
        return self.order[: self.order.index(self.ceiling) + 1]

    @property
    def usable(self) -> tuple[Method, ...]:
        """The order cut at the ceiling, without the methods of tiers that have no proxies."""
        return tuple(method for method in self.climbable if method.tier in self.available_tiers)


def _allowed_tiers(*, premium: bool, ultra_premium: bool) -> tuple[Tier, ...]:
    if ultra_premium:
        return ("ultra_premium",)
    if premium:
        return ("premium", "ultra_premium")
    return TIERS


def _flags_text(*, render: bool, premium: bool, ultra_premium: bool) -> str:
    flags = [
        name for name, on in (("render", render), ("premium", premium), ("ultraPremium", ultra_premium)) if on
    ]
    return ", ".join(flags) if flags else "no flags"


def ladder_for(config: LadderConfig, *, render: bool, premium: bool, ultra_premium: bool) -> list[Method]:
    """The methods a job may use, cheapest first, from its floor up to the ceiling.

    ``render`` keeps the browser methods only; ``premium`` drops the direct tier (a premium job may still use
    the ultra-premium tier, so it works when only ultra-premium proxies are configured); ``ultra_premium``
    keeps the ultra-premium tier only. Tiers without proxies are skipped. Raises ``NoMethodAvailable`` with
    the reason when nothing is left.
    """
    tiers = _allowed_tiers(premium=premium, ultra_premium=ultra_premium)
    ladder = [
        method
        for method in config.climbable
        if method.tier in tiers
        and method.tier in config.available_tiers
        and (not render or method.engine == "browser")
    ]
    if ladder:
        return ladder
    if not any(tier in config.available_tiers for tier in tiers):
        if ultra_premium:
            raise NoMethodAvailable(
                "this job needs the ultra_premium tier, but CRAWLJOBS_ULTRA_PREMIUM_PROXIES is empty"
            )
        raise NoMethodAvailable(
            "this job needs the premium tier or higher, but CRAWLJOBS_PREMIUM_PROXIES and "
            "CRAWLJOBS_ULTRA_PREMIUM_PROXIES are both empty"
        )
    usable = [method.name for method in config.usable]
    raise NoMethodAvailable(
        f"no fetch method fits this job ({_flags_text(render=render, premium=premium, ultra_premium=ultra_premium)}): "
        f"the methods usable up to the ceiling {config.ceiling.name} are {', '.join(usable)}"
    )


def start_index(
    ladder: Sequence[Method],
    remembered: Method | None,
    *,
    explore: bool,
    order: Sequence[Method] | None = None,
) -> int:
    """Where on its ladder a job starts.

    At the method remembered for the job's domain if the ladder has it, else at 0. Given the full ``order``
    (``LadderConfig.order``), a remembered method outside the ladder maps to the first ladder method at or
    above it in that order (a render job on a domain where ``http:premium`` worked skips ``browser:direct``,
    which was tried below it and failed); without ``order`` it maps to 0. With ``explore`` (the caller's coin
    toss, say one job in ten) the job starts one step lower than that, never below 0, so a domain that no
    longer blocks is found out and moved back down.
    """
    if not ladder or remembered is None:
        return 0
    if remembered in ladder:
        index = list(ladder).index(remembered)
    elif order is not None and remembered in order:
        rank = {method: position for position, method in enumerate(order)}
        floor = rank[remembered]
        index = next(
            (i for i, method in enumerate(ladder) if rank.get(method, -1) >= floor),
            len(ladder) - 1,
        )
    else:
        return 0
    return max(index - 1, 0) if explore else index


def next_method(ladder: Sequence[Method], current_index: int, *, engine: Engine | None = None) -> int | None:
    """The index of the method to escalate to after a block, or None at the ceiling.

    With ``engine`` (``"browser"`` for a page that needs JavaScript) the next method of that engine is chosen,
    skipping the others.
    """
    if not 0 <= current_index < len(ladder):
        raise IndexError(f"method index {current_index} is outside a ladder of {len(ladder)}")
    for index in range(current_index + 1, len(ladder)):
        if engine is None or ladder[index].engine == engine:
            return index
    return None


def domain_of(url: str) -> str:
    """The key of a domain's memory: the URL's lowercase hostname without port or trailing dot.

    The full hostname is kept (``www.example.com`` and ``example.com`` are remembered apart; no public-suffix
    list). Raises ``ValueError`` for a URL without a host.
    """
    parts = urlsplit(url.strip())
    if not parts.netloc and "://" not in url:
        parts = urlsplit("//" + url.strip())
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError(f"URL has no host: {url!r}")
    return host

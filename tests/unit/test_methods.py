"""Fetch methods and the ladder (crawlproject.methods): parsing, configuration, floors, memory, escalation."""

from __future__ import annotations

import dataclasses

import pytest

from crawljobs.exceptions import CrawlJobsError
from crawlproject.methods import (
    DEFAULT_COSTS,
    DEFAULT_ORDER,
    TIERS,
    LadderConfig,
    Method,
    NoMethodAvailable,
    domain_of,
    ladder_for,
    next_method,
    start_index,
)

HD, BD = Method("http", "direct"), Method("browser", "direct")
HP, BP = Method("http", "premium"), Method("browser", "premium")
HU, BU = Method("http", "ultra_premium"), Method("browser", "ultra_premium")
ID, IP, IU = (
    Method("impersonate", "direct"),
    Method("impersonate", "premium"),
    Method("impersonate", "ultra_premium"),
)

PREMIUM = ["http://user:pw@127.0.0.1:9001"]
ULTRA = ["http://user:pw@127.0.0.1:9002"]


def config(
    order: str | None = None,
    ceiling: str | None = None,
    costs: str | None = None,
    *,
    premium: bool = True,
    ultra: bool = True,
) -> LadderConfig:
    return LadderConfig.from_values(order, ceiling, costs, PREMIUM if premium else [], ULTRA if ultra else [])


def names(methods: list[Method]) -> list[str]:
    return [method.name for method in methods]


# --- Method ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", DEFAULT_ORDER, ids=lambda m: m.name)
def test_a_method_round_trips_through_its_name(method: Method) -> None:
    assert Method.parse(method.name) == method
    assert str(method) == method.name == f"{method.engine}:{method.tier}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" browser:premium ", BP),
        ("HTTP:Direct", HD),
        ("http:ultra_premium", HU),
    ],
)
def test_parse_ignores_spaces_and_case(text: str, expected: Method) -> None:
    assert Method.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "http",
        "http:",
        ":direct",
        "ftp:direct",
        "http:cheap",
        "http:premium:x",
        "http direct",
        "browser:ultra-premium",
        "browser:ultraPremium",
        "direct:http",
    ],
)
def test_parse_rejects_what_is_not_a_method(text: str) -> None:
    with pytest.raises(ValueError, match="unknown fetch method"):
        Method.parse(text)


def test_a_method_checks_its_parts() -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        Method("curl", "direct")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown tier"):
        Method("http", "cheap")  # type: ignore[arg-type]


def test_methods_are_frozen_values() -> None:
    assert Method("http", "direct") == HD
    assert len({HD, Method("http", "direct"), BD}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        HD.engine = "browser"  # type: ignore[misc]


def test_the_defaults_name_every_method_once_and_cost_more_up_the_ladder() -> None:
    assert names(list(DEFAULT_ORDER)) == [
        "impersonate:direct",
        "browser:direct",
        "impersonate:premium",
        "browser:premium",
        "impersonate:ultra_premium",
        "browser:ultra_premium",
    ]
    costs = [DEFAULT_COSTS[m.name] for m in DEFAULT_ORDER]
    assert costs == sorted(costs) == [1, 5, 10, 25, 30, 75]
    # Every method has a cost, so that any order can be configured without naming costs.
    every = [Method(engine, tier) for engine in ("http", "impersonate", "browser") for tier in TIERS]
    assert sorted(DEFAULT_COSTS) == sorted(names(every))
    for tier in TIERS:  # http and impersonate move the same bytes for the same CPU
        assert DEFAULT_COSTS[f"http:{tier}"] == DEFAULT_COSTS[f"impersonate:{tier}"]


# --- LadderConfig ---------------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = LadderConfig.from_values(None, None, None, [], [])
    assert cfg.order == DEFAULT_ORDER
    assert cfg.ceiling == BU
    assert cfg.costs == DEFAULT_COSTS
    assert cfg.costs is not DEFAULT_COSTS
    assert cfg.available_tiers == frozenset({"direct"})
    assert cfg.usable == (ID, BD)


@pytest.mark.parametrize(
    ("premium", "ultra", "tiers"),
    [
        ([], [], {"direct"}),
        (PREMIUM, [], {"direct", "premium"}),
        ([], ULTRA, {"direct", "ultra_premium"}),
        (PREMIUM, ULTRA, {"direct", "premium", "ultra_premium"}),
        (["", "  "], [" "], {"direct"}),
    ],
)
def test_a_tier_is_available_only_with_proxies(premium: list[str], ultra: list[str], tiers: set[str]) -> None:
    assert LadderConfig.from_values(None, None, None, premium, ultra).available_tiers == tiers


@pytest.mark.parametrize("blank", [None, "", "   ", ","])
def test_blank_order_and_ceiling_mean_the_defaults(blank: str | None) -> None:
    cfg = config(blank, blank if blank != "," else None, blank)
    assert (cfg.order, cfg.ceiling, cfg.costs) == (DEFAULT_ORDER, BU, DEFAULT_COSTS)


def test_order_ceiling_and_costs_are_parsed() -> None:
    cfg = config(
        " browser:direct, http:direct ,http:premium,", "http:direct", "http:direct=0.5, browser:direct=7"
    )
    assert cfg.order == (BD, HD, HP)
    assert cfg.ceiling == HD
    assert cfg.climbable == (BD, HD)
    assert cfg.costs["http:direct"] == 0.5
    assert cfg.costs["browser:direct"] == 7
    assert cfg.costs["http:premium"] == DEFAULT_COSTS["http:premium"]  # not named: the default


@pytest.mark.parametrize(
    ("order", "ceiling", "costs", "message"),
    [
        ("http:direct,ftp:direct", None, None, "fetch order: unknown fetch method 'ftp:direct'"),
        ("http:direct,browser:direct,http:direct", None, None, "http:direct appears twice"),
        ("http:direct,HTTP:DIRECT", None, None, "http:direct appears twice"),
        (None, "browser:nowhere", None, "fetch ceiling: unknown fetch method"),
        (
            "http:direct,browser:direct",
            "http:premium",
            None,
            "ceiling http:premium is not in the fetch order",
        ),
        (None, None, "http:direct=-1", "cost of http:direct must be a finite number >= 0"),
        (None, None, "http:direct=nan", "must be a finite number"),
        (None, None, "browser:direct=inf", "must be a finite number"),
        (None, None, "http:direct=cheap", "is not a number"),
        (None, None, "http:direct", "is not method=cost"),
        (None, None, "gopher:direct=1", "method costs: unknown fetch method"),
        (None, None, "http:direct=1,http:direct=2", "method costs: http:direct appears twice"),
    ],
)
def test_contradictions_are_rejected_at_start(
    order: str | None, ceiling: str | None, costs: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("|", r"\|")):
        config(order, ceiling, costs)


def test_an_order_with_no_usable_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="CRAWLJOBS_PREMIUM_PROXIES is empty"):
        config("http:premium,browser:premium", premium=False)
    with pytest.raises(ValueError, match="CRAWLJOBS_ULTRA_PREMIUM_PROXIES is empty"):
        config("http:ultra_premium", ultra=False)
    # Usable methods exist, but only above the ceiling.
    with pytest.raises(ValueError, match="no method of the fetch order up to the ceiling is usable"):
        config("http:premium,http:direct", "http:premium", premium=False)


def test_a_direct_config_is_checked_too() -> None:
    with pytest.raises(ValueError, match="not in the fetch order"):
        LadderConfig(order=(HD, BD), ceiling=HP)
    with pytest.raises(ValueError, match="appears twice"):
        LadderConfig(order=(HD, HD), ceiling=HD)
    with pytest.raises(ValueError, match="no method given"):
        LadderConfig(order=(), ceiling=HD)
    with pytest.raises(ValueError, match="no cost for http:direct"):
        LadderConfig(order=(HD,), ceiling=HD, costs={})
    with pytest.raises(ValueError, match="direct tier is always available"):
        LadderConfig(available_tiers=frozenset({"premium"}))


# --- ladder_for -----------------------------------------------------------------------------------------------

# Flags (render, premium, ultra_premium) → expected ladder per set of proxy tiers configured, with the default
# order and ceiling. A string is the start of the NoMethodAvailable message.
NEEDS_ULTRA = "this job needs the ultra_premium tier, but CRAWLJOBS_ULTRA_PREMIUM_PROXIES is empty"
NEEDS_PREMIUM = "this job needs the premium tier or higher"
ALL = [HD, BD, HP, BP, HU, BU]
D, P, U = [ID, BD], [IP, BP], [IU, BU]  # the default order's tiers
LADDERS: dict[tuple[bool, bool, bool], dict[str, list[Method] | str]] = {
    (False, False, False): {"": D, "p": D + P, "u": D + U, "pu": D + P + U},
    (True, False, False): {"": [BD], "p": [BD, BP], "u": [BD, BU], "pu": [BD, BP, BU]},
    (False, True, False): {"": NEEDS_PREMIUM, "p": P, "u": U, "pu": P + U},
    (True, True, False): {"": NEEDS_PREMIUM, "p": [BP], "u": [BU], "pu": [BP, BU]},
    (False, False, True): {"": NEEDS_ULTRA, "p": NEEDS_ULTRA, "u": U, "pu": U},
    (True, False, True): {"": NEEDS_ULTRA, "p": NEEDS_ULTRA, "u": [BU], "pu": [BU]},
    (False, True, True): {"": NEEDS_ULTRA, "p": NEEDS_ULTRA, "u": U, "pu": U},
    (True, True, True): {"": NEEDS_ULTRA, "p": NEEDS_ULTRA, "u": [BU], "pu": [BU]},
}
CASES = [(flags, tiers, expected) for flags, row in LADDERS.items() for tiers, expected in row.items()]


@pytest.mark.parametrize(
    ("flags", "tiers", "expected"),
    CASES,
    ids=[f"render={f[0]}-premium={f[1]}-ultra={f[2]}-proxies={t or 'none'}" for f, t, _ in CASES],
)
def test_ladder_for_every_flag_combination_and_proxy_set(
    flags: tuple[bool, bool, bool], tiers: str, expected: list[Method] | str
) -> None:
    cfg = config(premium="p" in tiers, ultra="u" in tiers)
    render, premium, ultra_premium = flags
    if isinstance(expected, str):
        with pytest.raises(NoMethodAvailable) as caught:
            ladder_for(cfg, render=render, premium=premium, ultra_premium=ultra_premium)
        assert caught.value.message.startswith(expected)
    else:
        assert ladder_for(cfg, render=render, premium=premium, ultra_premium=ultra_premium) == expected


def test_the_error_messages_name_the_missing_proxies() -> None:
    with pytest.raises(NoMethodAvailable) as caught:
        ladder_for(config(premium=False, ultra=False), render=False, premium=True, ultra_premium=False)
    assert str(caught.value) == (
        "this job needs the premium tier or higher, but CRAWLJOBS_PREMIUM_PROXIES and "
        "CRAWLJOBS_ULTRA_PREMIUM_PROXIES are both empty"
    )
    assert isinstance(caught.value, CrawlJobsError)
    assert caught.value.code == "no_method_available"


def test_the_ceiling_cuts_the_ladder() -> None:
    cfg = config(ceiling="impersonate:premium")
    assert ladder_for(cfg, render=False, premium=False, ultra_premium=False) == [ID, BD, IP]
    assert ladder_for(cfg, render=True, premium=False, ultra_premium=False) == [BD]
    assert ladder_for(cfg, render=False, premium=True, ultra_premium=False) == [IP]
    with pytest.raises(NoMethodAvailable, match=r"no fetch method fits this job \(render, premium\)"):
        ladder_for(cfg, render=True, premium=True, ultra_premium=False)


def test_a_job_whose_tier_is_above_the_ceiling_gets_a_clear_error() -> None:
    cfg = config(ceiling="browser:direct")
    with pytest.raises(NoMethodAvailable) as caught:
        ladder_for(cfg, render=False, premium=False, ultra_premium=True)
    assert "ceiling browser:direct" in caught.value.message
    assert "ultraPremium" in caught.value.message


def test_a_render_job_without_browser_methods_gets_a_clear_error() -> None:
    cfg = config("http:direct,http:premium")
    with pytest.raises(NoMethodAvailable, match=r"\(render\).*http:direct, http:premium"):
        ladder_for(cfg, render=True, premium=False, ultra_premium=False)


def test_the_operators_order_is_kept() -> None:
    cfg = config("browser:direct,http:direct,browser:ultra_premium,http:premium")
    assert ladder_for(cfg, render=False, premium=False, ultra_premium=False) == [BD, HD, BU, HP]
    assert ladder_for(cfg, render=False, premium=True, ultra_premium=False) == [BU, HP]


# --- start_index, next_method ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remembered", "explore", "expected"),
    [
        (None, False, 0),
        (None, True, 0),
        (HD, False, 0),
        (HD, True, 0),  # never below the floor
        (BD, False, 1),
        (BD, True, 0),
        (BP, False, 3),
        (BP, True, 2),
        (BU, False, 5),
        (BU, True, 4),
    ],
)
def test_start_index_follows_memory_and_explores_one_step_lower(
    remembered: Method | None, explore: bool, expected: int
) -> None:
    assert start_index(ALL, remembered, explore=explore) == expected


def test_a_remembered_method_outside_the_ladder_starts_at_the_floor() -> None:
    render_ladder = [BD, BP, BU]
    assert start_index(render_ladder, HP, explore=False) == 0
    assert start_index(render_ladder, HP, explore=True) == 0
    assert start_index([HP, BP], HD, explore=False) == 0  # memory below a premium job's floor


def test_with_the_order_a_remembered_method_maps_to_the_next_ladder_method_up() -> None:
    render_ladder = [BD, BP, BU]
    assert start_index(render_ladder, IP, explore=False, order=DEFAULT_ORDER) == 1  # browser:premium
    assert start_index(render_ladder, IU, explore=False, order=DEFAULT_ORDER) == 2
    assert start_index(render_ladder, IU, explore=True, order=DEFAULT_ORDER) == 1
    assert start_index([IP, BP], ID, explore=False, order=DEFAULT_ORDER) == 0
    # Memory above everything the job may use (a lower ceiling now): its top method.
    assert start_index([ID, BD], IU, explore=False, order=DEFAULT_ORDER) == 1
    # A method the order no longer has: the floor.
    assert start_index([HD, BD], BP, explore=False, order=(HD, BD)) == 0


def test_start_index_of_an_empty_ladder() -> None:
    assert start_index([], BD, explore=True) == 0


@pytest.mark.parametrize(
    ("ladder", "index", "engine", "expected"),
    [
        (ALL, 0, None, 1),
        (ALL, 4, None, 5),
        (ALL, 5, None, None),
        ([BU], 0, None, None),
        (ALL, 0, "browser", 1),
        (ALL, 1, "browser", 3),
        (ALL, 3, "browser", 5),
        (ALL, 5, "browser", None),
        ([HD, HP, HU], 0, "browser", None),
        (ALL, 1, "http", 2),
    ],
)
def test_next_method(ladder: list[Method], index: int, engine: str | None, expected: int | None) -> None:
    assert next_method(ladder, index, engine=engine) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("index", [-1, 6, 100])
def test_next_method_rejects_an_index_outside_the_ladder(index: int) -> None:
    with pytest.raises(IndexError):
        next_method(ALL, index)


# --- domain_of ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "domain"),
    [
        ("https://Example.COM:8443/path?q=1", "example.com"),
        ("http://www.example.com/", "www.example.com"),
        ("http://shop.www.example.co.uk/x", "shop.www.example.co.uk"),
        ("http://user:secret@Host.Example:80/", "host.example"),
        ("http://example.com./", "example.com"),
        ("http://127.0.0.1:5000/ok/1", "127.0.0.1"),
        ("http://[::1]:8080/", "::1"),
        ("http://[2001:DB8::1]/", "2001:db8::1"),
        ("example.com/path", "example.com"),
        ("  https://example.com  ", "example.com"),
    ],
)
def test_domain_of(url: str, domain: str) -> None:
    assert domain_of(url) == domain


@pytest.mark.parametrize("url", ["", "http://", "/just/a/path", "http://:80/"])
def test_domain_of_a_url_without_host(url: str) -> None:
    with pytest.raises(ValueError):
        domain_of(url)

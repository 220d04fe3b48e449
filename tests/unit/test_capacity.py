"""Browser capacity (crawlproject.capacity): the page budget from configuration, claims bounded by it."""

from __future__ import annotations

from crawljobs.config import Settings
from crawlproject.capacity import GIB, ClaimGauge, browser_pages


def test_pages_come_from_the_cores_and_memory_of_each_worker() -> None:
    settings = Settings(browser_pages_per_core=4, browser_pages_per_gib=4)
    assert browser_pages(settings, cores=2, memory_bytes=16 * GIB) == 4  # one worker per core: 4 per core
    assert browser_pages(Settings(workers=1), cores=2, memory_bytes=16 * GIB) == 8
    assert browser_pages(Settings(workers=1), cores=8, memory_bytes=2 * GIB) == 8  # memory bounds it
    assert browser_pages(Settings(workers=4), cores=1, memory_bytes=GIB) == 1  # never none
    assert browser_pages(Settings(browser_concurrency=3), cores=64, memory_bytes=256 * GIB) == 3


def test_claims_fit_the_free_pages_while_renders_are_expected() -> None:
    gauge = ClaimGauge(pages=4)
    assert gauge.want(100, browser_held=0) == 8  # pessimistic at first: every job a render
    assert gauge.want(100, browser_held=8) == 0  # the browser is full and a round more is held
    gauge.claimed(8, 8)
    assert gauge.want(100, browser_held=6) == 2
    for _ in range(6):  # http jobs only: the share halves each claim, claims grow back to the room
        gauge.claimed(100, 0)
    assert gauge.want(100, browser_held=8) == 100
    assert gauge.want(0, browser_held=0) == 0

"""The two baselines of ``bench.crawl``, each run as its own process with a plain ``CrawlerProcess``.

    python -m bench.baseline_spiders plain --base URL --first 0 --count N --concurrency C --ready F --go G --result R
    python -m bench.baseline_spiders redis --redis-url U --key K --concurrency C --expect N --ready F --go G --result R

(``--set NAME=VALUE``, repeatable: another Scrapy setting.)

``plain``: an in-memory spider whose ``async def start()`` yields ``/fast/<first>`` .. ``/fast/<first+count-1>``
and whose callback only counts the response. ``redis``: a stock ``scrapy_redis.spiders.RedisSpider`` fed by
whatever was pushed to its key (``{"url": U}`` messages) before the process started; its callback counts the
response and raises ``CloseSpider`` after ``--expect`` responses (0: never; it then closes through
scrapy-redis's own ``MAX_IDLE_TIME_BEFORE_CLOSE``, used when several processes share the key).

Both use the settings of our worker that matter for throughput (the asyncio reactor, ``CONCURRENT_REQUESTS`` and
``CONCURRENT_REQUESTS_PER_DOMAIN`` both ``--concurrency``, INFO logging, no telnet console, no cookies) and
Scrapy's (and scrapy-redis's) defaults for everything else.

Start-up is excluded from the measurement by a gate: when the spider is open the process creates ``--ready``
and waits for ``--go`` to exist before the engine starts (an awaited ``spider_opened`` handler, so the spiders
themselves stay stock). At close it writes ``--result``: JSON with the wall-clock time the gate opened, the time
of the last response, the CPU time of the process in between, the number of responses and their statuses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler, CrawlerProcess
from scrapy.exceptions import CloseSpider
from scrapy.http import Response
from scrapy_redis.spiders import RedisSpider


class Tally:
    """What one process saw: the gate opening, each response, the last one."""

    go_at: float = 0.0
    go_cpu: float = 0.0
    last_at: float = 0.0
    last_cpu: float = 0.0
    responses: int = 0
    statuses: Counter[int] = Counter()

    @classmethod
    def count(cls, response: Response) -> int:
        cls.last_at = time.time()
        cls.last_cpu = time.process_time()
        cls.responses += 1
        cls.statuses[response.status] += 1
        return cls.responses


class PlainSpider(Spider):
    name = "bench_plain"

    def __init__(self, base: str, first: int, count: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base = base.rstrip("/")
        self.first = first
        self.count = count

    async def start(self) -> AsyncIterator[Any]:
        for i in range(self.first, self.first + self.count):
            yield Request(f"{self.base}/fast/{i}", dont_filter=True)

    def parse(self, response: Response, **kwargs: Any) -> None:
        Tally.count(response)


class StockRedisSpider(RedisSpider):
    """scrapy-redis's RedisSpider as shipped: only a name, a key (given as a spider argument) and a callback."""

    name = "bench_stock_redis"
    expect = 0

    def parse(self, response: Response, **kwargs: Any) -> None:
        if Tally.count(response) == self.expect:
            raise CloseSpider("done")


class StartGate:
    """Holds the engine after the spider opened until the parent says go; writes the tally at close."""

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        self.ready = Path(settings["BENCH_READY_FILE"])
        self.go = Path(settings["BENCH_GO_FILE"])
        self.result = Path(settings["BENCH_RESULT_FILE"])
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StartGate:
        return cls(crawler)

    async def spider_opened(self) -> None:
        self.ready.touch()
        while not self.go.exists():  # noqa: ASYNC110 - a file from another process
            await asyncio.sleep(0.002)
        Tally.go_at = time.time()
        Tally.go_cpu = time.process_time()

    def spider_closed(self, reason: str) -> None:
        body = {
            "go": Tally.go_at,
            "last": Tally.last_at,
            "cpu": Tally.last_cpu - Tally.go_cpu,
            "responses": Tally.responses,
            "statuses": {str(k): v for k, v in Tally.statuses.items()},
            "reason": reason,
        }
        self.result.write_text(json.dumps(body))


def settings_for(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "TWISTED_REACTOR": "twisted.internet.asyncioreactor.AsyncioSelectorReactor",
        "CONCURRENT_REQUESTS": args.concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": args.concurrency,
        "LOG_LEVEL": "INFO",
        "TELNETCONSOLE_ENABLED": False,
        "COOKIES_ENABLED": False,
        "EXTENSIONS": {"bench.baseline_spiders.StartGate": 0},
        "BENCH_READY_FILE": args.ready,
        "BENCH_GO_FILE": args.go,
        "BENCH_RESULT_FILE": args.result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="A baseline spider of bench.crawl (one process).")
    parser.add_argument("kind", choices=["plain", "redis"])
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--go", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--base", help="plain: the site's base URL")
    parser.add_argument("--first", type=int, default=0, help="plain: the first page number")
    parser.add_argument("--count", type=int, default=0, help="plain: how many pages")
    parser.add_argument("--redis-url", help="redis: scrapy-redis's REDIS_URL")
    parser.add_argument("--key", help="redis: the spider's redis_key")
    parser.add_argument("--expect", type=int, default=0, help="redis: close after this many responses")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="another setting")
    args = parser.parse_args()

    settings = settings_for(args)
    for pair in args.set:
        name, _, value = pair.partition("=")
        settings[name] = value
    if args.kind == "plain":
        process = CrawlerProcess(settings=settings)
        process.crawl(PlainSpider, base=args.base, first=args.first, count=args.count)
    else:
        settings["REDIS_URL"] = args.redis_url
        if args.expect == 0:
            settings["MAX_IDLE_TIME_BEFORE_CLOSE"] = 1
        process = CrawlerProcess(settings=settings)
        process.crawl(StockRedisSpider, redis_key=args.key, expect=args.expect)
    process.start()


if __name__ == "__main__":
    # Run the module's importable copy: the gate extension is loaded by name, and it must share Tally.
    from bench.baseline_spiders import main as imported_main

    imported_main()

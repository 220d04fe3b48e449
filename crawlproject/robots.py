"""Scrapy's robots.txt middleware, raising a typed ``ForbiddenByRobots`` instead of a bare ``IgnoreRequest``.

Only jobs that ask for it (``obey_robots``) are checked: the spider marks the others ``dont_obey_robotstxt``.
"""

from __future__ import annotations

from scrapy import Request
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.exceptions import IgnoreRequest
from scrapy.robotstxt import RobotParser

from crawlproject.errors import ForbiddenByRobots


class RobotsMiddleware(RobotsTxtMiddleware):
    def process_request_2(self, rp: RobotParser | None, request: Request) -> None:
        try:
            super().process_request_2(rp, request)
        except IgnoreRequest as exc:  # its one refusal: the page is disallowed
            raise ForbiddenByRobots(str(exc)) from None

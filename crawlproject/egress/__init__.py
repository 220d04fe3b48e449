"""The browser's egress guard (DESIGN rule 7): see `crawlproject.egress.guard`.

- `framing`: HTTP/1.1 heads and body framing (standard library only: the test servers use it too);
- `streams`: the idle clock of a connection and the copy loops;
- `targets`: what a request target names, read as a browser reads a URL's host;
- `answers`: the guard's own short answers (403, 407, 502...);
- `forward`: absolute-form proxying over a kept upstream connection;
- `guard`: `EgressGuard`, the server: authorisation, the checked connect, CONNECT tunnels.
"""

from crawlproject.egress.answers import REFUSED_HEADER
from crawlproject.egress.guard import EgressGuard

__all__ = ["REFUSED_HEADER", "EgressGuard"]

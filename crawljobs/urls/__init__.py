"""URL validation, normalisation and address safety (DESIGN.md rule 7).

One package, used twice: the API at submit time (`check_urls`: normalise every URL, refuse literal private
addresses and always-local names, resolve each distinct hostname once) and the Scrapy workers at fetch time
(`resolve_and_check`: resolve again and connect only to an address that was checked, which defeats DNS
rebinding).

- `hosts`: how a browser reads a host (IP literals in any spelling, IDNA, label rules);
- `normalise`: a submitted URL in the form the worker fetches (w3lib's percent-encoding, length bound);
- `policy`: which addresses a fetch may go to, the names that are local whatever DNS says, refusal reasons;
- `resolve`: the look-ups of submit time and fetch time.
"""

from crawljobs.urls.hosts import parse_ip_literal
from crawljobs.urls.normalise import host_of, normalize_url
from crawljobs.urls.policy import NetworkPolicy
from crawljobs.urls.resolve import (
    DNS_CONCURRENCY,
    Resolver,
    UrlCheck,
    check_urls,
    resolve_and_check,
    system_resolver,
)

__all__ = [
    "DNS_CONCURRENCY",
    "NetworkPolicy",
    "Resolver",
    "UrlCheck",
    "check_urls",
    "host_of",
    "normalize_url",
    "parse_ip_literal",
    "resolve_and_check",
    "system_resolver",
]

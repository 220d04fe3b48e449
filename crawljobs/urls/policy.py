"""Which addresses a fetch may go to (DESIGN.md rule 7), and the reasons it gives when it refuses one.

Anything not globally routable is refused unless it lies in an operator-allowed network; IPv6 forms that embed
an IPv4 address are judged by that address. Some names are local whatever DNS says (``localhost``, the
loopback aliases of /etc/hosts, the cloud metadata names): they are refused without a look-up, unless the
policy allows one of the addresses they mean.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from crawljobs.config import IPNetwork, Settings
from crawljobs.exceptions import UrlRejected
from crawljobs.urls.hosts import IPAddress, address_text, clip, parse_ip_literal

_METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OCI, DigitalOcean, OpenStack...
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (classic)
        "fd00:ec2::254",  # AWS IMDS over IPv6
    )
)


def _ranges(table: Sequence[tuple[str, str]]) -> tuple[tuple[int, int, str], ...]:
    """Networks as (first, last, description) integer ranges: a lookup is a few integer comparisons."""
    out = []
    for cidr, what in table:
        net = ipaddress.ip_network(cidr)
        out.append((int(net.network_address), int(net.broadcast_address), what))
    return tuple(out)


# Order matters: the first range that holds the address names it.
_V4_REFUSED = _ranges(
    [
        ("0.0.0.0/32", "unspecified"),
        ("255.255.255.255/32", "broadcast"),
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("169.254.0.0/16", "link-local"),
        ("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
        ("224.0.0.0/4", "multicast"),
        ("0.0.0.0/8", "reserved ('this network')"),
        ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
        ("192.0.2.0/24", "reserved for documentation"),
        ("198.51.100.0/24", "reserved for documentation"),
        ("203.0.113.0/24", "reserved for documentation"),
        ("198.18.0.0/15", "reserved for benchmarking"),
        ("192.88.99.0/24", "reserved (6to4 relay anycast)"),
        ("240.0.0.0/4", "reserved"),
    ]
)
_V6_REFUSED = _ranges(
    [
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private (site-local)"),
        ("fc00::/7", "private"),
        ("ff00::/8", "multicast"),
        ("64:ff9b:1::/48", "reserved (local-use NAT64)"),
        ("100::/64", "reserved (discard-only)"),
        ("2001::/32", "reserved (Teredo)"),
        ("2001:db8::/32", "reserved for documentation"),
        ("3fff::/20", "reserved for documentation"),
    ]
)
_V6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_V6_MAPPED = ipaddress.ip_network("::ffff:0:0/96")  # ::ffff:a.b.c.d
_V6_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # ::ffff:0:a.b.c.d (SIIT)
_V6_COMPATIBLE = ipaddress.ip_network("::/96")  # ::a.b.c.d (deprecated)
_V6_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V6_6TO4 = ipaddress.ip_network("2002::/16")


def _embedded_ipv4(addr: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, when it is one of the forms that carry one."""
    if addr in _V6_MAPPED or addr in _V6_TRANSLATED or addr in _V6_NAT64:
        return IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _V6_COMPATIBLE and int(addr) > 1:  # but not :: and ::1, which are IPv6's own
        return IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _V6_6TO4:
        return addr.sixtofour
    return None


def _lookup(table: tuple[tuple[int, int, str], ...], value: int) -> str | None:
    for first, last, what in table:
        if first <= value <= last:
            return what
    return None


def _as_address(address: IPAddress | str) -> IPAddress | None:
    if isinstance(address, IPv4Address | IPv6Address):
        return address
    text = str(address)
    if "%" in text and ":" in text:  # a resolver's link-local answer may carry a zone: fe80::1%eth0
        text = text.split("%", 1)[0]
    return parse_ip_literal(text)


@dataclass(frozen=True)
class NetworkPolicy:
    """Which addresses a fetch may go to: the public Internet, plus the networks the operator allows."""

    allowed: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> NetworkPolicy:
        return cls(allowed=tuple(settings.networks))

    def refusal(self, address: IPAddress | str) -> str | None:
        """None if a fetch may go to `address`; otherwise a short reason ("address 10.0.0.1 is private")."""
        addr = _as_address(address)
        if addr is None:
            return f"address {clip(str(address))!r} is not a valid IP address"
        what = self._refused_as(addr)
        return None if what is None else f"address {address_text(addr)} is {what}"

    def allows(self, addr: IPAddress) -> bool:
        """True when `addr` lies in a network the operator allows."""
        return any(addr in net for net in self.allowed)

    def _refused_as(self, addr: IPAddress) -> str | None:
        """What makes `addr` unfit ("private", "loopback"...), or None when a fetch may go there."""
        if self.allowed and self.allows(addr):
            return None
        if addr in _METADATA_ADDRESSES:
            return "a cloud metadata address"
        value = int(addr)
        if isinstance(addr, IPv4Address):
            what = _lookup(_V4_REFUSED, value)
            if what is None and not addr.is_global:
                what = "not globally routable"
            return what
        if value > 1:  # :: and ::1 are in ::/96 but are IPv6's own unspecified and loopback
            embedded = _embedded_ipv4(addr)
            if embedded is not None:
                inner = self._refused_as(embedded)
                return None if inner is None else f"{inner} (it embeds {embedded})"
        what = _lookup(_V6_REFUSED, value)
        if what is None and addr not in _V6_GLOBAL_UNICAST:
            what = "reserved (outside global unicast 2000::/3)"
        if what is None and not addr.is_global:
            what = "not globally routable"
        return what


# --- Names that are local whatever DNS says -----------------------------------------------------------------

_LOOPBACK = (IPv4Address("127.0.0.1"), IPv6Address("::1"))
_METADATA = (IPv4Address("169.254.169.254"),)
_LOCAL_NAMES: dict[str, tuple[str, tuple[IPAddress, ...]]] = {
    "localhost": ("a loopback name", _LOOPBACK),
    "localhost.localdomain": ("a loopback name", _LOOPBACK),
    "localhost6": ("a loopback name", _LOOPBACK[1:]),
    "localhost6.localdomain6": ("a loopback name", _LOOPBACK[1:]),
    "ip6-localhost": ("a loopback name", _LOOPBACK[1:]),
    "ip6-loopback": ("a loopback name", _LOOPBACK[1:]),
    "ip6-localnet": ("a local name", (IPv6Address("fe00::"),)),
    "ip6-mcastprefix": ("a local name", (IPv6Address("ff00::"),)),
    "ip6-allnodes": ("a local name", (IPv6Address("ff02::1"),)),
    "ip6-allrouters": ("a local name", (IPv6Address("ff02::2"),)),
    "metadata": ("a cloud metadata name", _METADATA),
    "metadata.google.internal": ("a cloud metadata name", _METADATA),
    "instance-data": ("a cloud metadata name", _METADATA),
    "instance-data.ec2.internal": ("a cloud metadata name", _METADATA),
}


def _local_name(host: str) -> tuple[str, tuple[IPAddress, ...]] | None:
    """(what it is, the addresses it means) for a name that is local whatever DNS says, else None."""
    found = _LOCAL_NAMES.get(host)
    if found is None and host.endswith(".localhost"):  # RFC 6761
        found = _LOCAL_NAMES["localhost"]
    return found


def local_addresses(host: str, policy: NetworkPolicy) -> list[IPAddress] | None:
    """For an always-local name, the addresses it means that the policy allows (UrlRejected if none)."""
    local = _local_name(host)
    if local is None:
        return None
    what, addresses = local
    permitted = [a for a in addresses if policy.refusal(a) is None]
    if not permitted:
        raise UrlRejected(f"host {host} is {what}")
    return permitted


def check_host(host: str, addr: IPAddress | None, policy: NetworkPolicy) -> bool:
    """Refuse a literal address or an always-local name; True when no DNS look-up is needed.

    Always-local names are ``localhost`` and ``*.localhost``, the loopback aliases of /etc/hosts
    (``localhost.localdomain``, ``ip6-localhost``...) and the cloud metadata names (``metadata``,
    ``metadata.google.internal``, ``instance-data``). Such a name is accepted when the policy allows one of
    the addresses it means (``localhost`` with 127.0.0.0/8 allowed): at fetch time `resolve_and_check` hands
    the worker exactly those allowed addresses. Other ``*.internal`` names are ordinary names: the DNS
    check judges what they resolve to.
    """
    if addr is not None:
        reason = policy.refusal(addr)
        if reason is not None:
            raise UrlRejected(with_allow_hint(reason))
        return True
    return local_addresses(host, policy) is not None


# A refusal at submit time names the setting that lifts it: the first loopback URL a new user tries is refused,
# and the message must say how to allow it (for a test site, say).
ALLOW_HINT = " (to allow it, add its network to CRAWLJOBS_ALLOWED_NETWORKS)"


def with_allow_hint(reason: str) -> str:
    """A refusal by the network rules, saying which setting lifts it."""
    return reason + ALLOW_HINT


def resolved_refusal(host: str, addresses: Sequence[str], policy: NetworkPolicy) -> str | None:
    """Why `host` may not be fetched when it resolves to `addresses` (any one refused is enough), or None."""
    for address in addresses:
        addr = _as_address(address)
        if addr is None:
            return f"host {host} resolves to {clip(str(address))!r}, which is not a valid IP address"
        what = policy._refused_as(addr)
        if what is not None:
            return f"host {host} resolves to {address_text(addr)}, which is {what}"
    return None

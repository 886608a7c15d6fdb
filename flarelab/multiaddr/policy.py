"""Address scopes, and the policy that decides which addresses count as public.

libp2p nodes only hole punch to, advertise and trust *public* addresses: go-libp2p asks
``manet.IsPublicAddr`` (go-multiaddr ``net/private.go``), js-libp2p asks ``isPrivate``
(``@libp2p/utils`` ``private-ip.ts``). :data:`DEFAULT_POLICY` is public only where *neither*
of them objects, so a flarelab node never picks an address a go or js peer would refuse.
An :class:`AddressPolicy` can move ranges to PUBLIC or PRIVATE; the netns lab, whose
"internet" is the documentation ranges, uses
``AddressPolicy(treat_as_public=("198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))``.

The default ranges (the most specific range wins; G = go counts it not public, J = js counts
it private):

IPv4
  ============================  ==============  =====  ==================================
  0.0.0.0/32                    UNSPECIFIED     G J
  0.0.0.0/8                     RESERVED        G J    "this network"
  10.0.0.0/8                    PRIVATE         G J    RFC 1918
  100.64.0.0/10                 SHARED          G J    CGNAT, RFC 6598
  127.0.0.0/8                   LOOPBACK        G J
  169.254.0.0/16                LINK_LOCAL      G J
  172.16.0.0/12                 PRIVATE         G J    RFC 1918
  192.0.0.0/24                  RESERVED        G J    IETF protocol assignments (go: /26)
  192.0.2.0/24                  DOCUMENTATION   G J    TEST-NET-1
  192.31.196.0/24               RESERVED          J    AS112-v4
  192.52.193.0/24               RESERVED          J    AMT
  192.88.99.0/24                RESERVED        G J    deprecated 6to4 relay anycast
  192.168.0.0/16                PRIVATE         G J    RFC 1918
  192.175.48.0/24               RESERVED          J    AS112 direct delegation
  198.18.0.0/15                 BENCHMARKING    G J    RFC 2544
  198.51.100.0/24               DOCUMENTATION   G J    TEST-NET-2
  203.0.113.0/24                DOCUMENTATION   G J    TEST-NET-3
  224.0.0.0/4                   MULTICAST       G      (js counts multicast public)
  240.0.0.0/4                   RESERVED        G J    future use, and 255.255.255.255
  everything else               PUBLIC
  ============================  ==============  =====  ==================================

IPv6
  ============================  ==============  =====  ==================================
  ::/128                        UNSPECIFIED     G J
  ::1/128                       LOOPBACK        G J
  ::ffff:0:0/96                 (the IPv4's)      J    IPv4-mapped: scope of the IPv4 address
  64:ff9b::/96                  PUBLIC/RESERVED        NAT64, see below
  64:ff9b:1::/48                PUBLIC                 local-use NAT64, as go
  100::/64                      RESERVED          J    discard-only
  2001::/32                     RESERVED          J    Teredo (go counts it public)
  2001:2::/48                   BENCHMARKING           RFC 5180 (go and js count it public)
  2001:20::/28                  RESERVED          J    ORCHIDv2
  2001:db8::/32                 DOCUMENTATION   G J
  2002::/16                     RESERVED          J    6to4 (go counts it public)
  3fff::/20                     DOCUMENTATION          RFC 9637 (newer than go and js)
  fc00::/7                      PRIVATE         G J    unique local
  fe80::/10                     LINK_LOCAL      G J
  ff00::/8                      MULTICAST       G J
  other 2000::/3                PUBLIC                 global unicast
  everything else               RESERVED        G      go: public only inside 2000::/3
  ============================  ==============  =====  ==================================

Notes on the choices:

* NAT64 ``64:ff9b::/96`` (RFC 6052) embeds an IPv4 address. go counts the whole prefix
  public (the well-known prefix may only carry public IPv4 addresses) and js's check never
  matches in practice; we take the embedded address: PUBLIC if it is public, else RESERVED,
  so ``64:ff9b::a00:1`` (10.0.0.1) is not mistaken for a public address. The local-use
  prefix ``64:ff9b:1::/48`` may map anything; like go we count it PUBLIC, since a false
  negative there hurts more than a false positive.
* IPv4-mapped ``::ffff:a.b.c.d`` takes the scope of ``a.b.c.d`` (js does the same; go counts
  every mapped address not public). A dual-stack socket reports IPv4 peers this way, and
  it is the same host.
* 2001:2::/48 and 3fff::/20 are not public although go and js say they are: benchmarking
  and documentation addresses never appear on the internet.
* DNS names follow go: public, except ``localhost`` and its subdomains (LOOPBACK), the
  private-use ``.local``, ``.home.arpa``, ``.test`` (PRIVATE) and the unresolvable
  ``.invalid``, ``.in-addr.arpa``, ``.ip6.arpa`` (RESERVED). We compare case-insensitively
  and ignore a trailing dot (go does neither).
* A multiaddr's scope is that of its leading host: the first component, after an optional
  ``/ip6zone/`` (as go); for a relayed address that is the relay's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from ..errors import LocalProtocolError
from .errors import MultiaddrError
from .multiaddr import Multiaddr

__all__ = ["DEFAULT_POLICY", "AddressPolicy", "AddressScope"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressScope(Enum):
    """Where an address is reachable from."""

    PUBLIC = "public"
    PRIVATE = "private"
    LOOPBACK = "loopback"
    LINK_LOCAL = "link_local"
    SHARED = "shared"
    DOCUMENTATION = "documentation"
    BENCHMARKING = "benchmarking"
    UNSPECIFIED = "unspecified"
    MULTICAST = "multicast"
    RESERVED = "reserved"


_S = AddressScope
#: (network int, mask int, scope), most specific first
_Table = tuple[tuple[int, int, AddressScope], ...]


def _table(entries: Iterable[tuple[IPNetwork, AddressScope]]) -> _Table:
    ordered = sorted(entries, key=lambda e: e[0].prefixlen, reverse=True)
    return tuple((int(net.network_address), int(net.netmask), scope) for net, scope in ordered)


def _defaults(entries: Iterable[tuple[str, AddressScope]]) -> _Table:
    return _table((ipaddress.ip_network(cidr), scope) for cidr, scope in entries)


_V4_DEFAULTS: Final = _defaults(
    [
        ("0.0.0.0/32", _S.UNSPECIFIED),
        ("0.0.0.0/8", _S.RESERVED),
        ("10.0.0.0/8", _S.PRIVATE),
        ("100.64.0.0/10", _S.SHARED),
        ("127.0.0.0/8", _S.LOOPBACK),
        ("169.254.0.0/16", _S.LINK_LOCAL),
        ("172.16.0.0/12", _S.PRIVATE),
        ("192.0.0.0/24", _S.RESERVED),
        ("192.0.2.0/24", _S.DOCUMENTATION),
        ("192.31.196.0/24", _S.RESERVED),
        ("192.52.193.0/24", _S.RESERVED),
        ("192.88.99.0/24", _S.RESERVED),
        ("192.168.0.0/16", _S.PRIVATE),
        ("192.175.48.0/24", _S.RESERVED),
        ("198.18.0.0/15", _S.BENCHMARKING),
        ("198.51.100.0/24", _S.DOCUMENTATION),
        ("203.0.113.0/24", _S.DOCUMENTATION),
        ("224.0.0.0/4", _S.MULTICAST),
        ("240.0.0.0/4", _S.RESERVED),
    ]
)

_V6_DEFAULTS: Final = _defaults(
    [
        ("::/128", _S.UNSPECIFIED),
        ("::1/128", _S.LOOPBACK),
        ("64:ff9b:1::/48", _S.PUBLIC),
        ("100::/64", _S.RESERVED),
        ("2001::/32", _S.RESERVED),
        ("2001:2::/48", _S.BENCHMARKING),
        ("2001:20::/28", _S.RESERVED),
        ("2001:db8::/32", _S.DOCUMENTATION),
        ("2002::/16", _S.RESERVED),
        ("3fff::/20", _S.DOCUMENTATION),
        ("fc00::/7", _S.PRIVATE),
        ("fe80::/10", _S.LINK_LOCAL),
        ("ff00::/8", _S.MULTICAST),
    ]
)

_MAPPED_HIGH: Final = 0xFFFF  # ::ffff:0:0/96 >> 32
_NAT64_HIGH: Final = int(ipaddress.IPv6Address("64:ff9b::")) >> 32  # 64:ff9b::/96 >> 32
_GLOBAL_UNICAST_TOP3: Final = 0b001  # 2000::/3
_DNS_HOSTS: Final = frozenset({"dns", "dns4", "dns6", "dnsaddr"})
_LOCALHOST: Final = ("localhost",)
_UNRESOLVABLE: Final = ("invalid", "in-addr.arpa", "ip6.arpa")
_PRIVATE_USE: Final = ("local", "home.arpa", "test")


def _lookup(table: _Table, value: int) -> AddressScope | None:
    for net, mask, scope in table:
        if value & mask == net:
            return scope
    return None


def _under(name: str, domains: tuple[str, ...]) -> bool:
    return any(name == d or name.endswith("." + d) for d in domains)


def dns_scope(name: str) -> AddressScope:
    """Return the scope of a DNS name (go's rules, compared case-insensitively)."""
    name = name.lower().rstrip(".")
    if _under(name, _LOCALHOST):
        return AddressScope.LOOPBACK
    if _under(name, _UNRESOLVABLE):
        return AddressScope.RESERVED
    if _under(name, _PRIVATE_USE):
        return AddressScope.PRIVATE
    return AddressScope.PUBLIC


def _networks(name: str, cidrs: Iterable[str | IPNetwork] | str) -> tuple[IPNetwork, ...]:
    if isinstance(cidrs, str | ipaddress.IPv4Network | ipaddress.IPv6Network):
        cidrs = (cidrs,)
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name}: {cidr!r} is not a CIDR network ({exc})") from None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Decides the scope of an IP address, a DNS name or a multiaddr.

    ``treat_as_public`` and ``treat_as_private`` take CIDR networks that override the
    default table (:mod:`flarelab.multiaddr.policy` lists it); among overrides the most
    specific network wins, and one network may not be in both.
    """

    treat_as_public: tuple[str, ...] = ()
    treat_as_private: tuple[str, ...] = ()
    _v4: _Table = field(init=False, repr=False, compare=False)
    _v6: _Table = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        public = _networks("treat_as_public", self.treat_as_public)
        private = _networks("treat_as_private", self.treat_as_private)
        both = set(public) & set(private)
        if both:
            raise ValueError(f"networks both public and private: {sorted(map(str, both))}")
        object.__setattr__(self, "treat_as_public", tuple(str(n) for n in public))
        object.__setattr__(self, "treat_as_private", tuple(str(n) for n in private))
        entries = [(n, AddressScope.PUBLIC) for n in public]
        entries += [(n, AddressScope.PRIVATE) for n in private]
        object.__setattr__(self, "_v4", _table(e for e in entries if e[0].version == 4))
        object.__setattr__(self, "_v6", _table(e for e in entries if e[0].version == 6))

    def scope(self, target: IPAddress | Multiaddr | str) -> AddressScope:
        """Return the scope of an IP address, a multiaddr, or text of either.

        Text starting with ``/`` is a multiaddr, anything else an IP address. A multiaddr
        takes the scope of its leading host (IP or DNS name); one without such a host
        raises :class:`~flarelab.errors.LocalProtocolError`.
        """
        if isinstance(target, str):
            if target.startswith("/"):
                target = Multiaddr(target)
            else:
                try:
                    target = ipaddress.ip_address(target)
                except ValueError:
                    raise MultiaddrError(f"{target!r} is neither an IP address nor a multiaddr")
        if isinstance(target, ipaddress.IPv4Address):
            return self._v4_scope(int(target))
        if isinstance(target, ipaddress.IPv6Address):
            return self._v6_scope(int(target))
        if isinstance(target, Multiaddr):
            return self._multiaddr_scope(target)
        raise TypeError(f"cannot take the scope of {type(target).__name__}")

    def is_public(self, target: IPAddress | Multiaddr | str) -> bool:
        """True if the address is public (False for a multiaddr without an IP or DNS host)."""
        return self._scope_or_none(target) is AddressScope.PUBLIC

    def is_private(self, target: IPAddress | Multiaddr | str) -> bool:
        """True if the address is in a private range (RFC 1918, fc00::/7, treat_as_private).

        Loopback, link-local and shared (CGNAT) addresses have scopes of their own; go's
        ``manet.IsPrivateAddr`` would count them too.
        """
        return self._scope_or_none(target) is AddressScope.PRIVATE

    def is_loopback(self, target: IPAddress | Multiaddr | str) -> bool:
        """True for a loopback address (127/8, ::1, mapped 127/8, ``localhost`` names)."""
        return self._scope_or_none(target) is AddressScope.LOOPBACK

    def _scope_or_none(self, target: IPAddress | Multiaddr | str) -> AddressScope | None:
        try:
            return self.scope(target)
        except LocalProtocolError:
            return None

    def _v4_scope(self, value: int) -> AddressScope:
        scope = _lookup(self._v4, value) or _lookup(_V4_DEFAULTS, value)
        return scope or AddressScope.PUBLIC

    def _v6_scope(self, value: int) -> AddressScope:
        scope = _lookup(self._v6, value)
        if scope is not None:
            return scope
        high = value >> 32
        if high == _MAPPED_HIGH:
            return self._v4_scope(value & 0xFFFFFFFF)
        if high == _NAT64_HIGH:
            embedded = self._v4_scope(value & 0xFFFFFFFF)
            return AddressScope.PUBLIC if embedded is AddressScope.PUBLIC else AddressScope.RESERVED
        scope = _lookup(_V6_DEFAULTS, value)
        if scope is not None:
            return scope
        if value >> 125 == _GLOBAL_UNICAST_TOP3:
            return AddressScope.PUBLIC
        return AddressScope.RESERVED

    def _multiaddr_scope(self, addr: Multiaddr) -> AddressScope:
        ip = addr.ip_address
        if ip is not None:
            return self.scope(ip)
        names = addr.protocol_names()
        if names and names[0] in _DNS_HOSTS:
            name = addr.value_for(names[0])
            assert name is not None
            return dns_scope(name)
        raise LocalProtocolError(f"{addr} does not start with an IP address or a DNS name")


#: go- and js-compatible: only addresses both of them would call public are public
DEFAULT_POLICY: Final = AddressPolicy()

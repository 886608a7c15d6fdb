"""The lab's description: public hosts, NAT routers and the hosts behind them, with addresses.

One description serves both networks: :class:`~flarelab.lab.Lab` builds it from Linux
network namespaces, :meth:`Topology.build_simnet` on a simulated
:class:`~flarelab.simnet.Network`, with the same names and the same addresses::

    builder = TopologyBuilder()
    builder.add_host("relay")                        # public: 198.51.100.1
    builder.add_router("nat-a", "home_router").add_host("a")   # 192.168.1.2 behind 203.0.113.1
    builder.add_router("nat-b", "symmetric").add_host("b")
    topology = builder.build()

or simply ``Topology.standard(nat_a="home_router", nat_b="symmetric")``.

Addresses follow simnet's plan: the "internet" is the documentation ranges -- public hosts
in 198.51.100.0/24, routers' WAN addresses in 203.0.113.0/24 -- and LAN *n* is
192.168.n.0/24 (the router is .1). With ``ipv6=True`` every host also gets an IPv6
address: public hosts in 2001:db8::/64 (the internet's link), LAN *n* routes
2001:db8:n::/64, untranslated, through its router's firewall. Nothing in the lab can
reach a real network: there is no route anywhere else.

``latency`` is the one-way delay of each internet attachment (seconds): a packet between
two internet hosts takes twice that, as on simnet, where each crossing of a link adds its
latency. 0 joins the internet with a kernel bridge; anything else with the lab's user-space
switch (:mod:`flarelab.lab.switch`), since ``tc netem`` is not available everywhere.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ..errors import LocalProtocolError
from ..multiaddr import AddressPolicy
from .nat_kinds import NatKind, nat_kind

if TYPE_CHECKING:
    from ..simnet import Host as SimHost
    from ..simnet import Network
    from ..simnet.router import NatRouter

__all__ = [
    "INTERNET_V4",
    "INTERNET_V6",
    "LAB_ADDRESS_POLICY",
    "ROUTERS_V4",
    "LabHost",
    "LabRouter",
    "Topology",
    "TopologyBuilder",
]

#: public hosts' addresses (TEST-NET-2)
INTERNET_V4: Final = "198.51.100.0/24"
#: routers' WAN addresses (TEST-NET-3)
ROUTERS_V4: Final = "203.0.113.0/24"
#: the internet's IPv6 link; LAN n routes 2001:db8:n::/64
INTERNET_V6: Final = "2001:db8::/64"
_DOC_V6: Final = "2001:db8::/32"
#: the address policy of nodes in the lab: its internet counts as public
LAB_ADDRESS_POLICY: Final = AddressPolicy(treat_as_public=(INTERNET_V4, ROUTERS_V4, _DOC_V6))

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_RESERVED_NAMES: Final = frozenset({"internet", "switch"})
_MAX_PUBLIC = 250  # public hosts: 198.51.100.1 .. .250, 2001:db8::1 .. ::fa
_MAX_ROUTERS = 250
_MAX_LAN_HOSTS = 250
_ROUTER_V6_BASE: Final = 0x100  # routers' WAN IPv6: 2001:db8::100 + index


@dataclass(frozen=True, slots=True)
class LabHost:
    """A machine that runs programs: on the internet (``router`` None) or behind a router."""

    name: str
    ip: str
    ip6: str | None = None
    #: the router whose LAN it is on (None: a public host)
    router: str | None = None

    @property
    def public(self) -> bool:
        """True for a host on the internet itself."""
        return self.router is None

    def addresses(self) -> list[str]:
        """Its IPv4 address, then its IPv6 address if it has one."""
        return [self.ip, *([self.ip6] if self.ip6 else [])]


@dataclass(frozen=True, slots=True)
class LabRouter:
    """A NAT router: WAN addresses on the internet, a LAN, and the hosts on it."""

    name: str
    kind: NatKind
    wan_ip: str
    lan: str
    wan_ip6: str | None = None
    lan6: str | None = None
    hosts: tuple[LabHost, ...] = ()

    @property
    def lan_ip(self) -> str:
        """The router's own address on its LAN (the LAN's first address)."""
        return str(next(ipaddress.IPv4Network(self.lan).hosts()))

    @property
    def lan_ip6(self) -> str | None:
        """The router's own IPv6 address on its LAN, if the LAN has IPv6."""
        if self.lan6 is None:
            return None
        return str(next(ipaddress.IPv6Network(self.lan6).hosts()))


@dataclass(frozen=True, slots=True)
class Topology:
    """A whole lab: public hosts, routers (with their hosts), IPv6, internet latency."""

    public: tuple[LabHost, ...] = ()
    routers: tuple[LabRouter, ...] = ()
    ipv6: bool = False
    latency: float = 0.0

    def __post_init__(self) -> None:
        try:
            self._validate()
        except (ValueError, TypeError, AttributeError) as exc:
            raise LocalProtocolError(f"bad lab topology: {exc}") from None

    def _validate(self) -> None:
        if not 0.0 <= self.latency <= 10.0:
            raise LocalProtocolError(f"internet latency must be 0-10 s, not {self.latency}")
        names: set[str] = set()
        addresses: set[str] = set()
        for host in self.hosts():
            self._claim_name(names, host.name)
            for address in host.addresses():
                self._claim_address(addresses, address)
            if (host.ip6 is not None) != self.ipv6:
                raise LocalProtocolError(f"host {host.name}: IPv6 address must be given "
                                         "exactly when the topology has IPv6")
        for router in self.routers:
            self._claim_name(names, router.name)
            self._claim_address(addresses, router.wan_ip)
            if router.wan_ip6 is not None:
                self._claim_address(addresses, router.wan_ip6)
            if (router.lan6 is not None) != self.ipv6 or (router.wan_ip6 is None) == self.ipv6:
                raise LocalProtocolError(f"router {router.name}: IPv6 WAN address and LAN "
                                         "must be given exactly when the topology has IPv6")
            lan = ipaddress.IPv4Network(router.lan)
            if not lan.is_private:
                raise LocalProtocolError(f"router {router.name}: LAN {lan} is not private")
            for host in router.hosts:
                if host.router != router.name:
                    raise LocalProtocolError(f"host {host.name} names router {host.router}, "
                                             f"but sits behind {router.name}")
                if ipaddress.IPv4Address(host.ip) not in lan or host.ip == router.lan_ip:
                    raise LocalProtocolError(f"host {host.name}: {host.ip} is not a host "
                                             f"address of {router.name}'s LAN {lan}")
                if host.ip6 is not None and router.lan6 is not None and (
                        ipaddress.IPv6Address(host.ip6) not in ipaddress.IPv6Network(router.lan6)
                        or host.ip6 == router.lan_ip6):
                    raise LocalProtocolError(f"host {host.name}: {host.ip6} is not in "
                                             f"{router.name}'s LAN {router.lan6}")
        lans = [ipaddress.IPv4Network(r.lan) for r in self.routers]
        for i, lan in enumerate(lans):
            if any(lan.overlaps(other) for other in lans[i + 1:]):
                raise LocalProtocolError(f"LAN {lan} overlaps another LAN")
        for host in self.public:
            if host.router is not None:
                raise LocalProtocolError(f"public host {host.name} names a router")
            _check_in(host.name, host.ip, INTERNET_V4)
            if host.ip6 is not None:
                _check_in(host.name, host.ip6, INTERNET_V6)
        for router in self.routers:
            _check_in(router.name, router.wan_ip, ROUTERS_V4)
            if router.wan_ip6 is not None:
                _check_in(router.name, router.wan_ip6, INTERNET_V6)

    @staticmethod
    def _claim_name(names: set[str], name: str) -> None:
        if not _NAME.match(name) or name in _RESERVED_NAMES:
            raise LocalProtocolError(
                f"bad name {name!r}: use 1-20 lower-case letters, digits and '-', starting "
                f"with a letter (not {', '.join(sorted(_RESERVED_NAMES))})")
        if name in names:
            raise LocalProtocolError(f"the name {name!r} is used twice")
        names.add(name)

    @staticmethod
    def _claim_address(addresses: set[str], address: str) -> None:
        text = ipaddress.ip_address(address).compressed
        if text in addresses:
            raise LocalProtocolError(f"the address {text} is used twice")
        addresses.add(text)

    # ------------------------------------------------------------------ queries
    def hosts(self) -> Iterator[LabHost]:
        """Every host: the public ones, then each router's."""
        yield from self.public
        for router in self.routers:
            yield from router.hosts

    def host(self, name: str) -> LabHost:
        """The host named ``name``."""
        for host in self.hosts():
            if host.name == name:
                return host
        raise LocalProtocolError(f"the topology has no host {name!r}; it has "
                                 f"{', '.join(h.name for h in self.hosts())}")

    def router(self, name: str) -> LabRouter:
        """The router named ``name``."""
        for router in self.routers:
            if router.name == name:
                return router
        raise LocalProtocolError(f"the topology has no router {name!r}")

    def router_of(self, host: str | LabHost) -> LabRouter | None:
        """The router ``host`` sits behind (None for a public host)."""
        found = self.host(host) if isinstance(host, str) else host
        return None if found.router is None else self.router(found.router)

    def nat_of(self, host: str | LabHost) -> NatKind | None:
        """The kind of NAT in front of ``host`` (None: it is public)."""
        router = self.router_of(host)
        return None if router is None else router.kind

    def public_ip(self, host: str | LabHost) -> str:
        """The IPv4 address the internet sees for ``host``: its own, or its router's."""
        found = self.host(host) if isinstance(host, str) else host
        router = self.router_of(found)
        return found.ip if router is None else router.wan_ip

    def names(self) -> list[str]:
        """Every name: hosts and routers."""
        return [*(h.name for h in self.hosts()), *(r.name for r in self.routers)]

    @property
    def address_policy(self) -> AddressPolicy:
        """The address policy of nodes in this lab: its internet counts as public."""
        return LAB_ADDRESS_POLICY

    def describe(self) -> str:
        """Several lines for people: who is where, behind what."""
        link = (f"user-space switch, {self.latency * 1000:g} ms per attachment"
                if self.latency else "kernel bridge")
        lines = [f"internet ({INTERNET_V4}, {ROUTERS_V4}"
                 f"{', ' + INTERNET_V6 if self.ipv6 else ''}; {link})"]
        lines += [f"  {h.name}: {' '.join(h.addresses())}" for h in self.public]
        for router in self.routers:
            wan = " ".join(a for a in (router.wan_ip, router.wan_ip6) if a)
            lines.append(f"  {router.name} [{router.kind.value}]: {wan}, LAN {router.lan}"
                         f"{' ' + router.lan6 if router.lan6 else ''}")
            lines += [f"    {h.name}: {' '.join(h.addresses())}" for h in router.hosts]
        return "\n".join(lines)

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> str:
        """Return the description as JSON (what lab processes receive)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        """Return the description as plain data."""
        def host(h: LabHost) -> dict[str, Any]:
            return {"name": h.name, "ip": h.ip, "ip6": h.ip6}

        return {
            "ipv6": self.ipv6,
            "latency": self.latency,
            "public": [host(h) for h in self.public],
            "routers": [
                {"name": r.name, "kind": r.kind.value, "wan_ip": r.wan_ip, "lan": r.lan,
                 "wan_ip6": r.wan_ip6, "lan6": r.lan6, "hosts": [host(h) for h in r.hosts]}
                for r in self.routers
            ],
        }

    @classmethod
    def from_json(cls, text: str | bytes) -> Topology:
        """Rebuild a description from :meth:`to_json`."""
        try:
            return cls.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LocalProtocolError(f"not a lab topology: {exc!r}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Topology:
        """Rebuild a description from :meth:`to_dict`."""
        routers = tuple(
            LabRouter(
                name=r["name"], kind=nat_kind(r["kind"]), wan_ip=r["wan_ip"], lan=r["lan"],
                wan_ip6=r.get("wan_ip6"), lan6=r.get("lan6"),
                hosts=tuple(LabHost(h["name"], h["ip"], h.get("ip6"), router=r["name"])
                            for h in r["hosts"]),
            )
            for r in data["routers"]
        )
        public = tuple(LabHost(h["name"], h["ip"], h.get("ip6")) for h in data["public"])
        return cls(public=public, routers=routers, ipv6=bool(data["ipv6"]),
                   latency=float(data["latency"]))

    # ------------------------------------------------------------------ builders
    @classmethod
    def standard(
        cls,
        nat_a: str | NatKind | None = NatKind.HOME_ROUTER,
        nat_b: str | NatKind | None = NatKind.HOME_ROUTER,
        *,
        servers: int = 3,
        ipv6: bool = False,
        latency: float = 0.0,
    ) -> Topology:
        """The Flare lab: ``relay`` and ``servers`` more public hosts (``s1`` ..., e.g.
        AutoNAT servers), ``a`` behind ``nat-a`` and ``b`` behind ``nat-b`` (a None kind
        makes that host public)."""
        builder = TopologyBuilder(ipv6=ipv6, latency=latency)
        builder.add_host("relay")
        for i in range(1, servers + 1):
            builder.add_host(f"s{i}")
        for side, kind in (("a", nat_a), ("b", nat_b)):
            if kind is None:
                builder.add_host(side)
            else:
                builder.add_router(f"nat-{side}", kind).add_host(side)
        return builder.build()

    # ------------------------------------------------------------------ simnet
    def simnet_network(self, *, seed: int = 0, lan_latency: float = 0.0,
                       **kwargs: Any) -> Network:
        """Return a simnet :class:`~flarelab.simnet.Network` with this lab's link latencies
        (build the topology on it with :meth:`build_simnet`)."""
        from ..simnet import Link, Network

        return Network(seed=seed, ipv6=self.ipv6, wan_link=Link(latency=self.latency),
                       lan_link=Link(latency=lan_latency), **kwargs)

    def build_simnet(self, network: Network) -> dict[str, SimHost | NatRouter]:
        """Build this topology on a simulated network; return its hosts and routers by name."""
        built: dict[str, SimHost | NatRouter] = {}
        for host in self.public:
            built[host.name] = network.add_host(host.name, ip=host.ip,
                                                ip6=host.ip6 if host.ip6 else False)
        for router in self.routers:
            sim_router = network.add_router(router.name, router.kind.value, ip=router.wan_ip,
                                            lan=router.lan, lan6=router.lan6 or None)
            built[router.name] = sim_router
            for host in router.hosts:
                built[host.name] = sim_router.add_host(host.name, ip=host.ip,
                                                       ip6=host.ip6 if host.ip6 else False)
        return built


def _check_in(name: str, address: str, network: str) -> None:
    if ipaddress.ip_address(address) not in ipaddress.ip_network(network):
        raise LocalProtocolError(f"{name}: {address} is not in the lab's internet range "
                                 f"{network}")


@dataclass
class _RouterDraft:
    builder: TopologyBuilder
    name: str
    kind: NatKind
    index: int
    hosts: list[LabHost] = field(default_factory=list)

    def add_host(self, name: str) -> _RouterDraft:
        """Put a host on this router's LAN (192.168.n.2, .3, ...); return the router."""
        if len(self.hosts) >= _MAX_LAN_HOSTS:
            raise LocalProtocolError(f"router {self.name}'s LAN is full")
        n = len(self.hosts) + 2
        ip6 = f"2001:db8:{self.index:x}::{n:x}" if self.builder.ipv6 else None
        self.hosts.append(LabHost(name, f"192.168.{self.index}.{n}", ip6, router=self.name))
        return self

    def build(self) -> LabRouter:
        ipv6 = self.builder.ipv6
        return LabRouter(
            name=self.name, kind=self.kind, wan_ip=f"203.0.113.{self.index}",
            lan=f"192.168.{self.index}.0/24",
            wan_ip6=(str(ipaddress.IPv6Address("2001:db8::") + _ROUTER_V6_BASE + self.index)
                     if ipv6 else None),
            lan6=f"2001:db8:{self.index:x}::/64" if ipv6 else None,
            hosts=tuple(self.hosts),
        )


class TopologyBuilder:
    """Build a :class:`Topology` step by step, with addresses picked from the plan."""

    def __init__(self, *, ipv6: bool = False, latency: float = 0.0) -> None:
        self.ipv6 = ipv6
        self.latency = latency
        self._public: list[LabHost] = []
        self._routers: list[_RouterDraft] = []

    def add_host(self, name: str) -> TopologyBuilder:
        """Add a public host (198.51.100.n, and 2001:db8::n with IPv6); return the builder."""
        if len(self._public) >= _MAX_PUBLIC:
            raise LocalProtocolError("no public addresses left")
        n = len(self._public) + 1
        self._public.append(LabHost(name, f"198.51.100.{n}",
                                    f"2001:db8::{n:x}" if self.ipv6 else None))
        return self

    def add_router(self, name: str, kind: str | NatKind = NatKind.HOME_ROUTER) -> _RouterDraft:
        """Add a router of ``kind`` (WAN 203.0.113.n, LAN 192.168.n.0/24); return it, to
        add hosts behind it."""
        if len(self._routers) >= _MAX_ROUTERS:
            raise LocalProtocolError("no router addresses left")
        draft = _RouterDraft(self, name, nat_kind(kind), len(self._routers) + 1)
        self._routers.append(draft)
        return draft

    def build(self) -> Topology:
        """Return the (validated) topology."""
        return Topology(public=tuple(self._public),
                        routers=tuple(r.build() for r in self._routers),
                        ipv6=self.ipv6, latency=self.latency)

"""The simulated internet: subnets, links with latency, jitter and loss, and one clock.

    async with Network(seed=7) as net:            # the scheduler runs inside this block
        relay = net.add_host("relay")             # a public host (198.51.100.x)
        nat_a = net.add_router("NAT A", "home_router")
        a = nat_a.add_host("A")                   # 192.168.1.2 behind NAT A
        ...

A packet crosses *links*: the one between its sender and the sender's subnet, then the one
between the subnet and the next device (a host, or a router that translates it and sends
it on through its other side). Each crossing adds the link's latency (plus jitter) and may
lose the packet. Everything happens on trio's clock -- real for live notebooks,
``MockClock(autojump_threshold=0)`` for fast deterministic runs -- driven by one scheduler
task: a heap of (time, callback) entries. Nothing else runs a task per packet or per
connection, so an idle network costs no CPU and a thousand hosts cost only their objects.

Randomness (loss, jitter, ports, initial sequence numbers) comes from ``random.Random``
instances derived, in creation order, from the network's seeded generator, one per link
direction and per host: a run with the same seed and the same topology makes the same
choices as long as the same packets cross the same links in the same order. trio itself
shuffles task order; :func:`seed_trio_scheduler` fixes that too, for runs that repeat
packet for packet.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import trio

from ..errors import LocalProtocolError
from ..multiaddr import AddressPolicy
from .packet import Packet, canonical_ip, ip_version
from .tcp_connection import TcpConfig

if TYPE_CHECKING:
    from ..tracing.provider import TracingConfig
    from .host import Host
    from .nat import NatBehavior
    from .router import NatRouter

__all__ = [
    "CapturedPacket",
    "Link",
    "Network",
    "NetworkStats",
    "PacketCapture",
    "Subnet",
    "TimerHandle",
    "seed_trio_scheduler",
]

#: what :meth:`Network.call_at` returns: [time, order, callback, arg, live]
TimerHandle = list[Any]

#: the "internet" of a simulation: documentation ranges, as in the real NAT lab
PUBLIC_HOSTS_V4: Final = "198.51.100.0/24"
PUBLIC_ROUTERS_V4: Final = "203.0.113.0/24"
PUBLIC_V6: Final = "2001:db8::/32"
#: events one instant may take before the scheduler calls it a livelock (a bug, not load)
_EVENTS_PER_INSTANT: Final = 10_000_000


def seed_trio_scheduler(seed: int) -> bool:
    """Make trio's task scheduling repeatable: call it right before ``trio.run``.

    trio deliberately shuffles the order in which ready tasks run, so a simulation with many
    tasks takes a different (equally valid) path each run even with the same network seed.
    Seeding that shuffle -- trio's private scheduler ``random.Random``, the one its
    Hypothesis plugin seeds -- makes a whole run repeat packet for packet (give nodes fixed
    keys too). Returns False, doing nothing, if this trio keeps no such generator.
    """
    from trio._core import _run

    rng = getattr(_run, "_r", None)
    if not isinstance(rng, random.Random):
        return False
    rng.seed(seed)
    return True


@dataclass(frozen=True, slots=True)
class Link:
    """One-way behaviour of a link, the same in both directions.

    ``latency`` and ``jitter`` in seconds (the delay is ``latency`` plus a uniform random
    value in ``[-jitter, +jitter]``, never below zero); ``loss`` is the probability that a
    packet is lost.
    """

    latency: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.latency < 0 or self.jitter < 0 or not 0 <= self.loss <= 1:
            raise LocalProtocolError(f"bad link parameters: {self}")


class _Direction:
    """One direction of an attached link, with its own random generator."""

    __slots__ = ("jitter", "latency", "loss", "rng")

    def __init__(self, link: Link, rng: random.Random) -> None:
        self.latency = link.latency
        self.jitter = link.jitter
        self.loss = link.loss
        self.rng = rng

    def delay(self) -> float | None:
        """The delay of one packet, or None if it is lost."""
        if self.loss and self.rng.random() < self.loss:
            return None
        if self.jitter:
            return max(0.0, self.latency + self.rng.uniform(-self.jitter, self.jitter))
        return self.latency


class Attachment:
    """A device's port on a subnet: its addresses there and the link that joins them."""

    __slots__ = ("addresses", "device", "down", "link", "receive", "subnet", "up")

    def __init__(self, subnet: Subnet, device: object, addresses: list[str], link: Link,
                 receive: Callable[[Packet], None], rng: random.Random) -> None:
        self.subnet = subnet
        self.device = device
        self.addresses = addresses
        self.link = link
        self.receive = receive
        self.up = _Direction(link, random.Random(rng.getrandbits(64)))
        self.down = _Direction(link, random.Random(rng.getrandbits(64)))


@dataclass(slots=True)
class NetworkStats:
    """Packet counters of a whole network."""

    sent: int = 0
    delivered: int = 0
    lost: int = 0  # by a link's loss
    unroutable: int = 0  # no device has the destination address
    refused: int = 0  # at a NAT (filtered or answered) or a host (no socket, RST sent)
    bytes_sent: int = 0


@dataclass(frozen=True, slots=True)
class CapturedPacket:
    """One thing that happened to a packet: ``event`` at ``where`` at trio time ``time``.

    Events: ``sent`` (by a host), ``delivered`` (to a host), ``lost`` (on a link),
    ``unroutable``, ``translated`` / ``hairpinned`` / ``filtered`` / ``answered`` (at a
    router; ``packet`` is the packet as it arrived, ``note`` says why).
    """

    time: float
    event: str
    where: str
    packet: Packet
    note: str = ""


class PacketCapture:
    """A bounded record of packet events (see :meth:`Network.capture`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.events: list[CapturedPacket] = []
        self.dropped = 0

    def add(self, event: CapturedPacket) -> None:
        if len(self.events) < self.limit:
            self.events.append(event)
        else:
            self.dropped += 1

    def where(self, event: str | None = None, where: str | None = None) -> list[CapturedPacket]:
        """The captured events with this ``event`` name and/or at this place."""
        return [e for e in self.events if (event is None or e.event == event)
                and (where is None or e.where == where)]


class Subnet:
    """A broadcast domain: the internet, or the LAN behind a router.

    Devices on one subnet reach each other directly; anything else goes to the gateway
    (the router of a LAN). On the internet, routers also own routed IPv6 prefixes.
    """

    def __init__(self, network: Network, name: str, *, gateway: NatRouter | None,
                 v4: str | None, v6: str | None, pools: tuple[str, ...] = ()) -> None:
        self.network = network
        self.name = name
        self.gateway = gateway
        self.v4 = ipaddress.IPv4Network(v4) if v4 else None
        self.v6 = ipaddress.IPv6Network(v6) if v6 else None
        #: the link of new attachments when none is given (None: the network's default)
        self.default_link: Link | None = None
        self._by_ip: dict[str, Attachment] = {}
        self._routes6: list[tuple[ipaddress.IPv6Network, Attachment]] = []
        pool_nets = [ipaddress.ip_network(p) for p in pools] or [
            n for n in (self.v4, self.v6) if n is not None]
        self._pools4 = _address_iter([n for n in pool_nets if n.version == 4])
        self._pools6 = _address_iter([n for n in pool_nets if n.version == 6])

    # ------------------------------------------------------------------ building
    def add_host(self, name: str, *, ip: str | None = None, ip6: str | bool | None = None,
                 link: Link | None = None) -> Host:
        """Attach a new host; its addresses are picked from this subnet unless given."""
        from .host import Host

        self.network._check_name(name)
        addresses = self._addresses(ip, ip6)
        host = Host(self.network, name, addresses)
        attachment = self._attach(host, addresses, link or self._default_link(),
                                  host._receive)
        host._attachment = attachment
        self.network.hosts[name] = host
        return host

    def add_router(self, name: str, nat: NatBehavior | str = "home_router", *,
                   ip: str | None = None, lan: str | None = None, lan6: str | bool | None = None,
                   link: Link | None = None, lan_link: Link | None = None) -> NatRouter:
        """Attach a NAT router; ``lan`` is its inside network (default 192.168.N.0/24).

        ``lan6`` gives hosts behind it IPv6 addresses from a routed prefix (True picks one),
        forwarded untranslated through a stateful firewall with the NAT's filtering.
        """
        from .nat import NatBehavior
        from .router import NatRouter

        self.network._check_name(name)
        behavior = NatBehavior.preset(nat) if isinstance(nat, str) else nat
        wan_ip = self._addresses(ip, False)[0]
        lan_net = lan or self.network._next_lan()
        lan6_net = self.network._next_lan6() if lan6 is True else (lan6 or None)
        router = NatRouter(self.network, name, behavior, wan_ip, lan_net, lan6_net,
                           lan_link=lan_link, parent=self)
        attachment = self._attach(router, [wan_ip], link or self._default_link(),
                                  router._receive_wan)
        if router.lan.v6 is not None:
            if self.gateway is not None:
                raise LocalProtocolError("IPv6 behind nested routers is not simulated")
            self._routes6.append((router.lan.v6, attachment))
        router._wan = attachment
        self.network.routers[name] = router
        return router

    def _default_link(self) -> Link:
        if self.default_link is not None:
            return self.default_link
        return self.network.wan_link if self.gateway is None else self.network.lan_link

    def _addresses(self, ip: str | None, ip6: str | bool | None) -> list[str]:
        out = [self._claim(ip, 4)] if ip is not None else [self._next(4)]
        want6 = self.network.ipv6 if ip6 is None else ip6
        if isinstance(want6, str):
            out.append(self._claim(want6, 6))
        elif want6 and (self.v6 is not None or self.gateway is None):
            out.append(self._next(6))
        return out

    def _claim(self, ip: str, version: int) -> str:
        text = canonical_ip(ip)
        if ip_version(text) != version:
            raise LocalProtocolError(f"{ip} is not an IPv{version} address")
        net = self.v4 if version == 4 else self.v6
        if net is not None and ipaddress.ip_address(text) not in net:
            raise LocalProtocolError(f"{ip} is not in {self.name}'s network {net}")
        if text in self._by_ip or text in self.network._all_ips:
            raise LocalProtocolError(f"address {text} is already in use")
        return text

    def _next(self, version: int) -> str:
        pool = self._pools4 if version == 4 else self._pools6
        for candidate in pool:
            if candidate not in self._by_ip and candidate not in self.network._all_ips:
                return candidate
        raise LocalProtocolError(f"{self.name} has no free IPv{version} address left")

    def _attach(self, device: object, addresses: list[str], link: Link,
                receive: Callable[[Packet], None]) -> Attachment:
        attachment = Attachment(self, device, addresses, link, receive, self.network.random)
        for address in addresses:
            self._by_ip[address] = attachment
            self.network._all_ips.add(address)
        return attachment

    # ------------------------------------------------------------------ routing
    def route(self, ip: str) -> Attachment | None:
        """The attachment that takes packets for ``ip`` on this subnet (None: unknown)."""
        attachment = self._by_ip.get(ip)
        if attachment is not None or not self._routes6 or ":" not in ip:
            return attachment
        address = ipaddress.IPv6Address(ip)
        for prefix, via in self._routes6:
            if address in prefix:
                return via
        return None

    def attachments(self) -> list[Attachment]:
        """Every attachment on this subnet, once each."""
        return list({id(a): a for a in self._by_ip.values()}.values())

    def __repr__(self) -> str:
        return f"<Subnet {self.name} {self.v4 or ''} {self.v6 or ''}>"


def _address_iter(nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> Iterator[str]:
    for net in nets:
        for address in net.hosts():
            yield address.compressed


class Network:
    """A simulated internet: hosts, NAT routers, links, and the scheduler that moves packets.

    ``seed`` makes every random choice reproducible. ``tracing`` is a template for the
    routers' tracing (their label replaces the template's) and for nodes made with
    :meth:`Host.node`. ``tcp`` configures every host's TCP. ``wan_link`` / ``lan_link``
    are the default links of internet attachments and of LAN hosts. ``ipv6`` gives every
    new host an IPv6 address too (where its subnet has IPv6). ``public_pool`` and
    ``router_pool`` are where public hosts' and routers' addresses come from (the
    documentation ranges by default; :attr:`address_policy` counts them as public).
    ``max_in_flight`` bounds the packets and timers the scheduler holds: beyond it a packet
    is lost, as a full queue drops it.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        tracing: TracingConfig | None = None,
        tcp: TcpConfig | None = None,
        wan_link: Link = Link(latency=0.010),
        lan_link: Link = Link(latency=0.0005),
        ipv6: bool = False,
        public_pool: tuple[str, ...] = (PUBLIC_HOSTS_V4, PUBLIC_V6),
        router_pool: tuple[str, ...] = (PUBLIC_ROUTERS_V4,),
        max_in_flight: int = 1_000_000,
    ) -> None:
        self.seed = seed
        self.random = random.Random(seed)
        self.tracing = tracing
        self.tcp_config = tcp or TcpConfig()
        self.wan_link = wan_link
        self.lan_link = lan_link
        self.ipv6 = ipv6
        #: packets (and timers) the scheduler holds at most; beyond it packets are lost
        self.max_in_flight = max_in_flight
        self.stats = NetworkStats()
        self.hosts: dict[str, Host] = {}
        self.routers: dict[str, NatRouter] = {}
        self._all_ips: set[str] = set()
        self._public_pool = public_pool
        self._router_pool = router_pool
        self.internet = Subnet(self, "internet", gateway=None, v4=None, v6=None,
                               pools=public_pool)
        self._router_addresses = _address_iter(
            [ipaddress.ip_network(p) for p in router_pool])
        self._lan_counter = itertools.count(1)
        self._lan6_counter = itertools.count(1)
        # the scheduler: entries are [time, order, callback, arg, live]
        self._heap: list[list[Any]] = []
        self._order = itertools.count()
        self._sleep_scope: trio.CancelScope | None = None  # the scheduler's, while it sleeps
        self._deferred: dict[int, Callable[[], None]] = {}
        self._in_batch = False
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._captures: list[PacketCapture] = []

    # ================================================================== topology
    def add_host(self, name: str, *, ip: str | None = None, ip6: str | bool | None = None,
                 link: Link | None = None) -> Host:
        """Attach a public host to the internet (see :meth:`Subnet.add_host`)."""
        return self.internet.add_host(name, ip=ip, ip6=ip6, link=link)

    def add_router(self, name: str, nat: NatBehavior | str = "home_router", *,
                   ip: str | None = None, lan: str | None = None,
                   lan6: str | bool | None = None, link: Link | None = None,
                   lan_link: Link | None = None) -> NatRouter:
        """Attach a NAT router to the internet (see :meth:`Subnet.add_router`)."""
        if ip is None:
            ip = next((a for a in self._router_addresses if a not in self._all_ips), None)
            if ip is None:
                raise LocalProtocolError("no router addresses left; pass ip=")
        return self.internet.add_router(name, nat, ip=ip, lan=lan, lan6=lan6, link=link,
                                        lan_link=lan_link)

    @property
    def address_policy(self) -> AddressPolicy:
        """An address policy that counts this network's internet ranges as public."""
        public = (*self._public_pool, *self._router_pool, PUBLIC_V6)
        return AddressPolicy(treat_as_public=tuple(dict.fromkeys(public)))

    def _check_name(self, name: str) -> None:
        if not name or name in self.hosts or name in self.routers:
            raise LocalProtocolError(f"a host or router named {name!r} exists already")

    def _next_lan(self) -> str:
        n = next(self._lan_counter)
        if n > 255:
            return f"10.{n // 256}.{n % 256}.0/24"
        return f"192.168.{n}.0/24"

    def _next_lan6(self) -> str:
        return f"2001:db8:{next(self._lan6_counter):x}::/64"

    # ================================================================== running
    async def __aenter__(self) -> Network:
        if self._nursery is not None or self._closed:
            raise LocalProtocolError("a network runs once")
        self._cm = trio.open_nursery()
        self._nursery = await self._cm.__aenter__()
        self._nursery.start_soon(self._run_scheduler)
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self._shutdown()
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        return await self._cm.__aexit__(*exc_info)

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for host in self.hosts.values():
            host._shutdown()
        for router in self.routers.values():
            router._shutdown()

    @property
    def running(self) -> bool:
        """True inside ``async with network:``."""
        return self._nursery is not None and not self._closed

    def check_running(self) -> None:
        """Raise LocalProtocolError unless the scheduler runs."""
        if not self.running:
            raise LocalProtocolError(
                "the simulated network is not running: use 'async with network:'")

    def call_at(self, when: float, callback: Callable[[Any], None], arg: Any) -> TimerHandle:
        """Run ``callback(arg)`` from the scheduler at trio time ``when``.

        Returns a handle for :meth:`cancel`; a cancelled entry never wakes the scheduler.
        """
        entry: TimerHandle = [when, next(self._order), callback, arg, True]
        heapq.heappush(self._heap, entry)
        scope = self._sleep_scope
        if scope is not None and when < scope.deadline:
            scope.deadline = when  # wake earlier; no need to wake the scheduler now
        return entry

    @staticmethod
    def cancel(handle: TimerHandle | None) -> None:
        """Cancel an entry made by :meth:`call_at` (no-op if it already ran)."""
        if handle is not None:
            handle[4] = False

    def defer(self, key: int, callback: Callable[[], None]) -> None:
        """Run ``callback`` once at the end of the current scheduler batch (or now).

        Hosts use it to send one ACK for all the segments that arrived at one instant.
        """
        if self._in_batch:
            self._deferred[key] = callback
        else:
            callback()

    async def _run_scheduler(self) -> None:
        heap = self._heap
        while True:
            now = trio.current_time()
            self._in_batch = True
            try:
                budget = _EVENTS_PER_INSTANT
                while heap and heap[0][0] <= now:
                    _, _, callback, arg, live = heapq.heappop(heap)
                    if live:
                        callback(arg)
                    budget -= 1
                    if not budget:
                        raise RuntimeError(
                            f"simnet livelock: {_EVENTS_PER_INSTANT} events at t={now} "
                            "without time passing (a packet or timer loop)")
                    if self._deferred and (not heap or heap[0][0] > now):
                        self._run_deferred()
                self._run_deferred()
            finally:
                self._in_batch = False
            while heap and not heap[0][4]:
                heapq.heappop(heap)  # cancelled: never wake up for it
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self._sleep_scope = scope
                await trio.sleep_forever()
            self._sleep_scope = None

    def _run_deferred(self) -> None:
        deferred = self._deferred
        while deferred:
            key = next(iter(deferred))
            deferred.pop(key)()

    # ================================================================== moving packets
    def transmit(self, packet: Packet, sender: Attachment) -> None:
        """Send ``packet`` from ``sender`` across its subnet to whoever takes it."""
        subnet = sender.subnet
        target = subnet.route(packet.dst[0])
        if target is None:
            gateway = subnet.gateway
            if gateway is None:
                self.stats.unroutable += 1
                self._capture("unroutable", subnet.name, packet)
                return
            target = gateway._lan
        if target is sender:
            self.stats.unroutable += 1
            self._capture("unroutable", subnet.name, packet, "sent to itself")
            return
        delay = sender.up.delay()
        if delay is not None:
            down = target.down.delay()
            delay = None if down is None else delay + down
        if delay is None or len(self._heap) >= self.max_in_flight:
            self.stats.lost += 1
            self._capture("lost", subnet.name, packet,
                          "" if delay is not None else "the network is full")
            return
        self.call_at(trio.current_time() + delay, target.receive, packet)

    # ================================================================== observing
    @contextlib.contextmanager
    def capture(self, limit: int = 100_000) -> Iterator[PacketCapture]:
        """Record what happens to packets inside the ``with`` block (at most ``limit``)."""
        cap = PacketCapture(limit)
        self._captures.append(cap)
        try:
            yield cap
        finally:
            self._captures.remove(cap)

    def _capture(self, event: str, where: str, packet: Packet, note: str = "") -> None:
        if self._captures:
            record = CapturedPacket(trio.current_time(), event, where, packet, note)
            for cap in self._captures:
                cap.add(record)

    def describe(self) -> str:
        """The topology as indented text: subnets, routers (with behaviour) and hosts."""
        lines = [f"internet (seed {self.seed})"]

        def walk(subnet: Subnet, depth: int) -> None:
            pad = "  " * depth
            for attachment in subnet.attachments():
                device = attachment.device
                link = attachment.link
                where = f"{link.latency * 1000:g} ms" + (
                    f" +-{link.jitter * 1000:g} ms" if link.jitter else "") + (
                    f" loss {link.loss:.0%}" if link.loss else "")
                if device is subnet.gateway:
                    continue  # the router's own LAN port
                addresses = " ".join(attachment.addresses)
                if hasattr(device, "lan"):  # a router
                    router: NatRouter = device  # type: ignore[assignment]
                    lines.append(f"{pad}- router {router.name} {addresses} ({where}): "
                                 f"{router.behavior.name}; {router.behavior.describe()}")
                    lines.append(f"{pad}    LAN {router.lan.v4}"
                                 + (f" {router.lan.v6}" if router.lan.v6 else ""))
                    walk(router.lan, depth + 2)
                else:
                    lines.append(f"{pad}- host {getattr(device, 'name', '?')} {addresses} "
                                 f"({where})")

        walk(self.internet, 1)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<Network seed={self.seed} hosts={len(self.hosts)} "
                f"routers={len(self.routers)}>")


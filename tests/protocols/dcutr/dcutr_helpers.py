"""DCUtR test helpers: a stand-in relay on simnet, and scenarios of A, B and a relay.

:class:`StandInRelay` stands in for Circuit Relay v2 (which lands separately): B keeps a
TCP connection open to a public relay host (its "reservation"); A connects to the relay
host too, and the host copies bytes between the two. A and B then upgrade their ends as one
libp2p connection marked *limited*: outbound on A, inbound on B -- what DCUtR needs from a
relayed connection, with the relay's real latency in its RTT.

:func:`scenario` builds the usual picture on MockClock: a public relay node, A and B each
behind a NAT of the given kind (or public), both having told the relay hello over the
transport under test so that identify observed their public addresses.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import trio

from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.multiaddr import Multiaddr
from flarelab.node import Node, NodeConfig
from flarelab.node.connection import Connection
from flarelab.node.events import ConnectionClosed, ConnectionOpened, Event
from flarelab.protocols.dcutr import (
    HolePunchAttemptFailed,
    HolePunchConfig,
    HolePunchFailed,
    HolePunchService,
    HolePunchStarted,
    HolePunchSucceeded,
)
from flarelab.simnet import Host, Network, SimTcpStream
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.clock import TrioClock
from flarelab.tracing.provider import TracingConfig
from flarelab.tracing.records import SpanRecord
from flarelab.transports.base import RawConnection

SPLICE_PORT = 4002


def circuit_addr(relay: Host, relay_peer: PeerId, target: PeerId) -> Multiaddr:
    """``/ip4/<relay>/tcp/4001/p2p/<relay>/p2p-circuit/p2p/<target>``."""
    return Multiaddr(f"/ip4/{relay.ip}/tcp/4001/p2p/{relay_peer}/p2p-circuit/p2p/{target}")


async def _pipe(source: SimTcpStream, sink: SimTcpStream) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
        await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        with contextlib.suppress(Exception):
            await sink.aclose()


@dataclass
class StandInRelay:
    """Splices TCP connections on ``host``; :meth:`connect` makes relayed A -> B links."""

    host: Host
    nursery: trio.Nursery
    peer_id: PeerId

    async def connect(self, a: Node, a_host: Host, b: Node, b_host: Host
                      ) -> tuple[Connection, Connection]:
        """A dials B "through the relay": return (A's connection, B's connection)."""
        assert self.host.ip is not None
        listener = self.host.listen_tcp(SPLICE_PORT)
        try:
            to_b = await b_host.connect_tcp(self.host.ip, SPLICE_PORT)  # B's reservation
            from_b = await listener.accept()
            to_a = await a_host.connect_tcp(self.host.ip, SPLICE_PORT)
            from_a = await listener.accept()
        finally:
            await listener.aclose()
        self.nursery.start_soon(_pipe, from_a, from_b)
        self.nursery.start_soon(_pipe, from_b, from_a)
        raw_a = RawConnection(
            stream=to_a, local_addr=Multiaddr.from_ip_port(*to_a.getsockname(), "tcp"),
            remote_addr=circuit_addr(self.host, self.peer_id, b.peer_id), is_initiator=True,
            transport="p2p-circuit", limited=True)
        raw_b = RawConnection(
            stream=to_b, local_addr=Multiaddr.from_ip_port(*to_b.getsockname(), "tcp"),
            remote_addr=circuit_addr(self.host, self.peer_id, a.peer_id), is_initiator=False,
            transport="p2p-circuit", limited=True)
        out: dict[str, Connection] = {}

        async def up(name: str, node: Node, raw: RawConnection, peer: PeerId | None,
                     initiator: bool) -> None:
            out[name] = await node.upgrade_and_run(
                raw, expected_peer=peer, is_initiator=initiator, limited=True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(up, "a", a, raw_a, b.peer_id, True)
            nursery.start_soon(up, "b", b, raw_b, None, False)
        return out["a"], out["b"]


@contextlib.asynccontextmanager
async def standin_relay(host: Host, relay_peer: PeerId | None = None
                        ) -> AsyncIterator[StandInRelay]:
    """Run a :class:`StandInRelay` on ``host`` for the duration of the block."""
    peer = relay_peer or PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
    async with trio.open_nursery() as nursery:
        yield StandInRelay(host, nursery, peer)
        nursery.cancel_scope.cancel()


def story(log: list[Event], peer: PeerId) -> list[str]:
    """The events about ``peer`` in ``log``, as short lines."""
    out = []
    for e in log:
        if isinstance(e, (ConnectionOpened, ConnectionClosed)):
            c = e.connection
            if c.remote_peer != peer:
                continue
            kind = f"{'limited ' if c.limited else ''}{c.direction} {c.transport}"
            if isinstance(e, ConnectionOpened):
                out.append(f"opened {kind}")
            else:
                out.append(f"closed {kind}: {e.reason}")
        elif isinstance(e, HolePunchStarted) and e.peer == peer:
            out.append(f"started {e.side}" + (f" round {e.attempt}" if e.attempt else ""))
        elif isinstance(e, HolePunchAttemptFailed) and e.peer == peer:
            out.append(f"attempt {e.attempt} {e.outcome}")
        elif isinstance(e, HolePunchSucceeded) and e.peer == peer:
            out.append(f"succeeded {e.side} {e.outcome}")
        elif isinstance(e, HolePunchFailed) and e.peer == peer:
            out.append(f"failed {e.side} {e.outcome}")
    return out


@dataclass
class Scenario:
    """A, B and a relay on simnet (see :func:`scenario`)."""

    net: Network
    bus: SpanBus
    relay_host: Host
    a_host: Host
    b_host: Host
    relay: Node
    a: Node
    b: Node
    standin: StandInRelay
    service_a: HolePunchService | None
    service_b: HolePunchService | None
    log_a: list[Event] = field(default_factory=list)
    log_b: list[Event] = field(default_factory=list)

    async def relayed(self) -> tuple[Connection, Connection]:
        """A dials B through the stand-in relay: (A's connection, B's connection)."""
        return await self.standin.connect(self.a, self.a_host, self.b, self.b_host)

    def story_a(self) -> list[str]:
        return story(self.log_a, self.b.peer_id)

    def story_b(self) -> list[str]:
        return story(self.log_b, self.a.peer_id)

    def spans(self, label: str, name: str) -> list[SpanRecord]:
        """Ended spans called ``name`` of node ``label``, in the order they ended."""
        return [r for r in self.bus.history()
                if r.ended and r.node_label == label and r.name == name]


async def next_event(node: Node, *types: type[Event], within: float = 120.0) -> Any:
    """Wait (bounded) for the next event of ``types`` on ``node``'s bus."""
    with node.events.subscribe(*types) as sub, trio.fail_after(within):
        return await sub.next()


@contextlib.asynccontextmanager
async def scenario(
    nat_a: str | None,
    nat_b: str | None,
    *,
    transport: str = "tcp",
    seed: int = 1,
    hp: HolePunchConfig | None = None,
    hp_a: HolePunchConfig | None = None,
    hp_b: HolePunchConfig | None = None,
    service_a: bool = True,
    service_b: bool = True,
    threshold: int = 2,
    meter_provider: Any = None,
    ipv6: bool = False,
    **node_overrides: Any,
) -> AsyncIterator[Scenario]:
    """A behind ``nat_a``, B behind ``nat_b`` (None: a public host), a public relay node.

    ``transport``: "tcp", "quic" or "both" -- what A and B use to reach the relay (and so
    which observed addresses they have). ``threshold``: observers needed to confirm an
    observed address (with the default 2 and a single observer nothing is confirmed, so
    nothing is advertised; ``hp`` defaults to trusting unconfirmed observations).
    ``ipv6``: dual stack, the routers being stateful IPv6 firewalls without translation.
    """
    hp = hp or HolePunchConfig(trust_unconfirmed_observations=True)
    bus = SpanBus()
    tracing = TracingConfig(bus=bus, clock=TrioClock(epoch_ns=0), meter_provider=meter_provider)
    quic = transport in ("quic", "both")
    async with Network(seed=seed, tracing=tracing, ipv6=ipv6) as net:
        relay_host = net.add_host("relay")
        a_host = (net.add_router("NAT A", nat_a, lan6=ipv6 or None).add_host("A") if nat_a
                  else net.add_host("A"))
        b_host = (net.add_router("NAT B", nat_b, lan6=ipv6 or None).add_host("B") if nat_b
                  else net.add_host("B"))
        config = NodeConfig(enable_quic=quic, observed_addr_threshold=threshold,
                            **node_overrides)
        async with (relay_host.node(enable_quic=quic) as relay, a_host.node(config) as a,
                    b_host.node(config) as b, standin_relay(relay_host, relay.peer_id) as st):
            sa = HolePunchService(a, hp_a or hp, rng=random_for(seed, "A")) if service_a \
                else None
            sb = HolePunchService(b, hp_b or hp, rng=random_for(seed, "B")) if service_b \
                else None
            sc = Scenario(net, bus, relay_host, a_host, b_host, relay, a, b, st, sa, sb)
            a.events.add_listener(sc.log_a.append)
            b.events.add_listener(sc.log_b.append)
            with trio.fail_after(30):
                for node in (a, b):
                    for addr in relay.addrs:
                        is_quic = "quic-v1" in str(addr)
                        if transport == "both" or is_quic == quic:
                            conn = await node.connect(addr, force_new=True)
                            assert node.identify is not None
                            await node.identify.wait_identified(conn)
            yield sc


def random_for(seed: int, name: str) -> Any:
    """A seeded ``random.Random`` for one side."""
    import random

    return random.Random(f"{seed}-{name}")

"""AutoNAT over the simulated internet on MockClock (tier 3): NATs decide what a node learns.

Five public servers answer; a node behind a home router learns it is private, a public
node learns it is public, each address on its own (v2) and the node as a whole (v1), in
virtual time and with no sleeping. The dial-backs come from ephemeral ports: a control
experiment shows that a dial-back from the server's listen port would have slipped through
the client's NAT mapping (the accidental hole punch the v2 spec warns about).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from flarelab.multiaddr import Multiaddr
from flarelab.node import ConnectionOpened, Node
from flarelab.node.events import Event
from flarelab.protocols.autonat import (
    AddressReachabilityChanged,
    AutoNATConfig,
    AutoNATService,
    Observation,
    Reachability,
    ReachabilityChanged,
    start_autonat,
)
from flarelab.simnet import Network
from flarelab.transports.quic import QuicTransport

U, P, X = Reachability.UNKNOWN, Reachability.PUBLIC, Reachability.PRIVATE
#: go's defaults, shortened (the server's v1 dial timeout and timing guard stay as go's)
CLIENT = AutoNATConfig(boot_delay=5.0, retry_interval=10.0, refresh_interval=600.0,
                       throttle_server_period=30.0)
SERVER = AutoNATConfig(client_v1=False, client_v2=False, amplification_dial_wait=0.0)


@dataclasses.dataclass
class World:
    net: Network
    servers: list[Node]
    log: list[tuple[float, str, Event]]

    def changes(self, label: str) -> list[Any]:
        return [e for _, who, e in self.log if who == label
                and isinstance(e, ReachabilityChanged | AddressReachabilityChanged)]


@contextlib.asynccontextmanager
async def world(seed: int = 1, servers: int = 5) -> AsyncIterator[World]:
    async with Network(seed=seed) as net, contextlib.AsyncExitStack() as stack:
        nodes = []
        for i in range(servers):
            node = await stack.enter_async_context(net.add_host(f"S{i + 1}").node())
            await start_autonat(node, SERVER)
            nodes.append(node)
        yield World(net, nodes, [])


async def client(w: World, host: Any, config: AutoNATConfig = CLIENT,
                 stack: contextlib.AsyncExitStack | None = None) -> tuple[Node, AutoNATService]:
    """A node on ``host`` with a running AutoNAT client, connected to every server (the
    first ones over TCP, the last two over QUIC, so peers observe both of its ports)."""
    assert stack is not None
    node = await stack.enter_async_context(host.node())
    node.events.add_listener(lambda e: w.log.append((trio.current_time(), node.label, e)))
    service = await start_autonat(node, config)
    for i, server in enumerate(w.servers):
        await node.connect(server.addrs[1 if i >= len(w.servers) - 2 else 0])
    return node, service


async def test_behind_a_home_router_private_in_public_public(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with world() as w, contextlib.AsyncExitStack() as stack:
        nat = w.net.add_router("NAT A", "home_router")
        _, sa = await client(w, nat.add_host("A"), stack=stack)
        p, sp = await client(w, w.net.add_host("P"), stack=stack)
        await trio.sleep(200)
        tcp, quic = (Multiaddr(f"/ip4/{nat.public_ip}/{t}") for t in ("tcp/4001",
                                                                       "udp/4001/quic-v1"))
        assert (sa.reachability, sa.confidence) == (X, 3)
        assert sorted(map(str, sa.unreachable_addrs())) == sorted([str(tcp), str(quic)])
        assert sa.reachable_addrs() == []
        assert (sp.reachability, sp.confidence) == (P, 3)
        assert set(sp.reachable_addrs()) == set(p.listen_addrs())
        # each status changed once, from unknown, with full confidence
        for label, status in (("A", X), ("P", P)):
            changes = w.changes(label)
            node_level = [(c.previous, c.reachability, c.confidence) for c in changes
                          if isinstance(c, ReachabilityChanged)]
            assert node_level == [(U, status, 3)]
            per_address = sorted((str(c.addr), c.previous, c.reachability) for c in changes
                                 if isinstance(c, AddressReachabilityChanged))
            expected = [tcp, quic] if label == "A" else p.listen_addrs()
            assert per_address == sorted((str(addr), U, status) for addr in expected)
        # every answer A got said private; every one P got said public
        assert {(e.version, e.observation) for e in sa.probes} == {(1, Observation.PRIVATE),
                                                                  (2, Observation.PRIVATE)}
        assert {(e.version, e.observation) for e in sp.probes} == {(1, Observation.PUBLIC),
                                                                  (2, Observation.PUBLIC)}
        # no dial-back got through A's router: it refused them all
        inbound = [e for _, who, e in w.log if who == "A" and isinstance(e, ConnectionOpened)
                   and e.connection.direction == "inbound"]
        assert inbound == [] and nat.refused > 0
        # A settles after more than three private answers; v1 probes of a private node
        # take the server's full dial timeout (15 s), so that is the pace
        when = next(t for t, who, e in w.log if who == "A" and isinstance(e, ReachabilityChanged))
        assert 60 < when < 120


async def test_a_dial_back_from_the_listen_port_would_punch_a_hole(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Why servers dial back from an ephemeral port: A's NAT mapping for its connection to
    S lets S's listen port in, so a dial-back from there would report A as reachable."""
    async with world(servers=1) as w, contextlib.AsyncExitStack() as stack:
        nat = w.net.add_router("NAT A", "home_router")
        a = await stack.enter_async_context(nat.add_host("A").node())
        server = w.servers[0]
        await a.connect(server.addrs[1])  # QUIC, from A's listen port
        observed = Multiaddr(f"/ip4/{nat.public_ip}/udp/4001/quic-v1")
        quic = next(t for t in server.transports if isinstance(t, QuicTransport))
        with trio.fail_after(30):
            conn = await quic.dial(observed, expected_peer=a.peer_id, reuse_port=True)
        assert conn.remote_peer == a.peer_id  # through the hole A's own connection made
        await conn.muxer.aclose()
        with trio.fail_after(30), pytest.raises(TimeoutError):
            await quic.dial(observed, expected_peer=a.peer_id, reuse_port=False)


@pytest.mark.parametrize(("nat", "expected"), [
    ("full_cone", P),  # endpoint-independent filtering: anyone may use the mapping
    # address-dependent filtering lets in any port of an IP A talked to: same-IP dial-backs
    # cannot tell (go and rust have the same blind spot; the spec lets servers use another IP)
    ("restricted_cone", P),
    ("port_restricted_cone", X),
    ("symmetric", X),
    ("answering_router", X),
])
async def test_what_autonat_v1_concludes_behind_each_nat(
    nat: str, expected: Reachability, autojump_clock: trio.testing.MockClock,
) -> None:
    config = dataclasses.replace(CLIENT, client_v2=False)
    async with world(seed=3, servers=4) as w, contextlib.AsyncExitStack() as stack:
        router = w.net.add_router("NAT", nat)
        _, service = await client(w, router.add_host("A"), config, stack=stack)
        with service.node.events.subscribe(ReachabilityChanged) as changes, \
                trio.fail_after(300):
            change = await changes.next()
        assert (change.previous, change.reachability, change.confidence) == (U, expected, 3)


async def test_without_v1_the_addresses_decide(autojump_clock: trio.testing.MockClock) -> None:
    config = dataclasses.replace(CLIENT, client_v1=False)
    async with world() as w, contextlib.AsyncExitStack() as stack:
        p, service = await client(w, w.net.add_host("P"), config, stack=stack)
        with p.events.subscribe(ReachabilityChanged) as changes, trio.fail_after(300):
            change = await changes.next()
        assert (change.previous, change.reachability) == (U, P)
        assert service.reachability is P and service.confidence == 3
        assert {e.version for e in service.probes} == {2}

"""DCUtR over a real Circuit Relay v2 circuit on simnet: reserve, dial through, go direct.

B keeps a reservation on a public relay node; A dials B's ``/p2p-circuit`` address; the
relayed connection is limited (inbound on B), so B's service upgrades it: over TCP by a
simultaneous open, over QUIC by A's dial through B's punched NAT. Afterwards the circuit is
closed and new streams go direct.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from dcutr_helpers import next_event, story

from flarelab.node import NodeConfig
from flarelab.node.events import Event
from flarelab.protocols.dcutr import HolePunchConfig, HolePunchService, HolePunchSucceeded
from flarelab.simnet import Network

relay = pytest.importorskip("flarelab.protocols.relay")

CLOSED = "upgraded to a direct connection (DCUtR)"


@pytest.mark.parametrize("transport", ["tcp", "quic"])
async def test_through_a_real_relay(transport: str,
                                    autojump_clock: trio.testing.MockClock) -> None:
    quic = transport == "quic"
    async with Network(seed=3) as net:
        relay_host = net.add_host("relay")
        a_host = net.add_router("NAT A", "home_router").add_host("A")
        b_host = net.add_router("NAT B", "home_router").add_host("B")
        config = NodeConfig(enable_quic=quic, observed_addr_threshold=2)
        hp = HolePunchConfig(trust_unconfirmed_observations=True)
        async with (relay_host.node(enable_quic=quic) as r, a_host.node(config) as a,
                    b_host.node(config) as b):
            relay.RelayService(r)
            for node in (a, b):
                relay.RelayTransport.install(node)
                HolePunchService(node, hp)
            log_a: list[Event] = []
            log_b: list[Event] = []
            a.events.add_listener(log_a.append)
            b.events.add_listener(log_b.append)
            relay_addr = next(x for x in r.addrs if ("quic-v1" in str(x)) == quic)
            with trio.fail_after(60):
                await b.listen(f"{relay_addr}/p2p-circuit")  # B's reservation
                await a.identify_peer(relay_addr)  # A's observed address
                circuit = await a.connect(f"{relay_addr}/p2p-circuit/p2p/{b.peer_id}")
                assert circuit.limited
                done = await next_event(b, HolePunchSucceeded)
                assert (done.outcome, done.result.attempts) == ("success", 1)
                assert done.result.transport == ("quic-v1" if quic else "tcp")
                await trio.sleep(6)
                assert circuit.is_closed
                assert len(await a.ping(b.peer_id, 1)) == 1
            kind = "quic" if quic else "tcp"
            assert story(log_b, a.peer_id) == [
                "opened limited inbound p2p-circuit", "started initiator",
                f"opened {'inbound' if quic else 'outbound'} {kind}",
                "succeeded initiator success",
                f"closed limited inbound p2p-circuit: {CLOSED}",
            ]
            assert story(log_a, b.peer_id) == [
                "opened limited outbound p2p-circuit", "started receiver round 1",
                f"opened outbound {kind}", "succeeded receiver success",
                f"closed limited outbound p2p-circuit: {CLOSED}",
            ]

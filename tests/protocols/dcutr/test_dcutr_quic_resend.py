"""DCUtR's QUIC punch when A's first Initial beats B's first punch (simnet, MockClock).

The real kernel-NAT lab's internet is sub-millisecond while the relayed path costs
milliseconds of processing, so A's first QUIC Initial often reaches B's router before B's
first punch datagram has opened B's mapping: the router drops it. Here the same race,
made deterministic: links of ~0 latency, 2 ms at the relay, and B's LAN 0.5 ms (B's punch
needs longer to reach its router than A's Initial does). QUIC alone retransmits the
Initial only after its PTO (200 ms); A's hole-punch dial re-sends copies every 10 ms, so
the direct connection comes one copy later.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from dcutr_helpers import random_for, standin_relay

from flarelab.errors import LocalProtocolError
from flarelab.node import Node, NodeConfig
from flarelab.protocols.dcutr import (
    HolePunchConfig,
    HolePunchFailed,
    HolePunchResult,
    HolePunchService,
    HolePunchSucceeded,
)
from flarelab.protocols.dcutr.dial import (
    INITIAL_RESENT_ATTRIBUTE,
    INITIAL_RESENT_COUNT,
    INITIAL_RESENT_EVENT,
)
from flarelab.simnet import Network
from flarelab.simnet.network import Link
from flarelab.tracing import spans
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.clock import TrioClock
from flarelab.tracing.provider import TracingConfig
from flarelab.tracing.records import SpanRecord
from flarelab.transports.quic.config import INITIAL_RESENT_COUNT as QUIC_RESENT_COUNT

#: QUIC's first retransmission of a lost Initial (aioquic: 2 x its 100 ms initial RTT)
PTO = 0.2


@dataclass
class Race:
    """What one relayed -> direct upgrade did."""

    result: HolePunchResult
    bus: SpanBus
    a: Node
    b: Node

    def spans(self, label: str, name: str) -> list[SpanRecord]:
        return [r for r in self.bus.history()
                if r.ended and r.node_label == label and r.name == name]


@contextlib.asynccontextmanager
async def _fast_internet(hp_a: HolePunchConfig) -> AsyncIterator[Race]:
    """A and B behind home routers on a ~0 latency internet; B upgrades one relayed
    connection from A; yield how it went."""
    hp_b = HolePunchConfig(trust_unconfirmed_observations=True)
    bus = SpanBus()
    tracing = TracingConfig(bus=bus, clock=TrioClock(epoch_ns=0))
    async with Network(seed=2, tracing=tracing, wan_link=Link(0.0),
                       lan_link=Link(0.0)) as net:
        relay_host = net.add_host("relay", link=Link(0.002))
        a_host = net.add_router("NAT A", "home_router").add_host("A")
        b_host = net.add_router("NAT B", "home_router", lan_link=Link(0.0005)).add_host("B")
        config = NodeConfig(enable_quic=True, observed_addr_threshold=2)
        async with (relay_host.node(enable_quic=True) as relay, a_host.node(config) as a,
                    b_host.node(config) as b, standin_relay(relay_host, relay.peer_id) as st):
            HolePunchService(a, hp_a, rng=random_for(2, "A"))
            HolePunchService(b, hp_b, rng=random_for(2, "B"))
            with trio.fail_after(30):
                for node in (a, b):  # identify tells each its NAT's public QUIC address
                    (quic,) = [addr for addr in relay.addrs if "quic-v1" in str(addr)]
                    conn = await node.connect(quic, force_new=True)
                    assert node.identify is not None
                    await node.identify.wait_identified(conn)
            with b.events.subscribe(HolePunchSucceeded, HolePunchFailed) as sub, \
                    trio.fail_after(30):
                await st.connect(a, a_host, b, b_host)
                event = await sub.next()
            yield Race(event.result, bus, a, b)


async def test_a_copy_of_the_initial_gets_through_well_before_the_pto(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hp_a = HolePunchConfig(trust_unconfirmed_observations=True)
    async with _fast_internet(hp_a) as race:
        result = race.result
        assert (result.outcome, result.attempts, result.transport) == ("success", 1, "quic-v1")
        assert result.connection is not None and result.connection.direction == "inbound"
    # B's router dropped A's first Initial (nothing had gone out from B's port yet)
    (drop,) = race.spans("NAT B", spans.NAT_DROP)
    (a_dial,) = race.spans("A", spans.HOLEPUNCH_DIAL)
    (b_dial,) = race.spans("B", spans.HOLEPUNCH_DIAL)
    assert drop.start_ns == a_dial.start_ns == b_dial.start_ns
    # one copy, 10 ms later, and the direct connection right after it (2 LAN crossings of
    # B's 0.5 ms each way): far below the 200 ms PTO
    assert [(e.name, (e.time_ns - a_dial.start_ns) / 1e6, e.attributes[INITIAL_RESENT_COUNT])
            for e in a_dial.events] == [(INITIAL_RESENT_EVENT, 10.0, 1)]
    assert a_dial.attributes[INITIAL_RESENT_ATTRIBUTE] == 1
    assert a_dial.attributes[spans.LIBP2P_OUTCOME] == "success"
    assert (a_dial.end_ns - a_dial.start_ns) / 1e6 == pytest.approx(11.0, abs=0.01)
    assert result.elapsed < PTO / 4
    # B punched as the spec says (random bytes from its listen port) and dialled nothing
    assert b_dial.attributes["holepunch.packets"] >= 1
    assert INITIAL_RESENT_ATTRIBUTE not in b_dial.attributes
    # ordinary dials (to the relay) send no copies
    assert all(QUIC_RESENT_COUNT not in r.attributes
               for label in ("A", "B") for r in race.spans(label, spans.QUIC_DIAL)
               if r.start_ns < a_dial.start_ns)


async def test_without_copies_the_pto_decides(autojump_clock: trio.testing.MockClock) -> None:
    # the same race with copies off: QUIC's own retransmission after one PTO
    hp_a = HolePunchConfig(trust_unconfirmed_observations=True, quic_initial_resends=0)
    async with _fast_internet(hp_a) as race:
        assert (race.result.outcome, race.result.attempts) == ("success", 1)
    (a_dial,) = race.spans("A", spans.HOLEPUNCH_DIAL)
    assert not a_dial.events
    assert INITIAL_RESENT_ATTRIBUTE not in a_dial.attributes
    assert (a_dial.end_ns - a_dial.start_ns) / 1e9 == pytest.approx(PTO + 0.001, abs=1e-5)
    assert race.result.elapsed > PTO


def test_the_resend_schedule_is_checked() -> None:
    assert HolePunchConfig().quic_initial_resend() is not None
    assert HolePunchConfig(quic_initial_resends=0).quic_initial_resend() is None
    with pytest.raises(LocalProtocolError):
        HolePunchConfig(quic_initial_resend_interval=0.0)
    with pytest.raises(LocalProtocolError):
        HolePunchConfig(quic_initial_resends=0, quic_initial_resend_interval=-1.0)
    with pytest.raises(LocalProtocolError):
        HolePunchConfig(quic_initial_resends=1000)

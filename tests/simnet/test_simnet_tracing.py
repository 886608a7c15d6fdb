"""What routers trace, and the simulation on the real clock (as live notebooks run it)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from flarelab.simnet import Link, Network
from flarelab.tracing import spans
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.clock import TrioClock
from flarelab.tracing.provider import TracingConfig


def _tracing(bus: SpanBus) -> TracingConfig:
    return TracingConfig(bus=bus, clock=TrioClock(epoch_ns=0))


async def test_refused_packets_are_drop_spans_with_a_reason_and_a_rate_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = SpanBus()
    async with Network(tracing=_tracing(bus)) as net:
        router = net.add_router("NAT A", "port_restricted_cone")
        router._drop_rate = router._drop_tokens = 3.0  # a small budget to see the limit
        inside, outside = router.add_host("A"), net.add_host("X")
        assert inside.ip is not None and outside.ip is not None
        with inside.udp_socket((inside.ip, 4001)) as sock, outside.udp_socket() as probe:
            await sock.sendto(b"hello", (outside.ip, 9))  # a mapping toward X:9 only
            for _ in range(5):
                await probe.sendto(b"let me in", (router.public_ip, 4001))
            await trio.sleep(2)
            await probe.sendto(b"again", (router.public_ip, 4001))
            await trio.sleep(1)
    drops = [r for r in bus.history() if r.ended and r.name == spans.NAT_DROP]
    assert len(drops) == 4  # 3 at once, then 2 suppressed, then one after the refill
    first = drops[0]
    assert first.node_label == "NAT A"
    assert first.attributes[spans.LIBP2P_NAT_EXTERNAL] == f"{router.public_ip}:4001"
    assert first.attributes[spans.LIBP2P_NAT_PACKET] == "udp 9 B"
    reason = first.attributes[spans.LIBP2P_REASON]
    assert isinstance(reason, str) and "address-and-port-dependent filtering" in reason
    assert [e.name for e in first.events] == [spans.NAT_FILTERED]
    assert drops[-1].attributes[spans.LIBP2P_NAT_SUPPRESSED] == 2
    assert router.refused == 6


async def test_hairpinned_packets_are_session_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = SpanBus()
    async with Network(tracing=_tracing(bus)) as net:
        cone = net.add_router("cone", "full_cone")
        a, b, s = cone.add_host("A"), cone.add_host("B"), net.add_host("S")
        assert a.ip and b.ip and s.ip
        with b.udp_socket((b.ip, 5000)) as sb, a.udp_socket((a.ip, 6000)) as sa:
            await sb.sendto(b"open", (s.ip, 9))  # B's mapping: public:5000
            await trio.sleep(1)
            await sa.sendto(b"via the public address", (cone.public_ip, 5000))
            data, _ = await sb.recvfrom(100)
            assert data == b"via the public address"
    sessions = [r for r in bus.history() if r.ended and r.name == spans.NAT_SESSION]
    hairpinned = [r for r in sessions if any(e.name == spans.NAT_HAIRPINNED for e in r.events)]
    assert len(hairpinned) == 2  # A's way out and its way back in on B's mapping
    assert {r.attributes[spans.LIBP2P_NAT_ORIGIN] for r in hairpinned} == {"outbound", "inbound"}


async def test_no_tracing_costs_no_spans(autojump_clock: trio.testing.MockClock) -> None:
    async with Network() as net:
        router = net.add_router("NAT", "home_router")
        assert router.tracing is None and router.tracer is spans.NO_TRACER
        a = router.add_host("A")
        assert a.ip is not None
        with a.udp_socket() as sock:
            await sock.sendto(b"x", ("198.51.100.1", 9))
            await trio.sleep(1)
        assert not router._spans


async def test_nodes_ping_over_simnet_on_the_real_clock() -> None:
    """No MockClock: the scheduler sleeps on trio's real clock (live notebooks)."""
    async with Network(wan_link=Link(latency=0.002), lan_link=Link(latency=0.0005)) as net:
        a_host = net.add_router("NAT", "home_router").add_host("A")
        b_host = net.add_host("B")
        async with a_host.node() as a, b_host.node() as b:
            with trio.fail_after(10):
                rtts = await a.ping(b.addrs[0], 3)
    # 0.5 + 2 + 2 ms each way, plus whatever the CPU adds
    assert all(rtt >= 9.0 for rtt in rtts), rtts
    assert min(rtts) == pytest.approx(9.0, abs=40.0)

"""DCUtR between real nodes on the simulated internet, on MockClock (tier 3).

A dials B through a relay (a stand-in splice until Circuit Relay v2 lands); B's service
upgrades the limited connection. Home routers on both sides: the TCP simultaneous open and
the QUIC punch succeed on the first attempt, with A as the security client; symmetric NATs
fail with a reason; a public A is reached by connection reversal. Each test asserts the
exact sequence of node events on both sides and what the spans say.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from dcutr_helpers import next_event, scenario

from flarelab.protocols.dcutr import (
    DCUTR_PROTOCOL,
    HolePunchConfig,
    HolePunchFailed,
    HolePunchSucceeded,
)
from flarelab.tracing import spans

CLOSED = "upgraded to a direct connection (DCUtR)"


async def test_tcp_simultaneous_open_through_home_routers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scenario("home_router", "home_router", transport="tcp") as sc:
        relayed_a, relayed_b = await sc.relayed()
        done = await next_event(sc.b, HolePunchSucceeded)
        result = done.result
        assert (done.outcome, result.attempts, result.transport) == ("success", 1, "tcp")
        nat_a = sc.net.routers["NAT A"].public_ip
        nat_b = sc.net.routers["NAT B"].public_ip
        assert str(result.address) == f"/ip4/{nat_a}/tcp/4001"
        # RTT over the relay: 4 hops of 10 ms + 2 LAN hops of 0.5 ms, each way
        assert result.rtt_ms == pytest.approx(82.0, abs=0.5)
        # new streams take the direct connection; the relayed one closes after the grace
        assert sc.b.best_connection(sc.a.peer_id) is result.connection
        assert len(await sc.b.ping(sc.a.peer_id, 2)) == 2
        await trio.sleep(6)
        assert relayed_a.is_closed and relayed_b.is_closed
        assert sc.story_b() == [
            "opened limited inbound p2p-circuit",
            "started initiator",
            "opened outbound tcp",  # B's connect() of the simultaneous open
            "succeeded initiator success",
            f"closed limited inbound p2p-circuit: {CLOSED}",
        ]
        assert sc.story_a() == [
            "opened limited outbound p2p-circuit",
            "started receiver round 1",
            "opened outbound tcp",  # A's connect() too: one TCP connection, two connects
            "succeeded receiver success",
            f"closed limited outbound p2p-circuit: {CLOSED}",
        ]

    # roles: A is the client of the security handshake, B the server
    a_up = [r for r in sc.spans("A", spans.NODE_UPGRADE)
            if r.attributes[spans.LIBP2P_MULTIADDR] == f"/ip4/{nat_b}/tcp/4001"]
    b_up = [r for r in sc.spans("B", spans.NODE_UPGRADE)
            if r.attributes[spans.LIBP2P_MULTIADDR] == f"/ip4/{nat_a}/tcp/4001"]
    assert [r.attributes[spans.LIBP2P_ROLE] for r in a_up] == ["initiator"]
    assert [r.attributes[spans.LIBP2P_ROLE] for r in b_up] == ["responder"]

    # B's spans: the upgrade, one attempt with its messages, one dial
    (upgrade,) = sc.spans("B", spans.DCUTR_UPGRADE)
    (attempt,) = sc.spans("B", spans.DCUTR_ATTEMPT)
    (dial,) = sc.spans("B", spans.HOLEPUNCH_DIAL)
    assert attempt.parent_id == upgrade.span_id and dial.parent_id == attempt.span_id
    assert upgrade.attributes[spans.LIBP2P_OUTCOME] == "success"
    assert upgrade.attributes[spans.LIBP2P_ATTEMPT] == 1
    assert attempt.attributes[spans.LIBP2P_RTT_MS] == pytest.approx(82.0, abs=0.5)
    assert attempt.attributes["dcutr.local_addrs"] == (f"/ip4/{nat_b}/tcp/4001",)
    assert attempt.attributes["dcutr.remote_addrs"] == (f"/ip4/{nat_a}/tcp/4001",)
    assert [(e.name, e.attributes[spans.MESSAGE_TYPE]) for e in attempt.events] == [
        ("message.sent", "CONNECT"), ("message.received", "CONNECT"), ("message.sent", "SYNC")]
    assert dial.attributes[spans.LIBP2P_CANDIDATES] == (f"/ip4/{nat_a}/tcp/4001",)
    assert dial.attributes[spans.LIBP2P_TRANSPORT] == "tcp"
    assert dial.attributes[spans.LIBP2P_ROLE] == "responder"
    # B dialled RTT/2 after SYNC left
    sync = attempt.events[-1]
    assert (dial.start_ns - sync.time_ns) / 1e6 == pytest.approx(41.0, abs=0.5)

    # A's side: one round, the mirror image of B's messages
    (a_attempt,) = sc.spans("A", spans.DCUTR_ATTEMPT)
    assert a_attempt.attributes[spans.LIBP2P_ROLE] == "responder"
    assert [(e.name, e.attributes[spans.MESSAGE_TYPE]) for e in a_attempt.events] == [
        ("message.received", "CONNECT"), ("message.sent", "CONNECT"),
        ("message.received", "SYNC")]
    (a_dial,) = sc.spans("A", spans.HOLEPUNCH_DIAL)
    assert a_dial.attributes[spans.LIBP2P_ROLE] == "initiator"
    # A dialled when SYNC arrived, at the same moment as B (the relay path is symmetric)
    assert a_dial.start_ns == dial.start_ns


async def test_quic_punch_through_home_routers(autojump_clock: trio.testing.MockClock) -> None:
    async with scenario("home_router", "home_router", transport="quic") as sc:
        await sc.relayed()
        done = await next_event(sc.b, HolePunchSucceeded)
        assert (done.outcome, done.result.attempts, done.result.transport) == (
            "success", 1, "quic-v1")
        # only A dials: B's direct connection is an inbound QUIC connection
        assert done.connection is not None and done.connection.direction == "inbound"
        assert len(await sc.a.ping(sc.b.peer_id, 1)) == 1
        assert sc.story_b()[:4] == [
            "opened limited inbound p2p-circuit",
            "started initiator",
            "opened inbound quic",
            "succeeded initiator success",
        ]
        assert sc.story_a()[:4] == [
            "opened limited outbound p2p-circuit",
            "started receiver round 1",
            "opened outbound quic",
            "succeeded receiver success",
        ]
    (dial,) = sc.spans("B", spans.HOLEPUNCH_DIAL)
    nat_a = sc.net.routers["NAT A"].public_ip
    assert dial.attributes["holepunch.punched"] == (f"/ip4/{nat_a}/udp/4001/quic-v1",)
    assert dial.attributes["holepunch.packets"] >= 1
    assert dial.attributes[spans.LIBP2P_DIRECTION] == "inbound"
    assert sc.spans("B", spans.QUIC_DIAL) == [] or all(
        r.attributes[spans.LIBP2P_MULTIADDR] != f"/ip4/{nat_a}/udp/4001/quic-v1"
        for r in sc.spans("B", spans.QUIC_DIAL))  # B never dials A over QUIC


async def test_symmetric_nats_fail_after_three_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scenario("symmetric", "symmetric", transport="tcp") as sc:
        _, relayed_b = await sc.relayed()
        failed = await next_event(sc.b, HolePunchFailed)
        assert failed.outcome == "failed"
        assert failed.result.attempts == 3
        assert failed.reason.startswith("no direct connection after 3 attempts; attempt 3: ")
        assert "within 5 s" in failed.reason
        await trio.sleep(10)
        assert not relayed_b.is_closed  # the relayed connection stays
        assert sc.story_b() == [
            "opened limited inbound p2p-circuit", "started initiator",
            "attempt 1 timeout", "attempt 2 timeout", "attempt 3 timeout",
            "failed initiator failed",
        ]
        assert sc.story_a() == [
            "opened limited outbound p2p-circuit",
            "started receiver round 1", "attempt 1 timeout",
            "started receiver round 2", "attempt 2 timeout",
            "started receiver round 3", "attempt 3 timeout",
        ]
        assert [r.outcome for r in sc.service_b.results] == ["failed"]  # type: ignore[union-attr]


async def test_symmetric_nat_without_confirmed_addresses_has_nothing_to_offer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # the default: only observations that enough observers confirmed are offered
    async with scenario("symmetric", "home_router", hp=HolePunchConfig()) as sc:
        await sc.relayed()
        failed = await next_event(sc.b, HolePunchFailed)
        assert failed.outcome == "no_suitable_address"
        assert failed.reason == (
            "we have no public address to offer: our listen addresses are private and no "
            "observed address of ours is confirmed yet")
        assert sc.story_b()[-1] == "failed initiator no_suitable_address"
        assert not any(line.startswith("started receiver") for line in sc.story_a())


async def test_public_a_is_reached_by_connection_reversal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scenario(None, "home_router") as sc:
        await sc.relayed()
        done = await next_event(sc.b, HolePunchSucceeded)
        assert done.outcome == "direct_dial"
        assert done.result.attempts == 0
        await trio.sleep(0.1)
        assert sc.story_b()[:4] == [
            "opened limited inbound p2p-circuit", "started initiator",
            "opened outbound tcp", "succeeded initiator direct_dial",
        ]
        assert sc.story_a()[:3] == [
            "opened limited outbound p2p-circuit", "opened inbound tcp",
            "succeeded receiver connection_reversed",
        ]
    (dial,) = sc.spans("B", spans.HOLEPUNCH_DIAL)
    assert dial.attributes["holepunch.reversal"] is True
    assert sc.spans("B", spans.DCUTR_ATTEMPT) == []


async def test_failed_reversal_then_punch(autojump_clock: trio.testing.MockClock) -> None:
    # threshold 1: A's observed address is confirmed, so A advertises it and B tries it
    async with scenario("home_router", "home_router", threshold=1,
                        hp=HolePunchConfig()) as sc:
        await sc.relayed()
        done = await next_event(sc.b, HolePunchSucceeded)
        assert (done.outcome, done.result.attempts) == ("success", 1)
    upgrade = sc.spans("B", spans.DCUTR_UPGRADE)[0]
    reversal, punch = sc.spans("B", spans.HOLEPUNCH_DIAL)
    assert reversal.attributes["holepunch.reversal"] is True
    assert reversal.attributes[spans.LIBP2P_OUTCOME] == "timeout"
    assert (reversal.end_ns - reversal.start_ns) / 1e9 == pytest.approx(5.0)
    assert punch.attributes[spans.LIBP2P_OUTCOME] == "success"
    assert upgrade.attributes["dcutr.reversal_addrs"] == (
        f"/ip4/{sc.net.routers['NAT A'].public_ip}/tcp/4001",)


async def test_both_transports_offered(autojump_clock: trio.testing.MockClock) -> None:
    async with scenario("home_router", "home_router", transport="both") as sc:
        await sc.relayed()
        done = await next_event(sc.b, HolePunchSucceeded)
        assert done.outcome == "success"
        assert done.result.transport in ("tcp", "quic-v1")
        (attempt,) = sc.spans("B", spans.DCUTR_ATTEMPT)
        assert len(attempt.attributes["dcutr.local_addrs"]) == 2
        assert len(await sc.b.ping(sc.a.peer_id, 1)) == 1


async def test_a_without_the_protocol(autojump_clock: trio.testing.MockClock) -> None:
    async with scenario("home_router", "home_router", service_a=False) as sc:
        await sc.relayed()
        failed = await next_event(sc.b, HolePunchFailed)
        assert (failed.outcome, failed.reason) == ("failed", "A does not speak /libp2p/dcutr")
        assert DCUTR_PROTOCOL not in sc.b.peerstore.protocols(sc.a.peer_id)


async def test_b_syn_in_a_listener_still_makes_a_the_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # B's symmetric NAT sends its SYN from a port nobody predicted; A's full-cone NAT lets
    # it into A's listener, so A's kernel *accepts* -- and A must still be the client
    async with scenario("full_cone", "symmetric", transport="tcp") as sc:
        await sc.relayed()
        done = await next_event(sc.b, HolePunchSucceeded)
        assert done.outcome == "success"
        await trio.sleep(0.1)
        assert sc.story_a()[2] == "opened inbound tcp"
    (a_up,) = [r for r in sc.spans("A", spans.NODE_UPGRADE)
               if r.attributes[spans.LIBP2P_DIRECTION] == "inbound"]
    assert a_up.attributes[spans.LIBP2P_ROLE] == "initiator"


async def test_dual_stack_behind_ipv6_firewalls(autojump_clock: trio.testing.MockClock) -> None:
    # IPv6 without translation: A's listen address is public, so B first tries it directly
    # (the stateful firewall drops that), then both families are punched at once
    async with scenario("home_router", "home_router", transport="tcp", ipv6=True) as sc:
        await sc.relayed()
        done = await next_event(sc.b, HolePunchSucceeded)
        assert (done.outcome, done.result.attempts) == ("success", 1)
    reversal, punch = sc.spans("B", spans.HOLEPUNCH_DIAL)
    a_v6 = next(str(x) for x in sc.a.listen_addrs() if str(x).startswith("/ip6/"))
    assert reversal.attributes[spans.LIBP2P_CANDIDATES] == (a_v6,)
    assert reversal.attributes[spans.LIBP2P_OUTCOME] == "timeout"
    nat_a = sc.net.routers["NAT A"].public_ip
    assert punch.attributes[spans.LIBP2P_CANDIDATES] == (a_v6, f"/ip4/{nat_a}/tcp/4001")
    assert punch.attributes[spans.LIBP2P_OUTCOME] == "success"

"""A failed connection reversal must not spoil B's TCP punch (simnet, MockClock).

A advertises its NAT's mapping (observed, confirmed) though nothing reaches A there, so B
first tries a connection reversal to it, which times out. If that dial left from B's
listen port, B's NAT would keep a session from B's listen port to exactly the address B
then punches. Here A answers CONNECT late (the relay delays A's bytes), so B dials
RTT/2 = 91 ms after SYNC, while A's SYN reaches B 62 ms after it: through that leftover
session A's SYN would get into B's listener first, the half-open connection would take
B's 4-tuple, and B's own punch dial would fall back to an ephemeral port. Simnet's NAT
then still lets the listener's answer out; a Linux NAT (the real lab) drops it, because
its conntrack entry tracks the dead reversal socket's sequence numbers, and every round
fails. So the reversal leaves from an ephemeral port, and B's punch from its listen port.
"""

from __future__ import annotations

import contextlib
import math

import trio
import trio.testing
from dcutr_helpers import SPLICE_PORT, Scenario, circuit_addr, next_event, scenario

from flarelab.multiaddr import Multiaddr
from flarelab.node.connection import Connection
from flarelab.protocols.dcutr import HolePunchConfig, HolePunchFailed, HolePunchSucceeded
from flarelab.simnet import SimTcpStream
from flarelab.tracing import spans
from flarelab.transports.base import RawConnection

#: the stand-in relay holds A's bytes to B this long (as if A were slow to answer)
A_TO_B_DELAY = 0.100


async def _delayed_pipe(source: SimTcpStream, sink: SimTcpStream, delay: float) -> None:
    """Copy ``source`` to ``sink``, each chunk ``delay`` seconds late, in order."""
    send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)

    async def later() -> None:
        async for due, data in receive:
            await trio.sleep_until(due)
            await sink.send_all(data)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(later)
            async with send:
                while data := await source.receive_some(65536):
                    send.send_nowait((trio.current_time() + delay, data))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        with contextlib.suppress(Exception):
            await sink.aclose()


async def _relayed_with_slow_a(sc: Scenario, nursery: trio.Nursery
                               ) -> tuple[Connection, Connection]:
    """A dials B through a splice on the relay host that delays A's bytes to B."""
    relay = sc.relay_host
    assert relay.ip is not None
    listener = relay.listen_tcp(SPLICE_PORT + 1)
    try:
        to_b = await sc.b_host.connect_tcp(relay.ip, SPLICE_PORT + 1)
        from_b = await listener.accept()
        to_a = await sc.a_host.connect_tcp(relay.ip, SPLICE_PORT + 1)
        from_a = await listener.accept()
    finally:
        await listener.aclose()
    nursery.start_soon(_delayed_pipe, from_a, from_b, A_TO_B_DELAY)
    nursery.start_soon(_delayed_pipe, from_b, from_a, 0.0)
    relay_peer = sc.standin.peer_id
    raw_a = RawConnection(
        stream=to_a, local_addr=Multiaddr.from_ip_port(*to_a.getsockname(), "tcp"),
        remote_addr=circuit_addr(relay, relay_peer, sc.b.peer_id), is_initiator=True,
        transport="p2p-circuit", limited=True)
    raw_b = RawConnection(
        stream=to_b, local_addr=Multiaddr.from_ip_port(*to_b.getsockname(), "tcp"),
        remote_addr=circuit_addr(relay, relay_peer, sc.a.peer_id), is_initiator=False,
        transport="p2p-circuit", limited=True)
    out: dict[str, Connection] = {}
    async with trio.open_nursery() as ups:
        async def up_a() -> None:
            out["a"] = await sc.a.upgrade_and_run(
                raw_a, expected_peer=sc.b.peer_id, is_initiator=True, limited=True)

        async def up_b() -> None:
            out["b"] = await sc.b.upgrade_and_run(
                raw_b, expected_peer=None, is_initiator=False, limited=True)

        ups.start_soon(up_a)
        ups.start_soon(up_b)
    return out["a"], out["b"]


async def test_failed_reversal_leaves_the_listen_port_to_the_punch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # threshold 1: A's observed address (its NAT's mapping) is confirmed and advertised
    async with (scenario("home_router", "home_router", threshold=1,
                         hp=HolePunchConfig()) as sc, trio.open_nursery() as nursery):
        await _relayed_with_slow_a(sc, nursery)
        done = await next_event(sc.b, HolePunchSucceeded, HolePunchFailed)
        assert (done.outcome, done.result.attempts) == ("success", 1)
        await trio.sleep(0.1)
        nat_a = sc.net.routers["NAT A"].public_ip
        # B's NAT, sessions to A's mapping in the order they opened: the reversal's from
        # an ephemeral port, then the punch's from the listen port
        to_a = sorted((s for s in sc.net.routers["NAT B"].sessions()
                       if s.proto == "tcp" and s.remote == (nat_a, 4001)),
                      key=lambda s: s.created)
        ports = [s.internal[1] if s.internal is not None else None for s in to_a]
        assert len(ports) == 2 and ports[0] != 4001 and ports[1] == 4001, ports
        nursery.cancel_scope.cancel()
    a_mapping = f"/ip4/{nat_a}/tcp/4001"
    reversal, punch = sc.spans("B", spans.HOLEPUNCH_DIAL)
    assert reversal.attributes["holepunch.reversal"] is True
    assert reversal.attributes[spans.LIBP2P_CANDIDATES] == (a_mapping,)
    assert reversal.attributes[spans.LIBP2P_OUTCOME] == "timeout"
    assert punch.attributes[spans.LIBP2P_OUTCOME] == "success"
    # B's TCP dials to A's mapping: the reversal from an ephemeral port, so B's NAT mapped
    # that port, not the listen port; the punch from the listen port (no fallback)
    dials = [d for d in sc.spans("B", spans.TCP_DIAL)
             if d.attributes[spans.LIBP2P_MULTIADDR] == a_mapping]
    assert len(dials) == 2
    assert [e.name for d in dials for e in d.events] == []
    assert dials[1].attributes[spans.LIBP2P_REUSE_PORT] is True
    assert dials[1].attributes[spans.NETWORK_LOCAL_PORT] == 4001
    # so A's early SYN was dropped by B's NAT instead of reaching B's listener: the
    # direct connection is the simultaneous open of both dials, outbound on both sides
    assert "opened outbound tcp" in sc.story_b() and "opened inbound tcp" not in sc.story_b()
    assert "opened outbound tcp" in sc.story_a()

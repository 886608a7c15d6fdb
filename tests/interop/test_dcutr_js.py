"""DCUtR between flarelab and real js-libp2p 3.x peers (@libp2p/dcutr 3.0.28), over a relay.

A flarelab relay carries the relayed connection; then the DCUtR exchange runs between the
two peers, in both roles. js-libp2p refuses private and documentation-range addresses, so
on loopback it can never go direct: these tests assert the exchange (CONNECT both ways,
SYNC, the addresses, the roles), not the punch. The flarelab side offers a public-looking
address that js accepts (11.0.0.0/8, as the libp2p test-plans lab uses); nobody dials it
successfully.

Real processes and sockets, so trio's real clock: every wait is bounded.
"""

from __future__ import annotations

import pytest
import trio
from jspeer import run_js_peer

from flarelab.multiaddr import Multiaddr
from flarelab.node import Node, NodeConfig
from flarelab.protocols.dcutr import (
    DCUTR_PROTOCOL,
    HolePunchAttemptFailed,
    HolePunchConfig,
    HolePunchFailed,
    HolePunchService,
)
from flarelab.protocols.relay import RelayService, RelayTransport
from flarelab.tracing import spans
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.provider import TracingConfig

pytestmark = pytest.mark.interop

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
TEST_TIMEOUT = 40.0
#: public to js-libp2p (and to us), routed nowhere useful
FAKE_PUBLIC = Multiaddr("/ip4/11.0.0.1/tcp/4001")


def config(label: str, bus: SpanBus | None = None) -> NodeConfig:
    tracing = TracingConfig(label=label, bus=bus) if bus is not None else None
    return NodeConfig(listen_addrs=[LOOPBACK], label=label, enable_quic=False, tracing=tracing,
                      muxers=("/yamux/1.0.0",))


def _messages(record: object) -> list[tuple[str, str]]:
    return [(e.name, e.attributes[spans.MESSAGE_TYPE])  # type: ignore[attr-defined]
            for e in record.events]  # type: ignore[attr-defined]


async def test_js_as_a_answers_our_connect() -> None:
    """js dials us through the relay (js is A); we are B and run the upgrade."""
    bus = SpanBus()
    async with Node(config("relay")) as r, Node(config("B", bus)) as b:
        RelayService(r)
        RelayTransport.install(b)
        HolePunchService(b, HolePunchConfig(relay_grace=None))
        b.extra_addrs["test"] = [FAKE_PUBLIC]
        relay_addr = str(r.addrs[0])
        with trio.fail_after(TEST_TIMEOUT), b.events.subscribe(HolePunchFailed) as failures:
            await b.listen(f"{relay_addr}/p2p-circuit")
            circuit = f"{relay_addr}/p2p-circuit/p2p/{b.peer_id}"
            async with run_js_peer("--dcutr", "--dial", circuit, "--identify") as js:
                failed = await failures.next()
                js_addrs = js.addrs
    # js answered with its own (loopback) addresses, which we may not punch to
    assert failed.outcome == "no_suitable_address"
    assert failed.reason.startswith("A offered ")
    assert "is not public" in failed.reason
    (attempt,) = [rec for rec in bus.history() if rec.ended and rec.name == spans.DCUTR_ATTEMPT]
    assert _messages(attempt) == [("message.sent", "CONNECT"), ("message.received", "CONNECT")]
    assert attempt.events[0].attributes["dcutr.addrs"] == (str(FAKE_PUBLIC),)
    offered = {Multiaddr(a).without_peer_id()  # js appends its /p2p/ id
               for a in attempt.events[1].attributes["dcutr.addrs"]}  # type: ignore[union-attr]
    assert {Multiaddr(a).without_peer_id() for a in js_addrs if "p2p-circuit" not in a} <= offered
    assert attempt.attributes[spans.LIBP2P_RTT_MS] > 0  # type: ignore[operator]


async def test_js_as_b_runs_the_exchange_with_us() -> None:
    """We dial js through the relay (we are A); js is B: CONNECT, CONNECT, SYNC."""
    bus = SpanBus()
    async with Node(config("relay")) as r, Node(config("A", bus)) as a:
        RelayService(r)
        RelayTransport.install(a)
        HolePunchService(a)
        a.extra_addrs["test"] = [FAKE_PUBLIC]
        relay_addr = str(r.addrs[0])
        with trio.fail_after(TEST_TIMEOUT):
            async with run_js_peer("--dcutr", "--listen", LOOPBACK, "--listen",
                                   f"{relay_addr}/p2p-circuit") as js:
                with a.events.subscribe(HolePunchAttemptFailed) as rounds:
                    conn = await a.connect(f"{relay_addr}/p2p-circuit/p2p/{js.peer_id}")
                    assert conn.limited and conn.direction == "outbound"
                    first = await rounds.next()
                assert DCUTR_PROTOCOL in a.peerstore.protocols(conn.remote_peer)
    # js sent SYNC after our CONNECT; its own addresses are loopback ones, so we did not dial
    assert (first.attempt, first.outcome) == (1, "no_suitable_address")
    attempt = next(rec for rec in bus.history()
                   if rec.ended and rec.name == spans.DCUTR_ATTEMPT)
    assert attempt.attributes[spans.LIBP2P_ROLE] == "responder"
    assert _messages(attempt) == [("message.received", "CONNECT"), ("message.sent", "CONNECT"),
                                  ("message.received", "SYNC")]
    assert attempt.events[1].attributes["dcutr.addrs"] == (str(FAKE_PUBLIC),)
    assert attempt.attributes[spans.LIBP2P_RTT_MS] > 0  # type: ignore[operator]

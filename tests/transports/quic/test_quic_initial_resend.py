"""A dial's first flight: when it leaves, when QUIC retransmits it, and hole-punch copies.

Over :class:`FakeUdpNetwork` on trio's MockClock (exact times), plus one core-level check
that an aioquic server drops a copy of an Initial it already has. The scene is DCUtR's A
dialling B while B's NAT is still closed: the network drops what the client sends until a
chosen moment, as B's router drops A's Initials until B's first punch opened the mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import trio
from quic_helpers import (
    CLIENT_ADDR,
    FakeUdpNetwork,
    make_server,
    recording_tracer,
    spans_named,
)
from trio.testing import MockClock

from flarelab.errors import LocalProtocolError
from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.multiaddr import Multiaddr
from flarelab.tracing import spans
from flarelab.transports.quic import QuicConfig, QuicTransport
from flarelab.transports.quic.config import (
    INITIAL_RESENT_COUNT,
    INITIAL_RESENT_EVENT,
    MAX_INITIAL_RESENDS,
    InitialResend,
)
from flarelab.transports.quic.core import QuicCore

#: aioquic's PTO before any RTT sample: twice its initial RTT of 100 ms
FIRST_PTO = 0.2


@dataclass
class ClosedUntil:
    """A network filter: drop client -> server datagrams sent before ``opens`` (a closed
    NAT), and server -> client ones before ``answers``; log every datagram sent."""

    server: tuple[str, int] = ("", 0)
    opens: float = 0.0
    answers: float = 0.0
    sent: list[tuple[float, bytes, bool]] = field(default_factory=list)  # (time, data, to server)

    def __call__(self, data: bytes, source: tuple[str, int], dest: tuple[str, int]
                 ) -> bytes | None:
        now = trio.current_time()
        to_server = dest == self.server
        self.sent.append((now, data, to_server))
        if to_server and now < self.opens:
            return None
        if not to_server and source == self.server and now < self.answers:
            return None
        return data

    def to_server(self) -> list[tuple[float, bytes]]:
        return [(t, d) for t, d, to in self.sent if to]


async def _dial(
    gate: ClosedUntil,
    *,
    resend: InitialResend | None = None,
    config: QuicConfig | None = None,
    tracer: object = None,
    check: Callable[[object, object], None] | None = None,
) -> tuple[float | None, int]:
    """Dial a listener through ``gate``; return (handshake time or None, inbound count)."""
    net = FakeUdpNetwork(filter=gate)
    server_key = Ed25519PrivateKey.generate()
    kw = {"tracer": tracer} if tracer is not None else {}
    server = QuicTransport(server_key, socket_factory=net.factory, config=config, **kw)
    client = QuicTransport(Ed25519PrivateKey.generate(), socket_factory=net.factory,
                           config=config, **kw)
    inbound: list[object] = []

    async def on_inbound(secured: object) -> None:
        inbound.append(secured)
        await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            server.listen, Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1"), on_inbound, nursery)
        gate.server = listener.endpoint.bound
        # a monotonic clock is far from 0 (aioquic's loss timer before a client's first
        # send counts from 0: the driver must send before it lets that timer fire)
        await trio.sleep(10.0)
        addr = listener.addrs[0].with_peer_id(PeerId.from_public_key(server_key.public_key))
        gate.opens += trio.current_time()
        gate.answers += trio.current_time()
        start = trio.current_time()
        try:
            secured = await client.dial(addr, resend_initial=resend)
        except TimeoutError:
            nursery.cancel_scope.cancel()
            return None, len(inbound)
        took = trio.current_time() - start
        await trio.testing.wait_all_tasks_blocked()
        if check is not None:
            check(secured, listener)
        await secured.muxer.aclose()
        nursery.cancel_scope.cancel()
    return took, len(inbound)


async def test_a_lost_first_initial_is_retransmitted_after_one_pto(
    autojump_clock: MockClock,
) -> None:
    # an ordinary dial: no copies; QUIC's own retransmission after 2 x 100 ms (it came
    # after 400 ms while the flusher let aioquic's loss timer fire before the first send)
    gate = ClosedUntil(opens=0.001)
    took, inbound = await _dial(gate)
    times = [t - gate.sent[0][0] for t, _ in gate.to_server()[:2]]
    assert times == pytest.approx([0.0, FIRST_PTO], abs=1e-6)
    assert took == pytest.approx(FIRST_PTO, abs=1e-6)
    assert inbound == 1


async def test_the_first_flight_leaves_at_once(autojump_clock: MockClock) -> None:
    # nothing lost: one Initial, sent the moment dial() runs; no copies
    gate = ClosedUntil()
    took, _ = await _dial(gate)
    _, first = gate.to_server()[0]
    assert len(first) == 1200
    assert took == pytest.approx(0.0, abs=1e-6)
    assert [d for _, d in gate.to_server()].count(first) == 1


async def test_a_hole_punch_dial_resends_its_first_flight_until_the_peer_answers(
    autojump_clock: MockClock,
) -> None:
    gate = ClosedUntil(opens=0.025)  # B's punch opens its NAT 25 ms after our first Initial
    results: list[int] = []
    plan = InitialResend(0.010, 10, on_resend=results.append)

    def check(secured: object, listener: object) -> None:
        assert secured.details["initial_resent"] == 3  # type: ignore[attr-defined]
        assert listener.endpoint.connections[0].initial_resent == 0  # type: ignore[attr-defined]

    with recording_tracer() as (tracer, exporter):
        took, inbound = await _dial(gate, resend=plan, tracer=tracer, check=check)
        (dial,) = spans_named(exporter, spans.QUIC_DIAL)
        handshakes = [s for s in spans_named(exporter, spans.QUIC_HANDSHAKE)
                      if s.attributes[spans.LIBP2P_ROLE] == "initiator"]
    to_server = gate.to_server()
    first = to_server[0][1]
    # copies at 10, 20 and 30 ms, byte for byte the first datagram; the third gets through
    assert [round(t - to_server[0][0], 6) for t, d in to_server if d == first] == [
        0.0, 0.01, 0.02, 0.03]
    assert took == pytest.approx(0.03, abs=1e-6)
    assert inbound == 1
    assert results == [1, 2, 3]
    assert dial.attributes[INITIAL_RESENT_COUNT] == 3
    assert [(e.name, e.attributes[INITIAL_RESENT_COUNT]) for e in handshakes[0].events
            if e.name == INITIAL_RESENT_EVENT] == [(INITIAL_RESENT_EVENT, n) for n in (1, 2, 3)]


async def test_copies_that_reach_the_server_twice_are_harmless(autojump_clock: MockClock) -> None:
    # the server gets the Initial and all 10 copies, but its first answer is lost: it keeps
    # one connection, sends nothing more for the copies (duplicate packet numbers), and
    # the handshake completes when its own PTO re-sends that answer
    gate = ClosedUntil(answers=0.001)

    def check(secured: object, listener: object) -> None:
        endpoint = listener.endpoint  # type: ignore[attr-defined]
        assert len(endpoint.connections) == 1
        assert endpoint.refused_handshakes == 0 and endpoint.dropped_unknown == 0

    took, inbound = await _dial(gate, resend=InitialResend(0.010, 10), check=check)
    first = gate.to_server()[0][1]
    assert [d for _, d in gate.to_server()].count(first) == 11  # the Initial and 10 copies
    from_server = [round(t - gate.sent[0][0], 6) for t, _, to in gate.sent if not to]
    assert from_server[0] == 0.0 and min(from_server[1:]) == pytest.approx(FIRST_PTO)
    assert inbound == 1
    assert took == pytest.approx(FIRST_PTO, abs=1e-6)


async def test_copies_are_bounded(autojump_clock: MockClock) -> None:
    # the server is never reached: 5 copies, then QUIC's own retransmissions only
    gate = ClosedUntil(opens=1e9)
    config = QuicConfig(handshake_timeout=1.0)
    took, inbound = await _dial(gate, resend=InitialResend(0.010, 5), config=config)
    assert (took, inbound) == (None, 0)
    to_server = gate.to_server()
    first = to_server[0][1]
    copies = [round(t - to_server[0][0], 6) for t, d in to_server if d == first]
    assert copies == [0.0, 0.01, 0.02, 0.03, 0.04, 0.05]
    later = [round(t - to_server[0][0], 6) for t, d in to_server if d != first]
    assert later[0] == pytest.approx(FIRST_PTO, abs=1e-6)  # the PTO, as for any dial


def test_a_server_drops_a_copy_of_an_initial_it_has() -> None:
    client = QuicCore(credentials=_credentials(), config=QuicConfig(), is_client=True,
                      datagram_size=1452)
    client.connect(("10.0.0.2", 4002), now=0.0)
    (first, _), = client.datagrams_to_send(0.0)
    server = make_server(first, Ed25519PrivateKey.generate(), QuicConfig())
    server.receive_datagram(first, CLIENT_ADDR, 0.0)
    answer = server.datagrams_to_send(0.0)
    assert answer  # its Initial and Handshake flight
    server.receive_datagram(first, CLIENT_ADDR, 0.001)
    server.receive_datagram(first, CLIENT_ADDR, 0.002)
    assert server.datagrams_to_send(0.002) == []  # no second flight, not even an ACK
    assert not server._crypto_retransmitted
    for data, _ in answer:
        client.receive_datagram(data, ("10.0.0.2", 4002), 0.003)
    assert client.datagrams_to_send(0.003)  # the handshake goes on as usual


def _credentials() -> object:
    from flarelab.transports.quic.core import utc_now
    from flarelab.transports.quic.tls import generate_credentials

    return generate_credentials(Ed25519PrivateKey.generate(), now=utc_now())


@pytest.mark.parametrize(("interval", "count"), [
    (0.0, 1), (0.0005, 1), (1.5, 1), (0.01, -1), (0.01, MAX_INITIAL_RESENDS + 1)])
def test_initial_resend_limits(interval: float, count: int) -> None:
    with pytest.raises(LocalProtocolError):
        InitialResend(interval, count)

"""A -> relay <- B over real TCP on loopback (tier 4): reservations, relayed connections,
refusals, and bad input from either side.

Real sockets, so the real clock: every wait is bounded by ``trio.fail_after``; nothing sleeps.
"""

from __future__ import annotations

import pytest
import trio
from relay_helpers import events, framed, loopback_config, loopback_trio, raw_hop

from flarelab.errors import DialError, ProtocolNotSupportedError
from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.multiaddr import Multiaddr
from flarelab.node import LocalAddressesChanged, Node
from flarelab.node.connection import NetStream
from flarelab.protocols.identify import IDENTIFY_PROTOCOL
from flarelab.protocols.perf import PERF_PROTOCOL
from flarelab.protocols.relay import (
    HOP_PROTOCOL,
    STOP_PROTOCOL,
    Limit,
    RelayProtocolError,
    RelayRefusedError,
    RelayService,
    RelayTransport,
    Status,
    Voucher,
    open_circuit,
    reserve,
)
from flarelab.protocols.relay.messages import (
    HopReserve,
    HopStatus,
    PeerInfo,
    ReservationInfo,
    StopConnect,
    decode_hop,
    decode_stop,
    encode_hop,
    encode_stop,
)
from flarelab.tracing import spans
from flarelab.tracing.bus import SpanBus
from flarelab.wire import StreamReader


async def test_reserve_then_dial_ping_and_identify_over_the_relay() -> None:
    bus = SpanBus()
    async with loopback_trio(bus=bus) as t:
        r, a, b = t.relay, t.a, t.b
        with trio.fail_after(20):
            with b.events.subscribe(LocalAddressesChanged) as changes:
                assert await b.listen(f"{t.relay_addr}/p2p-circuit") == []
                change = await changes.next()
            circuit = Multiaddr(f"{t.relay_addr}/p2p-circuit")
            assert circuit in change.addrs
            assert b.extra_addrs == {f"relay:{r.peer_id}": [circuit]}
            assert circuit.with_peer_id(b.peer_id) in b.addrs
            listener = t.transports["B"].listeners()[0]
            rsvp = listener.reservation
            assert rsvp is not None and rsvp.relay == r.peer_id
            assert rsvp.limit == Limit(duration=120, data=131072)
            assert rsvp.voucher == Voucher(r.peer_id, b.peer_id, rsvp.expire)
            assert rsvp.relay_addrs == ()  # loopback is not public: the relay offers none

            conn = await a.connect(t.circuit_to(b.peer_id))
            assert conn.limited and conn.transport == "p2p-circuit"
            assert conn.remote_peer == b.peer_id
            assert conn.remote_addr == Multiaddr(t.circuit_to(b.peer_id))
            assert len(await a.ping(b.peer_id, 3)) == 3
            info = await a.identify_peer(b.peer_id)  # identify runs over limited connections
            assert info.observed_addr is None  # never sent over a relayed connection
            assert circuit in info.listen_addrs
            # B sees the relayed connection as inbound and limited, from A via the relay
            (back,) = b.connections(a.peer_id)
            assert back.limited and back.direction == "inbound"
            assert back.remote_addr == Multiaddr(f"{t.relay_addr}/p2p-circuit/p2p/{a.peer_id}")
            # protocols that do not allow limited connections do not run over it...
            stream = await conn.new_stream([PERF_PROTOCOL, IDENTIFY_PROTOCOL])
            assert stream.protocol == IDENTIFY_PROTOCOL  # B said na to perf
            await stream.aclose()
            # ...so a stream for one needs a direct connection (B is on loopback: it works)
            stream = await a.new_stream(b.peer_id, PERF_PROTOCOL)
            assert not stream.connection.limited
            assert stream.connection.remote_addr in b.listen_addrs()
            await stream.aclose()
            await a.disconnect(b.peer_id)
    reserves = [rec for rec in bus.history() if rec.ended and rec.name == spans.RELAY_RESERVE]
    assert sorted(rec.node_label for rec in reserves) == ["B", "relay"]
    client = next(rec for rec in reserves if rec.node_label == "B")
    assert events(client) == [("message.sent", "hop.reserve"),
                              ("message.received", "hop.status")]
    assert client.attributes[spans.LIBP2P_RELAY_STATUS] == "OK"
    assert client.attributes[spans.LIBP2P_OUTCOME] == "success"
    circuit_span = next(rec for rec in bus.history()
                        if rec.ended and rec.name == spans.RELAY_CIRCUIT)
    assert events(circuit_span) == [
        ("message.received", "hop.connect"), ("message.sent", "stop.connect"),
        ("message.received", "stop.status"), ("message.sent", "hop.status"),
    ]
    assert circuit_span.attributes[spans.LIBP2P_RELAY_SRC] == str(a.peer_id)
    assert circuit_span.attributes[spans.LIBP2P_RELAY_DST] == str(b.peer_id)
    assert circuit_span.attributes[spans.LIBP2P_RELAY_BYTES_SRC_TO_DST] > 0
    connects = {rec.node_label: rec for rec in bus.history()
                if rec.ended and rec.name == spans.RELAY_CONNECT}
    assert events(connects["A"]) == [("message.sent", "hop.connect"),
                                     ("message.received", "hop.status")]
    assert events(connects["B"]) == [("message.received", "stop.connect"),
                                     ("message.sent", "stop.status")]
    assert connects["B"].attributes[spans.LIBP2P_ROLE] == "responder"


async def test_listen_by_relay_id_and_dial_by_peer_id() -> None:
    async with loopback_trio() as t:
        a, b, r = t.a, t.b, t.relay
        with trio.fail_after(20):
            await b.connect(r.addrs[0])
            await b.listen(f"/p2p/{r.peer_id}/p2p-circuit")
            # A learns B's circuit address the way others would: from B's addresses
            circuit = Multiaddr(f"{t.relay_addr}/p2p-circuit")
            assert circuit in b.advertised_addrs()
            a.peerstore.add_addrs(b.peer_id, [circuit], 60.0, trio.current_time())
            await a.connect(r.addrs[0])
            conn = await a.connect(b.peer_id)  # /p2p-circuit without /p2p/B: B is expected
            assert conn.limited and conn.remote_peer == b.peer_id
            assert len(await a.ping(b.peer_id)) == 1


async def test_connect_to_a_peer_without_reservation_is_refused() -> None:
    async with loopback_trio() as t:
        with trio.fail_after(20), pytest.raises(DialError) as info:
            await t.a.connect(t.circuit_to(t.b.peer_id))
        cause = info.value.__cause__
        assert isinstance(cause, RelayRefusedError), info.value
        assert cause.status is Status.NO_RESERVATION
        assert "NO_RESERVATION (204)" in str(info.value)
        # and through the client call directly
        with trio.fail_after(10):
            conn = await t.a.connect(t.relay.addrs[0])
            with pytest.raises(RelayRefusedError) as refused:
                await open_circuit(conn, t.b.peer_id)
        assert refused.value.status is Status.NO_RESERVATION


async def test_reservations_and_connects_over_a_relayed_connection_are_refused() -> None:
    async with loopback_trio() as t:
        a, b = t.a, t.b
        RelayService(b)  # B is a relay too, but only reachable through R here
        with trio.fail_after(20):
            await b.listen(f"{t.relay_addr}/p2p-circuit")
            limited = await a.connect(t.circuit_to(b.peer_id))
            assert limited.limited
            with pytest.raises(RelayRefusedError) as info:
                await reserve(limited, local_peer=a.peer_id)
            assert info.value.status is Status.PERMISSION_DENIED
            with pytest.raises(RelayRefusedError) as info:
                await open_circuit(limited, t.relay.peer_id)
            assert info.value.status is Status.PERMISSION_DENIED
            # a hop request needs a direct connection: with one, B serves A as a relay
            direct = await a.connect(b.peer_id, allow_limited=False)
            assert not direct.limited
            rsvp = await reserve(direct, local_peer=a.peer_id)
            assert rsvp.relay == b.peer_id
            # the stop protocol is not served over limited connections either
            with pytest.raises(ProtocolNotSupportedError):
                await limited.new_stream(STOP_PROTOCOL)


async def test_relay_answers_malformed_and_unexpected_requests_and_keeps_serving() -> None:
    async with loopback_trio() as t:
        a, r = t.a, t.relay
        with trio.fail_after(20):
            body, eof = await raw_hop(a, r, framed(b"\x0a\x05garb"))
            assert decode_hop(body) == HopStatus(Status.MALFORMED_MESSAGE)
            assert eof
            body, _ = await raw_hop(a, r, framed(encode_hop(HopStatus(Status.OK))))
            assert decode_hop(body) == HopStatus(Status.UNEXPECTED_MESSAGE)
            body, _ = await raw_hop(a, r, b"\x80\x40" + b"x" * 100)  # 8192 bytes announced
            assert decode_hop(body) == HopStatus(Status.MALFORMED_MESSAGE)
            body, _ = await raw_hop(a, r, framed(b"\x08\x01"))  # CONNECT naming nobody
            assert decode_hop(body) == HopStatus(Status.MALFORMED_MESSAGE)
            # nothing else was disturbed: a reservation still works
            await t.b.listen(f"{t.relay_addr}/p2p-circuit")
            assert len(await a.ping(t.circuit_to(t.b.peer_id))) == 1


@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        (lambda r, b: HopStatus(Status.RESERVATION_REFUSED), RelayRefusedError,
         "RESERVATION_REFUSED"),
        (lambda r, b: HopStatus(Status.OK), RelayProtocolError, "no reservation"),
        (lambda r, b: HopStatus(Status.OK, ReservationInfo(expire=1000)), RelayProtocolError,
         "expired already"),
        (lambda r, b: HopReserve(), RelayProtocolError, "not a STATUS"),
        (lambda r, b: HopStatus(Status.OK, ReservationInfo(
            expire=4_000_000_000, voucher=Voucher(r.peer_id, r.peer_id, 5).seal(r.key))),
         RelayProtocolError, "voucher is for another peer"),
        (lambda r, b: HopStatus(Status.OK, ReservationInfo(expire=4_000_000_000, voucher=b"xx")),
         RelayProtocolError, "invalid voucher"),
    ],
)
async def test_client_refuses_what_a_bad_relay_answers(
    reply: object, error: type, match: str
) -> None:
    async with Node(loopback_config("fake")) as fake, Node(loopback_config("B")) as b:
        async def answer(stream: NetStream) -> None:
            reader = StreamReader(stream)
            await reader.read_length_prefixed(4096)
            await stream.send_all(framed(encode_hop(reply(fake, b))))  # type: ignore[operator]
            await stream.aclose()

        fake.set_handler(HOP_PROTOCOL, answer)
        RelayTransport.install(b)
        with trio.fail_after(10), pytest.raises(error, match=match):
            await b.listen(f"{fake.addrs[0]}/p2p-circuit")
        assert b.extra_addrs == {}
        assert RelayTransport.install(b).listeners() == []


async def test_target_refuses_bad_stop_requests() -> None:
    async with Node(loopback_config("fake")) as fake, Node(loopback_config("B")) as b:
        RelayTransport.install(b)
        stranger = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
        with trio.fail_after(10):
            for request, status in (
                (framed(b"\x08\x09"), Status.MALFORMED_MESSAGE),
                (framed(encode_stop(StopConnect(PeerInfo(stranger)))), Status.NO_RESERVATION),
                (framed(bytes([8, 1, 32, 100])), Status.UNEXPECTED_MESSAGE),  # a STATUS
            ):
                stream = await fake.new_stream(b.addrs[0], STOP_PROTOCOL)
                await stream.send_all(request)
                body = await StreamReader(stream).read_length_prefixed(4096)
                assert decode_stop(body).status is status  # type: ignore[union-attr]
                await stream.aclose()
            assert fake.connections(b.peer_id)  # the connection survives all of it

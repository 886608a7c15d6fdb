"""The QUIC trio driver and endpoint over an in-memory UDP network, on trio's MockClock.

The stream contract (trio's half-closeable checks), byte-exact transfers, many streams,
resets and closes, backpressure, stream limits, idle timeout and keep-alive, loss, and
the endpoint's handling of garbage, truncated and foreign datagrams.
"""

from __future__ import annotations

import os
import random

import pytest
import trio
import trio.testing
from aioquic.quic.packet import QuicProtocolVersion
from quic_helpers import (
    FakeUdpNetwork,
    echo_server,
    quic_pair,
    receive_until_broken,
    recording_tracer,
    send_and_collect,
    send_until_broken,
    spans_named,
)
from trio.testing import MockClock

from flarelab.errors import (
    ConnectionClosedError,
    PeerIdMismatchError,
    RemoteProtocolError,
    StreamResetError,
)
from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.multiaddr import Multiaddr
from flarelab.muxers.base import TooManyStreamsError
from flarelab.tracing import spans
from flarelab.transports.quic import QuicConfig, QuicTransport, peek_header

SMALL = QuicConfig(stream_receive_window=64 * 1024, stream_send_buffer=64 * 1024)


# ------------------------------------------------------------------ trio's stream contract


async def test_streams_pass_trios_half_closeable_stream_checks(autojump_clock: MockClock) -> None:
    async with quic_pair(FakeUdpNetwork(), client_config=SMALL, server_config=SMALL) as pair:
        client, server = pair.client, pair.server

        async def maker() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
            mine = await client.open_stream()
            await mine.send_all(b"")  # nothing yet: the peer learns of it with its first byte
            await mine.send_all(b"\x00")
            theirs = await server.accept_stream()
            assert await theirs.receive_some(1) == b"\x00"
            await theirs.send_all(b"\x01")  # one byte each way: the directions are alike
            assert await mine.receive_some(1) == b"\x01"
            return mine, theirs

        async def clogged() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
            mine, theirs = await maker()
            # the peer's window (less the byte read) and our send buffer, to the byte
            fill = bytes(SMALL.stream_receive_window - 1 + SMALL.stream_send_buffer)
            await mine.send_all(fill)
            await theirs.send_all(fill)
            return mine, theirs

        await trio.testing.check_half_closeable_stream(maker, clogged)
        await trio.testing.wait_all_tasks_blocked()


# ------------------------------------------------------------------ transfers


@pytest.mark.parametrize("size", [0, 1, 1199, 65536, 3 * 1024 * 1024 + 17])
async def test_echo_is_byte_exact(autojump_clock: MockClock, size: int) -> None:
    async with quic_pair(FakeUdpNetwork()) as pair, trio.open_nursery() as nursery:
        nursery.start_soon(echo_server, pair.server, nursery)
        payload = os.urandom(size)
        stream = await pair.client.open_stream()
        assert await send_and_collect(stream, payload) == payload
        nursery.cancel_scope.cancel()


async def test_many_concurrent_streams_both_ways(autojump_clock: MockClock) -> None:
    async with quic_pair(FakeUdpNetwork()) as pair, trio.open_nursery() as nursery:
        nursery.start_soon(echo_server, pair.server, nursery)
        nursery.start_soon(echo_server, pair.client, nursery)
        ok: list[bool] = []

        async def one(i: int) -> None:
            rng = random.Random(i)
            payload = rng.randbytes(rng.randint(1, 200_000))
            conn = pair.client if i % 2 else pair.server
            stream = await conn.open_stream()
            ok.append(await send_and_collect(stream, payload, rng.randint(1, 70_000)) == payload)
            await stream.aclose()

        async with trio.open_nursery() as inner:
            for i in range(40):
                inner.start_soon(one, i)
        assert ok == [True] * 40
        await trio.testing.wait_all_tasks_blocked()
        assert pair.client.num_streams == 0
        nursery.cancel_scope.cancel()


async def test_transfer_survives_loss_and_reordering(autojump_clock: MockClock) -> None:
    rng = random.Random(7)
    held: list[tuple[bytes, tuple[str, int], tuple[str, int]]] = []

    def lossy(data: bytes, source: tuple[str, int], dest: tuple[str, int]) -> bytes | None:
        roll = rng.random()
        if roll < 0.05:
            return None  # lost
        if roll < 0.10:
            held.append((data, source, dest))  # delivered later, behind newer packets
            return None
        if held and roll > 0.9:
            late = held.pop(0)
            net.deliver_raw(*late)
        return data

    net = FakeUdpNetwork(filter=lossy)
    async with quic_pair(net) as pair, trio.open_nursery() as nursery:
        nursery.start_soon(echo_server, pair.server, nursery)
        payload = os.urandom(1_000_000)
        stream = await pair.client.open_stream()
        assert await send_and_collect(stream, payload) == payload
        assert pair.client.core.stats().packets_lost > 0
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ half-close, reset, close


async def test_half_close_and_reply(autojump_clock: MockClock) -> None:
    async with quic_pair(FakeUdpNetwork()) as pair:
        stream = await pair.client.open_stream()
        await stream.send_all(b"request")
        await stream.send_eof()
        theirs = await pair.server.accept_stream()
        assert await theirs.receive_some() == b"request"
        assert await theirs.receive_some() == b""
        await theirs.send_all(b"reply")
        await theirs.aclose()
        assert await stream.receive_some() == b"reply"
        assert await stream.receive_some() == b""
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"more")
        await stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert pair.client.num_streams == pair.server.num_streams == 0


async def test_reset_reaches_the_peer_both_ways(autojump_clock: MockClock) -> None:
    async with quic_pair(FakeUdpNetwork()) as pair:
        stream = await pair.client.open_stream()
        await stream.send_all(b"x")
        theirs = await pair.server.accept_stream()
        await stream.reset()
        with pytest.raises(StreamResetError, match="reset by the peer"):
            await receive_until_broken(theirs)
        with pytest.raises(StreamResetError):
            await stream.send_all(b"after")
        # and the other way round: the accepting side resets, the opener's writes fail
        second = await pair.client.open_stream()
        await second.send_all(b"y")
        theirs2 = await pair.server.accept_stream()
        await theirs2.reset()
        with pytest.raises(StreamResetError):
            await send_until_broken(second)


async def test_close_with_unread_data_resets(autojump_clock: MockClock) -> None:
    async with quic_pair(FakeUdpNetwork()) as pair:
        stream = await pair.client.open_stream()
        await stream.send_all(b"hello")
        theirs = await pair.server.accept_stream()
        await stream.aclose()  # FIN and STOP_SENDING
        assert await theirs.receive_some() == b"hello"
        assert await theirs.receive_some() == b""
        with pytest.raises(StreamResetError):
            await send_until_broken(theirs)
        # a handle closed with unread data is a reset
        third = await pair.server.open_stream()
        await third.send_all(b"unread")
        mine = await pair.client.accept_stream()
        await trio.sleep(0.1)
        await mine.aclose()
        with pytest.raises(StreamResetError):
            await third.receive_some()


async def test_connection_close_ends_every_stream(autojump_clock: MockClock) -> None:
    async with quic_pair(FakeUdpNetwork()) as pair:
        stream = await pair.client.open_stream()
        await stream.send_all(b"x")
        theirs = await pair.server.accept_stream()
        await pair.client.aclose()
        with pytest.raises(ConnectionClosedError):
            await stream.send_all(b"y")
        await pair.server.wait_closed()
        assert "closed by the peer" in str(pair.server.close_reason)
        assert await theirs.receive_some() == b"x"
        with pytest.raises(ConnectionClosedError):
            await theirs.receive_some()
        with pytest.raises(ConnectionClosedError):
            await pair.server.accept_stream()
        with pytest.raises(ConnectionClosedError):
            await pair.server.open_stream()


# ------------------------------------------------------------------ limits and backpressure


async def test_backpressure_bounds_what_a_slow_reader_buffers(autojump_clock: MockClock) -> None:
    config = QuicConfig(stream_receive_window=128 * 1024, stream_send_buffer=128 * 1024)
    async with quic_pair(FakeUdpNetwork(), client_config=config, server_config=config) as pair:
        stream = await pair.client.open_stream()
        sent = 0
        with trio.move_on_after(5):
            while True:
                await stream.send_all(b"b" * 16384)
                sent += 16384
        theirs = await pair.server.accept_stream()
        # the writer is stuck: a window at the peer plus our send buffer, nothing more
        assert sent <= 2 * 128 * 1024 + 16384
        assert theirs.unread <= 128 * 1024
        got = 0
        while got < sent:
            got += len(await theirs.receive_some())
        assert got == sent


async def test_opening_beyond_the_peers_limit_waits_then_fails(autojump_clock: MockClock) -> None:
    server_config = QuicConfig(max_inbound_streams=2)
    client_config = QuicConfig(stream_open_timeout=3.0)
    async with quic_pair(
        FakeUdpNetwork(), client_config=client_config, server_config=server_config
    ) as pair:
        first = await pair.client.open_stream()
        await first.send_all(b"1")
        second = await pair.client.open_stream()
        await second.send_all(b"2")
        with pytest.raises(TooManyStreamsError):
            await pair.client.open_stream()
        # finishing a stream gives the credit back
        theirs = await pair.server.accept_stream()
        await first.send_eof()
        assert await theirs.receive_some() == b"1"
        assert await theirs.receive_some() == b""
        await theirs.aclose()
        with trio.fail_after(2):
            third = await pair.client.open_stream()
        await third.send_all(b"3")


async def test_a_peer_ignoring_the_stream_limit_is_disconnected(autojump_clock: MockClock) -> None:
    async with quic_pair(FakeUdpNetwork(), server_config=QuicConfig(max_inbound_streams=2)) as pair:
        client_core = pair.client.core
        client_core._remote_max_streams_bidi = 1000  # it ignores our MAX_STREAMS
        for _ in range(3):
            stream = await pair.client.open_stream()
            await stream.send_all(b"!")
        await pair.server.wait_closed()
        await trio.testing.wait_all_tasks_blocked()
        error = pair.errors["server"]
        assert isinstance(error, RemoteProtocolError) and "Too many streams" in str(error)
        assert pair.server.close_reason is error
        await pair.client.wait_closed()
        assert "closed by the peer" in str(pair.client.close_reason)


# ------------------------------------------------------------------ time


async def test_idle_timeout_closes_a_silent_connection(autojump_clock: MockClock) -> None:
    config = QuicConfig(idle_timeout=5.0, keepalive_interval=0)
    async with quic_pair(FakeUdpNetwork(), client_config=config, server_config=config) as pair:
        start = trio.current_time()
        await pair.client.wait_closed()
        await pair.server.wait_closed()
        assert 4.9 < trio.current_time() - start < 6.0
        assert "idle timeout" in str(pair.client.close_reason)


async def test_keepalive_keeps_an_idle_connection_open(autojump_clock: MockClock) -> None:
    config = QuicConfig(idle_timeout=5.0, keepalive_interval=2.0)
    async with quic_pair(FakeUdpNetwork(), client_config=config, server_config=config) as pair:
        await trio.sleep(60)
        assert not pair.client.is_closed and not pair.server.is_closed
        stream = await pair.client.open_stream()
        await stream.send_all(b"still here")
        assert await (await pair.server.accept_stream()).receive_some() == b"still here"


async def test_dial_to_nobody_times_out(autojump_clock: MockClock) -> None:
    net = FakeUdpNetwork()
    transport = QuicTransport(
        Ed25519PrivateKey.generate(), config=QuicConfig(handshake_timeout=3.0),
        socket_factory=net.factory,
    )
    start = trio.current_time()
    with pytest.raises(TimeoutError, match=r"did not finish within 3\.0 s"):
        await transport.dial(Multiaddr("/ip4/127.0.0.1/udp/9/quic-v1"))
    assert trio.current_time() - start == pytest.approx(3.0, abs=0.1)
    assert not net.sockets  # the dial's socket is gone


# ------------------------------------------------------------------ refusals


async def test_wrong_peer_id_is_refused_and_the_listener_goes_on(autojump_clock: MockClock) -> None:
    net = FakeUdpNetwork()
    async with quic_pair(net) as pair:
        wrong = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
        addr = pair.listener.addrs[0].with_peer_id(wrong)
        other = QuicTransport(Ed25519PrivateKey.generate(), socket_factory=net.factory)
        with pytest.raises(PeerIdMismatchError) as info:
            await other.dial(addr)
        assert info.value.expected == wrong
        # the listener and the connection it already has are untouched
        stream = await pair.client.open_stream()
        await stream.send_all(b"fine")
        assert await (await pair.server.accept_stream()).receive_some() == b"fine"
        again = await other.dial(pair.listener.addrs[0])
        assert again.remote_peer == pair.client.peer or again.remote_peer != wrong
        await again.muxer.aclose()


async def test_garbage_and_foreign_datagrams_disturb_nobody(autojump_clock: MockClock) -> None:
    net = FakeUdpNetwork()
    async with quic_pair(net) as pair, trio.open_nursery() as nursery:
        nursery.start_soon(echo_server, pair.server, nursery)
        endpoint = pair.listener.endpoint
        listen = endpoint.bound
        junk_sock = await net.factory(2, ("127.0.0.1", 0))
        rng = random.Random(3)
        for _ in range(200):
            await junk_sock.sendto(rng.randbytes(rng.randint(0, 1500)), listen)
        # a truncated Initial, a short header for an unknown id, a Version Negotiation
        initial = b"\xc0" + (1).to_bytes(4, "big") + b"\x08" + b"A" * 8 + b"\x08" + b"B" * 8
        await junk_sock.sendto(initial + b"\x00" * 1300, listen)
        await junk_sock.sendto(initial[:10], listen)
        await junk_sock.sendto(b"\x40" + os.urandom(40), listen)
        # a datagram for the live connection's id, but not a valid packet
        cid = next(iter(endpoint._routes))
        await junk_sock.sendto(b"\x40" + cid + os.urandom(60), listen)
        await trio.testing.wait_all_tasks_blocked()
        assert endpoint.dropped_malformed + endpoint.dropped_unknown > 0
        payload = os.urandom(200_000)
        stream = await pair.client.open_stream()
        assert await send_and_collect(stream, payload) == payload
        assert not pair.client.is_closed and not pair.server.is_closed
        nursery.cancel_scope.cancel()


async def test_unknown_version_gets_version_negotiation(autojump_clock: MockClock) -> None:
    net = FakeUdpNetwork()
    async with quic_pair(net) as pair:
        endpoint = pair.listener.endpoint
        probe = await net.factory(2, ("127.0.0.1", 0))
        dcid, scid = b"D" * 8, b"S" * 8
        datagram = b"\xc0" + (0x1A2A3A4A).to_bytes(4, "big") + b"\x08" + dcid + b"\x08" + scid
        await probe.sendto(datagram + bytes(1200), endpoint.bound)
        with trio.fail_after(1):
            reply, _ = await probe.recvfrom(2000)
        header = peek_header(reply)
        assert header is not None and header.version == 0
        assert header.destination_cid == scid and header.source_cid == dcid
        assert int.from_bytes(reply[-4:], "big") == QuicProtocolVersion.VERSION_1
        # too small to answer (anti-amplification): no reply
        await probe.sendto(datagram, endpoint.bound)
        with trio.move_on_after(1):
            await probe.recvfrom(2000)
            pytest.fail("a short datagram was answered")


async def test_pending_handshakes_are_limited(autojump_clock: MockClock) -> None:
    net = FakeUdpNetwork()
    server_config = QuicConfig(max_pending_handshakes=3, handshake_timeout=2.0)
    async with quic_pair(net, server_config=server_config) as pair:
        endpoint = pair.listener.endpoint
        flood = await net.factory(2, ("127.0.0.1", 0))
        for i in range(10):  # Initials from clients that never finish
            client = QuicTransport(Ed25519PrivateKey.generate(), socket_factory=net.factory)
            core_datagram = await _first_initial(client)
            await flood.sendto(core_datagram, endpoint.bound)
            del i
        await trio.testing.wait_all_tasks_blocked()
        assert endpoint.refused_handshakes == 7
        await trio.sleep(3)  # the half-open ones time out
        assert endpoint._pending == 0
        late = QuicTransport(Ed25519PrivateKey.generate(), socket_factory=net.factory)
        secured = await late.dial(pair.listener.addrs[0])
        await secured.muxer.aclose()


async def _first_initial(transport: QuicTransport) -> bytes:
    from flarelab.transports.quic.core import QuicCore

    core = QuicCore(
        credentials=transport.credentials.take(),
        config=QuicConfig(),
        is_client=True,
        datagram_size=1452,
    )
    core.connect(("127.0.0.1", 1), now=0.0)
    return core.datagrams_to_send(0.0)[0][0]


# ------------------------------------------------------------------ sockets and punching


async def test_dials_leave_from_the_listen_port(autojump_clock: MockClock) -> None:
    net = FakeUdpNetwork()
    a = QuicTransport(Ed25519PrivateKey.generate(), socket_factory=net.factory)
    async with quic_pair(net) as pair, trio.open_nursery() as nursery:
        listener = await nursery.start(
            a.listen, Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1"), _ignore, nursery
        )
        secured = await a.dial(pair.listener.addrs[0])
        inbound = await pair.server_conns.receive()
        assert inbound.remote == listener.endpoint.bound
        assert secured.local_addr == listener.addrs[0]
        await secured.muxer.aclose()
        await listener.aclose()
        nursery.cancel_scope.cancel()


async def _ignore(secured: object) -> None:
    await trio.lowlevel.checkpoint()


async def test_punch_sends_random_datagrams_from_the_listen_socket(
    autojump_clock: MockClock,
) -> None:
    net = FakeUdpNetwork()
    transport = QuicTransport(Ed25519PrivateKey.generate(), socket_factory=net.factory)
    target = await net.factory(2, ("127.0.0.1", 0))
    with recording_tracer() as (tracer, exporter):
        transport.tracer = tracer
        async with trio.open_nursery() as nursery:
            listener = await nursery.start(
                transport.listen, Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1"), _ignore, nursery
            )
            to = Multiaddr(f"/ip4/127.0.0.1/udp/{target.addr[1]}/quic-v1")
            await transport.punch(to, count=3)
            seen = []
            for _ in range(3):
                data, source = await target.recvfrom(2000)
                seen.append(data)
                assert source == listener.endpoint.bound
            assert len(set(seen)) == 3 and all(len(d) == 64 for d in seen)
            nursery.cancel_scope.cancel()
        punch = spans_named(exporter, spans.QUIC_PUNCH)
        assert punch[0].attributes[spans.LIBP2P_QUIC_DATAGRAMS] == 3


async def test_dial_only_socket_lives_as_long_as_its_connection(autojump_clock: MockClock) -> None:
    net = FakeUdpNetwork()
    async with quic_pair(net) as pair:
        endpoint = pair.client.endpoint
        assert endpoint.owner is pair.client
        assert endpoint.bound in net.sockets
        await pair.client.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert endpoint.closed and endpoint.bound not in net.sockets


# ------------------------------------------------------------------ tracing


async def test_spans_tell_the_connection_story(autojump_clock: MockClock) -> None:
    with recording_tracer() as (tracer, exporter):
        async with quic_pair(FakeUdpNetwork(), tracer=tracer) as pair:
            stream = await pair.client.open_stream()
            await stream.send_all(b"traced")
            await stream.send_eof()
            theirs = await pair.server.accept_stream()
            assert await theirs.receive_some() == b"traced"
            await theirs.aclose()
            await stream.aclose()
        dial = spans_named(exporter, spans.QUIC_DIAL)
        assert len(dial) == 1
        assert dial[0].attributes[spans.LIBP2P_REMOTE_PEER_ID] == str(pair.client.peer)
        handshakes = spans_named(exporter, spans.QUIC_HANDSHAKE)
        assert {s.attributes[spans.LIBP2P_ROLE] for s in handshakes} == {"initiator", "responder"}
        for hs in handshakes:
            assert hs.attributes[spans.LIBP2P_OUTCOME] == "success"
            assert [e.name for e in hs.events] == [spans.TLS_PEER_VERIFIED]
        accept = spans_named(exporter, spans.QUIC_ACCEPT)
        assert accept[0].attributes[spans.LIBP2P_QUIC_ODCID] == dial[0].attributes[
            spans.LIBP2P_QUIC_ODCID
        ]
        conns = spans_named(exporter, spans.QUIC_CONNECTION)
        assert len(conns) == 2
        for conn in conns:
            assert conn.attributes[spans.LIBP2P_QUIC_PACKETS_SENT] > 0
            assert spans.LIBP2P_RTT_MS in conn.attributes
            assert conn.attributes[spans.LIBP2P_QUIC_CLOSE_CODE] == 0
        streams = spans_named(exporter, spans.QUIC_STREAM)
        assert sorted(s.attributes[spans.LIBP2P_BYTES_RECEIVED] for s in streams) == [0, 6]


async def test_refused_handshake_is_traced_as_an_error(autojump_clock: MockClock) -> None:
    net = FakeUdpNetwork()
    with recording_tracer() as (tracer, exporter):
        async with quic_pair(net, tracer=tracer) as pair:
            wrong = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
            other = QuicTransport(
                Ed25519PrivateKey.generate(), socket_factory=net.factory, tracer=tracer
            )
            with pytest.raises(PeerIdMismatchError):
                await other.dial(pair.listener.addrs[0].with_peer_id(wrong))
            await trio.testing.wait_all_tasks_blocked()
        failed = [
            s for s in spans_named(exporter, spans.QUIC_HANDSHAKE)
            if s.attributes.get(spans.LIBP2P_OUTCOME) == "failed"
        ]
        assert failed and not failed[0].status.is_ok
        dial_errors = [s for s in spans_named(exporter, spans.QUIC_DIAL) if not s.status.is_ok]
        assert dial_errors

"""Two or more real nodes over TCP on loopback (tier 4): dial, identify, ping, perf, events.

Real sockets, so the real clock: every wait is bounded by ``trio.fail_after``; nothing sleeps.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import trio

from flarelab.errors import (
    DialError,
    LocalProtocolError,
    PeerIdMismatchError,
    ProtocolNotSupportedError,
    StreamResetError,
)
from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.node import (
    ConnectionClosed,
    Node,
    NodeConfig,
    ObservedAddressConfirmed,
    PeerConnected,
    PeerDisconnected,
    PeerIdentified,
    PeerProtocolsUpdated,
)
from flarelab.protocols.identify import IDENTIFY_PROTOCOL, IDENTIFY_PUSH_PROTOCOL
from flarelab.protocols.perf import PERF_PROTOCOL
from flarelab.protocols.ping import PING_PROTOCOL
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.provider import TracingConfig

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


@contextlib.asynccontextmanager
async def nodes(n: int, **overrides: object) -> AsyncIterator[list[Node]]:
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for i in range(n):
            cfg = NodeConfig(listen_addrs=[LOOPBACK], label="ABCDEFGH"[i], **overrides)  # type: ignore[arg-type]
            out.append(await stack.enter_async_context(Node(cfg)))
        yield out


async def test_dial_identify_ping_perf() -> None:
    async with nodes(2) as (a, b):
        with trio.fail_after(20):
            conn = await a.connect(b.addrs[0])
            assert conn.remote_peer == b.peer_id
            assert conn.direction == "outbound"
            assert conn.muxer_protocol == "/yamux/1.0.0"
            info = await a.identify_peer(b.peer_id)
            assert {PING_PROTOCOL, PERF_PROTOCOL, IDENTIFY_PROTOCOL, IDENTIFY_PUSH_PROTOCOL} <= set(
                info.protocols
            )
            assert b.listen_addrs()[0] in info.listen_addrs
            assert info.agent_version == "flarelab/0.1.0"
            # B saw A at the address of A's end of the connection
            assert info.observed_addr == conn.local_addr
            assert info.signed_record is not None
            assert info.signed_record.peer_id == b.peer_id
            assert set(b.listen_addrs()) <= set(info.signed_record.addrs)
            # A's peerstore learned it all
            assert PING_PROTOCOL in a.peerstore.protocols(b.peer_id)
            assert b.listen_addrs()[0] in a.peerstore.addrs(b.peer_id, trio.current_time())
            rtts = await a.ping(b.peer_id, 5)
            assert len(rtts) == 5 and all(0 < r < 5000 for r in rtts)
            result = await a.perf(b.peer_id, upload=3_000_001, download=2_000_003)
            assert (result.upload_bytes, result.download_bytes) == (3_000_001, 2_000_003)
            # B identified A too (both sides run identify)
            back = await b.identify_peer(a.peer_id)
            assert back.agent_version == "flarelab/0.1.0"


async def test_connection_reuse_and_concurrent_dials_share_one_connection() -> None:
    async with nodes(2) as (a, b):
        a.peerstore.add_addrs(b.peer_id, b.listen_addrs(), 60, trio.current_time())
        results = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(lambda: _append(results, a.connect(b.peer_id)))
        assert len({c.id for c in results}) == 1
        assert len(a.connections(b.peer_id)) == 1
        again = await a.connect(b.peer_id)
        assert again is results[0]


async def _append(out: list, coro) -> None:  # type: ignore[no-untyped-def]
    out.append(await coro)


async def test_mplex_when_it_is_the_only_common_muxer() -> None:
    async with nodes(1) as (a,):
        cfg = NodeConfig(listen_addrs=[LOOPBACK], label="M", muxers=("/mplex/6.7.0",))
        async with Node(cfg) as m:
            with trio.fail_after(10):
                conn = await m.connect(a.addrs[0])
                assert conn.muxer_protocol == "/mplex/6.7.0"
                assert len(await m.ping(a.peer_id, 3)) == 3
                result = await m.perf(a.peer_id, upload=1 << 20, download=1 << 20)
                assert result.download_bytes == 1 << 20


async def test_wrong_peer_id_is_refused_and_the_node_keeps_serving() -> None:
    async with nodes(3) as (a, b, c):
        impostor = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
        wrong = b.listen_addrs()[0].with_peer_id(impostor)
        with trio.fail_after(10), pytest.raises(DialError) as info:
            await a.connect(wrong)
        cause = info.value.attempts[0][1]
        assert isinstance(cause, PeerIdMismatchError)
        assert cause.expected == impostor and cause.actual == b.peer_id
        assert "/noise" in str(cause)
        with trio.fail_after(10):
            assert len(await c.ping(b.addrs[0], 2)) == 2


async def test_unsupported_protocol_and_failing_handler() -> None:
    async with nodes(2) as (a, b):

        async def broken(stream) -> None:  # type: ignore[no-untyped-def]
            raise RuntimeError("handler bug")

        b.set_handler("/broken/1.0.0", broken)
        with trio.fail_after(10):
            with pytest.raises(ProtocolNotSupportedError) as info:
                await a.new_stream(b.addrs[0], ["/nope/1.0.0", "/nope/2.0.0"])
            assert info.value.offered == ("/nope/1.0.0", "/nope/2.0.0")
            stream = await a.new_stream(b.peer_id, "/broken/1.0.0")
            with pytest.raises(StreamResetError):
                await _drain(stream)
            # the connection and the node survive a handler bug
            assert len(await a.ping(b.peer_id, 1)) == 1
            assert a.connections(b.peer_id)


async def _drain(stream) -> None:  # type: ignore[no-untyped-def]
    while await stream.receive_some(10):
        pass


async def test_events_and_disconnect() -> None:
    async with nodes(2) as (a, b):
        with a.events.subscribe() as a_events, b.events.subscribe() as b_events:
            with trio.fail_after(10):
                await a.connect(b.addrs[0])
                connected = await a_events.next(PeerConnected)
                assert connected.peer == b.peer_id
                identified = await a_events.next(PeerIdentified)
                assert identified.peer == b.peer_id and not identified.push
                assert (await b_events.next(PeerConnected)).peer == a.peer_id
                await a.disconnect(b.peer_id)
                closed = await b_events.next(ConnectionClosed)
                assert closed.connection.remote_peer == a.peer_id
                assert (await b_events.next(PeerDisconnected)).peer == a.peer_id
                assert not b.connections(a.peer_id)
                assert (await a_events.next(PeerDisconnected)).peer == b.peer_id


async def test_identify_push_on_new_protocol() -> None:
    async with nodes(2) as (a, b):
        with a.events.subscribe(PeerProtocolsUpdated, PeerIdentified) as events:
            with trio.fail_after(10):
                await a.connect(b.addrs[0])
                await a.identify_peer(b.peer_id)

                async def echo(stream) -> None:  # type: ignore[no-untyped-def]
                    await stream.send_all(await stream.receive_some(100))

                b.set_handler("/echo/1.0.0", echo)
                update = await events.next(
                    PeerProtocolsUpdated, predicate=lambda e: "/echo/1.0.0" in e.added
                )
                assert update.peer == b.peer_id
                assert "/echo/1.0.0" in a.peerstore.protocols(b.peer_id)
                # now known: the stream skips the multistream round trip (lazy) and works
                stream = await a.new_stream(b.peer_id, "/echo/1.0.0")
                await stream.send_all(b"hi")
                assert await stream.receive_some(100) == b"hi"


async def test_observed_address_confirmed_by_quorum() -> None:
    # every observer shares 127.0.0.1, so count observers by peer id
    async with nodes(3, observed_addr_threshold=2, observed_addr_group_by="peer") as (a, b, c):
        with a.events.subscribe(ObservedAddressConfirmed) as events, trio.fail_after(10):
            await a.connect(b.addrs[0])
            await a.identify_peer(b.peer_id)
            assert a.observed_addrs.confirmed(trio.current_time()) == []
            await a.connect(c.addrs[0])
            await a.identify_peer(c.peer_id)
            event = await events.next()
            # A dials from its listen port (SO_REUSEPORT), so peers see its listen address
            assert event.addr == a.listen_addrs()[0]


async def test_connection_limit_refuses_extra_inbound() -> None:
    async with nodes(3, max_connections=1) as (a, b, c):
        with trio.fail_after(10):
            await b.connect(a.addrs[0])
            with pytest.raises(DialError):
                await c.connect(a.addrs[0])
            assert len(await b.ping(a.peer_id)) == 1


async def test_dial_self_and_unreachable() -> None:
    async with nodes(1) as (a,):
        with pytest.raises(LocalProtocolError):
            await a.connect(a.addrs[0])
        # a port nobody listens on: closed at once by the kernel
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        with trio.fail_after(10), pytest.raises(DialError) as info:
            await a.connect(f"/ip4/127.0.0.1/tcp/{port}")
        assert "Connection refused" in str(info.value) or "refused" in str(info.value).lower()


async def test_spans_tell_the_story() -> None:
    bus = SpanBus()
    cfg = {"tracing": TracingConfig(bus=bus)}
    async with nodes(2, **cfg) as (a, b):
        with trio.fail_after(10):
            await a.connect(b.addrs[0])
            await a.identify_peer(b.peer_id)
            await a.ping(b.peer_id)
    ended = [r for r in bus.history() if r.end_ns is not None]
    names = {r.name for r in ended}
    assert {
        "node.dial",
        "tcp.dial",
        "node.upgrade",
        "mss.negotiate",
        "noise.handshake",
        "identify.exchange",
        "ping",
        "stream.handle",
        "connection",
    } <= names
    ping = next(r for r in ended if r.name == "ping" and r.attributes.get("libp2p.rtt_ms"))
    assert ping.attributes["libp2p.remote_peer_id"] == str(b.peer_id)
    assert [e.name for e in ping.events] == ["message.sent", "message.received"]

"""Bad input on streams and in protocols: each failure stays on its stream, named and traced.

The same arena as :mod:`test_bad_input` (a node "T" under attack, a well-behaved peer "G"
with an open connection and stream, checks of containment afterwards), with attackers
that misbehave on one stream of a working connection: multistream-select garbage in
either direction, a negotiation or handler that stalls, oversized messages to a handler,
identify answers that are oversized or malformed, a perf request over the limit, a ping
cut short. Real sockets and the real clock; every wait is bounded.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

import pytest
import trio
from bad_input_arena import (
    ECHO,
    MSS,
    MSS_HEADER,
    PROMPT,
    SHORT,
    arena,
    attacker_node,
    drain_until_reset,
    new_key,
    raw_yamux,
)
from crafted import (
    error_text,
    wait_error_span,
    wait_span,
    yamux_frame,
)

from flarelab.errors import StreamResetError
from flarelab.mss import encode_message
from flarelab.muxers.yamux.frames import FrameType
from flarelab.node import Connection, NetStream, PeerDisconnected
from flarelab.protocols import ping as ping_module
from flarelab.protocols.identify import IDENTIFY_PROTOCOL, IDENTIFY_PUSH_PROTOCOL
from flarelab.protocols.perf import PERF_PROTOCOL
from flarelab.protocols.ping import PING_PROTOCOL, PING_SIZE
from flarelab.wire import encode_uvarint, read_length_prefixed

# ====================================================================== multistream on streams


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\xff" * 10, id="varint-too-long"),
        pytest.param(MSS_HEADER + encode_uvarint(5000) + bytes(5000), id="oversized-token"),
        pytest.param(MSS_HEADER + b"\x04ping", id="no-newline"),
        pytest.param(
            MSS_HEADER + b"".join(encode_message(f"/nope/{i}") for i in range(40)),
            id="proposal-flood",
        ),
    ],
)
async def test_multistream_garbage_on_a_stream_resets_only_that_stream(garbage: bytes) -> None:
    async with arena() as a, attacker_node() as x:
        with trio.fail_after(PROMPT):
            conn = await x.connect(a.node.addrs[0])
            muxed = await conn.muxer.open_stream()
            await muxed.send_all(garbage)
            with pytest.raises(StreamResetError):
                await drain_until_reset(muxed)
        await wait_error_span(a.bus, "stream.handle", protocol=MSS, peer=x.peer_id)
        with trio.fail_after(PROMPT):
            # the attacker's own connection survives its bad stream
            assert len(await x.ping(a.node.peer_id, 2)) == 2
            assert x.connections(a.node.peer_id) == [conn]
        await a.assert_contained()


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        pytest.param(MSS_HEADER + encode_message("/other/1.0.0"), "neither echo", id="wrong-echo"),
        pytest.param(MSS_HEADER + b"\x05hello", "newline", id="no-newline"),
        pytest.param(b"\xff" * 10, "varint", id="varint-too-long"),
    ],
)
async def test_multistream_garbage_answering_the_node_fails_only_that_stream(
    answer: bytes, says: str
) -> None:
    async with arena() as a, raw_yamux(a) as (raw, peer):
        with trio.fail_after(PROMPT):
            # the node opens an identify stream to every new peer: answer it with garbage
            sid = await raw.accept_stream(IDENTIFY_PROTOCOL)
            await raw.send(yamux_frame(FrameType.DATA, 0, sid, payload=answer))
            await raw.wait_until(lambda: sid in raw.rst, "the node reset its stream")
        await wait_error_span(a.bus, "identify.exchange", protocol=MSS, peer=peer, contains=says)
        with trio.fail_after(PROMPT):
            # the connection itself is fine
            again = await raw.open_stream(ECHO)
            assert await raw.exchange(again, b"fine") == b"fine"
            assert raw.goaway is None and not raw.closed
        await a.assert_contained()


async def test_stream_that_stalls_in_negotiation_is_reset_with_a_named_error() -> None:
    async with arena(negotiate_timeout=SHORT) as a, attacker_node() as x:
        with trio.fail_after(PROMPT):
            conn = await x.connect(a.node.addrs[0])
            muxed = await conn.muxer.open_stream()
            await muxed.send_all(MSS_HEADER)  # the header, and then never a proposal
            with pytest.raises(StreamResetError):
                await drain_until_reset(muxed)
        await wait_error_span(
            a.bus, "stream.handle", protocol=MSS, peer=x.peer_id, contains="timed out"
        )
        await a.assert_contained()


async def test_handler_timeout_is_not_blamed_on_negotiation() -> None:
    async with arena() as a, attacker_node() as x:
        assert a.node.identify is not None
        a.node.identify.timeout = SHORT  # an identify push must arrive within this
        with trio.fail_after(PROMPT):
            stalled = await x.new_stream(a.node.addrs[0], IDENTIFY_PUSH_PROTOCOL)
            await stalled.send_all(encode_uvarint(100))  # a length, and then nothing
            with pytest.raises(StreamResetError):
                await drain_until_reset(stalled)
        rec = await wait_error_span(
            a.bus, "stream.handle", protocol=IDENTIFY_PUSH_PROTOCOL, peer=x.peer_id
        )
        assert "negotiation" not in error_text(rec)
        await a.assert_contained()


async def test_stalled_identify_push_is_named_on_its_own_span() -> None:
    async with arena() as a, attacker_node() as x:
        assert a.node.identify is not None
        a.node.identify.timeout = SHORT
        with trio.fail_after(PROMPT):
            stalled = await x.new_stream(a.node.addrs[0], IDENTIFY_PUSH_PROTOCOL)
            await stalled.send_all(encode_uvarint(100))
            with pytest.raises(StreamResetError):
                await drain_until_reset(stalled)
        rec = await wait_span(
            a.bus,
            lambda r: (
                r.ended
                and r.name == "identify.push"
                and r.attributes.get("libp2p.remote_peer_id") == str(x.peer_id)
            ),
            "identify.push from the attacker",
        )
    assert rec.status == "error"
    assert IDENTIFY_PUSH_PROTOCOL in error_text(rec), error_text(rec)
    assert str(x.peer_id) in error_text(rec), error_text(rec)


async def test_oversized_message_to_a_handler_names_its_protocol() -> None:
    async def bounded(stream: NetStream) -> None:
        await stream.send_all(await read_length_prefixed(stream, 1024))

    async with arena() as a, attacker_node() as x:
        a.node.set_handler("/bounded/1.0.0", bounded)
        with trio.fail_after(PROMPT):
            stream = await x.new_stream(a.node.addrs[0], "/bounded/1.0.0")
            await stream.send_all(encode_uvarint(1 << 20) + bytes(4096))
            with pytest.raises(StreamResetError):
                await drain_until_reset(stream)
        await wait_error_span(
            a.bus,
            "stream.handle",
            protocol="/bounded/1.0.0",
            peer=x.peer_id,
            contains="exceeds the limit",
        )
        await a.assert_contained()


# ====================================================================== protocols


async def _oversized_identify(stream: NetStream) -> None:
    await stream.send_all(encode_uvarint(70_000) + bytes(70_000))
    await stream.send_eof()


async def _malformed_identify(stream: NetStream) -> None:
    # field 1 (publicKey, bytes) claims 100 bytes and has 3
    await stream.send_all(encode_uvarint(5) + b"\x0a\x64abc")
    await stream.send_eof()


async def _bad_varint_identify(stream: NetStream) -> None:
    await stream.send_all(b"\xff" * 10)
    await stream.send_eof()


async def _foreign_key_identify(stream: NetStream) -> None:
    other = new_key().public_key.to_protobuf()
    message = b"\x0a" + encode_uvarint(len(other)) + other
    await stream.send_all(encode_uvarint(len(message)) + message)
    await stream.send_eof()


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        pytest.param(_oversized_identify, "exceeds the limit", id="oversized"),
        pytest.param(_malformed_identify, "malformed identify message", id="malformed-protobuf"),
        pytest.param(_bad_varint_identify, "varint", id="malformed-varint"),
        pytest.param(_foreign_key_identify, "does not match the peer id", id="foreign-key"),
    ],
)
async def test_bad_identify_answer_fails_only_that_exchange(
    answer: Callable[[NetStream], object], says: str
) -> None:
    async with arena() as a, attacker_node() as x:
        x.set_handler(IDENTIFY_PROTOCOL, answer)  # type: ignore[arg-type]
        with trio.fail_after(PROMPT):
            conn = await x.connect(a.node.addrs[0])
        await wait_error_span(
            a.bus, "identify.exchange", protocol=IDENTIFY_PROTOCOL, peer=x.peer_id, contains=says
        )
        with trio.fail_after(PROMPT):
            # the connection that carried the bad answer still works, both ways
            assert len(await x.ping(a.node.peer_id, 2)) == 2
            assert x.connections(a.node.peer_id) == [conn]
            assert len(await a.node.ping(x.peer_id, 2)) == 2
        await a.assert_contained()


async def test_perf_request_over_the_limit_resets_only_that_stream() -> None:
    async with arena() as a, attacker_node() as x:
        with trio.fail_after(PROMPT):
            stream = await x.new_stream(a.node.addrs[0], PERF_PROTOCOL)
            await stream.send_all(struct.pack(">Q", 1 << 62))
            await stream.send_eof()
            with pytest.raises(StreamResetError):
                await drain_until_reset(stream)
        await wait_error_span(
            a.bus, "perf", protocol=PERF_PROTOCOL, peer=x.peer_id, contains="over the limit"
        )
        await wait_error_span(
            a.bus,
            "stream.handle",
            protocol=PERF_PROTOCOL,
            peer=x.peer_id,
            contains="over the limit",
        )
        with trio.fail_after(PROMPT):
            assert len(await x.ping(a.node.peer_id, 1)) == 1
        await a.assert_contained()


async def test_a_service_failing_on_one_connection_closes_only_that_connection() -> None:
    async with arena() as a, attacker_node() as x:

        async def tripped_service(conn: Connection) -> None:
            # a per-connection service that trips over something this peer sent
            if conn.remote_peer == x.peer_id:
                raise ValueError("service tripped over the peer's input")

        a.node.swarm.on_open.append(tripped_service)
        with x.events.subscribe(PeerDisconnected) as events, trio.fail_after(PROMPT):
            await x.connect(a.node.addrs[0])
            assert (await events.next()).peer == a.node.peer_id
        rec = await wait_error_span(
            a.bus, "connection", protocol="", peer=x.peer_id, contains="tripped over"
        )
        assert rec.attributes["libp2p.error_side"] == "local"
        assert not a.node.connections(x.peer_id)
        await a.assert_contained()


async def test_ping_stalled_mid_message_does_not_hold_up_the_node() -> None:
    async with arena() as a, attacker_node() as x:
        with trio.fail_after(PROMPT):
            stalled = await x.new_stream(a.node.addrs[0], PING_PROTOCOL)
            await stalled.send_all(bytes(PING_SIZE - 1))
        # while the handler waits for the 32nd byte, everyone else is served -- the
        # attacker too, on the same connection
        await a.assert_contained()
        with trio.fail_after(PROMPT):
            assert len(await x.ping(a.node.peer_id, 2)) == 2


async def test_ping_stalled_mid_message_is_reset_with_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the node's idle timeout is 60 s; shorten it so the real clock stays quick
    monkeypatch.setattr(
        "flarelab.node.node.handle_ping",
        functools.partial(ping_module.handle_ping, idle_timeout=SHORT),
    )
    async with arena() as a, attacker_node() as x:
        with trio.fail_after(PROMPT):
            stalled = await x.new_stream(a.node.addrs[0], PING_PROTOCOL)
            await stalled.send_all(bytes(PING_SIZE - 1))
            try:
                while await stalled.receive_some(64):
                    pass
                outcome = "closed cleanly"
            except StreamResetError:
                outcome = "reset"
        rec = await wait_span(
            a.bus,
            lambda r: (
                r.ended
                and r.name == "ping"
                and r.attributes.get("libp2p.remote_peer_id") == str(x.peer_id)
            ),
            "the node's ping span for the attacker",
        )
        await a.assert_contained()
    assert outcome == "reset", f"the half-sent ping's stream was {outcome}"
    assert rec.status == "error" and PING_PROTOCOL in error_text(rec), error_text(rec)

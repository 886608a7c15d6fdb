"""Bad input against a running node: each failure is contained, named and traced.

Every test runs a real node ("T") on loopback with a span bus, a well-behaved peer ("G")
with an open connection and an open echo stream to it (:mod:`bad_input_arena`), and an
attacker that speaks the real stack (TCP, multistream-select, Noise, Yamux or Mplex) up to
the point where it misbehaves (:mod:`crafted`). Each test then checks three things:

1. the error T records names the peer (once known; before that, its address) and the
   protocol: a span T marked error, found on the bus;
2. only the attacker's stream or connection ended: G's connection and its already open
   stream still carry data (proved by moving data, not by waiting for nothing to happen);
3. T still accepts new connections and answers pings.

This module covers connection set-up (multistream-select, Noise, the dialled peer id) and
the muxers; :mod:`test_bad_input_protocols` covers single streams and the protocols on
them. Real sockets, so the real clock: every wait is bounded by ``trio.fail_after``;
nothing sleeps.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable

import pytest
import trio
from bad_input_arena import (
    ECHO,
    LOOPBACK,
    MSS,
    MSS_HEADER,
    NOISE,
    PROMPT,
    SHORT,
    arena,
    attacker_node,
    new_key,
    peer_of,
    raw_yamux,
    roundtrip,
)
from crafted import (
    MPLEX,
    YAMUX,
    RawYamux,
    bad_signature_handshake,
    drain_until_closed,
    error_text,
    local_multiaddr,
    secure_channel,
    tcp_connect,
    wait_error_span,
    yamux_frame,
)

from flarelab.errors import DialError, PeerIdMismatchError
from flarelab.mss import encode_message, negotiate_initiator
from flarelab.muxers.mplex.frames import MplexFlag, encode_frame
from flarelab.muxers.yamux import YamuxConfig
from flarelab.muxers.yamux.frames import INITIAL_WINDOW, MAX_U32, Flag, FrameType
from flarelab.node import Node, NodeConfig
from flarelab.tracing.bus import SpanBus
from flarelab.wire import encode_uvarint

# ====================================================================== before the peer is known


@pytest.mark.parametrize(
    ("garbage", "eof", "says"),
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True, "stream ended", id="http"),
        pytest.param(b"\xff" * 10, False, "varint longer than 9 bytes", id="varint-too-long"),
        pytest.param(b"\x80\x00", False, "not minimally encoded", id="varint-not-minimal"),
        pytest.param(
            encode_uvarint(4096) + bytes(4096), False, "exceeds the limit", id="oversized-token"
        ),
        pytest.param(b"\x05hello", False, "newline", id="no-newline"),
        pytest.param(b"\x03\xff\xfe\n", False, "UTF-8", id="not-utf8"),
        pytest.param(encode_message("/multistream/2.0.0"), False, "expected", id="wrong-header"),
        pytest.param(
            MSS_HEADER + b"".join(encode_message(f"/nope/{i}") for i in range(40)),
            False,
            "proposals",
            id="proposal-flood",
        ),
    ],
)
async def test_multistream_garbage_on_a_new_connection(
    garbage: bytes, eof: bool, says: str
) -> None:
    async with arena() as a:
        with trio.fail_after(PROMPT):
            tcp = await tcp_connect(a.node)
            addr = local_multiaddr(tcp)
            await tcp.send_all(garbage)
            if eof:
                await tcp.send_eof()
            await drain_until_closed(tcp)  # the node hangs up on us
            await tcp.aclose()
        await wait_error_span(a.bus, "node.upgrade", protocol=MSS, addr=addr, contains=says)
        await wait_error_span(a.bus, "mss.negotiate", protocol=MSS, contains=says)
        await a.assert_contained()


@pytest.mark.parametrize("forgery", ["flipped-bit", "signed-by-another-key"])
async def test_noise_payload_with_a_bad_signature(forgery: str) -> None:
    async with arena() as a:
        key = new_key()
        signer = new_key() if forgery == "signed-by-another-key" else None
        with trio.fail_after(PROMPT):
            tcp = await tcp_connect(a.node)
            addr = local_multiaddr(tcp)
            await bad_signature_handshake(tcp, key, signer=signer)
            await drain_until_closed(tcp)
            await tcp.aclose()
        says = "signature over the Noise static key does not verify"
        await wait_error_span(a.bus, "noise.handshake", protocol=NOISE, contains=says)
        rec = await wait_error_span(a.bus, "node.upgrade", protocol=NOISE, addr=addr, contains=says)
        # the claimed identity was never proven, so the node must not name it as the peer
        assert rec.attributes.get("libp2p.remote_peer_id") != str(peer_of(key))
        await a.assert_contained()


@pytest.mark.parametrize(
    ("message1", "says"),
    [
        pytest.param(os.urandom(40), "exactly 32 bytes", id="msg1-with-payload"),
        pytest.param(bytes(32), "invalid X25519 public key", id="msg1-low-order-key"),
    ],
)
async def test_noise_handshake_garbage(message1: bytes, says: str) -> None:
    async with arena() as a:
        with trio.fail_after(PROMPT):
            tcp = await tcp_connect(a.node)
            addr = local_multiaddr(tcp)
            _, sec = await negotiate_initiator(tcp, [NOISE])
            await sec.send_all(struct.pack(">H", len(message1)) + message1)
            await drain_until_closed(tcp)
            await tcp.aclose()
        await wait_error_span(a.bus, "node.upgrade", protocol=NOISE, addr=addr, contains=says)
        await a.assert_contained()


async def _upgrades_started(bus: SpanBus, addrs: set[str]) -> None:
    """Wait until the node has started upgrading a connection from each of ``addrs``."""
    seen: set[str] = set()
    with bus.subscribe(max_buffer=100_000, replay=True) as sub:
        async for rec in sub:
            if rec.name == "node.upgrade" and not rec.ended:
                seen.add(str(rec.attributes.get("libp2p.multiaddr")))
                if addrs <= seen:
                    return


async def test_silent_connections_time_out_and_free_their_slots() -> None:
    async with arena(handshake_timeout=SHORT, max_pending_inbound=3) as a:
        with trio.fail_after(PROMPT):
            silent = [await tcp_connect(a.node) for _ in range(3)]
            addrs = {local_multiaddr(s) for s in silent}
            await _upgrades_started(a.bus, addrs)
            # every handshake slot is taken: a newcomer is turned away at once...
            async with Node(NodeConfig(label="N")) as newcomer:
                with pytest.raises(DialError):
                    await newcomer.connect(a.node.addrs[0])
            # ...while the connection that was already up is not disturbed
            await roundtrip(a.good_stream, b"unaffected")
            for stream in silent:
                await drain_until_closed(stream)  # the handshake timeout drops each one
                await stream.aclose()
        for addr in addrs:
            await wait_error_span(
                a.bus, "node.upgrade", protocol="", addr=addr, contains="did not finish"
            )
        await a.assert_contained()  # the slots are free again


async def test_handshake_timeout_names_the_step_that_stalled() -> None:
    async with arena(handshake_timeout=SHORT) as a:
        with trio.fail_after(PROMPT):
            tcp = await tcp_connect(a.node)
            addr = local_multiaddr(tcp)
            await drain_until_closed(tcp)
            await tcp.aclose()
        rec = await wait_error_span(a.bus, "node.upgrade", protocol="", addr=addr)
    # nothing was received: the node was waiting for the multistream header
    assert MSS in error_text(rec), error_text(rec)


async def test_dialled_peer_whose_key_does_not_match_the_p2p_id() -> None:
    async with arena() as a, attacker_node(listen_addrs=[LOOPBACK]) as x:
        impostor = peer_of(new_key())
        with trio.fail_after(PROMPT), pytest.raises(DialError) as info:
            await a.node.connect(x.listen_addrs()[0].with_peer_id(impostor))
        cause = info.value.attempts[0][1]
        assert isinstance(cause, PeerIdMismatchError)
        assert (cause.expected, cause.actual) == (impostor, x.peer_id)
        assert NOISE in str(cause) and str(x.peer_id) in str(cause)
        # the handshake span names who answered; the dial span whom we asked for
        await wait_error_span(a.bus, "noise.handshake", protocol=NOISE, peer=x.peer_id)
        await wait_error_span(a.bus, "node.dial", protocol=NOISE, peer=impostor)
        assert not a.node.connections(x.peer_id)
        await a.assert_contained()


async def test_dialled_listener_that_answers_garbage() -> None:
    async def garbage_listener(stream: trio.SocketStream) -> None:
        await stream.send_all(b"\x05hello")
        await stream.receive_some(4096)  # the node's header and proposal; then hold on

    async with arena() as a:
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(
                functools.partial(trio.serve_tcp, garbage_listener, 0, host="127.0.0.1")
            )
            port = listener.socket.getsockname()[1]
            victim = peer_of(new_key())
            addr = f"/ip4/127.0.0.1/tcp/{port}"
            with trio.fail_after(PROMPT), pytest.raises(DialError) as info:
                await a.node.connect(f"{addr}/p2p/{victim}")
            nursery.cancel_scope.cancel()
        assert MSS in str(info.value) and "newline" in str(info.value)
        await wait_error_span(a.bus, "node.dial", protocol=MSS, peer=victim, contains="newline")
        await wait_error_span(a.bus, "node.upgrade", protocol=MSS, addr=addr, contains="newline")
        await a.assert_contained()


# ====================================================================== after the handshake


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        pytest.param(struct.pack(">H", 48) + os.urandom(48), "failed authentication", id="forged"),
        pytest.param(struct.pack(">H", 5) + os.urandom(5), "shorter than its", id="too-short"),
    ],
)
async def test_corrupt_noise_frame_closes_only_that_connection(frame: bytes, says: str) -> None:
    async with arena() as a:
        key = new_key()
        with trio.fail_after(PROMPT):
            tcp = await tcp_connect(a.node)
            secure = await secure_channel(tcp, key, a.node)
            await secure.transport_stream.send_all(frame)  # under the encryption
            await drain_until_closed(tcp)
            await tcp.aclose()
        await wait_error_span(a.bus, "connection", protocol=NOISE, peer=peer_of(key), contains=says)
        await a.assert_contained()


# ====================================================================== Yamux


def _unknown_type(raw: RawYamux) -> bytes:
    return yamux_frame(7, 0, 0, 0)


def _bad_version(raw: RawYamux) -> bytes:
    return yamux_frame(FrameType.PING, Flag.SYN, 0, 1, version=1)


def _beyond_window(raw: RawYamux) -> bytes:
    # the header claims more than the window allows; the node refuses it before the payload
    return yamux_frame(FrameType.DATA, 0, 1, INITIAL_WINDOW + 1) + bytes(1024)


def _window_overflow(raw: RawYamux) -> bytes:
    return yamux_frame(FrameType.WINDOW_UPDATE, 0, 1, MAX_U32)


def _wrong_parity(raw: RawYamux) -> bytes:
    return yamux_frame(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0)


def _reused_id(raw: RawYamux) -> bytes:
    return yamux_frame(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0)


def _never_opened(raw: RawYamux) -> bytes:
    return yamux_frame(FrameType.DATA, 0, 99, 1, b"x")


@pytest.mark.parametrize(
    ("violation", "says"),
    [
        pytest.param(_unknown_type, "unknown yamux frame type 7", id="unknown-type"),
        pytest.param(_bad_version, "unsupported yamux version", id="unknown-version"),
        pytest.param(_beyond_window, "receive window", id="data-beyond-window"),
        pytest.param(_window_overflow, "overflows the window", id="window-update-overflow"),
        pytest.param(_wrong_parity, "wrong parity", id="stream-id-wrong-parity"),
        pytest.param(_reused_id, "again", id="stream-id-reused"),
        pytest.param(_never_opened, "never opened", id="data-on-unopened-stream"),
    ],
)
async def test_yamux_violation_closes_only_that_connection(
    violation: Callable[[RawYamux], bytes], says: str
) -> None:
    async with arena() as a, raw_yamux(a) as (raw, peer):
        with trio.fail_after(PROMPT):
            await raw.send(violation(raw))
            await raw.wait_closed()
        assert raw.goaway == 1, "the node should say GoAway(protocol error) before closing"
        await wait_error_span(a.bus, "connection", protocol=YAMUX, peer=peer, contains=says)
        await wait_error_span(a.bus, "yamux.session", protocol=YAMUX, peer=peer, contains=says)
        assert not a.node.connections(peer)
        await a.assert_contained()


async def test_yamux_data_after_fin_resets_only_that_stream() -> None:
    async with arena() as a, raw_yamux(a) as (raw, peer):
        with trio.fail_after(PROMPT):
            sid = await raw.open_stream(ECHO)
            assert await raw.exchange(sid, b"hello") == b"hello"
            # FIN, then more data on the same stream, in one write
            await raw.send(
                yamux_frame(FrameType.WINDOW_UPDATE, Flag.FIN, sid, 0)
                + yamux_frame(FrameType.DATA, 0, sid, payload=b"after the end")
            )
            await raw.wait_until(lambda: sid in raw.rst, "the node reset the stream")
            # the connection lives on: a new stream on it works, and no GoAway was sent
            again = await raw.open_stream(ECHO)
            assert await raw.exchange(again, b"still here") == b"still here"
            assert raw.goaway is None and not raw.closed
        # the muxer's stream span names the violation (and the peer, in its text)...
        rec = await wait_error_span(
            a.bus, "yamux.stream", protocol=YAMUX, contains="data after FIN"
        )
        assert str(peer) in error_text(rec)
        # ...and so does the span of the handler that was reading the stream
        await wait_error_span(
            a.bus, "stream.handle", protocol=YAMUX, peer=peer, contains="data after FIN"
        )
        assert a.node.connections(peer)
        await a.assert_contained()


async def test_yamux_streams_over_the_limit_are_refused_one_by_one() -> None:
    limit = 4
    async with (
        arena(yamux=YamuxConfig(max_inbound_streams=limit)) as a,
        raw_yamux(a) as (raw, peer),
    ):
        with trio.fail_after(PROMPT):
            # raw_yamux's ping stream is still open: it and limit - 1 echo streams fill up
            open_ids = [await raw.open_stream(ECHO) for _ in range(limit - 1)]
            extra = raw.allocate()
            await raw.send(yamux_frame(FrameType.WINDOW_UPDATE, Flag.SYN, extra, 0))
            await raw.wait_until(lambda: extra in raw.rst, "the node refused the extra stream")
            for sid in open_ids:
                assert await raw.exchange(sid, b"x%d" % sid) == b"x%d" % sid
            assert raw.goaway is None and not raw.closed
        await wait_error_span(
            a.bus, "yamux.stream", protocol=YAMUX, peer=peer, contains="inbound streams"
        )
        await a.assert_contained()
    # the session span (ended when T shut down) tells of the refusal, naming the peer
    (session,) = [
        r
        for r in a.bus.history()
        if r.ended
        and r.name == "yamux.session"
        and r.attributes.get("libp2p.remote_peer_id") == str(peer)
    ]
    rejected = [e.attributes for e in session.events if e.name == "stream.rejected"]
    assert [e["libp2p.stream_id"] for e in rejected] == [extra]
    assert "inbound streams" in str(rejected[0]["libp2p.reason"])


async def test_streams_over_the_handler_limit_are_reset_and_traced() -> None:
    async with arena(max_handler_streams_per_connection=2) as a, raw_yamux(a) as (raw, peer):
        with trio.fail_after(PROMPT):
            # raw_yamux's ping stream is one handler; an echo stream is the second
            kept = await raw.open_stream(ECHO)
            extra = raw.allocate()
            await raw.send(yamux_frame(FrameType.WINDOW_UPDATE, Flag.SYN, extra, 0))
            await raw.wait_until(lambda: extra in raw.rst, "the node refused the extra stream")
            assert await raw.exchange(kept, b"kept") == b"kept"
            assert raw.goaway is None and not raw.closed
        await wait_error_span(
            a.bus, "stream.handle", protocol=YAMUX, peer=peer, contains="handler streams"
        )
        await a.assert_contained()


# ====================================================================== Mplex


@pytest.mark.parametrize(
    ("frames", "says"),
    [
        pytest.param(
            encode_frame(0, MplexFlag.NEW_STREAM, b"0")
            + encode_uvarint(0 << 3 | MplexFlag.MESSAGE_INITIATOR)
            + encode_uvarint((1 << 20) + 1)
            + bytes(4096),
            "exceeds the limit",
            id="oversized-message",
        ),
        pytest.param(b"\xff" * 10, "varint", id="varint-too-long"),
        pytest.param(encode_uvarint(0 << 3 | 7) + b"\x00", "flag 7", id="undefined-flag"),
    ],
)
@pytest.mark.parametrize("selected_in", ["noise-handshake", "multistream-select"])
async def test_mplex_violation_closes_only_that_connection(
    frames: bytes, says: str, selected_in: str
) -> None:
    async with arena() as a:
        key = new_key()
        offer = (MPLEX,) if selected_in == "noise-handshake" else ()
        with trio.fail_after(PROMPT):
            tcp = await tcp_connect(a.node)
            secure = await secure_channel(tcp, key, a.node, muxers=offer)
            muxed: trio.abc.Stream = secure
            if secure.early_muxer != MPLEX:  # not agreed in the handshake: select it now
                _, muxed = await negotiate_initiator(secure, [MPLEX])
            await muxed.send_all(frames)
            await drain_until_closed(secure)
            await tcp.aclose()
        await wait_error_span(a.bus, "connection", protocol=MPLEX, peer=peer_of(key), contains=says)
        await a.assert_contained()

"""The Yamux trio driver over memory streams: the stream contract, concurrency,
backpressure, violations, keepalive, GoAway, cancellation and tracing."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from muxer_helpers import (
    QUIET,
    connection_pair,
    event_names,
    parse_yamux_frames,
    raw_peer,
    send_until_broken,
    span_capture,
    spans_named,
    yamux_frame,
)

from flarelab.errors import ConnectionClosedError, RemoteProtocolError, StreamResetError
from flarelab.muxers import YamuxConfig, YamuxConnection
from flarelab.muxers.yamux import Flag, FrameType, GoAwayCode
from flarelab.muxers.yamux.frames import INITIAL_WINDOW
from flarelab.tracing import spans

# ---------------------------------------------------------------- trio's stream contract


async def test_streams_pass_trios_half_closeable_stream_checks() -> None:
    async with connection_pair("yamux") as (client, server):

        async def maker() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
            mine = await client.open_stream()
            return mine, await server.accept_stream()

        async def clogged() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
            mine, theirs = await maker()
            await mine.send_all(bytes(INITIAL_WINDOW))  # exhaust both send windows
            await theirs.send_all(bytes(INITIAL_WINDOW))
            return mine, theirs

        await trio.testing.check_half_closeable_stream(maker, clogged)
        await trio.testing.wait_all_tasks_blocked()
        assert client.num_streams == server.num_streams == 0


# ---------------------------------------------------------------- many streams


async def echo_server(server: YamuxConnection, nursery: trio.Nursery) -> None:
    async def echo(stream: trio.abc.HalfCloseableStream) -> None:
        while data := await stream.receive_some():
            await stream.send_all(data)
        await stream.send_eof()

    while True:
        try:
            stream = await server.accept_stream()
        except ConnectionClosedError:
            return
        nursery.start_soon(echo, stream)


async def test_many_concurrent_streams_echo_byte_exact() -> None:
    async with connection_pair("yamux") as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(echo_server, server, nursery)
        results: dict[int, bool] = {}

        async def one(i: int) -> None:
            rng = random.Random(i)
            payload = rng.randbytes(rng.randint(1, 300_000))
            stream = await client.open_stream()
            got = bytearray()

            async def reader() -> None:
                while data := await stream.receive_some(rng.randint(1, 70_000)):
                    got.extend(data)

            async with trio.open_nursery() as inner:
                inner.start_soon(reader)
                view = memoryview(payload)
                while view:
                    n = rng.randint(1, 100_000)
                    await stream.send_all(view[:n])
                    view = view[n:]
                await stream.send_eof()
            results[i] = bytes(got) == payload
            await stream.aclose()

        with trio.fail_after(60):
            async with trio.open_nursery() as streams:
                for i in range(60):
                    streams.start_soon(one, i)
        assert results == dict.fromkeys(range(60), True)
        await trio.testing.wait_all_tasks_blocked()
        assert client.num_streams == 0
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- backpressure


async def test_a_reader_that_does_not_read_blocks_the_sender_and_memory_stays_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connection_pair("yamux") as (client, server):
        sender = await client.open_stream()
        progress = [0]

        async def send_lots() -> None:
            for _ in range(32):
                await sender.send_all(bytes(64 * 1024))
                progress[0] += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_lots)
            receiver = await server.accept_stream()
            await trio.sleep(60)  # plenty of (virtual) time: the sender must be stuck
            assert progress[0] == INITIAL_WINDOW // (64 * 1024)
            rec = receiver._rec  # type: ignore[attr-defined]
            assert rec.buffered == INITIAL_WINDOW <= rec.window_max
            assert server._core.pending_output == 0  # type: ignore[attr-defined]
            # another stream on the same connection is not held up
            other = await client.open_stream()
            await other.send_all(b"ping")
            other_in = await server.accept_stream()
            assert await other_in.receive_some() == b"ping"
            total = 0
            while total < 32 * 64 * 1024:
                total += len(await receiver.receive_some())
        assert progress[0] == 32


async def test_open_stream_waits_while_the_ack_backlog_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = YamuxConfig(keepalive_interval=None, rtt_interval=None, max_unacked_outbound=2)
    async with connection_pair("yamux", config) as (client, server):
        first = await client.open_stream()
        await client.open_stream()
        with trio.move_on_after(5) as scope:
            await client.open_stream()
        assert scope.cancelled_caught
        inbound = await server.accept_stream()
        await inbound.send_all(b"ack")  # the first frame acknowledges the stream
        assert await first.receive_some() == b"ack"
        with trio.fail_after(1):
            await client.open_stream()


# ---------------------------------------------------------------- cancellation


async def test_a_cancelled_send_leaves_the_connection_whole(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connection_pair("yamux") as (client, server):
        stream = await client.open_stream()
        with trio.move_on_after(1):
            await stream.send_all(bytes(INITIAL_WINDOW + 1000))  # blocks on the window
        inbound = await server.accept_stream()
        got = 0
        while got < INITIAL_WINDOW:
            got += len(await inbound.receive_some())
        assert got == INITIAL_WINDOW
        other = await client.open_stream()
        await other.send_all(b"fine")
        assert await (await server.accept_stream()).receive_some() == b"fine"


async def test_cancelling_right_after_queueing_still_sends_whole_frames() -> None:
    async with connection_pair("yamux") as (client, server):
        stream = await client.open_stream()
        data = bytearray(random.Random(1).randbytes(100_000))
        with trio.CancelScope() as scope:
            scope.cancel()  # cancelled at the first wait after the frames were queued
            await stream._conn._send_stream_data(stream, memoryview(data))  # type: ignore[attr-defined]
        original = bytes(data)
        data[:] = bytes(len(data))  # the caller reuses its buffer at once
        inbound = await server.accept_stream()
        got = bytearray()
        while len(got) < len(original):
            got += await inbound.receive_some()
        assert got == original


# ---------------------------------------------------------------- resets and closing


async def test_resets_are_seen_by_both_sides() -> None:
    async with connection_pair("yamux") as (client, server):
        stream = await client.open_stream()
        await stream.send_all(b"x")
        inbound = await server.accept_stream()
        await inbound.reset()
        with pytest.raises(StreamResetError, match="reset locally"):
            await inbound.receive_some()
        with trio.fail_after(1):
            with pytest.raises(StreamResetError, match="reset by peer") as info:
                await send_until_broken(stream, b"more")
        assert info.value.protocol == "/yamux/1.0.0"
        assert info.value.peer == "server"
        with pytest.raises(StreamResetError):
            await stream.receive_some()


async def test_closing_the_connection_sends_goaway_and_breaks_streams() -> None:
    async with connection_pair("yamux") as (client, server):
        stream = await client.open_stream()
        await stream.send_all(b"hi")
        inbound = await server.accept_stream()
        await client.aclose()
        assert client.is_closed
        assert client.close_reason == "closed locally"
        await server.wait_closed()
        assert server.close_reason in ("peer sent GoAway", "connection closed by peer")
        assert not hasattr(server, "run_error")
        with pytest.raises(ConnectionClosedError):
            await inbound.receive_some()
        with pytest.raises(ConnectionClosedError):
            await stream.send_all(b"more")
        with pytest.raises(ConnectionClosedError):
            await server.accept_stream()
        with pytest.raises(ConnectionClosedError):
            await client.open_stream()
        await client.aclose()  # idempotent


async def test_goaway_normal_lets_open_streams_finish() -> None:
    async with raw_peer("yamux") as (conn, peer, _):
        await peer.send(yamux_frame(1, Flag.SYN, 1, 0))
        stream = await conn.accept_stream()
        await peer.send(yamux_frame(3, 0, 0, GoAwayCode.NORMAL))
        await peer.send(yamux_frame(0, Flag.FIN, 1, 5, b"hello"))
        assert await stream.receive_some() == b"hello"
        assert not conn.is_closed
        with pytest.raises(ConnectionClosedError, match="GoAway"):
            await conn.open_stream()
        await stream.send_all(b"bye")
        await stream.send_eof()  # the last stream finishes: the connection closes
        await conn.wait_closed()
        assert conn.close_reason == "peer sent GoAway; all streams finished"
        frames = parse_yamux_frames(await peer.read_to_eof())
        assert [(h.flags, p) for h, p in frames] == [(Flag.ACK, b"bye"), (Flag.FIN, b"")]


async def test_goaway_with_an_error_code_closes_at_once() -> None:
    async with raw_peer("yamux") as (conn, peer, _):
        await peer.send(yamux_frame(3, 0, 0, GoAwayCode.INTERNAL_ERROR))
        await conn.wait_closed()
        assert conn.close_reason == "peer sent GoAway (internal error)"
        assert not hasattr(conn, "run_error")  # the peer reported, it did not violate


async def test_the_transport_going_away_ends_the_streams() -> None:
    async with raw_peer("yamux") as (conn, peer, _):
        await peer.send(yamux_frame(1, Flag.SYN, 1, 0))
        stream = await conn.accept_stream()
        await peer.stream.aclose()
        await conn.wait_closed()
        with pytest.raises(ConnectionClosedError):
            await stream.receive_some()


async def test_a_write_that_makes_no_progress_ends_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, theirs = trio.testing.lockstep_stream_pair()  # writes block until the peer reads
    config = YamuxConfig(keepalive_interval=None, rtt_interval=None, write_timeout=10)
    conn = YamuxConnection(ours, is_initiator=True, config=config)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        stream = await conn.open_stream()
        await stream.send_all(b"x")  # returns once the writer took the frame
        await conn.wait_closed()
        assert trio.current_time() == pytest.approx(10)
        assert "no progress" in str(conn.close_reason)
        with pytest.raises(ConnectionClosedError):
            await stream.send_all(b"x")
    await theirs.aclose()


# ---------------------------------------------------------------- violations end one connection


async def test_a_violation_raises_from_run_after_goaway_and_spares_other_connections() -> None:
    async with connection_pair("yamux") as (client, server):
        healthy = await client.open_stream()
        healthy_in = await server.accept_stream()
        async with raw_peer("yamux") as (conn, peer, _):
            await peer.send(yamux_frame(1, Flag.SYN, 1, 0))
            victim = await conn.accept_stream()
            await peer.send(yamux_frame(1, Flag.SYN, 2, 0))  # even id to the server
            await conn.wait_closed()
            error = conn.run_error  # type: ignore[attr-defined]
            assert isinstance(error, RemoteProtocolError)
            assert error.peer == "raw"
            assert error.protocol == "/yamux/1.0.0"
            assert "wrong parity" in str(error)
            frames = parse_yamux_frames(await peer.read_to_eof())
            assert (frames[-1][0].type, frames[-1][0].length) == (
                FrameType.GO_AWAY,
                GoAwayCode.PROTOCOL_ERROR,
            )
            with pytest.raises(ConnectionClosedError):
                await victim.receive_some()
        await healthy.send_all(b"unaffected")
        assert await healthy_in.receive_some() == b"unaffected"


async def test_data_beyond_the_window_is_a_violation() -> None:
    async with raw_peer("yamux") as (conn, peer, _):
        await peer.send(yamux_frame(1, Flag.SYN, 1, 0))
        await peer.send(yamux_frame(0, 0, 1, INITIAL_WINDOW + 1) + bytes(INITIAL_WINDOW + 1))
        await conn.wait_closed()
        assert "receive window" in str(conn.run_error)  # type: ignore[attr-defined]


async def test_inbound_streams_beyond_the_backlog_are_reset() -> None:
    config = YamuxConfig(keepalive_interval=None, rtt_interval=None, max_unacked_inbound=4)
    async with raw_peer("yamux", config=config) as (conn, peer, _):
        await peer.send(b"".join(yamux_frame(1, Flag.SYN, i, 0) for i in range(1, 13, 2)))
        data = await peer.read_until(lambda d: len(d) >= 24)
        frames = parse_yamux_frames(data)
        assert [(h.flags, h.stream_id) for h, _ in frames] == [(Flag.RST, 9), (Flag.RST, 11)]
        assert conn.num_streams == 4
        assert not conn.is_closed


# ---------------------------------------------------------------- keepalive


async def test_keepalive_closes_a_silent_connection(autojump_clock: trio.testing.MockClock) -> None:
    config = YamuxConfig(keepalive_interval=30, ping_timeout=10, rtt_interval=None)
    async with raw_peer("yamux", config=config) as (conn, peer, _):
        await conn.wait_closed()
        assert trio.current_time() == pytest.approx(40)
        assert "keepalive timeout" in str(conn.close_reason)
        frames = parse_yamux_frames(await peer.read_to_eof())
        assert [(h.type, h.flags) for h, _ in frames] == [(FrameType.PING, Flag.SYN)]


async def test_keepalive_keeps_a_responsive_connection_and_measures_rtt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = YamuxConfig(keepalive_interval=30, ping_timeout=10, rtt_interval=30)
    async with connection_pair("yamux", config) as (client, server):
        await trio.sleep(600)
        assert not client.is_closed
        assert not server.is_closed
        assert client.rtt is not None
        assert client.rtt < 0.01


# ---------------------------------------------------------------- tracing


async def test_stream_and_session_spans() -> None:
    tracer, exporter = span_capture()
    async with connection_pair("yamux", tracer=tracer) as (client, server):
        stream = await client.open_stream()
        await stream.send_all(b"12345")
        inbound = await server.accept_stream()
        assert await inbound.receive_some() == b"12345"
        await inbound.send_all(b"abc")
        await inbound.send_eof()
        assert await stream.receive_some() == b"abc"
        assert await stream.receive_some() == b""
        await stream.send_eof()
        assert await inbound.receive_some() == b""
        await trio.testing.wait_all_tasks_blocked()
    stream_spans = spans_named(exporter, spans.YAMUX_STREAM)
    assert len(stream_spans) == 2
    by_direction = {s.attributes[spans.LIBP2P_DIRECTION]: s for s in stream_spans}
    out = by_direction["outbound"]
    assert out.attributes[spans.LIBP2P_STREAM_ID] == 1
    assert out.attributes[spans.LIBP2P_BYTES_SENT] == 5
    assert out.attributes[spans.LIBP2P_BYTES_RECEIVED] == 3
    assert out.attributes[spans.LIBP2P_CLOSE_REASON] == "closed"
    assert event_names(out) == [
        ("message.sent", "SYN"),
        ("message.received", "ACK"),
        ("message.received", "FIN"),
        ("message.sent", "FIN"),
    ]
    sessions = spans_named(exporter, spans.YAMUX_SESSION)
    assert len(sessions) == 2
    assert {s.attributes[spans.LIBP2P_ROLE] for s in sessions} == {"initiator", "responder"}
    assert all(s.parent is None for s in sessions)
    assert all(s.parent.span_id in {x.context.span_id for x in sessions} for s in stream_spans)
    goaways = [
        e for s in sessions for e in s.events if e.attributes.get("message.type") == "GoAway"
    ]
    assert {e.name for e in goaways} == {"message.sent", "message.received"}


async def test_a_violation_marks_the_session_span() -> None:
    tracer, exporter = span_capture()
    ours, theirs = trio.testing.memory_stream_pair()
    conn = YamuxConnection(ours, is_initiator=False, config=QUIET, peer="p", tracer=tracer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(theirs.send_all, bytes([9]) + bytes(11))
        with pytest.raises(RemoteProtocolError):
            await conn.run()
    (session,) = spans_named(exporter, spans.YAMUX_SESSION)
    assert not session.status.is_ok
    assert session.attributes[spans.LIBP2P_ERROR_SIDE] == "remote"

"""The Mplex trio driver over memory streams: the stream contract, concurrency, slow
readers, violations and tracing."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from muxer_helpers import (
    connection_pair,
    event_names,
    mplex_frame,
    raw_peer,
    send_until_broken,
    span_capture,
    spans_named,
)

from flarelab.errors import ConnectionClosedError, LimitExceededError, StreamResetError
from flarelab.muxers import MplexConfig
from flarelab.muxers.mplex import MplexFlag
from flarelab.tracing import spans


async def test_streams_pass_trios_half_closeable_stream_checks() -> None:
    async with connection_pair("mplex") as (client, server):

        async def maker() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
            mine = await client.open_stream()
            return mine, await server.accept_stream()

        await trio.testing.check_half_closeable_stream(maker, None)
        await trio.testing.wait_all_tasks_blocked()
        assert client.num_streams == server.num_streams == 0


async def test_many_concurrent_streams_both_directions() -> None:
    async with connection_pair("mplex") as (client, server):
        sent: dict[tuple[str, int], bytes] = {}
        received: dict[tuple[str, int], bytes] = {}

        async def drain(side: str, stream: trio.abc.ReceiveStream, rng: random.Random) -> None:
            got = bytearray()
            while data := await stream.receive_some(rng.randint(1, 50_000)):
                got.extend(data)
            received[(side, stream.stream_id)] = bytes(got)  # type: ignore[attr-defined]

        async def accept_all(side: str, conn: object, count: int, nursery: trio.Nursery) -> None:
            for i in range(count):
                stream = await conn.accept_stream()  # type: ignore[attr-defined]
                nursery.start_soon(drain, side, stream, random.Random(i))

        async def send_one(side: str, conn: object, seed: int) -> None:
            rng = random.Random(seed)
            payload = rng.randbytes(rng.randint(1, 200_000))
            stream = await conn.open_stream()  # type: ignore[attr-defined]
            sent[(side, stream.stream_id)] = payload
            view = memoryview(payload)
            while view:
                n = rng.randint(1, 80_000)
                await stream.send_all(view[:n])
                view = view[n:]
            await stream.send_eof()

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(accept_all, "from-client", server, 20, nursery)
                nursery.start_soon(accept_all, "from-server", client, 20, nursery)
                for i in range(20):
                    nursery.start_soon(send_one, "from-client", client, i)
                    nursery.start_soon(send_one, "from-server", server, 100 + i)
        assert len(sent) == 40
        assert received == sent


async def test_a_reader_that_falls_behind_is_reset_and_the_connection_lives(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = MplexConfig(max_stream_buffer=100_000)
    async with connection_pair("mplex", config) as (client, server):
        stream = await client.open_stream()
        inbound = await server.accept_stream()
        with pytest.raises(StreamResetError, match="reset by peer"):
            await send_until_broken(stream, bytes(30_000), pause=0.01)
        with pytest.raises(StreamResetError, match="fell behind"):
            await inbound.receive_some()
        other = await client.open_stream()
        await other.send_all(b"alive")
        assert await (await server.accept_stream()).receive_some() == b"alive"


async def test_an_oversized_message_ends_the_connection() -> None:
    async with raw_peer("mplex") as (conn, peer, _):
        await peer.send(mplex_frame(0, MplexFlag.NEW_STREAM, b"0"))
        stream = await conn.accept_stream()
        await peer.send(b"\x02\x81\x80\x40")  # a 1 MiB + 1 message header
        await conn.wait_closed()
        error = conn.run_error  # type: ignore[attr-defined]
        assert isinstance(error, LimitExceededError)
        assert error.peer == "raw"
        assert error.protocol == "/mplex/6.7.0"
        with pytest.raises(ConnectionClosedError):
            await stream.receive_some()


async def test_inbound_streams_beyond_the_limit_are_reset() -> None:
    async with raw_peer("mplex", config=MplexConfig(max_inbound_streams=2)) as (conn, peer, _):
        await peer.send(b"".join(mplex_frame(i, MplexFlag.NEW_STREAM, b"x") for i in range(3)))
        data = await peer.read_until(lambda d: len(d) >= 2)
        assert data == mplex_frame(2, MplexFlag.RESET_RECEIVER)
        assert conn.num_streams == 2


async def test_mplex_stream_spans() -> None:
    tracer, exporter = span_capture()
    async with connection_pair("mplex", tracer=tracer) as (client, server):
        stream = await client.open_stream()
        await stream.send_all(b"abc")
        inbound = await server.accept_stream()
        assert inbound.name == "0"  # type: ignore[attr-defined]
        assert await inbound.receive_some() == b"abc"
        await stream.reset()
        await trio.testing.wait_all_tasks_blocked()
    stream_spans = spans_named(exporter, spans.MPLEX_STREAM)
    by_direction = {s.attributes[spans.LIBP2P_DIRECTION]: s for s in stream_spans}
    assert event_names(by_direction["outbound"]) == [
        ("message.sent", "NewStream"),
        ("message.sent", "Reset"),
    ]
    assert event_names(by_direction["inbound"]) == [
        ("message.received", "NewStream"),
        ("message.received", "Reset"),
    ]
    assert by_direction["inbound"].attributes[spans.LIBP2P_CLOSE_REASON] == "reset by peer"
    assert len(spans_named(exporter, spans.MPLEX_SESSION)) == 2

"""Cancelled sends never tear a frame: randomized cancellations over a slow transport.

The stream under a muxer is usually Noise, whose ``send_all`` is broken for good once a
cancellation interrupts it half-way. So the muxer must never let a cancellation reach a
write in flight, and whatever frames a cancelled ``send_all`` queued must still go out
whole (copied, so the caller may reuse its buffer at once). These tests put a detector
under the connection that fails if a cancellation ever escapes a write, a transport that
makes writes block (lockstep, read slowly by the peer), and check every byte: what
arrives on each stream is exactly what ``bytes_sent`` says each cancelled or finished
``send_all`` queued, in order.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from muxer_helpers import QUIET, parse_yamux_frames

from flarelab.muxers import MplexConnection, YamuxConnection
from flarelab.muxers.driver import MuxerDriver


class TearDetector(trio.abc.HalfCloseableStream):
    """Pass everything through; count writes that a cancellation interrupted."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        self.inner = inner
        self.torn = 0
        self.writes = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        try:
            await self.inner.send_all(data)
        except trio.Cancelled:
            self.torn += 1
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


class SlowReader(trio.abc.HalfCloseableStream):
    """Read in small pieces with (virtual-time) pauses, so the peer's writes block."""

    def __init__(self, inner: trio.abc.HalfCloseableStream, rng: random.Random) -> None:
        self.inner = inner
        self.rng = rng

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        await trio.sleep(self.rng.uniform(0, 0.002))
        return await self.inner.receive_some(self.rng.randint(1, 16 * 1024))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


def make_connection(
    kind: str, stream: trio.abc.HalfCloseableStream, *, is_initiator: bool
) -> MuxerDriver:
    if kind == "yamux":
        return YamuxConnection(stream, is_initiator=is_initiator, config=QUIET)
    return MplexConnection(stream, is_initiator=is_initiator)


@pytest.mark.parametrize("kind", ["yamux", "mplex"])
@pytest.mark.parametrize("seed", range(3))
async def test_randomly_cancelled_sends_never_tear_a_frame_and_lose_nothing_queued(
    kind: str, seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(seed)
    left, right = trio.testing.lockstep_stream_pair()  # a write blocks until it is read
    detector = TearDetector(left)
    client = make_connection(kind, detector, is_initiator=True)
    server = make_connection(kind, SlowReader(right, rng), is_initiator=False)
    sent: dict[int, list[bytes]] = {}
    received: dict[int, bytearray] = {}
    outcomes = {"finished": 0, "cancelled": 0}

    async def drain(stream: trio.abc.ReceiveStream) -> None:
        got = received.setdefault(stream.stream_id, bytearray())  # type: ignore[attr-defined]
        while data := await stream.receive_some():
            got += data

    async def accept(nursery: trio.Nursery, count: int) -> None:
        for _ in range(count):
            nursery.start_soon(drain, await server.accept_stream())

    async def sender() -> None:
        stream = await client.open_stream()
        parts = sent.setdefault(stream.stream_id, [])
        for _ in range(12):
            payload = bytearray(rng.randbytes(rng.randint(1, 300_000)))
            before = stream.bytes_sent
            with trio.move_on_after(rng.uniform(0, 0.01)) as scope:
                await stream.send_all(payload)
            queued = stream.bytes_sent - before
            parts.append(bytes(payload[:queued]))
            payload[:] = bytes(len(payload))  # the caller reuses its buffer at once
            if not scope.cancelled_caught:
                assert queued == len(parts[-1]) == len(payload)
                outcomes["finished"] += 1
            else:
                outcomes["cancelled"] += 1
        await stream.send_eof()

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            await nursery.start(server.run)
            async with trio.open_nursery() as work:
                work.start_soon(accept, work, 3)
                for _ in range(3):
                    work.start_soon(sender)
            assert detector.torn == 0
            assert not client.is_closed and not server.is_closed
            await client.aclose()
            await server.aclose()
    assert {sid: bytes(got) for sid, got in received.items()} == {
        sid: b"".join(parts) for sid, parts in sent.items()
    }
    assert outcomes["cancelled"] > 0 and outcomes["finished"] > 0
    assert detector.torn == 0


async def test_a_send_cancelled_behind_a_stuck_write_still_sends_its_frames_whole(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ours, theirs = trio.testing.lockstep_stream_pair()
    detector = TearDetector(ours)
    conn = YamuxConnection(detector, is_initiator=True, config=QUIET)
    rng = random.Random(7)
    first, second = bytearray(rng.randbytes(100_000)), bytearray(rng.randbytes(100_000))
    expected = bytes(first + second)
    buffer = bytearray()

    async def read_syn() -> None:
        while len(buffer) < 12:
            buffer.extend(await theirs.receive_some(12 - len(buffer)))

    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        stream = await conn.open_stream()
        await trio.testing.wait_all_tasks_blocked()  # the writer is stuck writing the SYN
        nursery.start_soon(read_syn)
        await stream.send_all(first)  # the writer took it, and waits for the peer again
        with trio.move_on_after(1) as scope:
            await stream.send_all(second)  # queued behind that write
        assert scope.cancelled_caught
        queued = stream.bytes_sent
        first[:] = second[:] = bytes(100_000)  # reuse the buffers
        got = bytearray()
        with trio.fail_after(5):
            while len(got) < queued:
                buffer += await theirs.receive_some(1 << 20)
                frames = parse_complete_frames(buffer)
                got = bytearray(b"".join(payload for _, payload in frames))
        assert queued == len(expected)
        assert got == expected
        assert detector.torn == 0
        assert not conn.is_closed
        nursery.cancel_scope.cancel()


def parse_complete_frames(buffer: bytearray) -> list[tuple[object, bytes]]:
    """Parse the whole Yamux frames at the start of ``buffer``."""
    end = 0
    while len(buffer) - end >= 12:
        length = int.from_bytes(buffer[end + 8 : end + 12], "big")
        size = 12 + (length if buffer[end + 1] == 0 else 0)
        if len(buffer) - end < size:
            break
        end += size
    return parse_yamux_frames(bytes(buffer[:end]))

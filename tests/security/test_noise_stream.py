"""NoiseStream, the encrypted stream after the handshake: trio's stream contract and failures.

Rules (as tests/conftest.py states them): loopback only, port 0, deterministic, no
wall-clock sleeps -- the autojump clock, events and trio.fail_after bounds.
"""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing
from noise_helpers import (
    ALICE_ID,
    BOB_ID,
    exchange,
    frame,
    lockstep_pair,
    memory_pair,
    secure_pair,
)

from flarelab.errors import LocalProtocolError, RemoteProtocolError
from flarelab.security.noise import NoiseTransportError
from flarelab.security.noise.xx import MAX_NONCE, NonceExhaustedError


async def test_over_loopback_tcp() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        box: list[trio.SocketStream] = []

        async def connect() -> None:
            box.append(await trio.open_tcp_stream("127.0.0.1", port))

        nursery.start_soon(connect)
        server = await listeners[0].accept()
    await listeners[0].aclose()
    initiator, responder = await secure_pair((box[0], server))
    data = os.urandom(4 * 1024 * 1024 + 7)
    with trio.fail_after(30):
        assert await exchange(initiator, responder, data) == data
        await initiator.send_eof()
        assert await responder.receive_some() == b""
        assert await exchange(responder, initiator, b"still open") == b"still open"
    await initiator.aclose()
    await responder.aclose()


# ---------------------------------------------------------------------- conformance


async def test_conformance_over_memory_streams() -> None:
    await trio.testing.check_half_closeable_stream(memory_pair, None)


async def test_conformance_over_lockstep_streams() -> None:
    await trio.testing.check_half_closeable_stream(lockstep_pair, lockstep_pair)


# ---------------------------------------------------------------------- transport failures


async def test_forged_frame_breaks_the_stream_and_names_the_peer() -> None:
    initiator, responder = await memory_pair()
    await initiator.transport_stream.send_all(frame(b"\x00" * 40))
    with pytest.raises(NoiseTransportError, match="failed authentication") as info:
        await responder.receive_some()
    err = info.value
    assert isinstance(err, RemoteProtocolError)
    assert isinstance(err, trio.BrokenResourceError)
    assert err.peer == ALICE_ID
    assert err.protocol == "/noise"
    with pytest.raises(trio.BrokenResourceError):
        await responder.receive_some()
    # the other direction still works until someone closes the connection
    assert await exchange(responder, initiator, b"bye") == b"bye"


async def test_stream_cut_inside_a_frame() -> None:
    initiator, responder = await memory_pair()
    wire = initiator._channel.encrypt(b"a whole message")
    await initiator.transport_stream.send_all(bytes(wire[:-4]))
    await initiator.transport_stream.send_eof()  # type: ignore[attr-defined]
    with pytest.raises(NoiseTransportError, match="ended inside a frame"):
        await responder.receive_some()


async def test_cancelled_send_before_it_starts_leaves_the_stream_usable() -> None:
    initiator, responder = await memory_pair()
    with trio.CancelScope() as scope:
        scope.cancel()
        await initiator.send_all(b"never sent")
    assert await exchange(initiator, responder, b"sent") == b"sent"


async def test_send_cancelled_midway_breaks_the_send_direction(
    autojump_clock: trio.testing.MockClock,
) -> None:
    initiator, _ = await lockstep_pair()
    with trio.move_on_after(1):
        await initiator.send_all(b"blocked: nobody reads")
    with pytest.raises(trio.BrokenResourceError, match="earlier send"):
        await initiator.send_all(b"more")
    with pytest.raises(trio.BrokenResourceError):
        await initiator.send_eof()


async def test_nonce_exhaustion_ends_the_send_direction() -> None:
    initiator, _ = await memory_pair()
    initiator._channel._send_nonce = MAX_NONCE
    with pytest.raises(NonceExhaustedError) as info:
        await initiator.send_all(b"x")
    assert info.value.peer == BOB_ID
    with pytest.raises(trio.BrokenResourceError):
        await initiator.send_all(b"x")


async def test_large_writes_and_small_reads() -> None:
    initiator, responder = await memory_pair()
    data = os.urandom(3 * 65519 * 17 + 5)  # crosses the send batch size
    got = bytearray()

    async def receive() -> None:
        while len(got) < len(data):
            got.extend(await responder.receive_some(7777))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await initiator.send_all(memoryview(data))
    assert got == data


async def test_send_eof_then_receive_eof_forever() -> None:
    initiator, responder = await memory_pair()
    await initiator.send_all(b"last")
    await initiator.send_eof()
    assert await responder.receive_some() == b"last"
    assert await responder.receive_some() == b""
    assert await responder.receive_some() == b""
    with pytest.raises(trio.ClosedResourceError):
        await initiator.wait_send_all_might_not_block()


async def test_send_eof_needs_a_half_closeable_stream() -> None:
    a, b = trio.testing.memory_stream_pair()

    class NoHalfClose(trio.abc.Stream):
        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            await a.send_all(data)

        async def wait_send_all_might_not_block(self) -> None:
            await a.wait_send_all_might_not_block()

        async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
            return await a.receive_some(max_bytes)

        async def aclose(self) -> None:
            await a.aclose()

    initiator, _ = await secure_pair((NoHalfClose(), b))
    with pytest.raises(LocalProtocolError, match="cannot half-close"):
        await initiator.send_eof()

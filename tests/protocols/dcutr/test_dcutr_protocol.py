"""The DCUtR exchange in pairs over in-memory streams (tier 2), with a wire that has latency."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from flarelab.errors import LimitExceededError, RemoteProtocolError
from flarelab.multiaddr import Multiaddr
from flarelab.protocols.dcutr.messages import Connect, Sync, encode_message
from flarelab.protocols.dcutr.protocol import (
    answer_round,
    exchange_connect,
    receive,
    send,
    send_sync,
)
from flarelab.wire import IncompleteError, StreamReader, length_prefixed

B_ADDRS = (Multiaddr("/ip4/203.0.113.2/tcp/4001"),)
A_ADDRS = (Multiaddr("/ip4/203.0.113.1/tcp/4001"), Multiaddr("/ip4/203.0.113.1/udp/1/quic-v1"))


class RecordingSpan:
    """Collects span events (what spans.message_sent/received add)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        self.events.append((name, dict(attributes or {})))

    def messages(self) -> list[tuple[str, str, int]]:
        return [(n, a["message.type"], a["message.size"]) for n, a in self.events]


class _Wire(trio.abc.HalfCloseableStream):
    """One end of a stream pair whose bytes arrive ``delay`` seconds after they are sent."""

    def __init__(self, outbox: trio.MemorySendChannel[tuple[float, bytes]],
                 inbox: trio.MemoryReceiveChannel[tuple[float, bytes]], delay: float) -> None:
        self.outbox, self.inbox, self.delay = outbox, inbox, delay

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.outbox.send((trio.current_time() + self.delay, bytes(data)))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await self.outbox.send((trio.current_time() + self.delay, b""))

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            when, data = await self.inbox.receive()
        except trio.EndOfChannel:
            return b""
        await trio.sleep_until(when)
        if not data:
            self.inbox.close()
        return data

    async def aclose(self) -> None:
        self.outbox.close()
        self.inbox.close()
        await trio.lowlevel.checkpoint()


def wire_pair(delay: float) -> tuple[_Wire, _Wire]:
    ab_send, ab_receive = trio.open_memory_channel[tuple[float, bytes]](100)
    ba_send, ba_receive = trio.open_memory_channel[tuple[float, bytes]](100)
    return _Wire(ab_send, ba_receive, delay), _Wire(ba_send, ab_receive, delay)


async def test_one_round_trades_addresses_and_measures_the_rtt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    b_end, a_end = wire_pair(0.040)  # 40 ms each way through the relay
    b_span, a_span = RecordingSpan(), RecordingSpan()
    out: dict[str, Any] = {}

    async def side_b() -> None:
        reader = StreamReader(b_end)
        out["b"] = await exchange_connect(b_end, reader, B_ADDRS, span=b_span)  # type: ignore[arg-type]
        await send_sync(b_end, span=b_span)  # type: ignore[arg-type]

    async def side_a() -> None:
        seen: list[Connect] = []

        def ours(connect: Connect) -> tuple[Multiaddr, ...]:
            seen.append(connect)
            return A_ADDRS

        out["a"] = await answer_round(a_end, StreamReader(a_end), ours, span=a_span)  # type: ignore[arg-type]
        out["seen"] = seen

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(side_b)
        nursery.start_soon(side_a)
    assert out["b"].connect == Connect(A_ADDRS)
    assert out["b"].rtt == pytest.approx(0.080)
    assert out["b"].sent_at == pytest.approx(start)
    assert out["seen"] == [Connect(B_ADDRS)] and out["a"].connect == Connect(B_ADDRS)
    assert out["a"].rtt == pytest.approx(0.080)  # A's view: CONNECT out to SYNC in
    connect_b, connect_a, sync = (len(encode_message(Connect(B_ADDRS))),
                                  len(encode_message(Connect(A_ADDRS))),
                                  len(encode_message(Sync())))
    assert b_span.messages() == [("message.sent", "CONNECT", connect_b),
                                 ("message.received", "CONNECT", connect_a),
                                 ("message.sent", "SYNC", sync)]
    assert a_span.messages() == [("message.received", "CONNECT", connect_b),
                                 ("message.sent", "CONNECT", connect_a),
                                 ("message.received", "SYNC", sync)]
    assert b_span.events[0][1]["dcutr.addrs"] == [str(a) for a in B_ADDRS]


async def _a_hears(data: bytes) -> Any:
    """Feed ``data`` to A's side of a round; return what it raised (or its result)."""
    b_end, a_end = trio.testing.memory_stream_pair()
    await b_end.send_all(data)
    await b_end.send_eof()
    try:
        return await answer_round(a_end, StreamReader(a_end), A_ADDRS)
    except Exception as exc:
        return exc


async def test_a_refuses_what_b_must_not_send() -> None:
    err = await _a_hears(encode_message(Sync()))
    assert isinstance(err, RemoteProtocolError) and "expected CONNECT, got SYNC" in str(err)
    err = await _a_hears(encode_message(Connect(B_ADDRS)) * 2)
    assert isinstance(err, RemoteProtocolError) and "expected SYNC, got CONNECT" in str(err)
    err = await _a_hears(length_prefixed(b"\x00" * 5000))
    assert isinstance(err, LimitExceededError)
    err = await _a_hears(encode_message(Connect(B_ADDRS)))  # then EOF instead of SYNC
    assert isinstance(err, IncompleteError)
    assert "the stream ended while we waited for SYNC" in str(err)
    err = await _a_hears(b"\x05\x08\x64\x12")  # cut short inside the message
    assert isinstance(err, IncompleteError)
    result = await _a_hears(encode_message(Connect(B_ADDRS)) + encode_message(Sync()))
    assert result.connect == Connect(B_ADDRS)


async def test_b_refuses_a_sync_for_an_answer() -> None:
    b_end, a_end = trio.testing.memory_stream_pair()
    await a_end.send_all(encode_message(Sync()))
    with pytest.raises(RemoteProtocolError, match="expected CONNECT, got SYNC") as info:
        await exchange_connect(b_end, StreamReader(b_end), B_ADDRS, peer="A-peer")
    assert info.value.peer == "A-peer"


async def test_a_peer_that_never_sends_sync_is_a_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    b_end, a_end = wire_pair(0.01)

    async def silent_b() -> None:
        reader = StreamReader(b_end)
        await send(b_end, Connect(B_ADDRS))  # type: ignore[arg-type]
        await receive(reader, Connect)
        await trio.sleep_forever()  # never SYNC

    async with trio.open_nursery() as nursery:
        nursery.start_soon(silent_b)
        with pytest.raises(trio.TooSlowError), trio.fail_after(10):
            await answer_round(a_end, StreamReader(a_end), A_ADDRS)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()


@given(st.binary(max_size=80))
async def test_fuzz_what_b_sends(data: bytes) -> None:
    result = await _a_hears(data)
    assert isinstance(result, RemoteProtocolError) or result.connect is not None

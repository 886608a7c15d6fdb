"""Peers that break DCUtR, on simnet: the right outcome, a clear reason, limits that hold.

A crafted B (no service of its own) writes raw bytes on a ``/libp2p/dcutr`` stream to a
real A; a crafted A (a handler of our own) answers a real B badly. Nothing else is
disturbed: the relayed connection stays up and a later honest round still works.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from dcutr_helpers import next_event, scenario

from flarelab.errors import ProtocolNotSupportedError, StreamResetError
from flarelab.multiaddr import Multiaddr
from flarelab.node.connection import Connection, NetStream
from flarelab.protocols.dcutr import (
    DCUTR_PROTOCOL,
    HolePunchAttemptFailed,
    HolePunchConfig,
    HolePunchFailed,
)
from flarelab.protocols.dcutr.messages import Connect, Sync, encode_message, read_message
from flarelab.tracing import spans
from flarelab.wire import StreamReader, length_prefixed


async def _drain(stream: NetStream) -> None:
    while await stream.receive_some():
        pass


async def _expect_reset(stream: NetStream) -> None:
    with trio.fail_after(30), pytest.raises((StreamResetError, trio.BrokenResourceError)):
        await _drain(stream)


async def _refused(conn: Connection, payload: bytes) -> None:
    """Open a DCUtR stream on ``conn`` (lazily: A may reset it right after agreeing), send
    ``payload`` and expect a reset."""
    stream = await conn.new_stream(DCUTR_PROTOCOL, lazy=True)
    await stream.send_all(payload)
    await _expect_reset(stream)


@pytest.mark.parametrize(("payload", "reason"), [
    (length_prefixed(b"\x08\x65"), "unknown DCUtR message type 101"),
    (length_prefixed(b"\x12\x00"), "malformed DCUtR message: HolePunch: required field 'type'"),
    (length_prefixed(b"\x00" * 5000), "message of 5000 bytes exceeds the limit of 4096"),
    (encode_message(Sync()), "expected CONNECT, got SYNC"),
])
async def test_a_answers_garbage_with_protocol_error(
    payload: bytes, reason: str, autojump_clock: trio.testing.MockClock,
) -> None:
    async with scenario("home_router", "home_router", service_b=False) as sc:
        relayed_a, relayed_b = await sc.relayed()
        stream = await relayed_b.new_stream(DCUTR_PROTOCOL)
        await stream.send_all(payload)
        failed = await next_event(sc.a, HolePunchAttemptFailed)
        assert (failed.outcome, failed.attempt) == ("protocol_error", 1)
        assert reason in failed.reason
        await _expect_reset(stream)
        assert not relayed_a.is_closed
    (attempt,) = sc.spans("A", spans.DCUTR_ATTEMPT)
    assert attempt.status == "error"
    assert attempt.attributes[spans.LIBP2P_ERROR_SIDE] == "remote"
    assert attempt.attributes[spans.LIBP2P_OUTCOME] == "protocol_error"


async def test_b_that_never_sends_sync(autojump_clock: trio.testing.MockClock) -> None:
    async with scenario("home_router", "home_router", service_b=False) as sc:
        _, relayed_b = await sc.relayed()
        stream = await relayed_b.new_stream(DCUTR_PROTOCOL)
        await stream.send_all(encode_message(Connect((Multiaddr("/ip4/203.0.113.9/tcp/1"),))))
        answer, _ = await read_message(StreamReader(stream))
        assert isinstance(answer, Connect) and answer.addrs  # A answered with its address
        start = trio.current_time()
        failed = await next_event(sc.a, HolePunchAttemptFailed)
        assert (failed.outcome, failed.reason) == ("timeout", "B sent no SYNC within 10 s")
        assert trio.current_time() - start == pytest.approx(10.0, abs=0.2)
        await _expect_reset(stream)
        assert sc.spans("A", spans.HOLEPUNCH_DIAL) == []  # A never dialled


async def test_b_that_leaves_without_sync(autojump_clock: trio.testing.MockClock) -> None:
    async with scenario("home_router", "home_router", service_b=False) as sc:
        _, relayed_b = await sc.relayed()
        stream = await relayed_b.new_stream(DCUTR_PROTOCOL)
        await stream.send_all(encode_message(Connect((Multiaddr("/ip4/203.0.113.9/tcp/1"),))))
        await read_message(StreamReader(stream))
        await stream.send_eof()
        failed = await next_event(sc.a, HolePunchAttemptFailed)
        assert (failed.outcome, failed.reason) == (
            "failed", "B closed the stream instead of sending SYNC")


async def _a_answers(payload: bytes | None, *, hp: HolePunchConfig | None = None) -> tuple[
        HolePunchFailed, list[str]]:
    """A real B against an A whose handler reads CONNECT and answers ``payload`` (None:
    nothing at all)."""
    async def handler(stream: NetStream) -> None:
        await read_message(StreamReader(stream))
        if payload is None:
            await trio.sleep_forever()
        await stream.send_all(payload)
        await trio.sleep(1)

    async with scenario("home_router", "home_router", service_a=False, hp=hp) as sc:
        sc.a.set_handler(DCUTR_PROTOCOL, handler, allow_limited=True)
        await sc.relayed()
        failed = await next_event(sc.b, HolePunchFailed)
        return failed, sc.story_b()


async def test_b_upgrade_ends_on_a_protocol_error(autojump_clock: trio.testing.MockClock) -> None:
    failed, story = await _a_answers(encode_message(Sync()))
    assert (failed.outcome, failed.reason) == ("protocol_error", "expected CONNECT, got SYNC")
    assert failed.result.attempts == 1  # no retry after a protocol error
    assert story[-2:] == ["attempt 1 protocol_error", "failed initiator protocol_error"]
    failed, _ = await _a_answers(length_prefixed(b"\xff" * 10))
    assert failed.outcome == "protocol_error" and "malformed DCUtR message" in failed.reason


async def test_a_that_never_answers(autojump_clock: trio.testing.MockClock) -> None:
    failed, _ = await _a_answers(None)
    assert (failed.outcome, failed.reason) == ("timeout", "A did not answer CONNECT within 10 s")


async def test_a_with_nothing_usable(autojump_clock: trio.testing.MockClock) -> None:
    failed, _ = await _a_answers(encode_message(Connect((
        Multiaddr("/ip4/192.168.7.7/tcp/4001"), Multiaddr("/ip4/203.0.113.1/udp/9/quic-v1")))))
    assert failed.outcome == "no_suitable_address"
    assert failed.reason == (
        "A offered 2 addresses, none usable: /ip4/192.168.7.7/tcp/4001 is not public; "
        "/ip4/203.0.113.1/udp/9/quic-v1 uses quic-v1 over IPv4, which we did not offer")


async def test_dcutr_is_refused_where_it_makes_no_sense(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scenario(None, None, hp=HolePunchConfig(initiate=False)) as sc:
        # over a direct connection: nothing to upgrade
        direct = await sc.b.connect(sc.a.addrs[0])
        await _refused(direct, encode_message(Connect(())))
        # over a relayed connection that A received: only B (the receiver) starts DCUtR
        relayed_a, relayed_b = await sc.relayed()
        await _refused(relayed_a, encode_message(Connect(())))
        assert not relayed_b.is_closed
        assert not [r for r in sc.service_b.results]  # type: ignore[union-attr]
    handled = [r for r in sc.spans("B", spans.STREAM_HANDLE)
               if r.attributes.get(spans.LIBP2P_PROTOCOL) == DCUTR_PROTOCOL]
    assert [r.status for r in handled] == ["error"]  # the second one
    assert "we did" in (handled[0].description or "")


async def test_stream_and_round_limits(autojump_clock: trio.testing.MockClock) -> None:
    hp = HolePunchConfig(trust_unconfirmed_observations=True, max_rounds_per_connection=2,
                         exchange_timeout=60)
    async with scenario("home_router", "home_router", service_b=False, hp=hp) as sc:
        _, relayed_b = await sc.relayed()
        first = await relayed_b.new_stream(DCUTR_PROTOCOL)
        await first.send_all(encode_message(Connect(())))
        await read_message(StreamReader(first))
        second = await relayed_b.new_stream(DCUTR_PROTOCOL)  # supersedes the first
        await second.send_all(encode_message(Connect(())))
        await read_message(StreamReader(second))
        # a third round over this relayed connection is one too many
        await _refused(relayed_b, encode_message(Connect(())))
    handled = [r for r in sc.spans("A", spans.STREAM_HANDLE)
               if r.attributes.get(spans.LIBP2P_PROTOCOL) == DCUTR_PROTOCOL]
    assert any("more than 2 DCUtR rounds" in (r.description or "") for r in handled)


async def test_an_honest_round_after_a_bad_one(autojump_clock: trio.testing.MockClock) -> None:
    async with scenario("home_router", "home_router", hp_b=HolePunchConfig(
            trust_unconfirmed_observations=True, initiate=False)) as sc:
        _, relayed_b = await sc.relayed()
        stream = await relayed_b.new_stream(DCUTR_PROTOCOL)
        await stream.send_all(length_prefixed(b"\x08\x65"))
        await next_event(sc.a, HolePunchAttemptFailed)
        assert sc.service_b is not None
        result = await sc.service_b.upgrade(relayed_b)
        assert result.outcome == "success"
        assert sc.story_a()[1:5] == [
            "started receiver round 1", "attempt 1 protocol_error",
            "started receiver round 2",  # A counts rounds per relayed connection
            "opened outbound tcp"]


async def test_b_opening_the_stream_to_a_peer_without_the_protocol(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scenario("home_router", "home_router", service_a=False, service_b=False) as sc:
        _, relayed_b = await sc.relayed()
        with pytest.raises(ProtocolNotSupportedError):
            await relayed_b.new_stream(DCUTR_PROTOCOL)

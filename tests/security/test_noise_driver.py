"""The Noise handshake driver (noise_handshake) over memory streams: results, traces, failures.

Rules (as tests/conftest.py states them): loopback only, port 0, deterministic, no
wall-clock sleeps -- the autojump clock, events and trio.fail_after bounds.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Iterator

import pytest
import trio
import trio.testing
from noise_helpers import (
    ALICE,
    ALICE_ID,
    BOB,
    BOB_ID,
    MALLORY,
    MALLORY_ID,
    assert_failed_span,
    evil_message_2,
    exchange,
    frame,
    handshake_errors,
    handshake_span,
    run_against,
    secure_pair,
    signed_by,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, Tracer

from flarelab.errors import HandshakeError, LocalProtocolError, PeerIdMismatchError
from flarelab.identity import (
    EcdsaPrivateKey,
    Ed25519PrivateKey,
    PeerId,
    PrivateKey,
    Secp256k1PrivateKey,
)
from flarelab.security.noise import NoiseStream, noise_handshake
from flarelab.tracing.spans import (
    LIBP2P_MUXER,
    LIBP2P_PROTOCOL,
    LIBP2P_REMOTE_PEER_ID,
    MESSAGE_RECEIVED,
    MESSAGE_SENT,
    MESSAGE_SIZE,
    MESSAGE_TYPE,
)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[Tracer]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test")
    provider.shutdown()


# ---------------------------------------------------------------------- success


@pytest.mark.parametrize(
    ("initiator_type", "responder_type"),
    [
        (Ed25519PrivateKey, Ed25519PrivateKey),
        (Secp256k1PrivateKey, Ed25519PrivateKey),
        (Ed25519PrivateKey, EcdsaPrivateKey),
    ],
    ids=["ed25519-ed25519", "secp256k1-ed25519", "ed25519-ecdsa"],
)
async def test_handshake_then_data_both_ways(
    initiator_type: type[PrivateKey], responder_type: type[PrivateKey]
) -> None:
    i_key, r_key = initiator_type.generate(), responder_type.generate()
    i_id, r_id = PeerId.from_public_key(i_key.public_key), PeerId.from_public_key(r_key.public_key)
    pair = trio.testing.memory_stream_pair()
    initiator, responder = await secure_pair(pair, i_key, r_key, initiator={"expected_peer": r_id})
    assert initiator.local_peer == i_id
    assert initiator.remote_peer == r_id
    assert responder.remote_peer == i_id
    assert initiator.remote_public_key == r_key.public_key
    assert responder.remote_public_key == i_key.public_key
    assert initiator.transport_stream is pair[0]
    assert initiator.handshake_hash == responder.handshake_hash
    assert initiator.early_muxer is None
    assert initiator.remote_muxers == ()
    data = os.urandom(200_000)
    assert await exchange(initiator, responder, data) == data
    assert await exchange(responder, initiator, data[::-1]) == data[::-1]


async def test_span_of_each_side(exporter: InMemorySpanExporter, tracer: Tracer) -> None:
    muxers = ["/yamux/1.0.0", "/mplex/6.7.0"]
    await secure_pair(
        trio.testing.memory_stream_pair(),
        initiator={"tracer": tracer, "muxers": muxers, "expected_peer": BOB_ID},
        responder={"tracer": tracer, "muxers": muxers},
    )
    i_span = handshake_span(exporter, "initiator")
    r_span = handshake_span(exporter, "responder")
    for span, remote in ((i_span, BOB_ID), (r_span, ALICE_ID)):
        assert span.status.status_code is not StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes[LIBP2P_PROTOCOL] == "/noise"
        assert span.attributes[LIBP2P_REMOTE_PEER_ID] == str(remote)
        assert span.attributes[LIBP2P_MUXER] == "/yamux/1.0.0"
    i_events = [(e.name, e.attributes[MESSAGE_TYPE]) for e in i_span.events if e.attributes]
    assert i_events == [
        (MESSAGE_SENT, "noise.msg1 e"),
        (MESSAGE_RECEIVED, "noise.msg2 e,ee,s,es"),
        (MESSAGE_SENT, "noise.msg3 s,se"),
    ]
    r_events = [(e.name, e.attributes[MESSAGE_TYPE]) for e in r_span.events if e.attributes]
    assert r_events == [
        (MESSAGE_RECEIVED, "noise.msg1 e"),
        (MESSAGE_SENT, "noise.msg2 e,ee,s,es"),
        (MESSAGE_RECEIVED, "noise.msg3 s,se"),
    ]
    sizes_sent = [
        e.attributes[MESSAGE_SIZE] for e in i_span.events if e.attributes and e.name == MESSAGE_SENT
    ]
    sizes_seen = [
        e.attributes[MESSAGE_SIZE]
        for e in r_span.events
        if e.attributes and e.name == MESSAGE_RECEIVED
    ]
    assert sizes_sent == sizes_seen
    assert sizes_sent[0] == 2 + 32  # the length prefix counts


@pytest.mark.parametrize(
    ("initiator_muxers", "responder_muxers", "expected"),
    [
        (["/yamux/1.0.0", "/mplex/6.7.0"], ["/yamux/1.0.0", "/mplex/6.7.0"], "/yamux/1.0.0"),
        (["/yamux/1.0.0", "/mplex/6.7.0"], ["/mplex/6.7.0", "/yamux/1.0.0"], "/yamux/1.0.0"),
        (["/mplex/6.7.0"], ["/yamux/1.0.0", "/mplex/6.7.0"], "/mplex/6.7.0"),
        (["/yamux/1.0.0"], [], None),
        ([], ["/yamux/1.0.0"], None),
        (["/yamux/1.0.0"], ["/mplex/6.7.0"], None),
    ],
)
async def test_early_muxer_negotiation(
    initiator_muxers: list[str], responder_muxers: list[str], expected: str | None
) -> None:
    initiator, responder = await secure_pair(
        trio.testing.memory_stream_pair(),
        initiator={"muxers": initiator_muxers},
        responder={"muxers": responder_muxers},
    )
    assert initiator.early_muxer == responder.early_muxer == expected
    assert initiator.remote_muxers == tuple(responder_muxers)
    assert responder.remote_muxers == ((expected,) if expected else ())


async def test_data_sent_right_after_message_3_is_not_lost() -> None:
    """The initiator may write before the responder has read message 3; nothing may be lost."""
    a, b = trio.testing.memory_stream_pair()
    sent = trio.Event()
    receives = 0

    class Gated(trio.abc.HalfCloseableStream):
        """Hold back the responder's third read until the initiator has sent its data."""

        async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
            nonlocal receives
            receives += 1
            if receives == 2:
                await sent.wait()
            return await b.receive_some(max_bytes)

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            await b.send_all(data)

        async def wait_send_all_might_not_block(self) -> None:
            await b.wait_send_all_might_not_block()

        async def send_eof(self) -> None:
            await b.send_eof()

        async def aclose(self) -> None:
            await b.aclose()

    result: dict[str, NoiseStream] = {}

    async def initiator() -> None:
        stream = await noise_handshake(a, local_key=ALICE, is_initiator=True)
        await stream.send_all(b"first words")
        sent.set()

    async def responder() -> None:
        result["r"] = await noise_handshake(Gated(), local_key=BOB, is_initiator=False)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(initiator)
        nursery.start_soon(responder)
    before = receives
    assert await result["r"].receive_some() == b"first words"
    assert receives == before  # it came with message 3, no further read needed


# ---------------------------------------------------------------------- handshake failures


async def test_expected_peer_mismatch(exporter: InMemorySpanExporter, tracer: Tracer) -> None:
    a, b = trio.testing.memory_stream_pair()
    errors: dict[str, BaseException] = {}

    async def side(name: str, coro: Awaitable[NoiseStream], stream: trio.abc.Stream) -> None:
        try:
            await coro
        except HandshakeError as exc:
            errors[name] = exc
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            side,
            "initiator",
            noise_handshake(
                a, local_key=ALICE, is_initiator=True, expected_peer=BOB_ID, tracer=tracer
            ),
            a,
        )
        nursery.start_soon(
            side, "responder", noise_handshake(b, local_key=MALLORY, is_initiator=False), b
        )
    err = errors["initiator"]
    assert isinstance(err, PeerIdMismatchError)
    assert err.expected == BOB_ID
    assert err.actual == MALLORY_ID
    assert err.peer == MALLORY_ID
    assert err.protocol == "/noise"
    span = handshake_span(exporter, "initiator")
    assert_failed_span(span, PeerIdMismatchError)
    assert span.attributes is not None
    assert span.attributes[LIBP2P_REMOTE_PEER_ID] == str(MALLORY_ID)
    # The impostor never learns who we are: we hung up instead of sending message 3.
    responder_err = errors["responder"]
    assert "message 3" in str(responder_err)
    assert responder_err.peer is None  # type: ignore[attr-defined]


async def test_garbage_instead_of_message_1() -> None:
    async def peer(stream: trio.abc.Stream) -> None:
        await stream.send_all(frame(b"GET / HTTP/1.1\r\n\r\n"))
        await stream.receive_some()

    err = await run_against(peer, local_key=BOB, is_initiator=False)
    assert "exactly 32 bytes" in str(err)


async def test_plaintext_multistream_instead_of_message_2() -> None:
    """A peer that answers in plaintext never gets a plaintext connection."""

    async def peer(stream: trio.abc.Stream) -> None:
        await stream.receive_some()
        await stream.send_all(b"\x13/multistream/1.0.0\n\x07/noise\n")  # then hang up

    err = await run_against(peer, local_key=ALICE, is_initiator=True)
    # read as a frame of 0x132f bytes that never arrives in full
    assert "closed before handshake message 2 arrived in full" in str(err)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (signed_by(BOB, BOB, None), "signature over the Noise static key does not verify"),
        (signed_by(MALLORY, BOB, None), "does not verify"),
        (b"\x0a\x01k\x12\x01s", "invalid identity key"),
        (b"", "no identity key"),
        (b"\xff" * 40, "malformed handshake payload"),
    ],
    ids=["bad-signature", "someone-elses-key", "invalid-key", "empty", "garbage"],
)
async def test_bad_payload_in_message_2(payload: bytes, reason: str) -> None:
    err = await run_against(
        lambda stream: evil_message_2(stream, payload), local_key=ALICE, is_initiator=True
    )
    assert reason in str(err)
    assert err.peer is None  # nobody was authenticated


async def test_wrong_key_signed_correctly_is_a_mismatch_not_a_forgery() -> None:
    async def peer(stream: trio.abc.Stream) -> None:
        await noise_handshake(stream, local_key=MALLORY, is_initiator=False)

    err = await run_against(peer, local_key=ALICE, is_initiator=True, expected_peer=BOB_ID)
    assert isinstance(err, PeerIdMismatchError)
    assert err.peer == MALLORY_ID


async def test_truncated_message_2() -> None:
    async def peer(stream: trio.abc.Stream) -> None:
        await stream.receive_some()
        await stream.send_all(b"\x00\x60" + b"\x01" * 10)  # promises 96 bytes, sends 10

    err = await run_against(peer, local_key=ALICE, is_initiator=True)
    assert "closed before handshake message 2 arrived in full" in str(err)


async def test_connection_closed_before_any_message() -> None:
    async def peer(stream: trio.abc.Stream) -> None:
        pass

    err = await run_against(peer, local_key=BOB, is_initiator=False)
    assert "message 1" in str(err)


async def test_oversized_message_is_refused_before_reading_it() -> None:
    async def peer(stream: trio.abc.Stream) -> None:
        await stream.receive_some()
        await stream.send_all(b"\xff\xff")  # 65535 bytes announced, none sent
        await stream.receive_some()

    err = await run_against(peer, local_key=ALICE, is_initiator=True, max_message=4096)
    assert "65535 bytes exceeds the limit of 4096" in str(err)


async def test_small_max_message_refuses_a_real_message_2() -> None:
    a, b = trio.testing.memory_stream_pair()

    async def initiator() -> NoiseStream:
        try:
            return await noise_handshake(a, local_key=ALICE, is_initiator=True, max_message=64)
        finally:
            await a.aclose()

    errors = await handshake_errors(
        initiator, lambda: noise_handshake(b, local_key=BOB, is_initiator=False)
    )
    messages = sorted(str(err) for err in errors)
    assert len(messages) == 2
    assert "closed before handshake message 3" in messages[0]
    assert "exceeds the limit of 64" in messages[1]


async def test_two_initiators_both_fail() -> None:
    a, b = trio.testing.memory_stream_pair()
    errors = await handshake_errors(
        lambda: noise_handshake(a, local_key=ALICE, is_initiator=True),
        lambda: noise_handshake(b, local_key=BOB, is_initiator=True),
    )
    assert len(errors) == 2
    assert all("message 2 is 32 bytes" in str(err) for err in errors)


async def test_broken_connection_during_the_handshake() -> None:
    a, b = trio.testing.memory_stream_pair()
    await b.aclose()
    with pytest.raises(HandshakeError, match="broke during the handshake") as info:
        await noise_handshake(a, local_key=ALICE, is_initiator=True)
    assert isinstance(info.value.__cause__, trio.BrokenResourceError)


async def test_timeout_is_the_callers(
    autojump_clock: trio.testing.MockClock, exporter: InMemorySpanExporter, tracer: Tracer
) -> None:
    a, _silent = trio.testing.memory_stream_pair()
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(5):
            await noise_handshake(a, local_key=ALICE, is_initiator=True, tracer=tracer)
    span = handshake_span(exporter, "initiator")
    assert span.status.status_code is StatusCode.ERROR


async def test_bad_arguments_are_local_errors() -> None:
    a, _ = trio.testing.memory_stream_pair()
    with pytest.raises(LocalProtocolError):
        await noise_handshake(a, local_key=ALICE, is_initiator=True, max_message=70_000)
    with pytest.raises(LocalProtocolError):
        await noise_handshake(a, local_key=ALICE, is_initiator=True, muxers=[""])

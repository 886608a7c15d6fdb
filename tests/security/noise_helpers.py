"""Shared helpers for the Noise driver tests: keys, secured pairs, scripted peers, spans."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from flarelab.errors import HandshakeError
from flarelab.identity import Ed25519PrivateKey, PeerId, PrivateKey
from flarelab.security.noise import NoiseStream, noise_handshake
from flarelab.security.noise.payload import (
    STATIC_KEY_SIGNATURE_PREFIX,
    HandshakePayload,
    encode_payload,
)
from flarelab.security.noise.xx import XXHandshakeState
from flarelab.tracing.spans import LIBP2P_ERROR_SIDE, LIBP2P_ROLE, NOISE_HANDSHAKE

ALICE = Ed25519PrivateKey.from_seed(b"\x0a" * 32)
BOB = Ed25519PrivateKey.from_seed(b"\x0b" * 32)
MALLORY = Ed25519PrivateKey.from_seed(b"\x0c" * 32)
ALICE_ID = PeerId.from_public_key(ALICE.public_key)
BOB_ID = PeerId.from_public_key(BOB.public_key)
MALLORY_ID = PeerId.from_public_key(MALLORY.public_key)

StreamPair = tuple[trio.abc.Stream, trio.abc.Stream]


async def secure_pair(
    pair: StreamPair,
    initiator_key: PrivateKey = ALICE,
    responder_key: PrivateKey = BOB,
    **kwargs: dict[str, Any],
) -> tuple[NoiseStream, NoiseStream]:
    """Run both sides of the handshake over ``pair``; ``kwargs`` are per-side option dicts."""
    out: dict[str, NoiseStream] = {}

    async def side(name: str, stream: trio.abc.Stream, key: PrivateKey, initiator: bool) -> None:
        out[name] = await noise_handshake(
            stream, local_key=key, is_initiator=initiator, **kwargs.get(name, {})
        )

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, "initiator", pair[0], initiator_key, True)
            nursery.start_soon(side, "responder", pair[1], responder_key, False)
    return out["initiator"], out["responder"]


async def memory_pair() -> tuple[NoiseStream, NoiseStream]:
    return await secure_pair(trio.testing.memory_stream_pair())


async def lockstep_pair() -> tuple[NoiseStream, NoiseStream]:
    return await secure_pair(trio.testing.lockstep_stream_pair())


async def exchange(a: trio.abc.Stream, b: trio.abc.Stream, data: bytes) -> bytes:
    """Send ``data`` from a to b (concurrently) and return what b received."""
    got = bytearray()

    async def receive() -> None:
        while len(got) < len(data):
            chunk = await b.receive_some()
            assert chunk
            got.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await a.send_all(data)
    return bytes(got)


def handshake_span(exporter: InMemorySpanExporter, role: str) -> ReadableSpan:
    spans = [
        s
        for s in exporter.get_finished_spans()
        if s.name == NOISE_HANDSHAKE and s.attributes and s.attributes[LIBP2P_ROLE] == role
    ]
    assert len(spans) == 1
    return spans[0]


def assert_failed_span(span: ReadableSpan, error: type[BaseException]) -> None:
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes[LIBP2P_ERROR_SIDE] == "remote"
    exceptions = [e for e in span.events if e.name == "exception"]
    assert exceptions
    assert exceptions[0].attributes is not None
    assert str(exceptions[0].attributes["exception.type"]).endswith(error.__name__)


async def run_against(
    peer: Callable[[trio.abc.Stream], Awaitable[None]], **kwargs: Any
) -> HandshakeError:
    """Run our handshake against a scripted ``peer``; return the HandshakeError it raised.

    Also checks that our handshake span was marked as failed by the peer.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ours, theirs = trio.testing.memory_stream_pair()
    caught: list[HandshakeError] = []

    async def us() -> None:
        try:
            await noise_handshake(ours, tracer=provider.get_tracer("test"), **kwargs)
        except HandshakeError as exc:
            caught.append(exc)
        await ours.aclose()

    async def them() -> None:
        try:
            await peer(theirs)
        except (trio.BrokenResourceError, HandshakeError):
            pass  # we hung up on them
        finally:
            await theirs.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(us)
            nursery.start_soon(them)
    assert caught, "the handshake should have failed"
    err = caught[0]
    assert err.protocol == "/noise"
    role = "initiator" if kwargs["is_initiator"] else "responder"
    assert_failed_span(handshake_span(exporter, role), type(err))
    return err


async def evil_message_2(stream: trio.abc.Stream, payload: bytes) -> None:
    """Act as a responder whose message 2 is well encrypted but carries ``payload``."""
    xx = XXHandshakeState(initiator=False)
    data = await stream.receive_some()
    xx.read_message(bytes(data[2:]))
    await stream.send_all(frame(xx.write_message(payload)))
    await stream.receive_some()


def signed_by(signer: PrivateKey, claimed: PrivateKey, static: bytes | None) -> bytes:
    """Return a payload claiming ``claimed``'s key, signed by ``signer`` (over ``static``)."""
    signature = signer.sign(STATIC_KEY_SIGNATURE_PREFIX + (static or bytes(32)))
    return encode_payload(
        HandshakePayload(identity_key=claimed.public_key.to_protobuf(), identity_sig=signature)
    )


def frame(message: bytes) -> bytes:
    return len(message).to_bytes(2, "big") + message


async def handshake_errors(*sides: Callable[[], Awaitable[NoiseStream]]) -> list[HandshakeError]:
    """Run handshakes concurrently; each failure closes its stream. Return the errors."""
    errors: list[HandshakeError] = []

    async def side(run: Callable[[], Awaitable[NoiseStream]]) -> None:
        try:
            await run()
        except HandshakeError as exc:
            errors.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for run in sides:
                nursery.start_soon(side, run)
    return errors

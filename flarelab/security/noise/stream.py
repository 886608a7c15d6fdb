"""The trio driver of Noise: :func:`noise_handshake` and the :class:`NoiseStream` it returns.

The protocol lives in the pure cores (:class:`~.handshake.NoiseHandshake`,
:class:`~.channel.SecureChannel`); this module moves their bytes, traces the handshake and
keeps trio's stream contract, in the discipline of ``trio.SSLStream``: touch the core, then
await exactly one thing; one writer and one reader at a time (``trio.BusyResourceError``
otherwise); a send interrupted after the core encrypted (cancelled or failed half-way)
leaves the send direction broken for good, since the peer's nonce can no longer match.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Final

import trio
from opentelemetry.trace import Span, Tracer

from ...errors import (
    HandshakeError,
    LocalProtocolError,
    PeerIdMismatchError,
    RemoteProtocolError,
    attach_context,
)
from ...identity import PeerId, PrivateKey, PublicKey
from ...tracing.spans import (
    LIBP2P_MUXER,
    LIBP2P_PROTOCOL,
    LIBP2P_PROTOCOLS_OFFERED,
    LIBP2P_REMOTE_PEER_ID,
    LIBP2P_ROLE,
    NO_TRACER,
    NOISE_HANDSHAKE,
    ROLE_INITIATOR,
    ROLE_RESPONDER,
    mark_error,
    message_received,
    message_sent,
)
from ...wire import IncompleteError, StreamReader
from .channel import FRAME_HEADER, MAX_FRAME, MAX_PLAINTEXT, ChannelError, SecureChannel
from .handshake import NOISE_PROTOCOL_ID, HandshakeResult, NoiseHandshake
from .xx import NonceExhaustedError

__all__ = ["NoiseStream", "NoiseTransportError", "noise_handshake"]

#: How much plaintext one underlying ``send_all`` carries at most: two full frames. With
#: 256 KiB and 1 MiB writes over loopback TCP this beat 1, 4 and 16 frames per call by
#: 10-20% of CPU per byte (bench/bench_noise.py-style runs, CPU time measured).
SEND_BATCH: Final = 2 * MAX_PLAINTEXT
#: How much one underlying ``receive_some`` asks for. Kept under glibc's 128 KiB mmap
#: threshold: with 256 KiB reads every receive and its plaintext buffer were fresh mappings,
#: and the page faults cost ~10% of the throughput (measured with bench/bench_noise.py).
RECEIVE_SIZE: Final = 96 * 1024


class NoiseTransportError(RemoteProtocolError, trio.BrokenResourceError):
    """The peer sent a frame that does not decrypt or is cut off: the stream is broken."""


class NoiseStream(trio.abc.HalfCloseableStream):
    """An encrypted, authenticated byte stream over ``transport_stream``.

    Made by :func:`noise_handshake`. ``remote_peer`` is authenticated; ``early_muxer`` is
    the stream muxer negotiated inside the handshake (then the node skips the separate
    multistream-select round), or None.
    """

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        result: HandshakeResult,
        *,
        initial_data: bytes = b"",
    ) -> None:
        self.transport_stream = transport_stream
        self.local_peer: PeerId = result.local_peer
        self.remote_peer: PeerId = result.remote_peer
        self.remote_public_key: PublicKey = result.remote_public_key
        self.remote_muxers: tuple[str, ...] = result.remote_muxers
        self.early_muxer: str | None = result.early_muxer
        self.handshake_hash: bytes = result.handshake_hash
        self._channel = SecureChannel(result.send, result.receive)
        self._initial = initial_data  # bytes that arrived with the last handshake message
        self._closed = False
        self._eof_sent = False
        self._eof_received = False
        self._send_broken: str | None = None
        self._receive_broken: str | None = None
        self._sending = False
        self._receiving = False

    def __repr__(self) -> str:
        return f"<NoiseStream {self.local_peer.short()} <-> {self.remote_peer.short()}>"

    # ------------------------------------------------------------------ sending
    def _check_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this Noise stream was closed")
        if self._eof_sent:
            raise trio.ClosedResourceError("send_eof was called on this Noise stream")
        if self._send_broken is not None:
            raise trio.BrokenResourceError(self._send_broken)

    def _claim_send(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this Noise stream")
        self._sending = True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` into frames and send them."""
        self._claim_send()
        try:
            self._check_send()
            with memoryview(data) as view:
                total = view.nbytes
            if total == 0:
                await trio.lowlevel.checkpoint()
                return
            # A cancellation that is already pending must not reach the core first.
            await trio.lowlevel.checkpoint_if_cancelled()
            if total <= SEND_BATCH:
                await self._send_frames(data)
                return
            with memoryview(data) as view, view.cast("B") as flat:
                for start in range(0, total, SEND_BATCH):
                    await self._send_frames(flat[start : start + SEND_BATCH])
        finally:
            self._sending = False

    async def _send_frames(self, chunk: bytes | bytearray | memoryview) -> None:
        try:
            frames = self._channel.encrypt(chunk)
        except NonceExhaustedError as err:
            self._send_broken = str(err)
            attach_context(err, peer=self.remote_peer)
            raise
        try:
            await self.transport_stream.send_all(frames)
        except BaseException as exc:
            if not self._closed:
                self._send_broken = (
                    f"an earlier send on this Noise stream failed ({type(exc).__name__})"
                )
            raise

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the underlying stream may accept data without blocking."""
        self._claim_send()
        try:
            self._check_send()
            await self.transport_stream.wait_send_all_might_not_block()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Half-close: forward EOF to the underlying stream (Noise has no close message)."""
        self._claim_send()
        try:
            if self._closed:
                raise trio.ClosedResourceError("this Noise stream was closed")
            if self._eof_sent:
                await trio.lowlevel.checkpoint()
                return
            if self._send_broken is not None:
                raise trio.BrokenResourceError(self._send_broken)
            send_eof = getattr(self.transport_stream, "send_eof", None)
            if send_eof is None:
                raise LocalProtocolError(
                    "the stream under this Noise stream cannot half-close",
                    protocol=NOISE_PROTOCOL_ID,
                )
            self._eof_sent = True
            await send_eof()
        finally:
            self._sending = False

    # ------------------------------------------------------------------ receiving
    def _check_receive(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this Noise stream was closed")
        if self._receive_broken is not None:
            raise trio.BrokenResourceError(self._receive_broken)

    def _feed(self, data: bytes | bytearray) -> None:
        try:
            if data:
                self._channel.receive_data(data)
            else:
                self._eof_received = True
                self._channel.receive_eof()
        except ChannelError as err:
            self._receive_broken = f"the peer broke this Noise stream earlier: {err.message}"
            raise NoiseTransportError(
                err.message, peer=self.remote_peer, protocol=NOISE_PROTOCOL_ID
            ) from None

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Return decrypted bytes (at most ``max_bytes``), or ``b""`` at end of stream."""
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this Noise stream")
        self._receiving = True
        try:
            self._check_receive()
            channel = self._channel
            if channel.plaintext_available or self._eof_received or self._initial:
                await trio.lowlevel.checkpoint()
                self._check_receive()
                if self._initial:
                    initial, self._initial = self._initial, b""
                    self._feed(initial)
            while True:
                if channel.plaintext_available:
                    return channel.read(max_bytes)
                if self._eof_received:
                    return b""
                data = await self.transport_stream.receive_some(RECEIVE_SIZE)
                self._feed(data)
        finally:
            self._receiving = False

    # ------------------------------------------------------------------ closing
    async def aclose(self) -> None:
        """Close this stream and the one under it."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        await self.transport_stream.aclose()


# ---------------------------------------------------------------------- the handshake


async def _read_frame(reader: StreamReader, max_message: int, number: int) -> bytes:
    try:
        header = await reader.read_exactly(FRAME_HEADER)
        length = int.from_bytes(header, "big")
        if length > max_message:
            raise HandshakeError(
                f"handshake message {number} of {length} bytes exceeds the limit of {max_message}",
                protocol=NOISE_PROTOCOL_ID,
            )
        return await reader.read_exactly(length)
    except IncompleteError:
        raise HandshakeError(
            f"connection closed before handshake message {number} arrived in full",
            protocol=NOISE_PROTOCOL_ID,
        ) from None


async def _run_handshake(
    stream: trio.abc.Stream, core: NoiseHandshake, span: Span, max_message: int
) -> NoiseStream:
    reader = StreamReader(stream)
    while not core.complete:
        message_type = core.next_message_type
        if core.is_my_turn:
            message = core.write_message()
            frame = len(message).to_bytes(FRAME_HEADER, "big") + message
            await stream.send_all(frame)
            message_sent(span, message_type, len(frame))
        else:
            number = core.message_index + 1
            message = await _read_frame(reader, max_message, number)
            core.read_message(message)
            muxers = core.remote_muxers if number > 1 else ()
            attributes = {LIBP2P_PROTOCOLS_OFFERED: muxers} if muxers else None
            message_received(span, message_type, FRAME_HEADER + len(message), attributes)
            if core.remote_peer is not None and number > 1:
                span.set_attribute(LIBP2P_REMOTE_PEER_ID, str(core.remote_peer))
    result = core.result()
    if result.early_muxer is not None:
        span.set_attribute(LIBP2P_MUXER, result.early_muxer)
    return NoiseStream(stream, result, initial_data=reader.take_buffer())


async def noise_handshake(
    stream: trio.abc.Stream,
    *,
    local_key: PrivateKey,
    is_initiator: bool,
    expected_peer: PeerId | None = None,
    muxers: Sequence[str] = (),
    tracer: Tracer = NO_TRACER,
    max_message: int = MAX_FRAME,
) -> NoiseStream:
    """Run libp2p's Noise XX handshake over ``stream`` and return the secured stream.

    ``expected_peer`` (usually the dialled peer) must match the key the peer proves;
    ``muxers`` (in our order of preference) are offered for early muxer negotiation;
    ``max_message`` caps each handshake message. Every failure is a
    :class:`~flarelab.errors.HandshakeError` naming ``/noise`` and the peer when known
    (:class:`~flarelab.errors.PeerIdMismatchError` for the wrong peer); the stream is
    left open for the caller to close. Timeouts are the caller's (``trio.fail_after``).
    """
    if not 0 < max_message <= MAX_FRAME:
        raise LocalProtocolError(f"max_message must be in 1..{MAX_FRAME}, not {max_message}")
    role = ROLE_INITIATOR if is_initiator else ROLE_RESPONDER
    with tracer.start_as_current_span(
        NOISE_HANDSHAKE,
        attributes={LIBP2P_ROLE: role, LIBP2P_PROTOCOL: NOISE_PROTOCOL_ID},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        core: NoiseHandshake | None = None
        try:
            core = NoiseHandshake(
                local_key, is_initiator=is_initiator, expected_peer=expected_peer, muxers=muxers
            )
            return await _run_handshake(stream, core, span, max_message)
        except HandshakeError as err:
            if isinstance(err, PeerIdMismatchError):
                # the peer authenticated, just not as whom we wanted: say who it was
                span.set_attribute(LIBP2P_REMOTE_PEER_ID, str(err.actual))
            attach_context(err, peer=core.remote_peer if core else None)
            mark_error(span, err)
            raise
        except trio.BrokenResourceError as exc:
            broke = HandshakeError(
                f"connection broke during the handshake: {str(exc) or type(exc).__name__}",
                peer=core.remote_peer if core else None,
                protocol=NOISE_PROTOCOL_ID,
            )
            mark_error(span, broke)
            raise broke from exc
        except BaseException as exc:
            mark_error(span, exc)
            raise

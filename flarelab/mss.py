"""multistream-select 1.0: agree on a protocol over a fresh stream or connection.

Every message is ``uvarint(len) || protocol-id || "\\n"``. Both sides first exchange the
header ``/multistream/1.0.0``; the initiator then proposes protocols one at a time and the
responder echoes the one it accepts or answers ``na``.

The initiator writes its header together with its first proposal (one round trip in the
common case). With ``lazy=True`` and a single protocol it does not wait at all: the answer
is read on the first ``receive_some`` of the returned stream (go-libp2p's "lazy client"),
which is only safe when the peer is known to speak the protocol.

Limits: protocol ids are at most :data:`MAX_PROTOCOL_LENGTH` bytes; a responder accepts at
most :data:`MAX_PROPOSALS` proposals per negotiation.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import trio
from opentelemetry.trace import Tracer

from .errors import LocalProtocolError, ProtocolNotSupportedError, RemoteProtocolError
from .tracing import spans
from .wire import StreamReader, encode_uvarint, length_prefixed, with_leftover

__all__ = [
    "MAX_PROPOSALS",
    "MAX_PROTOCOL_LENGTH",
    "MULTISTREAM_PROTOCOL",
    "LazyNegotiatedStream",
    "encode_message",
    "negotiate_initiator",
    "negotiate_responder",
]

MULTISTREAM_PROTOCOL = "/multistream/1.0.0"
NA = "na"
LS = "ls"
#: go-multistream refuses tokens over 1024 bytes; so do we.
MAX_PROTOCOL_LENGTH = 1024
#: How many ``na`` answers a responder gives before it gives up on the initiator.
MAX_PROPOSALS = 32

def encode_message(token: str) -> bytes:
    """Encode one multistream-select message (``uvarint || token || \\n``)."""
    raw = token.encode("utf-8") + b"\n"
    if len(raw) > MAX_PROTOCOL_LENGTH + 1:
        raise LocalProtocolError(f"protocol id longer than {MAX_PROTOCOL_LENGTH} bytes")
    return length_prefixed(raw)


_HEADER = encode_message(MULTISTREAM_PROTOCOL)


async def _read_token(reader: StreamReader) -> tuple[str, int]:
    """Read one message; return the token without its newline and its wire size."""
    msg = await reader.read_length_prefixed(MAX_PROTOCOL_LENGTH + 1)
    if not msg.endswith(b"\n"):
        raise RemoteProtocolError("multistream message does not end in a newline")
    try:
        token = msg[:-1].decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("multistream message is not UTF-8") from None
    if "\n" in token:
        raise RemoteProtocolError("multistream message has an embedded newline")
    return token, len(msg) + len(encode_uvarint(len(msg)))


async def _read_header(reader: StreamReader, span: spans.Span) -> None:
    token, size = await _read_token(reader)
    spans.message_received(span, "header", size, {spans.LIBP2P_PROTOCOL: token})
    if token != MULTISTREAM_PROTOCOL:
        raise RemoteProtocolError(f"expected {MULTISTREAM_PROTOCOL!r}, got {token[:64]!r}")


async def negotiate_initiator(
    stream: trio.abc.Stream,
    protocols: Sequence[str],
    *,
    lazy: bool = False,
    tracer: Tracer = spans.NO_TRACER,
    peer: object = None,
) -> tuple[str, trio.abc.Stream]:
    """Propose ``protocols`` in order; return the accepted one and the stream to use.

    The returned stream replays any bytes read past the negotiation. Raises
    :class:`ProtocolNotSupportedError` when the responder refuses every protocol and
    :class:`RemoteProtocolError` when it breaks the protocol.
    """
    if not protocols:
        raise LocalProtocolError("no protocols to propose")
    for proto in protocols:
        if proto in (NA, LS) or not proto:
            raise LocalProtocolError(f"not a protocol id: {proto!r}")
    if lazy and len(protocols) == 1:
        proposal = encode_message(protocols[0])
        await stream.send_all(_HEADER + proposal)
        return protocols[0], LazyNegotiatedStream(stream, protocols[0], tracer=tracer, peer=peer)

    with tracer.start_as_current_span(
        spans.MSS_NEGOTIATE,
        attributes={
            spans.LIBP2P_ROLE: "initiator",
            spans.LIBP2P_PROTOCOLS_OFFERED: list(protocols),
        },
    ) as span:
        try:
            reader = StreamReader(stream, chunk=4096)
            first = encode_message(protocols[0])
            await stream.send_all(_HEADER + first)
            spans.message_sent(span, "header", len(_HEADER))
            spans.message_sent(span, "propose", len(first), {spans.LIBP2P_PROTOCOL: protocols[0]})
            await _read_header(reader, span)
            for i, proto in enumerate(protocols):
                if i:
                    msg = encode_message(proto)
                    await stream.send_all(msg)
                    spans.message_sent(span, "propose", len(msg), {spans.LIBP2P_PROTOCOL: proto})
                token, size = await _read_token(reader)
                if token == proto:
                    spans.message_received(span, "accept", size, {spans.LIBP2P_PROTOCOL: token})
                    span.set_attribute(spans.LIBP2P_PROTOCOL, proto)
                    return proto, with_leftover(stream, reader.take_buffer())
                if token != NA:
                    raise RemoteProtocolError(
                        f"answer {token[:64]!r} to proposal {proto!r} is neither echo nor 'na'"
                    )
                spans.message_received(span, "na", size, {spans.LIBP2P_PROTOCOL: proto})
            raise ProtocolNotSupportedError(
                "peer supports none of the protocols offered", offered=tuple(protocols)
            )
        except (RemoteProtocolError, ProtocolNotSupportedError) as err:
            if err.protocol is None:
                err.protocol = MULTISTREAM_PROTOCOL
            if err.peer is None:
                err.peer = peer
            spans.mark_error(span, err)
            raise


async def negotiate_responder(
    stream: trio.abc.Stream,
    supported: Collection[str] | Callable[[str], bool],
    *,
    tracer: Tracer = spans.NO_TRACER,
    peer: object = None,
) -> tuple[str, trio.abc.Stream]:
    """Answer proposals until one is in ``supported``; return it and the stream to use.

    ``supported`` is a collection of protocol ids or a predicate (for handlers that match
    many ids). ``ls`` is answered with ``na``, as go-multistream does.
    """
    accepts = supported if callable(supported) else supported.__contains__
    with tracer.start_as_current_span(
        spans.MSS_NEGOTIATE, attributes={spans.LIBP2P_ROLE: "responder"}
    ) as span:
        try:
            reader = StreamReader(stream, chunk=4096)
            await stream.send_all(_HEADER)
            spans.message_sent(span, "header", len(_HEADER))
            await _read_header(reader, span)
            for _ in range(MAX_PROPOSALS):
                token, size = await _read_token(reader)
                if token != LS and token and accepts(token):
                    spans.message_received(span, "propose", size, {spans.LIBP2P_PROTOCOL: token})
                    reply = encode_message(token)
                    await stream.send_all(reply)
                    spans.message_sent(span, "accept", len(reply), {spans.LIBP2P_PROTOCOL: token})
                    span.set_attribute(spans.LIBP2P_PROTOCOL, token)
                    return token, with_leftover(stream, reader.take_buffer())
                spans.message_received(span, "propose", size, {spans.LIBP2P_PROTOCOL: token})
                reply = encode_message(NA)
                await stream.send_all(reply)
                spans.message_sent(span, "na", len(reply))
            raise RemoteProtocolError(f"more than {MAX_PROPOSALS} proposals without agreement")
        except RemoteProtocolError as err:
            if err.protocol is None:
                err.protocol = MULTISTREAM_PROTOCOL
            if err.peer is None:
                err.peer = peer
            spans.mark_error(span, err)
            raise


class LazyNegotiatedStream(trio.abc.HalfCloseableStream):
    """A stream whose multistream answer is read late (lazy initiator).

    The answer is read on the first ``receive_some``, or before ``send_eof``: a peer must
    not see our end-of-stream before its handler has been chosen (go-libp2p does the same;
    js-libp2p loses bytes and EOF that arrive before its handler starts).
    """

    def __init__(
        self, stream: trio.abc.Stream, protocol: str, *, tracer: Tracer, peer: object
    ) -> None:
        self.stream = stream
        self.protocol = protocol
        self._tracer = tracer
        self._peer = peer
        self._started = False
        self._done = trio.Event()
        self._error: BaseException | None = None
        self._leftover = b""

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)

    async def _ensure_negotiated(self) -> None:
        if not self._started:
            self._started = True
            try:
                await self._read_answer()
            except BaseException as exc:
                self._error = exc
                raise
            finally:
                self._done.set()
            return
        await self._done.wait()
        if self._error is not None:
            raise ProtocolNotSupportedError(
                "negotiation failed earlier", offered=(self.protocol,), peer=self._peer,
                protocol=MULTISTREAM_PROTOCOL,
            ) from self._error

    async def _read_answer(self) -> None:
        with self._tracer.start_as_current_span(
            spans.MSS_NEGOTIATE,
            attributes={
                spans.LIBP2P_ROLE: "initiator",
                spans.LIBP2P_PROTOCOLS_OFFERED: [self.protocol],
                spans.LIBP2P_MSS_LAZY: True,
            },
        ) as span:
            try:
                reader = StreamReader(self.stream, chunk=4096)
                await _read_header(reader, span)
                token, size = await _read_token(reader)
                if token == NA:
                    raise ProtocolNotSupportedError(
                        "peer refused the protocol", offered=(self.protocol,)
                    )
                if token != self.protocol:
                    raise RemoteProtocolError(f"unexpected answer {token[:64]!r}")
                spans.message_received(span, "accept", size, {spans.LIBP2P_PROTOCOL: token})
                self._leftover = reader.take_buffer()
            except (RemoteProtocolError, ProtocolNotSupportedError) as err:
                if err.protocol is None:
                    err.protocol = MULTISTREAM_PROTOCOL
                if err.peer is None:
                    err.peer = self._peer
                spans.mark_error(span, err)
                raise

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._done.is_set() or self._error is not None:
            await self._ensure_negotiated()
        if self._leftover:
            await trio.lowlevel.checkpoint()
            if max_bytes is None or max_bytes >= len(self._leftover):
                data, self._leftover = self._leftover, b""
            else:
                data, self._leftover = self._leftover[:max_bytes], self._leftover[max_bytes:]
            return data
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        send_eof = getattr(self.stream, "send_eof", None)
        if send_eof is None:
            raise LocalProtocolError("the wrapped stream cannot half-close")
        await self._ensure_negotiated()
        await send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()

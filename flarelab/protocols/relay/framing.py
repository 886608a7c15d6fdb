"""Reading and writing hop and stop messages on a stream, each traced as a span event.

The message events are named ``hop.reserve``, ``hop.connect``, ``hop.status``,
``stop.connect`` and ``stop.status`` (with ``libp2p.relay.status`` on a STATUS), so a
sequence diagram across the client, the relay and the target can be drawn from spans.
"""

from __future__ import annotations

from typing import Any

import trio
from opentelemetry.trace import Span

from ...errors import RemoteProtocolError
from ...tracing import spans
from ...wire import IncompleteError, StreamReader, encode_uvarint, length_prefixed
from .errors import RelayProtocolError
from .messages import (
    HOP_PROTOCOL,
    MAX_MESSAGE_SIZE,
    STOP_PROTOCOL,
    HopConnect,
    HopMessage,
    HopReserve,
    HopStatus,
    StopConnect,
    StopMessage,
    StopStatus,
    decode_hop,
    decode_stop,
    encode_hop,
    encode_stop,
)

__all__ = [
    "message_name",
    "note_received",
    "parse_hop",
    "read_frame",
    "read_hop",
    "read_stop",
    "write_hop",
    "write_stop",
]


def message_name(msg: HopMessage | StopMessage) -> str:
    """The event name of a message: ``hop.reserve``, ``stop.status``, ..."""
    prefix = "hop" if isinstance(msg, HopReserve | HopConnect | HopStatus) else "stop"
    kind = {
        HopReserve: "reserve", HopConnect: "connect", HopStatus: "status",
        StopConnect: "connect", StopStatus: "status",
    }[type(msg)]
    return f"{prefix}.{kind}"


def _attrs(msg: HopMessage | StopMessage) -> dict[str, Any]:
    if isinstance(msg, HopStatus | StopStatus):
        return {spans.LIBP2P_RELAY_STATUS: msg.status.name}
    return {}


async def read_frame(reader: StreamReader, protocol: str, peer: object) -> bytes:
    """Read one length-prefixed message body (RelayProtocolError if oversized or cut off)."""
    try:
        return await reader.read_length_prefixed(MAX_MESSAGE_SIZE)
    except IncompleteError as exc:
        raise RelayProtocolError(
            f"stream ended before a whole message ({exc.message})", peer=peer, protocol=protocol
        ) from None
    except RemoteProtocolError as exc:  # oversized, bad varint
        raise RelayProtocolError(exc.message, peer=peer, protocol=protocol) from None


def note_received(span: Span, msg: HopMessage | StopMessage, body_size: int) -> None:
    """Record a message received as a ``message.received`` event on ``span``."""
    size = len(encode_uvarint(body_size)) + body_size
    spans.message_received(span, message_name(msg), size, _attrs(msg))


def parse_hop(data: bytes, *, peer: object) -> HopMessage:
    """Decode a hop message body, naming ``peer`` in the error if it is bad."""
    try:
        return decode_hop(data)
    except RelayProtocolError as exc:
        exc.peer, exc.protocol = peer, HOP_PROTOCOL
        raise


async def read_hop(reader: StreamReader, *, peer: object, span: Span) -> HopMessage:
    """Read one hop message (RelayProtocolError if it is malformed or oversized)."""
    data = await read_frame(reader, HOP_PROTOCOL, peer)
    msg = parse_hop(data, peer=peer)
    note_received(span, msg, len(data))
    return msg


async def read_stop(reader: StreamReader, *, peer: object, span: Span) -> StopMessage:
    """Read one stop message (RelayProtocolError if it is malformed or oversized)."""
    data = await read_frame(reader, STOP_PROTOCOL, peer)
    try:
        msg = decode_stop(data)
    except RelayProtocolError as exc:
        exc.peer, exc.protocol = peer, STOP_PROTOCOL
        raise
    note_received(span, msg, len(data))
    return msg


async def write_hop(stream: trio.abc.SendStream, msg: HopMessage, *, span: Span) -> None:
    """Write one hop message."""
    framed = length_prefixed(encode_hop(msg))
    await stream.send_all(framed)
    spans.message_sent(span, message_name(msg), len(framed), _attrs(msg))


async def write_stop(stream: trio.abc.SendStream, msg: StopMessage, *, span: Span) -> None:
    """Write one stop message."""
    framed = length_prefixed(encode_stop(msg))
    await stream.send_all(framed)
    spans.message_sent(span, message_name(msg), len(framed), _attrs(msg))

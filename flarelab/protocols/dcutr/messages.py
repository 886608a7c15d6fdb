"""The DCUtR messages on the wire: ``uvarint(len) || HolePunch`` of at most 4 KiB.

This is the only module that touches the protobuf ``HolePunch``: it validates what a peer
sent and hands out our own types, :class:`Connect` (with parsed addresses) and
:class:`Sync`. Decoding raises :class:`~flarelab.errors.RemoteProtocolError` (naming the
protocol) for anything malformed: a truncated or oversized message, a missing or unknown
type, a SYNC that carries addresses, more addresses than :data:`MAX_ADDRS`. A CONNECT
address that is not a valid multiaddr is skipped and counted (as go- and rust-libp2p
skip it), so one odd address does not spoil the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from ...errors import LocalProtocolError, RemoteProtocolError
from ...multiaddr import Multiaddr, MultiaddrError
from ...pb import holepunch as pb
from ...protobuf import DecodeError
from ...wire import StreamReader, encode_uvarint, length_prefixed

__all__ = [
    "DCUTR_PROTOCOL",
    "MAX_ADDRS",
    "MAX_MESSAGE_SIZE",
    "Connect",
    "Message",
    "Sync",
    "decode_message",
    "encode_message",
    "read_message",
    "write_message",
]

DCUTR_PROTOCOL = "/libp2p/dcutr"
#: the spec: refuse messages (length prefix excluded) larger than 4 KiB
MAX_MESSAGE_SIZE = 4096
#: addresses one CONNECT may carry (a 4 KiB message could hold a few hundred tiny ones)
MAX_ADDRS = 64


@dataclass(frozen=True, slots=True)
class Connect:
    """A CONNECT: the sender's observed (and possibly predicted) addresses.

    ``invalid`` counts the addresses that were not valid multiaddrs and were skipped.
    """

    addrs: tuple[Multiaddr, ...] = ()
    invalid: int = 0

    @property
    def name(self) -> str:
        return "CONNECT"


@dataclass(frozen=True, slots=True)
class Sync:
    """A SYNC: B tells A to dial now."""

    @property
    def name(self) -> str:
        return "SYNC"


Message = Connect | Sync


def encode_message(message: Message) -> bytes:
    """Encode ``message`` with its length prefix; LocalProtocolError if it exceeds 4 KiB."""
    if isinstance(message, Connect):
        body = pb.HolePunch(type=pb.CONNECT, ObsAddrs=[a.to_bytes() for a in message.addrs])
    else:
        body = pb.HolePunch(type=pb.SYNC)
    data = body.encode()
    if len(data) > MAX_MESSAGE_SIZE:
        raise LocalProtocolError(
            f"a {message.name} of {len(data)} bytes exceeds DCUtR's limit of {MAX_MESSAGE_SIZE}",
            protocol=DCUTR_PROTOCOL,
        )
    return length_prefixed(data)


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Decode one message body (without its length prefix) and validate it."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError(
            f"DCUtR message of {len(data)} bytes exceeds the limit of {MAX_MESSAGE_SIZE}",
            protocol=DCUTR_PROTOCOL,
        )
    try:
        msg = pb.HolePunch.decode(data)
    except DecodeError as exc:
        raise RemoteProtocolError(
            f"malformed DCUtR message: {exc.message}", protocol=DCUTR_PROTOCOL
        ) from None
    if msg.type == pb.SYNC:
        if msg.ObsAddrs:
            raise RemoteProtocolError(
                f"a SYNC must carry no addresses, this one has {len(msg.ObsAddrs)}",
                protocol=DCUTR_PROTOCOL,
            )
        return Sync()
    if msg.type != pb.CONNECT:
        raise RemoteProtocolError(
            f"unknown DCUtR message type {msg.type} (CONNECT is 100, SYNC 300)",
            protocol=DCUTR_PROTOCOL,
        )
    if len(msg.ObsAddrs) > MAX_ADDRS:
        raise RemoteProtocolError(
            f"a CONNECT with {len(msg.ObsAddrs)} addresses (at most {MAX_ADDRS})",
            protocol=DCUTR_PROTOCOL,
        )
    addrs: list[Multiaddr] = []
    invalid = 0
    for raw in msg.ObsAddrs:
        try:
            addr = Multiaddr.from_bytes(raw)
        except (MultiaddrError, ValueError):
            invalid += 1
            continue
        if addr not in addrs:
            addrs.append(addr)
    return Connect(tuple(addrs), invalid)


async def read_message(reader: StreamReader) -> tuple[Message, int]:
    """Read one message; return it and its size on the wire (prefix included).

    Raises :class:`RemoteProtocolError` for a malformed or oversized message, and
    :class:`~flarelab.wire.IncompleteError` (a RemoteProtocolError) if the stream ends
    inside one. Use ``await reader.at_eof()`` first where a clean end is allowed.
    """
    try:
        body = await reader.read_length_prefixed(MAX_MESSAGE_SIZE)
    except RemoteProtocolError as exc:
        exc.protocol = exc.protocol or DCUTR_PROTOCOL
        raise
    return decode_message(body), len(encode_uvarint(len(body))) + len(body)


async def write_message(stream: trio.abc.SendStream, message: Message) -> int:
    """Write one message; return its size on the wire."""
    data = encode_message(message)
    await stream.send_all(data)
    return len(data)

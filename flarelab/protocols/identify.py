"""Identify 1.0.0 and identify push: tell a peer who we are and how it reaches us.

The message (uvarint-delimited protobuf) carries our public key, listen addresses, the
address we see the peer at (its *observed address*), the protocols we serve, agent and
protocol version, and a signed peer record (RFC 0003) whose addresses are certified.
Identify runs on every new connection; push sends an updated message when our addresses
or protocols change.

Limits: a message is at most :data:`MAX_MESSAGE_SIZE` bytes, and at most
:data:`MAX_MESSAGES` messages (merged, as go-libp2p does) per stream; lists are capped.
An invalid address in a list is skipped (and counted on the span), not fatal; a public key
that does not match the peer is fatal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from ..errors import RemoteProtocolError
from ..identity import (
    Envelope,
    InvalidEnvelopeError,
    InvalidKeyError,
    PeerRecord,
    PublicKey,
    public_key_from_protobuf,
)
from ..multiaddr import Multiaddr, MultiaddrError
from ..pb.identify import Identify
from ..protobuf import DecodeError
from ..tracing import spans
from ..wire import StreamReader, length_prefixed

if TYPE_CHECKING:
    from ..identity import PeerId

__all__ = [
    "IDENTIFY_PROTOCOL",
    "IDENTIFY_PUSH_PROTOCOL",
    "MAX_MESSAGES",
    "MAX_MESSAGE_SIZE",
    "IdentifyInfo",
    "decode_identify",
    "encode_identify",
    "read_identify",
    "write_identify",
]

IDENTIFY_PROTOCOL = "/ipfs/id/1.0.0"
IDENTIFY_PUSH_PROTOCOL = "/ipfs/id/push/1.0.0"
MAX_MESSAGE_SIZE = 64 * 1024
MAX_MESSAGES = 10
MAX_ADDRS = 128
MAX_PROTOCOLS = 512
MAX_PROTOCOL_LENGTH = 1024
MAX_VERSION_LENGTH = 1024


@dataclass(frozen=True)


class IdentifyInfo:
    """What one identify (or push) message told us, validated."""

    public_key: PublicKey | None = None
    protocol_version: str | None = None
    agent_version: str | None = None
    listen_addrs: tuple[Multiaddr, ...] = ()
    observed_addr: Multiaddr | None = None
    protocols: tuple[str, ...] = ()
    signed_record: PeerRecord | None = None
    #: which optional fields the message had (push messages may update only some)
    present: frozenset[str] = frozenset()
    #: entries that failed validation and were skipped, for the trace
    skipped: tuple[str, ...] = field(default=(), compare=False)

    @property
    def certified_addrs(self) -> tuple[Multiaddr, ...]:
        """The signed record's addresses if there is one, else the plain listen addresses."""
        if self.signed_record is not None:
            return self.signed_record.addrs
        return self.listen_addrs


def encode_identify(
    *,
    public_key: PublicKey,
    listen_addrs: Sequence[Multiaddr],
    protocols: Sequence[str],
    observed_addr: Multiaddr | None,
    agent_version: str,
    protocol_version: str,
    signed_record: Envelope | None,
) -> bytes:
    """Encode one identify message (without the length prefix)."""
    msg = Identify(
        protocolVersion=protocol_version,
        agentVersion=agent_version,
        publicKey=public_key.to_protobuf(),
        listenAddrs=[a.to_bytes() for a in listen_addrs],
        protocols=list(protocols),
    )
    if observed_addr is not None:
        msg.observedAddr = observed_addr.to_bytes()
    if signed_record is not None:
        msg.signedPeerRecord = signed_record.to_bytes()
    return msg.encode()


def _text(value: str, what: str) -> str:
    if len(value) > MAX_VERSION_LENGTH:
        raise RemoteProtocolError(f"identify {what} longer than {MAX_VERSION_LENGTH} characters")
    return value


def decode_identify(data: bytes, *, peer: PeerId | None = None) -> IdentifyInfo:
    """Decode and validate one identify message from ``peer``.

    Raises :class:`RemoteProtocolError` (protocol ``/ipfs/id/1.0.0``) for a malformed
    message, a public key that is not ``peer``'s, or a signed record for another peer.
    """
    try:
        return _decode(data, peer)
    except RemoteProtocolError as err:
        err.protocol = err.protocol or IDENTIFY_PROTOCOL
        err.peer = err.peer if err.peer is not None else peer
        raise


def _decode(data: bytes, peer: PeerId | None) -> IdentifyInfo:
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError(f"identify message of {len(data)} bytes is too large")
    try:
        msg = Identify.decode(data)
    except DecodeError as exc:
        raise RemoteProtocolError(f"malformed identify message: {exc.message}") from None
    present = msg.present_fields()
    skipped: list[str] = []

    public_key = None
    if msg.publicKey is not None:
        try:
            public_key = public_key_from_protobuf(msg.publicKey)
        except InvalidKeyError as exc:
            raise RemoteProtocolError(f"identify public key is invalid: {exc.message}") from None
        if peer is not None and not peer.matches(public_key):
            raise RemoteProtocolError("identify public key does not match the peer id")

    if len(msg.listenAddrs) > MAX_ADDRS:
        raise RemoteProtocolError(f"more than {MAX_ADDRS} listen addresses")
    listen: list[Multiaddr] = []
    for raw in msg.listenAddrs:
        try:
            addr = Multiaddr.from_bytes(raw)
        except MultiaddrError as exc:
            skipped.append(f"listen address: {exc}")
            continue
        if addr not in listen:
            listen.append(addr)

    observed = None
    if msg.observedAddr is not None:
        try:
            observed = Multiaddr.from_bytes(msg.observedAddr)
        except MultiaddrError as exc:
            skipped.append(f"observed address: {exc}")

    if len(msg.protocols) > MAX_PROTOCOLS:
        raise RemoteProtocolError(f"more than {MAX_PROTOCOLS} protocols")
    protocols: list[str] = []
    for proto in msg.protocols:
        if not proto or len(proto) > MAX_PROTOCOL_LENGTH or "\n" in proto:
            skipped.append(f"protocol id {proto[:40]!r}")
            continue
        if proto not in protocols:
            protocols.append(proto)

    record = None
    if msg.signedPeerRecord is not None:
        try:
            record = PeerRecord.open(msg.signedPeerRecord)
        except (InvalidEnvelopeError, RemoteProtocolError) as exc:
            skipped.append(f"signed peer record: {exc}")
        else:
            if peer is not None and record.peer_id != peer:
                raise RemoteProtocolError("signed peer record is for another peer")

    return IdentifyInfo(
        public_key=public_key,
        protocol_version=_text(msg.protocolVersion, "protocol version")
        if msg.protocolVersion is not None
        else None,
        agent_version=_text(msg.agentVersion, "agent version")
        if msg.agentVersion is not None
        else None,
        listen_addrs=tuple(listen),
        observed_addr=observed,
        protocols=tuple(protocols),
        signed_record=record,
        present=present,
        skipped=tuple(skipped),
    )


def _merge(a: IdentifyInfo, b: IdentifyInfo) -> IdentifyInfo:
    """Merge a follow-up message into the first one (go splits large messages in two)."""
    return IdentifyInfo(
        public_key=a.public_key or b.public_key,
        protocol_version=a.protocol_version or b.protocol_version,
        agent_version=a.agent_version or b.agent_version,
        listen_addrs=tuple(dict.fromkeys(a.listen_addrs + b.listen_addrs))[:MAX_ADDRS],
        observed_addr=a.observed_addr or b.observed_addr,
        protocols=tuple(dict.fromkeys(a.protocols + b.protocols))[:MAX_PROTOCOLS],
        signed_record=a.signed_record or b.signed_record,
        present=a.present | b.present,
        skipped=a.skipped + b.skipped,
    )


async def read_identify(
    stream: trio.abc.ReceiveStream, *, peer: PeerId | None, span: spans.Span | None = None
) -> IdentifyInfo:
    """Read identify messages until EOF and merge them."""
    reader = StreamReader(stream, chunk=16384)
    info: IdentifyInfo | None = None
    for _ in range(MAX_MESSAGES):
        if await reader.at_eof():
            break
        try:
            data = await reader.read_length_prefixed(MAX_MESSAGE_SIZE)
        except RemoteProtocolError as err:
            err.protocol = err.protocol or IDENTIFY_PROTOCOL
            err.peer = err.peer if err.peer is not None else peer
            raise
        part = decode_identify(data, peer=peer)
        if span is not None:
            spans.message_received(span, "identify", len(length_prefixed(data)))
        info = part if info is None else _merge(info, part)
    else:
        if not await reader.at_eof():
            raise RemoteProtocolError(
                f"more than {MAX_MESSAGES} identify messages", peer=peer, protocol=IDENTIFY_PROTOCOL
            )
    if info is None:
        raise RemoteProtocolError(
            "stream closed without an identify message", peer=peer, protocol=IDENTIFY_PROTOCOL
        )
    return info


async def write_identify(
    stream: trio.abc.HalfCloseableStream, message: bytes, *, span: spans.Span | None = None
) -> None:
    """Write one identify message and close our side."""
    framed = length_prefixed(message)
    await stream.send_all(framed)
    if span is not None:
        spans.message_sent(span, "identify", len(framed))
    await stream.send_eof()


def info_attributes(info: IdentifyInfo) -> dict[str, spans.AttributeValue]:
    """Span attributes summarising ``info``."""
    attrs: dict[str, spans.AttributeValue] = {
        spans.LIBP2P_LISTEN_ADDRS: [str(a) for a in info.listen_addrs],
        spans.LIBP2P_PROTOCOLS: list(info.protocols),
        spans.LIBP2P_SIGNED_RECORD: info.signed_record is not None,
    }
    if info.agent_version is not None:
        attrs[spans.LIBP2P_AGENT] = info.agent_version
    if info.observed_addr is not None:
        attrs[spans.LIBP2P_OBSERVED_ADDR] = str(info.observed_addr)
    if info.skipped:
        attrs["identify.skipped"] = list(info.skipped)
    return attrs

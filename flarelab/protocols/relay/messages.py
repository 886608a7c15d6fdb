"""Circuit relay v2 messages: validated types, their codec, and reservation vouchers.

Two protocols share these messages (specs: relay/circuit-v2.md):

* ``/libp2p/circuit/relay/0.2.0/hop`` -- between a client and the relay: RESERVE a slot,
  CONNECT to a peer that holds one; the relay answers STATUS.
* ``/libp2p/circuit/relay/0.2.0/stop`` -- from the relay to the target: CONNECT (from this
  peer, with these limits); the target answers STATUS.

Every message is a uvarint-length-prefixed protobuf of at most :data:`MAX_MESSAGE_SIZE`
bytes. :func:`decode_hop` and :func:`decode_stop` turn bytes into the frozen dataclasses
below or raise :class:`~.errors.RelayProtocolError` (nothing else); only this module
touches the raw protobuf objects.

A reservation comes with a *voucher*: a signed envelope (domain ``libp2p-relay-rsvp``,
payload type the bytes ``03 02``) over ``{relay, peer, expiration}`` that a client can show
to others as proof that the relay serves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, TypeVar

from ...errors import LocalProtocolError, RemoteProtocolError
from ...identity import Envelope, InvalidEnvelopeError, PeerId, PrivateKey
from ...multiaddr import Multiaddr, MultiaddrError
from ...pb import circuit as pb
from ...protobuf import DecodeError
from .errors import RelayProtocolError

__all__ = [
    "HOP_PROTOCOL",
    "MAX_ADDRS",
    "MAX_MESSAGE_SIZE",
    "STOP_PROTOCOL",
    "VOUCHER_DOMAIN",
    "VOUCHER_PAYLOAD_TYPE",
    "HopConnect",
    "HopMessage",
    "HopReserve",
    "HopStatus",
    "Limit",
    "PeerInfo",
    "ReservationInfo",
    "Status",
    "StopConnect",
    "StopMessage",
    "StopStatus",
    "Voucher",
    "decode_hop",
    "decode_stop",
    "encode_hop",
    "encode_stop",
]

HOP_PROTOCOL: Final = "/libp2p/circuit/relay/0.2.0/hop"
STOP_PROTOCOL: Final = "/libp2p/circuit/relay/0.2.0/stop"
#: the largest hop or stop message accepted (go and js use 4096 too)
MAX_MESSAGE_SIZE: Final = 4096
#: addresses kept from one Peer or Reservation message (more are a protocol error)
MAX_ADDRS: Final = 64
VOUCHER_DOMAIN: Final = "libp2p-relay-rsvp"
VOUCHER_PAYLOAD_TYPE: Final = b"\x03\x02"

_M = TypeVar("_M", pb.HopMessage, pb.StopMessage)
_UINT32_MAX = (1 << 32) - 1
_UINT64_MAX = (1 << 64) - 1


class Status(IntEnum):
    """Status codes of hop and stop STATUS messages."""

    OK = 100
    RESERVATION_REFUSED = 200
    RESOURCE_LIMIT_EXCEEDED = 201
    PERMISSION_DENIED = 202
    CONNECTION_FAILED = 203
    NO_RESERVATION = 204
    MALFORMED_MESSAGE = 400
    UNEXPECTED_MESSAGE = 401


class _HopType(IntEnum):
    RESERVE = 0
    CONNECT = 1
    STATUS = 2


class _StopType(IntEnum):
    CONNECT = 0
    STATUS = 1


@dataclass(frozen=True, slots=True)
class Limit:
    """Limits of one relayed connection; 0 means unlimited (as on the wire)."""

    #: seconds the relayed connection may last
    duration: int = 0
    #: bytes it may carry in each direction
    data: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.duration <= _UINT32_MAX:
            raise LocalProtocolError(f"limit duration {self.duration} s is out of range")
        if not 0 <= self.data <= _UINT64_MAX:
            raise LocalProtocolError(f"limit data {self.data} bytes is out of range")

    @property
    def unlimited(self) -> bool:
        """True if neither the duration nor the data is limited."""
        return self.duration == 0 and self.data == 0


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A peer named in a CONNECT: its id and (rarely used) addresses."""

    peer_id: PeerId
    addrs: tuple[Multiaddr, ...] = ()


@dataclass(frozen=True, slots=True)
class ReservationInfo:
    """The reservation part of an accepting STATUS, as sent."""

    #: when the reservation lapses, in UTC Unix seconds
    expire: int
    #: the relay's public addresses, each ending in /p2p/<relay>
    addrs: tuple[Multiaddr, ...] = ()
    #: the voucher envelope, as bytes (open it with :meth:`Voucher.open`)
    voucher: bytes | None = None


@dataclass(frozen=True, slots=True)
class HopReserve:
    """Client -> relay: reserve a slot."""


@dataclass(frozen=True, slots=True)
class HopConnect:
    """Client -> relay: connect me to ``peer``."""

    peer: PeerInfo


@dataclass(frozen=True, slots=True)
class HopStatus:
    """Relay -> client: the answer to a RESERVE or CONNECT."""

    status: Status
    reservation: ReservationInfo | None = None
    limit: Limit | None = None


@dataclass(frozen=True, slots=True)
class StopConnect:
    """Relay -> target: ``peer`` connects to you, with these limits (None: unlimited)."""

    peer: PeerInfo
    limit: Limit | None = None


@dataclass(frozen=True, slots=True)
class StopStatus:
    """Target -> relay: whether it accepts the relayed connection."""

    status: Status


HopMessage = HopReserve | HopConnect | HopStatus
StopMessage = StopConnect | StopStatus


# ---------------------------------------------------------------------- vouchers
@dataclass(frozen=True, slots=True)
class Voucher:
    """A reservation voucher: ``relay`` serves ``peer`` until ``expiration`` (Unix seconds)."""

    relay: PeerId
    peer: PeerId
    expiration: int

    def payload(self) -> bytes:
        """The canonical protobuf payload."""
        return pb.ReservationVoucher(
            relay=self.relay.to_bytes(), peer=self.peer.to_bytes(), expiration=self.expiration
        ).encode()

    def seal(self, relay_key: PrivateKey) -> bytes:
        """Sign the voucher with the relay's key; return the envelope's bytes."""
        if PeerId.from_public_key(relay_key.public_key) != self.relay:
            raise LocalProtocolError("a voucher must be signed by the relay it names")
        envelope = Envelope.seal(relay_key, VOUCHER_DOMAIN, VOUCHER_PAYLOAD_TYPE, self.payload())
        return envelope.to_bytes()

    @classmethod
    def open(cls, data: bytes) -> Voucher:
        """Verify a voucher envelope and return the voucher it carries.

        Raises :class:`RelayProtocolError` if the envelope does not verify for the voucher
        domain, has another payload type, or is signed by someone other than its relay.
        """
        try:
            envelope = Envelope.open(data, VOUCHER_DOMAIN, max_size=MAX_MESSAGE_SIZE)
        except InvalidEnvelopeError as exc:
            raise RelayProtocolError(f"invalid voucher: {exc.message}") from None
        if envelope.payload_type != VOUCHER_PAYLOAD_TYPE:
            raise RelayProtocolError(
                f"voucher payload type {envelope.payload_type.hex()} is not 0302"
            )
        try:
            msg = pb.ReservationVoucher.decode(envelope.payload)
            voucher = cls(
                relay=PeerId.from_bytes(msg.relay),
                peer=PeerId.from_bytes(msg.peer),
                expiration=msg.expiration,
            )
        except RemoteProtocolError as exc:
            raise RelayProtocolError(f"malformed voucher: {exc.message}") from None
        if envelope.peer_id != voucher.relay:
            raise RelayProtocolError("voucher is not signed by the relay it names")
        return voucher


# ---------------------------------------------------------------------- encoding
def _limit_pb(limit: Limit | None) -> pb.Limit | None:
    if limit is None:
        return None
    return pb.Limit(duration=limit.duration, data=limit.data)


def _peer_pb(peer: PeerInfo) -> pb.Peer:
    return pb.Peer(id=peer.peer_id.to_bytes(), addrs=[a.to_bytes() for a in peer.addrs])


def encode_hop(msg: HopMessage) -> bytes:
    """Encode a hop message (without its length prefix)."""
    if isinstance(msg, HopReserve):
        out = pb.HopMessage(type=_HopType.RESERVE)
    elif isinstance(msg, HopConnect):
        out = pb.HopMessage(type=_HopType.CONNECT, peer=_peer_pb(msg.peer))
    elif isinstance(msg, HopStatus):
        rsvp = None
        if msg.reservation is not None:
            r = msg.reservation
            rsvp = pb.Reservation(
                expire=r.expire, addrs=[a.to_bytes() for a in r.addrs], voucher=r.voucher
            )
        out = pb.HopMessage(
            type=_HopType.STATUS,
            status=int(msg.status),
            reservation=rsvp,
            limit=_limit_pb(msg.limit),
        )
    else:
        raise LocalProtocolError(f"not a hop message: {msg!r}")
    return _checked_size(out.encode())


def encode_stop(msg: StopMessage) -> bytes:
    """Encode a stop message (without its length prefix)."""
    if isinstance(msg, StopConnect):
        out = pb.StopMessage(
            type=_StopType.CONNECT, peer=_peer_pb(msg.peer), limit=_limit_pb(msg.limit)
        )
    elif isinstance(msg, StopStatus):
        out = pb.StopMessage(type=_StopType.STATUS, status=int(msg.status))
    else:
        raise LocalProtocolError(f"not a stop message: {msg!r}")
    return _checked_size(out.encode())


def _checked_size(data: bytes) -> bytes:
    if len(data) > MAX_MESSAGE_SIZE:
        raise LocalProtocolError(f"relay message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    return data


# ---------------------------------------------------------------------- decoding
def decode_hop(data: bytes | bytearray | memoryview) -> HopMessage:
    """Decode and validate a hop message; raise :class:`RelayProtocolError` if it is bad."""
    msg = _parse(pb.HopMessage, data, "hop")
    if msg.type == _HopType.RESERVE:
        return HopReserve()
    if msg.type == _HopType.CONNECT:
        if msg.peer is None:
            raise RelayProtocolError("CONNECT names no peer")
        return HopConnect(_peer(msg.peer))
    if msg.type == _HopType.STATUS:
        rsvp = None
        if msg.reservation is not None:
            r = msg.reservation
            if r.expire is None:
                raise RelayProtocolError("reservation without an expiration time")
            rsvp = ReservationInfo(expire=r.expire, addrs=_addrs(r.addrs), voucher=r.voucher)
        return HopStatus(_status(msg.status), rsvp, _limit(msg.limit))
    raise RelayProtocolError(f"unknown hop message type {msg.type}")


def decode_stop(data: bytes | bytearray | memoryview) -> StopMessage:
    """Decode and validate a stop message; raise :class:`RelayProtocolError` if it is bad."""
    msg = _parse(pb.StopMessage, data, "stop")
    if msg.type == _StopType.CONNECT:
        if msg.peer is None:
            raise RelayProtocolError("stop CONNECT names no peer")
        return StopConnect(_peer(msg.peer), _limit(msg.limit))
    if msg.type == _StopType.STATUS:
        return StopStatus(_status(msg.status))
    raise RelayProtocolError(f"unknown stop message type {msg.type}")


def _parse(cls: type[_M], data: bytes | bytearray | memoryview, what: str) -> _M:
    if len(data) > MAX_MESSAGE_SIZE:
        raise RelayProtocolError(f"{what} message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    try:
        return cls.decode(data)
    except DecodeError as exc:
        raise RelayProtocolError(f"malformed {what} message: {exc.message}") from None


def _peer(peer: pb.Peer) -> PeerInfo:
    try:
        peer_id = PeerId.from_bytes(peer.id)
    except RemoteProtocolError as exc:
        raise RelayProtocolError(f"invalid peer id: {exc.message}") from None
    return PeerInfo(peer_id, _addrs(peer.addrs))


def _addrs(raw: Sequence[bytes]) -> tuple[Multiaddr, ...]:
    """Parse addresses, skipping malformed ones (as go and js do); too many is an error."""
    if len(raw) > MAX_ADDRS:
        raise RelayProtocolError(f"more than {MAX_ADDRS} addresses")
    out: list[Multiaddr] = []
    for item in raw:
        try:
            addr = Multiaddr.from_bytes(item)
        except (MultiaddrError, RemoteProtocolError):
            continue
        if addr not in out:
            out.append(addr)
    return tuple(out)


def _status(value: int | None) -> Status:
    if value is None:
        raise RelayProtocolError("STATUS message without a status")
    try:
        return Status(value)
    except ValueError:
        raise RelayProtocolError(f"unknown status code {value}") from None


def _limit(limit: pb.Limit | None) -> Limit | None:
    if limit is None:
        return None
    return Limit(duration=limit.duration or 0, data=limit.data or 0)

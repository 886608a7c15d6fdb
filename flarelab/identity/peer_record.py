"""Peer records (libp2p RFC 0003): a peer's addresses, signed by the peer in an envelope.

::

    message PeerRecord {
      message AddressInfo { bytes multiaddr = 1; }
      bytes peer_id = 1;  uint64 seq = 2;  repeated AddressInfo addresses = 3;
    }

Domain and payload type: RFC 0003 names the domain ``libp2p-routing-state`` and the payload
type ``/libp2p/routing-state-record``, but go-libp2p and js-libp2p sign records with the domain
``libp2p-peer-record`` and the multicodec ``0x0301`` (``\\x03\\x01``), and rust-libp2p does so
in its ``*_interop`` methods. That pair is what :meth:`PeerRecord.seal` writes. Opening
accepts both pairs, since rust-libp2p's identify and rendezvous still send the RFC pair; the
domain is chosen by the payload type and the signature must verify for it.

A newer record of a peer has a higher ``seq``; :func:`new_seq` makes them as go does (unix
time in nanoseconds, never repeating or going back within the process). A ``seq`` from
another peer is only a number to compare, never a time.

Addresses that do not parse (a protocol this build does not know) are skipped, as go-libp2p
skips them, so a record with one new kind of address still yields the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from ..errors import LocalProtocolError
from ..multiaddr import Multiaddr, MultiaddrError
from ..pb.peer_record import AddressInfo
from ..pb.peer_record import PeerRecord as PeerRecordMsg
from ..protobuf import DecodeError
from .envelope import MAX_ENVELOPE_SIZE, Envelope, decode_unverified
from .errors import InvalidPeerIdError, InvalidPeerRecordError
from .keys import PrivateKey
from .peer_id import PeerId

__all__ = [
    "LEGACY_PEER_RECORD_DOMAIN",
    "LEGACY_PEER_RECORD_PAYLOAD_TYPE",
    "MAX_PEER_RECORD_ADDRS",
    "MAX_PEER_RECORD_SIZE",
    "PEER_RECORD_DOMAIN",
    "PEER_RECORD_PAYLOAD_TYPE",
    "PeerRecord",
    "new_seq",
]

#: The envelope domain go-libp2p and js-libp2p sign peer records with.
PEER_RECORD_DOMAIN: Final = "libp2p-peer-record"
#: The ``libp2p-peer-record`` multicodec (0x0301) as a uvarint.
PEER_RECORD_PAYLOAD_TYPE: Final = b"\x03\x01"
#: The pair RFC 0003 names, which rust-libp2p's non-interop methods use.
LEGACY_PEER_RECORD_DOMAIN: Final = "libp2p-routing-state"
LEGACY_PEER_RECORD_PAYLOAD_TYPE: Final = b"/libp2p/routing-state-record"
#: Most addresses a record may carry (go-libp2p's identify keeps at most 100 per peer).
MAX_PEER_RECORD_ADDRS: Final = 128
#: Largest encoded record accepted by :meth:`PeerRecord.from_bytes`.
MAX_PEER_RECORD_SIZE: Final = MAX_ENVELOPE_SIZE
_MAX_SEQ: Final = (1 << 64) - 1

_DOMAINS: Final = {
    PEER_RECORD_PAYLOAD_TYPE: PEER_RECORD_DOMAIN,
    LEGACY_PEER_RECORD_PAYLOAD_TYPE: LEGACY_PEER_RECORD_DOMAIN,
}

_seq_lock = threading.Lock()
_last_seq = 0


def new_seq() -> int:
    """Return a fresh sequence number: unix nanoseconds, strictly increasing in the process."""
    global _last_seq
    now = time.time_ns()
    with _seq_lock:
        if now <= _last_seq:
            now = _last_seq + 1
        _last_seq = now
    return now


def _as_multiaddr(addr: Multiaddr | str | bytes) -> Multiaddr:
    if isinstance(addr, Multiaddr):
        return addr
    if isinstance(addr, str | bytes):
        return Multiaddr(addr)
    raise LocalProtocolError(f"a peer record address must be a Multiaddr, not {addr!r}")


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A peer's routing record: its id, a sequence number and its addresses.

    ``PeerRecord(peer_id, addrs=[...])`` takes a fresh :func:`new_seq`; ``addrs`` may be
    given as Multiaddrs or their text.
    """

    peer_id: PeerId
    seq: int = field(default_factory=new_seq)
    addrs: tuple[Multiaddr, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.peer_id, PeerId):
            raise LocalProtocolError("PeerRecord.peer_id must be a PeerId")
        if not isinstance(self.seq, int) or isinstance(self.seq, bool):
            raise LocalProtocolError("PeerRecord.seq must be an int")
        if not 0 <= self.seq <= _MAX_SEQ:
            raise LocalProtocolError(f"PeerRecord.seq {self.seq} is not a uint64")
        addrs: Iterable[Multiaddr | str | bytes] = self.addrs
        if isinstance(addrs, str | bytes | Multiaddr):
            raise LocalProtocolError("PeerRecord.addrs must be a sequence of addresses")
        converted = tuple(_as_multiaddr(a) for a in addrs)
        if len(converted) > MAX_PEER_RECORD_ADDRS:
            raise LocalProtocolError(
                f"a peer record holds at most {MAX_PEER_RECORD_ADDRS} addresses"
            )
        object.__setattr__(self, "addrs", converted)

    # -------------------------------------------------------------- payload codec

    def to_bytes(self) -> bytes:
        """Encode the record (the envelope payload; deterministic protobuf)."""
        msg = PeerRecordMsg(
            peer_id=self.peer_id.to_bytes(),
            seq=self.seq,
            addresses=[AddressInfo(multiaddr=a.to_bytes()) for a in self.addrs],
        )
        return msg.encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PeerRecord:
        """Decode a record (unsigned: :meth:`open` or :meth:`from_envelope` check signatures).

        Raises :class:`InvalidPeerRecordError`.
        """
        data = bytes(data)
        if len(data) > MAX_PEER_RECORD_SIZE:
            raise InvalidPeerRecordError(
                f"peer record of {len(data)} bytes exceeds {MAX_PEER_RECORD_SIZE} bytes"
            )
        try:
            msg = PeerRecordMsg.decode(data)
        except DecodeError as exc:
            raise InvalidPeerRecordError(f"malformed peer record: {exc.message}") from None
        try:
            peer_id = PeerId.from_bytes(msg.peer_id)
        except InvalidPeerIdError as exc:
            raise InvalidPeerRecordError(
                f"peer record has an invalid peer id: {exc.message}"
            ) from None
        if len(msg.addresses) > MAX_PEER_RECORD_ADDRS:
            raise InvalidPeerRecordError(
                f"peer record has {len(msg.addresses)} addresses (at most {MAX_PEER_RECORD_ADDRS})"
            )
        addrs = []
        for info in msg.addresses:
            try:
                addrs.append(Multiaddr.from_bytes(info.multiaddr))
            except MultiaddrError:
                continue  # unknown or malformed: skip it, as go-libp2p does
        return cls(peer_id, msg.seq, tuple(addrs))

    # -------------------------------------------------------------- signed form

    def seal(self, private_key: PrivateKey) -> Envelope:
        """Sign the record with the key of its peer id (domain ``libp2p-peer-record``)."""
        if not self.peer_id.matches(private_key.public_key):
            raise LocalProtocolError(
                f"cannot sign a record of {self.peer_id} with the key of "
                f"{PeerId.from_public_key(private_key.public_key)}"
            )
        return Envelope.seal(
            private_key, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, self.to_bytes()
        )

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> PeerRecord:
        """Check a peer record envelope (type, signature, signer) and decode its record.

        The signature is verified here, for the domain the payload type calls for, so an
        envelope from anywhere is safe to pass. Raises :class:`InvalidPeerRecordError`.
        """
        domain = _DOMAINS.get(envelope.payload_type)
        if domain is None:
            raise InvalidPeerRecordError(
                f"envelope payload type {envelope.payload_type.hex()} is not a peer record"
            )
        if not envelope.verify(domain):
            raise InvalidPeerRecordError(f"peer record signature does not verify ({domain})")
        record = cls.from_bytes(envelope.payload)
        if not record.peer_id.matches(envelope.public_key):
            raise InvalidPeerRecordError(
                f"peer record of {record.peer_id} is signed by {envelope.peer_id}",
                peer=envelope.peer_id,
            )
        return record

    @classmethod
    def open(cls, data: bytes, *, max_size: int = MAX_ENVELOPE_SIZE) -> PeerRecord:
        """Parse a signed peer record envelope, verify it and decode the record.

        Raises :class:`InvalidEnvelopeError` for a malformed envelope and
        :class:`InvalidPeerRecordError` (a subclass) for a bad signature or record.
        """
        return cls.open_with_envelope(data, max_size=max_size)[0]

    @classmethod
    def open_with_envelope(
        cls, data: bytes, *, max_size: int = MAX_ENVELOPE_SIZE
    ) -> tuple[PeerRecord, Envelope]:
        """Like :meth:`open`, and also return the envelope (to store and pass on, as the RFC
        asks)."""
        envelope = decode_unverified(data, max_size=max_size)
        return cls.from_envelope(envelope), envelope

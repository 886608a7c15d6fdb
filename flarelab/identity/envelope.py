"""Signed envelopes (libp2p RFC 0002): a payload, its type, and a domain-separated signature.

The signature covers ``uvarint(len(domain)) || domain || uvarint(len(payload_type)) ||
payload_type || uvarint(len(payload)) || payload``; the domain string is not sent, so an
envelope signed for one purpose (say, ``libp2p-peer-record``) never verifies for another.

Wire format (protobuf)::

    message Envelope {
      PublicKey public_key = 1;  bytes payload_type = 2;  bytes payload = 3;  bytes signature = 5;
    }
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..errors import LocalProtocolError
from ..pb.envelope import Envelope as EnvelopeMsg
from ..protobuf import DecodeError
from ..wire import encode_uvarint
from .errors import InvalidEnvelopeError, InvalidKeyError
from .keys import PrivateKey, PublicKey, public_key_from_protobuf
from .peer_id import PeerId

__all__ = ["MAX_ENVELOPE_SIZE", "Envelope"]

#: Default limit on an encoded envelope; callers with bigger payloads pass ``max_size``.
MAX_ENVELOPE_SIZE: Final = 64 * 1024


def _domain_bytes(domain: str) -> bytes:
    if not isinstance(domain, str) or not domain:
        raise LocalProtocolError("an envelope domain must be a non-empty string")
    try:
        return domain.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError("an envelope domain must be valid UTF-8") from None


def _signed_data(domain: bytes, payload_type: bytes, payload: bytes) -> bytes:
    """Return the bytes an envelope's signature covers (RFC 0002)."""
    return b"".join(encode_uvarint(len(part)) + part for part in (domain, payload_type, payload))


@dataclass(frozen=True, slots=True, repr=False)
class Envelope:
    """A signed envelope.

    Envelopes from :meth:`seal` and :meth:`open` are verified; one built by hand is not
    until :meth:`verify` says so.
    """

    public_key: PublicKey
    payload_type: bytes
    payload: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, PublicKey):
            raise LocalProtocolError("Envelope.public_key must be a PublicKey")
        for name in ("payload_type", "payload", "signature"):
            if not isinstance(getattr(self, name), bytes):
                raise LocalProtocolError(f"Envelope.{name} must be bytes")

    @classmethod
    def seal(
        cls, private_key: PrivateKey, domain: str, payload_type: bytes, payload: bytes
    ) -> Envelope:
        """Sign ``payload`` of ``payload_type`` for ``domain`` with ``private_key``."""
        payload_type, payload = bytes(payload_type), bytes(payload)
        signature = private_key.sign(_signed_data(_domain_bytes(domain), payload_type, payload))
        return cls(private_key.public_key, payload_type, payload, signature)

    @classmethod
    def open(cls, data: bytes, domain: str, *, max_size: int = MAX_ENVELOPE_SIZE) -> Envelope:
        """Parse an envelope and verify its signature for ``domain``.

        Raises :class:`InvalidEnvelopeError` if it is malformed, over ``max_size`` bytes,
        carries an invalid key, or its signature does not verify for ``domain``.
        """
        domain_bytes = _domain_bytes(domain)
        envelope = decode_unverified(data, max_size=max_size)
        if not envelope._verify(domain_bytes):
            raise InvalidEnvelopeError(f"envelope signature does not verify for domain {domain!r}")
        return envelope

    def verify(self, domain: str) -> bool:
        """Return True if the signature is valid for ``domain``."""
        return self._verify(_domain_bytes(domain))

    def _verify(self, domain: bytes) -> bool:
        data = _signed_data(domain, self.payload_type, self.payload)
        return self.public_key.verify(data, self.signature)

    def to_bytes(self) -> bytes:
        """Encode the envelope (deterministic protobuf)."""
        msg = EnvelopeMsg(
            public_key=self.public_key.to_protobuf(),
            payload_type=self.payload_type,
            payload=self.payload,
            signature=self.signature,
        )
        return msg.encode()

    @property
    def peer_id(self) -> PeerId:
        """The peer id of the signer."""
        return PeerId.from_public_key(self.public_key)

    def __repr__(self) -> str:
        return (
            f"Envelope(peer={self.peer_id.short()}, payload_type={self.payload_type.hex()},"
            f" payload={len(self.payload)} bytes)"
        )


def decode_unverified(data: bytes, *, max_size: int = MAX_ENVELOPE_SIZE) -> Envelope:
    """Parse an envelope *without* checking its signature (for callers that pick the domain
    from the payload type, then call :meth:`Envelope.verify`)."""
    data = bytes(data)
    if len(data) > max_size:
        raise InvalidEnvelopeError(f"envelope of {len(data)} bytes exceeds {max_size} bytes")
    try:
        msg = EnvelopeMsg.decode(data)
    except DecodeError as exc:
        raise InvalidEnvelopeError(f"malformed envelope: {exc.message}") from None
    if not msg.public_key:
        raise InvalidEnvelopeError("envelope has no public key")
    try:
        public_key = public_key_from_protobuf(msg.public_key)
    except InvalidKeyError as exc:
        raise InvalidEnvelopeError(f"envelope carries an invalid key: {exc.message}") from None
    return Envelope(public_key, msg.payload_type, msg.payload, msg.signature)

"""The libp2p Noise handshake payload: encode, decode, sign, verify, pick a muxer.

The responder's payload rides (encrypted) in handshake message 2, the initiator's in
message 3 (specs: noise/README.md)::

    message NoiseExtensions {
      repeated bytes webtransport_certhashes = 1;
      repeated string stream_muxers = 2;
    }
    message NoiseHandshakePayload {
      optional bytes identity_key = 1;     // a libp2p PublicKey protobuf
      optional bytes identity_sig = 2;     // sign("noise-libp2p-static-key:" + static key)
      optional NoiseExtensions extensions = 4;
    }

This is the only module of the Noise package that touches protobuf objects: it validates
what the peer sent and converts it to :class:`HandshakePayload`. Every problem with the
peer's payload raises :class:`~flarelab.errors.HandshakeError` (peer unknown here; the
caller adds it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ...errors import HandshakeError, LocalProtocolError, RemoteProtocolError
from ...identity import PrivateKey, PublicKey, public_key_from_protobuf
from ...pb.noise import NoiseExtensions, NoiseHandshakePayload
from ...protobuf import DecodeError

__all__ = [
    "MAX_CERTHASHES",
    "MAX_CERTHASH_LENGTH",
    "MAX_MUXERS",
    "MAX_MUXER_ID_LENGTH",
    "STATIC_KEY_SIGNATURE_PREFIX",
    "HandshakePayload",
    "decode_payload",
    "encode_payload",
    "select_muxer",
    "sign_payload",
    "validate_muxers",
    "verify_payload",
]

#: What the identity key signs, followed by the 32-byte static X25519 public key.
STATIC_KEY_SIGNATURE_PREFIX: Final = b"noise-libp2p-static-key:"
#: go-libp2p ignores muxer lists longer than this; we refuse them.
MAX_MUXERS: Final = 100
MAX_MUXER_ID_LENGTH: Final = 1024
MAX_CERTHASHES: Final = 100
MAX_CERTHASH_LENGTH: Final = 1024

_NOISE = "/noise"


@dataclass(frozen=True, slots=True)
class HandshakePayload:
    """A decoded ``NoiseHandshakePayload`` (its signature not yet verified)."""

    identity_key: bytes
    identity_sig: bytes
    stream_muxers: tuple[str, ...] = ()
    webtransport_certhashes: tuple[bytes, ...] = ()


def validate_muxers(muxers: Sequence[str]) -> tuple[str, ...]:
    """Return our muxer list as a tuple; :class:`LocalProtocolError` if it is unusable."""
    if isinstance(muxers, str):
        raise LocalProtocolError("muxers must be a sequence of protocol ids, not one string")
    out = tuple(muxers)
    if len(out) > MAX_MUXERS:
        raise LocalProtocolError(f"at most {MAX_MUXERS} muxers may be offered")
    for muxer in out:
        if not isinstance(muxer, str) or not muxer or len(muxer) > MAX_MUXER_ID_LENGTH:
            raise LocalProtocolError(f"invalid muxer protocol id: {muxer!r}")
    return out


def encode_payload(payload: HandshakePayload) -> bytes:
    """Serialize ``payload``; extensions are present only if there is something in them."""
    msg = NoiseHandshakePayload(
        identity_key=payload.identity_key, identity_sig=payload.identity_sig
    )
    if payload.stream_muxers or payload.webtransport_certhashes:
        msg.extensions = NoiseExtensions(
            webtransport_certhashes=payload.webtransport_certhashes,
            stream_muxers=payload.stream_muxers,
        )
    return msg.encode()


def decode_payload(data: bytes) -> HandshakePayload:
    """Parse and bound-check the peer's payload; :class:`HandshakeError` if malformed."""
    try:
        msg = NoiseHandshakePayload.decode(data)
    except DecodeError as exc:
        raise HandshakeError(
            f"malformed handshake payload: {exc.message}", protocol=_NOISE
        ) from None
    if not msg.identity_key:
        raise HandshakeError("handshake payload has no identity key", protocol=_NOISE)
    if not msg.identity_sig:
        raise HandshakeError("handshake payload has no identity signature", protocol=_NOISE)
    muxers: tuple[str, ...] = ()
    certhashes: tuple[bytes, ...] = ()
    if msg.extensions is not None:
        ext = msg.extensions
        if len(ext.stream_muxers) > MAX_MUXERS:
            raise HandshakeError(
                f"peer offered {len(ext.stream_muxers)} muxers, more than {MAX_MUXERS}",
                protocol=_NOISE,
            )
        if len(ext.webtransport_certhashes) > MAX_CERTHASHES:
            raise HandshakeError(
                f"peer sent {len(ext.webtransport_certhashes)} certificate hashes, "
                f"more than {MAX_CERTHASHES}",
                protocol=_NOISE,
            )
        muxers = tuple(ext.stream_muxers)
        certhashes = tuple(ext.webtransport_certhashes)
        for muxer in muxers:
            # upb hands back bytes for a proto2 string that is not valid UTF-8
            if not isinstance(muxer, str):
                raise HandshakeError("muxer id in payload is not UTF-8", protocol=_NOISE)
            if not muxer or len(muxer) > MAX_MUXER_ID_LENGTH:
                raise HandshakeError(
                    f"invalid muxer id in payload: {muxer[:64]!r}", protocol=_NOISE
                )
        for certhash in certhashes:
            if not certhash or len(certhash) > MAX_CERTHASH_LENGTH:
                raise HandshakeError("invalid certificate hash in payload", protocol=_NOISE)
    return HandshakePayload(
        identity_key=msg.identity_key,
        identity_sig=msg.identity_sig,
        stream_muxers=muxers,
        webtransport_certhashes=certhashes,
    )


def sign_payload(
    local_key: PrivateKey, static_public: bytes, muxers: Sequence[str] = ()
) -> HandshakePayload:
    """Make our payload: identity key, its signature of our static key, our muxers."""
    return HandshakePayload(
        identity_key=local_key.public_key.to_protobuf(),
        identity_sig=local_key.sign(STATIC_KEY_SIGNATURE_PREFIX + static_public),
        stream_muxers=validate_muxers(muxers),
    )


def verify_payload(payload: HandshakePayload, remote_static: bytes) -> PublicKey:
    """Return the peer's identity key once its signature over ``remote_static`` checks out."""
    try:
        public_key = public_key_from_protobuf(payload.identity_key)
    except RemoteProtocolError as exc:
        raise HandshakeError(f"invalid identity key in payload: {exc}", protocol=_NOISE) from exc
    if not public_key.verify(STATIC_KEY_SIGNATURE_PREFIX + remote_static, payload.identity_sig):
        raise HandshakeError(
            "identity signature over the Noise static key does not verify", protocol=_NOISE
        )
    return public_key


def select_muxer(initiator_muxers: Sequence[str], responder_muxers: Sequence[str]) -> str | None:
    """Pick the first of the initiator's muxers that the responder also offered.

    This is the rule of connections/inlined-muxer-negotiation.md (and of go-libp2p since
    it fixed the order). ``None`` if either list is empty or they share nothing: then the
    muxer is negotiated with multistream-select after the handshake, as go-libp2p does.
    """
    offered = set(responder_muxers)
    for muxer in initiator_muxers:
        if muxer in offered:
            return muxer
    return None

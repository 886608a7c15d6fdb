"""Peer ids: the multihash of a peer's public key, and its text forms.

A peer id is the *identity* multihash of the key protobuf when that is at most 42 bytes
(Ed25519 and secp256k1 keys, so the key can be read back out of the id), else its sha2-256
multihash (RSA and ECDSA keys). Text forms (specs: peer-ids/peer-ids.md):

* legacy: the bare multihash in base58btc, ``12D3KooW…`` (Ed25519), ``16Uiu2…``
  (secp256k1) or ``Qm…`` (sha2-256); this is what ``str()`` gives;
* CIDv1 with the ``libp2p-key`` multicodec (0x72) in any multibase, base32 ``bafz…`` by
  default (:meth:`PeerId.to_cid`), base36 ``k51…`` or base58 ``z…``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from ..encoding import b32_encode, b58_decode, b58_encode, multibase_decode
from ..errors import LocalProtocolError, RemoteProtocolError
from ..wire import decode_uvarint, encode_uvarint
from .errors import InvalidKeyError, InvalidPeerIdError
from .keys import PublicKey, public_key_from_protobuf

__all__ = ["MAX_INLINE_KEY_LENGTH", "PeerId"]

#: Key protobufs up to this size are inlined into the peer id (identity multihash).
MAX_INLINE_KEY_LENGTH: Final = 42
#: Multicodec of CIDs that name peer ids.
LIBP2P_KEY_CODEC: Final = 0x72
_IDENTITY: Final = 0x00
_SHA2_256: Final = 0x12
_SHA2_256_LENGTH: Final = 32
#: Longest text form accepted (a base32 CID of an inlined key is 75 characters).
_MAX_TEXT_LENGTH: Final = 128


class PeerId:
    """A peer id: immutable, hashable, ordered by its bytes.

    Make one with :meth:`from_public_key`, :meth:`from_bytes` or :meth:`from_string`.
    """

    __slots__ = ("_bytes", "_key", "_text")

    _bytes: bytes
    _key: PublicKey | None
    _text: str | None

    def __init__(self, multihash: bytes) -> None:
        """Validate ``multihash`` (same as :meth:`from_bytes`)."""
        multihash = bytes(multihash)
        key = _validate(multihash)
        object.__setattr__(self, "_bytes", multihash)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_text", None)

    @classmethod
    def _trusted(cls, multihash: bytes, key: PublicKey | None) -> PeerId:
        self = object.__new__(cls)
        object.__setattr__(self, "_bytes", multihash)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_text", None)
        return self

    # -------------------------------------------------------------- constructors

    @classmethod
    def from_public_key(cls, public_key: PublicKey) -> PeerId:
        """Derive the peer id of ``public_key``."""
        encoded = public_key.to_protobuf()
        if len(encoded) <= MAX_INLINE_KEY_LENGTH:
            return cls._trusted(
                bytes((_IDENTITY,)) + encode_uvarint(len(encoded)) + encoded, public_key
            )
        digest = hashlib.sha256(encoded).digest()
        return cls._trusted(bytes((_SHA2_256, _SHA2_256_LENGTH)) + digest, public_key)

    @classmethod
    def from_bytes(cls, multihash: bytes) -> PeerId:
        """Parse a binary peer id: an identity multihash of a valid key, or sha2-256."""
        return cls(multihash)

    @classmethod
    def from_string(cls, text: str) -> PeerId:
        """Parse a legacy base58btc peer id (``12D3Koo…``, ``Qm…``) or a libp2p-key CID."""
        if not isinstance(text, str):
            raise LocalProtocolError(f"peer id text must be a str, not {type(text).__name__}")
        if not text:
            raise InvalidPeerIdError("empty peer id")
        if len(text) > _MAX_TEXT_LENGTH:
            raise InvalidPeerIdError(f"peer id text longer than {_MAX_TEXT_LENGTH} characters")
        if text.startswith(("1", "Qm")):
            try:
                multihash = b58_decode(text)
            except ValueError as exc:
                raise InvalidPeerIdError(f"invalid base58btc peer id: {exc}") from None
            return cls(multihash)
        try:
            cid = multibase_decode(text)
        except ValueError as exc:
            raise InvalidPeerIdError(f"peer id is neither base58btc nor a CID: {exc}") from None
        return cls(_multihash_from_cid(cid))

    # -------------------------------------------------------------- encodings

    def to_bytes(self) -> bytes:
        """Return the binary multihash."""
        return self._bytes

    def __bytes__(self) -> bytes:
        return self._bytes

    def to_base58(self) -> str:
        """Return the legacy text form, the bare multihash in base58btc."""
        text = self._text
        if text is None:
            text = b58_encode(self._bytes)
            object.__setattr__(self, "_text", text)
        return text

    def to_cid(self) -> str:
        """Return the CIDv1 text form (libp2p-key codec, multibase base32: ``bafz…``)."""
        return "b" + b32_encode(bytes((1, LIBP2P_KEY_CODEC)) + self._bytes)

    def short(self) -> str:
        """Return an abbreviation for people and plots: ``12D3KooW…a8f2Xz``."""
        text = self.to_base58()
        return f"{text[:8]}…{text[-6:]}"

    # -------------------------------------------------------------- keys

    def extract_public_key(self) -> PublicKey | None:
        """Return the key inlined in this id (Ed25519, secp256k1), or None if it is hashed."""
        return self._key if self._bytes[0] == _IDENTITY else None

    def matches(self, public_key: PublicKey) -> bool:
        """Return True if this is the peer id of ``public_key``."""
        return PeerId.from_public_key(public_key)._bytes == self._bytes

    # -------------------------------------------------------------- value semantics

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("PeerId is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("PeerId is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (PeerId.from_bytes, (self._bytes,))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PeerId):
            return NotImplemented
        return self._bytes == other._bytes

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, PeerId):
            return NotImplemented
        return self._bytes < other._bytes

    def __le__(self, other: object) -> bool:
        if not isinstance(other, PeerId):
            return NotImplemented
        return self._bytes <= other._bytes

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, PeerId):
            return NotImplemented
        return self._bytes > other._bytes

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, PeerId):
            return NotImplemented
        return self._bytes >= other._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __str__(self) -> str:
        return self.to_base58()

    def __repr__(self) -> str:
        return f"PeerId({self.to_base58()!r})"


def _validate(multihash: bytes) -> PublicKey | None:
    """Check a binary peer id; return the inlined key, if any."""
    if len(multihash) > 2 + MAX_INLINE_KEY_LENGTH:
        raise InvalidPeerIdError(f"peer id of {len(multihash)} bytes is too long")
    if not multihash:
        raise InvalidPeerIdError("empty peer id")
    code = multihash[0]
    if code == _SHA2_256:
        if len(multihash) != 2 + _SHA2_256_LENGTH or multihash[1] != _SHA2_256_LENGTH:
            raise InvalidPeerIdError("sha2-256 peer id must hold exactly 32 digest bytes")
        return None
    if code != _IDENTITY:
        raise InvalidPeerIdError(f"peer id uses multihash 0x{code:02x}, not identity or sha2-256")
    try:
        length, pos = decode_uvarint(multihash, 1)
    except RemoteProtocolError:  # truncated, overlong or not minimal
        raise InvalidPeerIdError("peer id has a malformed multihash length") from None
    if length != len(multihash) - pos:
        raise InvalidPeerIdError(
            f"identity peer id declares {length} bytes but holds {len(multihash) - pos}"
        )
    if length > MAX_INLINE_KEY_LENGTH:
        raise InvalidPeerIdError(f"identity peer id inlines {length} bytes (at most 42)")
    try:
        return public_key_from_protobuf(multihash[pos:])
    except InvalidKeyError as exc:
        raise InvalidPeerIdError(f"identity peer id holds an invalid key: {exc.message}") from None


def _multihash_from_cid(cid: bytes) -> bytes:
    """Return the multihash inside a binary CIDv1 with the libp2p-key codec."""
    try:
        version, pos = decode_uvarint(cid, 0)
        codec, pos = decode_uvarint(cid, pos)
    except RemoteProtocolError:  # truncated, overlong or not minimal
        raise InvalidPeerIdError("malformed CID") from None
    if version != 1:
        raise InvalidPeerIdError(f"CID version {version} is not 1")
    if codec != LIBP2P_KEY_CODEC:
        raise InvalidPeerIdError(f"CID codec 0x{codec:x} is not libp2p-key (0x72)")
    return cid[pos:]

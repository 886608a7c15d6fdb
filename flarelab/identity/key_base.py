"""The key protobuf framing and the base classes every libp2p key type implements."""

from __future__ import annotations

import abc
from enum import IntEnum
from typing import ClassVar

from ..errors import RemoteProtocolError
from ..wire import decode_uvarint, encode_uvarint
from .errors import InvalidKeyError

__all__ = [
    "MAX_PRIVATE_KEY_SIZE",
    "MAX_PUBLIC_KEY_SIZE",
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "decode_key_protobuf",
    "encode_key_protobuf",
]

#: Largest public key protobuf accepted (an RSA-8192 key encodes to about 1070 bytes).
MAX_PUBLIC_KEY_SIZE = 2048
#: Largest private key protobuf accepted (an RSA-8192 key encodes to about 4.7 KiB).
MAX_PRIVATE_KEY_SIZE = 8192


class KeyType(IntEnum):
    """The ``KeyType`` enum of the libp2p key protobuf."""

    RSA = 0
    ED25519 = 1
    SECP256K1 = 2
    ECDSA = 3


# ------------------------------------------------------------------ protobuf framing
#
# The spec demands one encoding of the two-field key message: Type (field 1, varint) then
# Data (field 2, bytes), minimal varints, nothing else. It is written and read here exactly,
# byte by byte, so the error says what is wrong; the tests check it against crypto_pb2.

_TYPE_TAG = 0x08  # field 1, wire type 0 (varint)
_DATA_TAG = 0x12  # field 2, wire type 2 (length-delimited)


def encode_key_protobuf(key_type: KeyType, data: bytes) -> bytes:
    """Encode ``{Type, Data}`` canonically."""
    return (
        bytes((_TYPE_TAG,))
        + encode_uvarint(int(key_type))
        + bytes((_DATA_TAG,))
        + encode_uvarint(len(data))
        + data
    )


def decode_key_protobuf(data: bytes, max_size: int, what: str) -> tuple[KeyType, bytes]:
    """Parse a canonical key protobuf; return its type and ``Data``."""
    data = bytes(data)
    if len(data) > max_size:
        raise InvalidKeyError(f"{what} protobuf of {len(data)} bytes exceeds {max_size} bytes")
    if data[:1] != bytes((_TYPE_TAG,)):
        raise InvalidKeyError(f"{what} protobuf does not start with its Type field")
    try:
        type_value, pos = decode_uvarint(data, 1)
        if data[pos : pos + 1] != bytes((_DATA_TAG,)):
            raise InvalidKeyError(f"{what} protobuf has no Data field right after Type")
        length, pos = decode_uvarint(data, pos + 1)
    except InvalidKeyError:
        raise
    except RemoteProtocolError as exc:  # truncated or non-minimal varint
        raise InvalidKeyError(f"malformed {what} protobuf: {exc.message}") from None
    if length != len(data) - pos:
        raise InvalidKeyError(
            f"{what} protobuf declares {length} bytes of Data but {len(data) - pos} follow"
        )
    try:
        key_type = KeyType(type_value)
    except ValueError:
        raise InvalidKeyError(f"unknown key type {type_value}") from None
    return key_type, data[pos:]


# ------------------------------------------------------------------ base classes


class PublicKey(abc.ABC):
    """A public key that verifies signatures; equal and hashed by its protobuf encoding.

    Make one with :func:`public_key_from_protobuf`, a subclass's ``from_raw`` or a private
    key's ``public_key``; the constructors are internal.
    """

    __slots__ = ("_protobuf", "_raw")
    key_type: ClassVar[KeyType]

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._protobuf = encode_key_protobuf(self.key_type, raw)

    @classmethod
    @abc.abstractmethod
    def from_raw(cls, raw: bytes) -> PublicKey:
        """Validate ``raw`` (the protobuf ``Data`` field) and make a key of this type."""

    @property
    def raw(self) -> bytes:
        """The key's encoding in the protobuf ``Data`` field."""
        return self._raw

    def to_protobuf(self) -> bytes:
        """Return the canonical ``PublicKey`` protobuf (what peer ids are derived from)."""
        return self._protobuf

    @abc.abstractmethod
    def verify(self, data: bytes, signature: bytes) -> bool:
        """Return True if ``signature`` is this key's signature of ``data`` (never raises)."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self._protobuf == other._protobuf

    def __hash__(self) -> int:
        return hash(self._protobuf)

    def __repr__(self) -> str:
        from .peer_id import PeerId  # peer_id imports this module

        return f"{type(self).__name__}(peer={PeerId.from_public_key(self).short()})"


class PrivateKey(abc.ABC):
    """A private key that signs; its ``public_key`` verifies what it signs.

    Equality compares the public halves, so no secret bytes are compared.
    """

    __slots__ = ("_public_key",)
    key_type: ClassVar[KeyType]

    def __init__(self, public_key: PublicKey) -> None:
        self._public_key = public_key

    @classmethod
    @abc.abstractmethod
    def from_raw(cls, raw: bytes) -> PrivateKey:
        """Validate ``raw`` (the protobuf ``Data`` field) and make a key of this type."""

    @classmethod
    @abc.abstractmethod
    def generate(cls) -> PrivateKey:
        """Make a new random key of this type."""

    @property
    def public_key(self) -> PublicKey:
        """The matching public key."""
        return self._public_key

    @property
    @abc.abstractmethod
    def raw(self) -> bytes:
        """The key's encoding in the protobuf ``Data`` field (secret!)."""

    def to_protobuf(self) -> bytes:
        """Return the ``PrivateKey`` protobuf, the format libp2p key files use."""
        return encode_key_protobuf(self.key_type, self.raw)

    @abc.abstractmethod
    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` by this key type's scheme."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivateKey):
            return NotImplemented
        return self._public_key == other._public_key

    def __hash__(self) -> int:
        return hash(self._public_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(public={self._public_key!r})"

"""libp2p keys: the four key types, their protobuf encodings, signing and verification.

Keys travel as a ``PublicKey { Type, Data }`` protobuf (specs: peer-ids/peer-ids.md). Each
type has its own ``Data`` encoding and signature scheme:

=========  ================================  =============================  ===================
type       public ``Data``                   private ``Data``               signature
=========  ================================  =============================  ===================
Ed25519    32-byte point                     seed || public (64 bytes)      Ed25519 (RFC 8032)
secp256k1  33-byte compressed point          32-byte scalar                 DER ECDSA, SHA-256
ECDSA      DER SubjectPublicKeyInfo          DER SEC1 ECPrivateKey          DER ECDSA, SHA-256
RSA        DER SubjectPublicKeyInfo (PKIX)   DER PKCS#1 RSAPrivateKey       PKCS#1 v1.5, SHA-256
=========  ================================  =============================  ===================

Parsing is strict because public keys are hashed into peer ids: the protobuf must be the
canonical encoding (Type then Data, minimal varints, nothing else) and ``Data`` must be the
canonical encoding of a valid key, so ``to_protobuf()`` of a parsed key is exactly the bytes
that were parsed. Sizes are capped before any parsing (:data:`MAX_PUBLIC_KEY_SIZE`,
:data:`MAX_PRIVATE_KEY_SIZE`) and RSA moduli must have 2048 to 8192 bits, as in go-libp2p.

ECDSA signatures made here (secp256k1 and NIST curves) are deterministic (RFC 6979) where the
OpenSSL build allows it and always low-S, since js-libp2p and rust-libp2p refuse high-S
secp256k1 signatures. Verification accepts either form, as go-libp2p does.

This module is the front door: it parses and generates keys of any type and reads and writes
key files. The framing and base classes live in :mod:`.key_base`, the key types in
:mod:`.ed25519`, :mod:`.ecdsa` and :mod:`.rsa`.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from typing import TYPE_CHECKING, Any

from .ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from .key_base import (
    MAX_PRIVATE_KEY_SIZE,
    MAX_PUBLIC_KEY_SIZE,
    KeyType,
    PrivateKey,
    PublicKey,
    decode_key_protobuf,
)

if TYPE_CHECKING:
    from .ecdsa import EcdsaPrivateKey, EcdsaPublicKey, Secp256k1PrivateKey, Secp256k1PublicKey
    from .rsa import MAX_RSA_BITS, MIN_RSA_BITS, RsaPrivateKey, RsaPublicKey

__all__ = [
    "MAX_PRIVATE_KEY_SIZE",
    "MAX_PUBLIC_KEY_SIZE",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "EcdsaPrivateKey",
    "EcdsaPublicKey",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "RsaPrivateKey",
    "RsaPublicKey",
    "Secp256k1PrivateKey",
    "Secp256k1PublicKey",
    "generate_private_key",
    "load_private_key",
    "private_key_from_protobuf",
    "public_key_from_protobuf",
    "save_private_key",
]


# ------------------------------------------------------------------ codecs and files

# Ed25519 is what almost every peer uses; the ECDSA and RSA modules (and the DER and curve
# machinery of `cryptography` behind them) load on first use, which keeps a running node's
# memory down.
_LAZY: dict[str, str] = {
    "EcdsaPrivateKey": "ecdsa",
    "EcdsaPublicKey": "ecdsa",
    "Secp256k1PrivateKey": "ecdsa",
    "Secp256k1PublicKey": "ecdsa",
    "RsaPrivateKey": "rsa",
    "RsaPublicKey": "rsa",
    "MAX_RSA_BITS": "rsa",
    "MIN_RSA_BITS": "rsa",
}
_CLASS_NAMES: dict[KeyType, tuple[str, str]] = {
    KeyType.RSA: ("RsaPublicKey", "RsaPrivateKey"),
    KeyType.SECP256K1: ("Secp256k1PublicKey", "Secp256k1PrivateKey"),
    KeyType.ECDSA: ("EcdsaPublicKey", "EcdsaPrivateKey"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __package__), name)


def _public_class(key_type: KeyType) -> type[PublicKey]:
    if key_type is KeyType.ED25519:
        return Ed25519PublicKey
    cls: type[PublicKey] = __getattr__(_CLASS_NAMES[key_type][0])
    return cls


def _private_class(key_type: KeyType) -> type[PrivateKey]:
    if key_type is KeyType.ED25519:
        return Ed25519PrivateKey
    cls: type[PrivateKey] = __getattr__(_CLASS_NAMES[key_type][1])
    return cls


def public_key_from_protobuf(data: bytes) -> PublicKey:
    """Parse a ``PublicKey`` protobuf; raise :class:`InvalidKeyError` for anything invalid."""
    key_type, raw = decode_key_protobuf(data, MAX_PUBLIC_KEY_SIZE, "public key")
    return _public_class(key_type).from_raw(raw)


def private_key_from_protobuf(data: bytes) -> PrivateKey:
    """Parse a ``PrivateKey`` protobuf; raise :class:`InvalidKeyError` for anything invalid."""
    key_type, raw = decode_key_protobuf(data, MAX_PRIVATE_KEY_SIZE, "private key")
    return _private_class(key_type).from_raw(raw)


def generate_private_key(key_type: KeyType = KeyType.ED25519) -> PrivateKey:
    """Make a new random key of ``key_type`` (Ed25519 unless asked otherwise)."""
    return _private_class(KeyType(key_type)).generate()


def save_private_key(key: PrivateKey, path: str | os.PathLike[str]) -> None:
    """Write ``key`` as a ``PrivateKey`` protobuf, readable by its owner only (mode 0600).

    The file is replaced atomically, so a crash never leaves half a key behind.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".key-", dir=directory)  # created with mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key.to_protobuf())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """Read a key file written by :func:`save_private_key` (or by go/js/rust-libp2p)."""
    with open(path, "rb") as f:
        data = f.read(MAX_PRIVATE_KEY_SIZE + 1)
    return private_key_from_protobuf(data)

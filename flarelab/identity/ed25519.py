"""Ed25519 keys: 32-byte public keys, ``seed || public`` private keys, RFC 8032 signatures."""

from __future__ import annotations

import functools

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import LocalProtocolError
from .errors import InvalidKeyError
from .key_base import KeyType, PrivateKey, PublicKey

__all__ = ["Ed25519PrivateKey", "Ed25519PublicKey"]

# ------------------------------------------------------------------ Ed25519

_ED_P = 2**255 - 19
_ED_D = (-121665 * pow(121666, -1, _ED_P)) % _ED_P


def _jacobi(a: int, n: int) -> int:
    """Return the Jacobi symbol (a/n) for odd n > 0 (binary algorithm, no big exponentiation)."""
    a %= n
    result = 1
    while a:
        zeros = (a & -a).bit_length() - 1
        a >>= zeros
        if zeros & 1 and n & 7 in (3, 5):
            result = -result
        if a & 3 == 3 and n & 3 == 3:
            result = -result
        a, n = n % a, a
    return result if n == 1 else 0


def _is_ed25519_point(raw: bytes) -> bool:
    """Return True if ``raw`` is a canonical encoding of a point on edwards25519 (RFC 8032).

    The point exists if x^2 = (y^2 - 1) / (d y^2 + 1) has a root, that is if u/v, or
    equally u*v, is a square mod p; the denominator is never 0 since -1/d is not a square.
    """
    y = int.from_bytes(raw, "little")
    x_sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _ED_P:
        return False
    yy = y * y % _ED_P
    u = (yy - 1) % _ED_P
    if u == 0:  # x = 0, whose encoding must not carry a sign
        return x_sign == 0
    return _jacobi(u * (_ED_D * yy + 1), _ED_P) == 1


class Ed25519PublicKey(PublicKey):
    """An Ed25519 public key: 32 bytes, signatures per RFC 8032."""

    __slots__ = ("_key",)
    key_type = KeyType.ED25519

    def __init__(self, key: ed25519.Ed25519PublicKey, raw: bytes) -> None:
        super().__init__(raw)
        self._key = key

    @classmethod
    def from_raw(cls, raw: bytes) -> Ed25519PublicKey:
        """Validate a 32-byte Ed25519 public key (valid keys are cached: a connection
        parses its peer's key several times, and the curve check is pure Python)."""
        raw = bytes(raw)
        if cls is Ed25519PublicKey:
            return _parse_public(raw)
        return cls._parse(raw)

    @classmethod
    def _parse(cls, raw: bytes) -> Ed25519PublicKey:
        if len(raw) != 32:
            raise InvalidKeyError(f"Ed25519 public key must be 32 bytes, not {len(raw)}")
        if not _is_ed25519_point(raw):
            raise InvalidKeyError("Ed25519 public key is not a point on the curve")
        return cls(ed25519.Ed25519PublicKey.from_public_bytes(raw), raw)

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Return True if ``signature`` is this key's Ed25519 signature of ``data``."""
        if len(signature) != 64:
            return False
        try:
            self._key.verify(bytes(signature), bytes(data))
        except InvalidSignature:
            return False
        return True


@functools.lru_cache(maxsize=1024)
def _parse_public(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey._parse(raw)


class Ed25519PrivateKey(PrivateKey):
    """An Ed25519 private key, stored as ``seed || public`` (64 bytes)."""

    __slots__ = ("_key", "_seed")
    key_type = KeyType.ED25519

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        self._seed = key.private_bytes_raw()
        pub = key.public_key()
        super().__init__(Ed25519PublicKey(pub, pub.public_bytes_raw()))

    @classmethod
    def generate(cls) -> Ed25519PrivateKey:
        """Make a new random Ed25519 key."""
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519PrivateKey:
        """Derive the key from a 32-byte seed (deterministic: same seed, same peer id)."""
        if len(seed) != 32:
            raise LocalProtocolError(f"Ed25519 seed must be 32 bytes, not {len(seed)}")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    @classmethod
    def from_raw(cls, raw: bytes) -> Ed25519PrivateKey:
        """Parse ``seed || public`` (64 bytes), a bare seed (32) or the legacy 96-byte form."""
        raw = bytes(raw)
        if len(raw) not in (32, 64, 96):
            raise InvalidKeyError(f"Ed25519 private key must be 32, 64 or 96 bytes, not {len(raw)}")
        if len(raw) == 96 and raw[32:64] != raw[64:96]:
            raise InvalidKeyError("legacy Ed25519 private key repeats two different public keys")
        key = cls(ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32]))
        if len(raw) > 32 and raw[32:64] != key.public_key.raw:
            raise InvalidKeyError("Ed25519 private key holds a public key that does not match it")
        return key

    @property
    def raw(self) -> bytes:
        """``seed || public``, 64 bytes."""
        return self._seed + self._public_key.raw

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` with Ed25519 (64-byte signature)."""
        return self._key.sign(bytes(data))

"""ECDSA keys: secp256k1 (Bitcoin encoding) and the NIST curves (DER), signatures over SHA-256.

Signatures made here are deterministic (RFC 6979) where the OpenSSL build allows it and always
low-S, since js-libp2p and rust-libp2p refuse high-S secp256k1 signatures; verification
accepts either form, as go-libp2p does.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .der import load_der_private_key, spki_der
from .errors import InvalidKeyError
from .key_base import KeyType, PrivateKey, PublicKey

__all__ = ["EcdsaPrivateKey", "EcdsaPublicKey", "Secp256k1PrivateKey", "Secp256k1PublicKey"]

# ------------------------------------------------------------------ ECDSA helpers

#: Group orders, to move S into the lower half.
_CURVE_ORDERS = {
    "secp256k1": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int("FFFFFFFF" * 6 + "C7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16),
    "secp521r1": int(
        "01FF"
        + "FFFFFFFF" * 7
        + "FFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}


def _ecdsa_algorithm() -> ec.ECDSA:
    """Return ECDSA over SHA-256, deterministic (RFC 6979) if this OpenSSL supports it."""
    try:
        algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
        probe = ec.derive_private_key(1, ec.SECP256R1())
        probe.sign(b"", algorithm)
    except (TypeError, UnsupportedAlgorithm):
        return ec.ECDSA(hashes.SHA256())
    return algorithm


_SIGN_ECDSA = _ecdsa_algorithm()
_VERIFY_ECDSA = ec.ECDSA(hashes.SHA256())


def _ecdsa_sign_low_s(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """Sign with ECDSA-SHA256 and return the DER signature with S in the lower half."""
    der = key.sign(bytes(data), _SIGN_ECDSA)
    r, s = decode_dss_signature(der)
    order = _CURVE_ORDERS[key.curve.name]
    if s > order // 2:
        return encode_dss_signature(r, order - s)
    return der


def _ecdsa_verify(key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    try:
        key.verify(bytes(signature), bytes(data), _VERIFY_ECDSA)
    except (InvalidSignature, ValueError):
        return False
    return True


# ------------------------------------------------------------------ secp256k1


class Secp256k1PublicKey(PublicKey):
    """A secp256k1 public key: a 33-byte compressed point (Bitcoin encoding)."""

    __slots__ = ("_key",)
    key_type = KeyType.SECP256K1

    def __init__(self, key: ec.EllipticCurvePublicKey, raw: bytes) -> None:
        super().__init__(raw)
        self._key = key

    @classmethod
    def from_raw(cls, raw: bytes) -> Secp256k1PublicKey:
        """Validate a 33-byte compressed secp256k1 point."""
        raw = bytes(raw)
        if len(raw) != 33 or raw[0] not in (2, 3):
            raise InvalidKeyError("secp256k1 public key must be a 33-byte compressed point")
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), raw)
        except ValueError:
            raise InvalidKeyError("secp256k1 public key is not a point on the curve") from None
        return cls(key, raw)

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Return True if ``signature`` (DER) is this key's ECDSA-SHA256 signature of ``data``."""
        return _ecdsa_verify(self._key, data, signature)


class Secp256k1PrivateKey(PrivateKey):
    """A secp256k1 private key: a 32-byte big-endian scalar."""

    __slots__ = ("_key",)
    key_type = KeyType.SECP256K1

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        pub = key.public_key()
        raw = pub.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )
        super().__init__(Secp256k1PublicKey(pub, raw))

    @classmethod
    def generate(cls) -> Secp256k1PrivateKey:
        """Make a new random secp256k1 key."""
        return cls(ec.generate_private_key(ec.SECP256K1()))

    @classmethod
    def from_raw(cls, raw: bytes) -> Secp256k1PrivateKey:
        """Parse a 32-byte scalar in [1, n-1]."""
        if len(raw) != 32:
            raise InvalidKeyError(f"secp256k1 private key must be 32 bytes, not {len(raw)}")
        scalar = int.from_bytes(raw, "big")
        if not 0 < scalar < _CURVE_ORDERS["secp256k1"]:
            raise InvalidKeyError("secp256k1 private key is out of range")
        return cls(ec.derive_private_key(scalar, ec.SECP256K1()))

    @property
    def raw(self) -> bytes:
        """The 32-byte scalar."""
        return self._key.private_numbers().private_value.to_bytes(32, "big")

    def sign(self, data: bytes) -> bytes:
        """Sign SHA-256(``data``) with ECDSA; DER, low-S."""
        return _ecdsa_sign_low_s(self._key, data)


# ------------------------------------------------------------------ ECDSA (NIST curves)

#: Curves accepted in ECDSA keys: go-libp2p and js-libp2p accept all three, rust only P-256.
_NIST_CURVES = ("secp256r1", "secp384r1", "secp521r1")


class EcdsaPublicKey(PublicKey):
    """An ECDSA public key (P-256, or P-384/P-521 from peers) as DER SubjectPublicKeyInfo."""

    __slots__ = ("_key",)
    key_type = KeyType.ECDSA

    def __init__(self, key: ec.EllipticCurvePublicKey, raw: bytes) -> None:
        super().__init__(raw)
        self._key = key

    @classmethod
    def from_raw(cls, raw: bytes) -> EcdsaPublicKey:
        """Validate a DER SubjectPublicKeyInfo holding an uncompressed NIST-curve point."""
        raw = bytes(raw)
        try:
            key = serialization.load_der_public_key(raw)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise InvalidKeyError("ECDSA public key is not DER SubjectPublicKeyInfo") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _NIST_CURVES:
            raise InvalidKeyError("ECDSA public key is not on P-256, P-384 or P-521")
        if spki_der(key) != raw:
            raise InvalidKeyError("ECDSA public key is not canonical DER (uncompressed point)")
        return cls(key, raw)

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Return True if ``signature`` (DER) is this key's ECDSA-SHA256 signature of ``data``."""
        return _ecdsa_verify(self._key, data, signature)


class EcdsaPrivateKey(PrivateKey):
    """An ECDSA private key, stored as DER SEC1 ``ECPrivateKey`` (as go-libp2p writes it)."""

    __slots__ = ("_key",)
    key_type = KeyType.ECDSA

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        pub = key.public_key()
        super().__init__(EcdsaPublicKey(pub, spki_der(pub)))

    @classmethod
    def generate(cls) -> EcdsaPrivateKey:
        """Make a new random P-256 key."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_raw(cls, raw: bytes) -> EcdsaPrivateKey:
        """Parse a DER EC private key on P-256, P-384 or P-521."""
        key = load_der_private_key(raw, "ECDSA")
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _NIST_CURVES:
            raise InvalidKeyError("ECDSA private key is not on P-256, P-384 or P-521")
        return cls(key)

    @property
    def raw(self) -> bytes:
        """DER SEC1 ``ECPrivateKey`` with the curve and public key."""
        return self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    def sign(self, data: bytes) -> bytes:
        """Sign SHA-256(``data``) with ECDSA; DER, low-S."""
        return _ecdsa_sign_low_s(self._key, data)

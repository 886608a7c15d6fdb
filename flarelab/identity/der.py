"""DER helpers for the ECDSA and RSA key types (imported only when such a key is used)."""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .errors import InvalidKeyError

__all__ = ["load_der_private_key", "spki_der"]


def spki_der(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> bytes:
    """Encode a public key as DER SubjectPublicKeyInfo."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_der_private_key(raw: bytes, what: str) -> object:
    """Load a DER private key; raise :class:`InvalidKeyError` if it is not one."""
    try:
        return serialization.load_der_private_key(bytes(raw), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidKeyError(f"{what} private key is not valid DER") from None

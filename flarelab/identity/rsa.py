"""RSA keys: DER SubjectPublicKeyInfo public keys, PKCS#1 private keys, PKCS#1 v1.5 signatures."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..errors import LocalProtocolError
from .der import load_der_private_key, spki_der
from .errors import InvalidKeyError
from .key_base import KeyType, PrivateKey, PublicKey

__all__ = ["MAX_RSA_BITS", "MIN_RSA_BITS", "RsaPrivateKey", "RsaPublicKey"]

#: RSA modulus bounds, as go-libp2p enforces them.
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
#: go's crypto/rsa refuses public exponents above 2**31 - 1.
_MAX_RSA_EXPONENT = (1 << 31) - 1


def _check_rsa_numbers(n: int, e: int) -> None:
    bits = n.bit_length()
    if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise InvalidKeyError(
            f"RSA key of {bits} bits is outside {MIN_RSA_BITS}..{MAX_RSA_BITS} bits"
        )
    if e < 3 or e % 2 == 0 or e > _MAX_RSA_EXPONENT:
        raise InvalidKeyError(f"RSA public exponent {e} is not an odd number in 3..2**31-1")


class RsaPublicKey(PublicKey):
    """An RSA public key (2048-8192 bits) as DER SubjectPublicKeyInfo."""

    __slots__ = ("_key",)
    key_type = KeyType.RSA

    def __init__(self, key: rsa.RSAPublicKey, raw: bytes) -> None:
        super().__init__(raw)
        self._key = key

    @classmethod
    def from_raw(cls, raw: bytes) -> RsaPublicKey:
        """Validate a DER SubjectPublicKeyInfo holding an RSA key of 2048 to 8192 bits."""
        raw = bytes(raw)
        try:
            key = serialization.load_der_public_key(raw)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise InvalidKeyError("RSA public key is not DER SubjectPublicKeyInfo") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise InvalidKeyError("RSA public key holds a key of another type")
        numbers = key.public_numbers()
        _check_rsa_numbers(numbers.n, numbers.e)
        if spki_der(key) != raw:
            raise InvalidKeyError("RSA public key is not canonical DER")
        return cls(key, raw)

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Return True if ``signature`` is this key's PKCS#1 v1.5 SHA-256 signature."""
        try:
            self._key.verify(bytes(signature), bytes(data), padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return True


class RsaPrivateKey(PrivateKey):
    """An RSA private key, stored as DER PKCS#1 ``RSAPrivateKey``."""

    __slots__ = ("_key",)
    key_type = KeyType.RSA

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key
        pub = key.public_key()
        super().__init__(RsaPublicKey(pub, spki_der(pub)))

    @classmethod
    def generate(cls, bits: int = 2048) -> RsaPrivateKey:
        """Make a new random RSA key (2048 bits unless asked for more)."""
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise LocalProtocolError(f"RSA keys must have {MIN_RSA_BITS}..{MAX_RSA_BITS} bits")
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def from_raw(cls, raw: bytes) -> RsaPrivateKey:
        """Parse a DER RSA private key of 2048 to 8192 bits."""
        key = load_der_private_key(raw, "RSA")
        if not isinstance(key, rsa.RSAPrivateKey):
            raise InvalidKeyError("RSA private key holds a key of another type")
        numbers = key.public_key().public_numbers()
        _check_rsa_numbers(numbers.n, numbers.e)
        return cls(key)

    @property
    def raw(self) -> bytes:
        """DER PKCS#1 ``RSAPrivateKey``."""
        return self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    def sign(self, data: bytes) -> bytes:
        """Sign SHA-256(``data``) with RSASSA-PKCS1-v1_5."""
        return self._key.sign(bytes(data), padding.PKCS1v15(), hashes.SHA256())

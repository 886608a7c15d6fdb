"""Text encodings used by peer ids and multiaddrs: base58btc and multibase base32/base36.

Small and strict: decoding rejects characters outside the alphabet with ``ValueError``.
"""

from __future__ import annotations

import base64

__all__ = [
    "b32_decode",
    "b32_encode",
    "b36_decode",
    "b36_encode",
    "b58_decode",
    "b58_encode",
    "multibase_decode",
]

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _encode_base(data: bytes, alphabet: str) -> str:
    base = len(alphabet)
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, base)
        out.append(alphabet[rem])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return alphabet[0] * zeros + "".join(reversed(out))


def _decode_base(text: str, alphabet: str, index: dict[str, int]) -> bytes:
    base = len(alphabet)
    n = 0
    for ch in text:
        digit = index.get(ch)
        if digit is None:
            raise ValueError(f"invalid character {ch!r}")
        n = n * base + digit
    zeros = len(text) - len(text.lstrip(alphabet[0]))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def b58_encode(data: bytes) -> str:
    """Encode bytes in base58btc (the Bitcoin alphabet), no multibase prefix."""
    return _encode_base(data, _B58)


def b58_decode(text: str) -> bytes:
    """Decode base58btc text (no multibase prefix)."""
    if len(text) > 512:
        raise ValueError("base58 text too long")
    return _decode_base(text, _B58, _B58_INDEX)


_B36_INDEX = {c: i for i, c in enumerate(_B36)}


def b36_encode(data: bytes) -> str:
    """Encode bytes in lower-case base36, no multibase prefix."""
    return _encode_base(data, _B36)


def b36_decode(text: str) -> bytes:
    """Decode base36 text (either case), no multibase prefix."""
    if len(text) > 512:
        raise ValueError("base36 text too long")
    return _decode_base(text.lower(), _B36, _B36_INDEX)


def b32_encode(data: bytes) -> str:
    """RFC 4648 base32, lower case, no padding (multibase ``b`` without the prefix)."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32_decode(text: str) -> bytes:
    """Decode unpadded RFC 4648 base32 (either case)."""
    if len(text) > 1024:
        raise ValueError("base32 text too long")
    pad = "=" * (-len(text) % 8)
    try:
        return base64.b32decode(text.upper() + pad)
    except Exception as exc:  # binascii.Error
        raise ValueError(f"invalid base32: {exc}") from None


def multibase_decode(text: str) -> bytes:
    """Decode multibase text with prefix ``z`` (base58btc), ``b``/``B`` (base32) or ``k``/``K``
    (base36)."""
    if not text:
        raise ValueError("empty multibase string")
    prefix, body = text[0], text[1:]
    if prefix == "z":
        return b58_decode(body)
    if prefix in "bB":
        return b32_decode(body)
    if prefix in "kK":
        return b36_decode(body)
    if prefix == "m":
        padded = body + "=" * (-len(body) % 4)
        try:
            return base64.b64decode(padded, validate=True)
        except Exception as exc:
            raise ValueError(f"invalid base64: {exc}") from None
    if prefix == "u":
        padded = body + "=" * (-len(body) % 4)
        try:
            return base64.urlsafe_b64decode(padded)
        except Exception as exc:
            raise ValueError(f"invalid base64url: {exc}") from None
    raise ValueError(f"unsupported multibase prefix {prefix!r}")

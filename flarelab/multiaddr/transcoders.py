"""Value transcoders: one protocol value between its text form and its binary form.

Each :class:`Transcoder` has three pure functions:

* ``parse(text) -> bytes`` reads a text value (lenient where go-multiaddr is: leading zeros in
  ports, upper-case base32, a CID for a peer id);
* ``validate(value)`` checks a binary value (from a peer, or from ``parse``);
* ``format(value) -> str`` writes the canonical text of a validated value.

They raise plain :class:`ValueError` with a short reason; :mod:`.codec` adds where it happened
and turns it into a :class:`~flarelab.multiaddr.MultiaddrError`. ``format(parse(t))`` is the
canonical form of ``t``, and ``parse(format(v)) == v`` for every valid ``v``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote_from_bytes, unquote_to_bytes

from ..encoding import b36_decode, b58_decode, b58_encode
from ..errors import RemoteProtocolError
from ..wire import decode_uvarint

__all__ = [
    "CERTHASH",
    "DNS",
    "GARLIC32",
    "GARLIC64",
    "HTTP_PATH",
    "IP4",
    "IP6",
    "IP6ZONE",
    "IPCIDR",
    "MEMORY",
    "ONION",
    "ONION3",
    "P2P",
    "PORT",
    "UNIX",
    "Transcoder",
    "decode_multihash",
]

#: multihash codes a peer id may use (libp2p peer-ids spec)
MH_IDENTITY = 0x00
MH_SHA2_256 = 0x12
#: the longest public key a peer id inlines as an identity multihash (spec; rust enforces it)
MAX_INLINE_KEY_LENGTH = 42
#: the largest certhash digest we accept (rust-multiaddr's Multihash<64>)
MAX_CERTHASH_DIGEST = 64
#: CID codec of a libp2p public key
CID_LIBP2P_KEY = 0x72
#: DNS names, zones: far more than any real name (253) needs
MAX_NAME_BYTES = 255

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]{1,20}")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_B64_I2P = re.compile(r"[A-Za-z0-9~-]*={0,2}")
_B32_LOWER = re.compile(r"[a-z2-7]+")
_HEX = re.compile(r"(?:[0-9a-f][0-9a-f])*|(?:[0-9A-F][0-9A-F])*")
_I2P_TO_STD = str.maketrans("-~", "+/")
_STD_TO_I2P = str.maketrans("+/", "-~")
_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"


@dataclass(frozen=True, slots=True)
class Transcoder:
    """How one kind of value moves between text and bytes."""

    parse: Callable[[str], bytes]
    validate: Callable[[bytes], None]
    format: Callable[[bytes], str]


def _uint(text: str, maximum: int, what: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"{text!r} is not a decimal {what}")
    value = int(text)
    if value > maximum:
        raise ValueError(f"{what} {value} is out of range (0-{maximum})")
    return value


def _no_check(value: bytes) -> None:
    return None


# --- IP addresses -------------------------------------------------------------------------


def _ip4_parse(text: str) -> bytes:
    try:
        return ipaddress.IPv4Address(text).packed
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address") from None


def _ip4_format(value: bytes) -> str:
    return f"{value[0]}.{value[1]}.{value[2]}.{value[3]}"


def _ip6_parse(text: str) -> bytes:
    if "%" in text:
        raise ValueError(f"{text!r} has a zone; write it as /ip6zone/<zone>/ip6/<address>")
    try:
        return ipaddress.IPv6Address(text).packed
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv6 address") from None


def _ip6_format(value: bytes) -> str:
    # IPv4-mapped addresses print as ::ffff:a.b.c.d, as go, rust and Python >= 3.13 do.
    if value[:12] == _MAPPED_PREFIX:
        return "::ffff:" + _ip4_format(value[12:])
    return str(ipaddress.IPv6Address(value))


IP4 = Transcoder(_ip4_parse, _no_check, _ip4_format)
IP6 = Transcoder(_ip6_parse, _no_check, _ip6_format)


def _ipcidr_parse(text: str) -> bytes:
    return bytes((_uint(text, 255, "prefix length"),))


IPCIDR = Transcoder(_ipcidr_parse, _no_check, lambda value: str(value[0]))


# --- ports and other integers ---------------------------------------------------------------


def _port_parse(text: str) -> bytes:
    return _uint(text, 0xFFFF, "port").to_bytes(2, "big")


PORT = Transcoder(_port_parse, _no_check, lambda value: str(int.from_bytes(value, "big")))


def _memory_parse(text: str) -> bytes:
    return _uint(text, (1 << 64) - 1, "memory port").to_bytes(8, "big")


MEMORY = Transcoder(_memory_parse, _no_check, lambda value: str(int.from_bytes(value, "big")))


# --- names: dns*, sni, ip6zone ---------------------------------------------------------------


def _name_validate(value: bytes) -> None:
    if not value:
        raise ValueError("empty name")
    if len(value) > MAX_NAME_BYTES:
        raise ValueError(f"name of {len(value)} bytes is longer than {MAX_NAME_BYTES}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("name is not UTF-8") from None
    if "/" in text:
        raise ValueError(f"name {text!r} contains '/'")
    if _CONTROL.search(text):
        raise ValueError(f"name {text!r} contains a control character")


def _name_parse(text: str) -> bytes:
    value = text.encode("utf-8", "surrogatepass")
    _name_validate(value)
    return value


def _utf8_format(value: bytes) -> str:
    return value.decode("utf-8")


DNS = Transcoder(_name_parse, _name_validate, _utf8_format)
IP6ZONE = Transcoder(_name_parse, _name_validate, _utf8_format)


# --- unix paths (the value is the rest of the address) ---------------------------------------


def _unix_validate(value: bytes) -> None:
    if len(value) < 2 or value[:1] != b"/":
        raise ValueError("a unix path must start with '/' and name something")
    if value[-1:] == b"/":
        raise ValueError("a unix path must not end with '/'")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("unix path is not UTF-8") from None
    if _CONTROL.search(text):
        raise ValueError("unix path contains a control character")


def _unix_parse(text: str) -> bytes:
    value = text.encode("utf-8", "surrogatepass")
    _unix_validate(value)
    return value


UNIX = Transcoder(_unix_parse, _unix_validate, _utf8_format)


# --- http-path (percent-encoded bytes) -------------------------------------------------------


def _http_path_validate(value: bytes) -> None:
    if not value:
        raise ValueError("empty http path")


def _http_path_parse(text: str) -> bytes:
    if _BAD_PERCENT.search(text):
        raise ValueError(f"{text!r} has a '%' not followed by two hex digits")
    value = unquote_to_bytes(text)
    _http_path_validate(value)
    return value


HTTP_PATH = Transcoder(
    _http_path_parse, _http_path_validate, lambda value: quote_from_bytes(value, safe="")
)


# --- multihashes: p2p and certhash -----------------------------------------------------------


def decode_multihash(value: bytes, pos: int = 0) -> tuple[int, int, int]:
    """Read the multihash at ``value[pos:]``; return ``(code, digest start, digest end)``.

    Raise :class:`ValueError` if the header is malformed or the digest does not fit.
    """
    try:
        code, pos = decode_uvarint(value, pos)
        length, pos = decode_uvarint(value, pos)
    except RemoteProtocolError:  # truncated, overlong or non-minimal varint
        raise ValueError("malformed multihash header") from None
    if length > len(value) - pos:
        raise ValueError(f"multihash digest of {length} bytes is truncated")
    return code, pos, pos + length


def _peer_multihash_check(value: bytes, pos: int = 0) -> None:
    code, start, end = decode_multihash(value, pos)
    if end != len(value):
        raise ValueError(f"{len(value) - end} bytes after the peer id multihash")
    if code == MH_SHA2_256:
        if end - start != 32:
            raise ValueError(f"sha2-256 peer id digest is {end - start} bytes, not 32")
    elif code == MH_IDENTITY:
        if end - start > MAX_INLINE_KEY_LENGTH:
            raise ValueError(
                f"identity peer id of {end - start} bytes is longer than {MAX_INLINE_KEY_LENGTH}"
            )
    else:
        raise ValueError(f"peer id multihash code 0x{code:x} is neither identity nor sha2-256")


def _p2p_validate(value: bytes) -> None:
    _peer_multihash_check(value)


def _p2p_parse(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("peer id is not ASCII")
    if text.startswith(("Qm", "1")):  # a legacy base58btc multihash, as go decides
        value = b58_decode(text)
        _peer_multihash_check(value)
        return value
    data = _multibase_decode(text)  # otherwise a CIDv1 with the libp2p-key codec
    try:
        version, pos = decode_uvarint(data, 0)
        codec, pos = decode_uvarint(data, pos)
    except RemoteProtocolError:
        raise ValueError("malformed CID") from None
    if version != 1:
        raise ValueError(f"CID version {version} is not 1")
    if codec != CID_LIBP2P_KEY:
        raise ValueError(f"CID codec 0x{codec:x} is not libp2p-key (0x72)")
    _peer_multihash_check(data, pos)
    return data[pos:]


P2P = Transcoder(_p2p_parse, _p2p_validate, b58_encode)


def _certhash_validate(value: bytes) -> None:
    _code, start, end = decode_multihash(value)
    if end != len(value):
        raise ValueError(f"{len(value) - end} bytes after the certhash multihash")
    if end - start > MAX_CERTHASH_DIGEST:
        raise ValueError(f"certhash digest of {end - start} bytes exceeds {MAX_CERTHASH_DIGEST}")


def _certhash_parse(text: str) -> bytes:
    value = _multibase_decode(text)
    _certhash_validate(value)
    return value


def _certhash_format(value: bytes) -> str:
    return "u" + base64.urlsafe_b64encode(value).decode("ascii").rstrip("=")


CERTHASH = Transcoder(_certhash_parse, _certhash_validate, _certhash_format)


def _b64_strict(body: str, pattern: re.Pattern[str], altchars: bytes | None) -> bytes:
    if not pattern.fullmatch(body):
        raise ValueError("invalid base64 text")
    padded = body + "=" * (-len(body) % 4)
    try:
        return base64.b64decode(padded, altchars=altchars, validate=True)
    except binascii.Error:
        raise ValueError("invalid base64 text") from None


def _multibase_decode(text: str) -> bytes:
    """Decode strict multibase text: base58btc, base32, base36, base16, base64 (url)(pad)."""
    if not text or not text.isascii():
        raise ValueError("not multibase text")
    prefix, body = text[0], text[1:]
    if prefix == "z":
        return b58_decode(body)
    if prefix in "bB":
        if body != (body.lower() if prefix == "b" else body.upper()):
            raise ValueError("mixed-case base32 text")
        return _b32_decode(body.upper())
    if prefix in "kK":
        return b36_decode(body)
    if prefix in "fF":
        if not _HEX.fullmatch(body):
            raise ValueError("invalid base16 text")
        return bytes.fromhex(body)
    if prefix in "mM":
        return _b64_strict(body, _B64, None)
    if prefix in "uU":
        return _b64_strict(body, _B64URL, b"-_")
    raise ValueError(f"unsupported multibase prefix {prefix!r}")


def _b32_decode(upper: str) -> bytes:
    if len(upper) > 2048:
        raise ValueError("base32 text too long")
    try:
        return base64.b32decode(upper + "=" * (-len(upper) % 8))
    except binascii.Error:
        raise ValueError("invalid base32 text") from None


# --- Tor onion and I2P garlic ------------------------------------------------------------------


def _onion_codec(host_chars: int, host_bytes: int) -> Transcoder:
    def validate(value: bytes) -> None:
        if int.from_bytes(value[host_bytes:], "big") == 0:
            raise ValueError("onion port must not be 0")

    def parse(text: str) -> bytes:
        host, sep, port_text = text.partition(":")
        if not sep:
            raise ValueError(f"{text!r} has no ':port'")
        if len(host) != host_chars or not host.isascii():
            raise ValueError(f"onion host must be {host_chars} base32 characters")
        raw = _b32_decode(host.upper())
        value = raw + _uint(port_text, 0xFFFF, "port").to_bytes(2, "big")
        validate(value)
        return value

    def format(value: bytes) -> str:
        host = base64.b32encode(value[:host_bytes]).decode("ascii").lower()
        return f"{host}:{int.from_bytes(value[host_bytes:], 'big')}"

    return Transcoder(parse, validate, format)


ONION = _onion_codec(16, 10)
ONION3 = _onion_codec(56, 35)


def _garlic64_validate(value: bytes) -> None:
    if len(value) < 386:
        raise ValueError(f"garlic64 address of {len(value)} bytes is shorter than 386")


def _garlic64_parse(text: str) -> bytes:
    if len(text) % 4 or not _B64_I2P.fullmatch(text):
        raise ValueError("garlic64 text is not padded I2P base64")
    value = _b64_strict(text.translate(_I2P_TO_STD), _B64, None)
    _garlic64_validate(value)
    return value


def _garlic64_format(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii").translate(_STD_TO_I2P)


GARLIC64 = Transcoder(_garlic64_parse, _garlic64_validate, _garlic64_format)


def _garlic32_validate(value: bytes) -> None:
    if len(value) != 32 and len(value) < 35:
        raise ValueError(f"garlic32 address of {len(value)} bytes is not 32 or at least 35")


def _garlic32_parse(text: str) -> bytes:
    if not _B32_LOWER.fullmatch(text):
        raise ValueError("garlic32 text is not lower-case base32")
    value = _b32_decode(text.upper())
    _garlic32_validate(value)
    return value


def _garlic32_format(value: bytes) -> str:
    return base64.b32encode(value).decode("ascii").rstrip("=").lower()


GARLIC32 = Transcoder(_garlic32_parse, _garlic32_validate, _garlic32_format)

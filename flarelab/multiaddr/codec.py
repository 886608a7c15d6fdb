"""Parse and write whole multiaddrs: text <-> components <-> binary, with hard limits.

Text form: ``(/<name>[/<value>])+``; a trailing ``/`` is ignored (as go does) and a path
protocol (``unix``) takes the rest of the text as its value. Binary form:
``(<uvarint code>[<uvarint length>]<value>)+``. Every binary address is validated completely
before anything uses it: known codes only, lengths that fit, values their protocol accepts.

A component is kept as a :data:`Part`, ``(ProtocolInfo, value bytes)``; its text is produced
only when asked for.
"""

from __future__ import annotations

from typing import Final, TypeAlias

from ..errors import RemoteProtocolError
from ..wire import decode_uvarint, encode_uvarint
from .errors import MultiaddrError
from .protocols import VAR, ProtocolInfo, protocol_by_code, protocol_by_name

__all__ = [
    "MAX_COMPONENTS",
    "MAX_MULTIADDR_BYTES",
    "MAX_TEXT_LENGTH",
    "Part",
    "check_parts",
    "encode_parts",
    "format_parts",
    "format_value",
    "parse_binary",
    "parse_text",
]

#: the largest binary multiaddr we accept (from anyone)
MAX_MULTIADDR_BYTES: Final = 1024
#: the most components a multiaddr may have
MAX_COMPONENTS: Final = 32
#: the longest text we try to parse (text is at most a few times longer than its binary form)
MAX_TEXT_LENGTH: Final = 4096

#: one component: its protocol and its binary value (``b""`` for protocols without a value)
Part: TypeAlias = tuple[ProtocolInfo, bytes]


def _show(text: str, limit: int = 80) -> str:
    """Quote (and shorten) untrusted text for an error message."""
    if len(text) > limit:
        return repr(text[:limit]) + f"... ({len(text)} characters)"
    return repr(text)


def parse_text(text: str) -> tuple[bytes, tuple[Part, ...]]:
    """Parse a text multiaddr; return its binary form and its parts."""
    if len(text) > MAX_TEXT_LENGTH:
        raise MultiaddrError(
            f"multiaddr text of {len(text)} characters is longer than {MAX_TEXT_LENGTH}"
        )
    if not text.startswith("/"):
        raise MultiaddrError(f"invalid multiaddr {_show(text)}: it must begin with '/'")
    segments = text.rstrip("/").split("/")
    if len(segments) < 2:
        raise MultiaddrError(f"invalid multiaddr {_show(text)}: it is empty")
    parts: list[Part] = []
    i, end = 1, len(segments)
    while i < end:
        name = segments[i]
        where = f"component {len(parts) + 1}"
        info = protocol_by_name(name)
        if info is None:
            what = f"unknown protocol {_show(name)}" if name else "an empty protocol name ('//')"
            raise MultiaddrError(f"invalid multiaddr {_show(text)}: {where} has {what}")
        i += 1
        value = b""
        if info.transcoder is not None:
            if i >= end:
                raise MultiaddrError(
                    f"invalid multiaddr {_show(text)}: {where} (/{info.name}) has no value"
                )
            if info.path:
                value_text = "/" + "/".join(segments[i:])
                i = end
            else:
                value_text = segments[i]
                i += 1
            try:
                value = info.transcoder.parse(value_text)
                info.transcoder.validate(value)
            except ValueError as exc:
                raise MultiaddrError(
                    f"invalid multiaddr {_show(text)}: {where} (/{info.name}) "
                    f"value {_show(value_text)}: {exc}"
                ) from None
        parts.append((info, value))
        if len(parts) > MAX_COMPONENTS:
            raise MultiaddrError(
                f"invalid multiaddr {_show(text)}: more than {MAX_COMPONENTS} components"
            )
    data = encode_parts(parts)
    if len(data) > MAX_MULTIADDR_BYTES:
        raise MultiaddrError(
            f"invalid multiaddr {_show(text)}: its binary form of {len(data)} bytes "
            f"is longer than {MAX_MULTIADDR_BYTES}"
        )
    return data, tuple(parts)


def _binary_error(data: bytes, offset: int, reason: str) -> MultiaddrError:
    return MultiaddrError(
        f"invalid binary multiaddr ({len(data)} bytes): at byte {offset}: {reason}", offset=offset
    )


def parse_binary(data: bytes) -> tuple[Part, ...]:
    """Parse and fully validate a binary multiaddr; return its parts."""
    size = len(data)
    if size == 0:
        raise MultiaddrError("invalid binary multiaddr: it is empty", offset=0)
    if size > MAX_MULTIADDR_BYTES:
        raise MultiaddrError(
            f"binary multiaddr of {size} bytes is longer than {MAX_MULTIADDR_BYTES}", offset=0
        )
    parts: list[Part] = []
    pos = 0
    while pos < size:
        start = pos
        if parts and parts[-1][0].path:
            raise _binary_error(data, start, f"nothing may follow a /{parts[-1][0].name} path")
        if len(parts) == MAX_COMPONENTS:
            raise _binary_error(data, start, f"more than {MAX_COMPONENTS} components")
        code = data[pos]
        if code < 0x80:
            pos += 1
        else:
            try:
                code, pos = decode_uvarint(data, pos)
            except RemoteProtocolError as exc:
                raise _binary_error(data, start, f"protocol code: {exc.message}") from None
        info = protocol_by_code(code)
        if info is None:
            raise _binary_error(data, start, f"unknown protocol code {code} (0x{code:x})")
        value = b""
        if info.transcoder is not None:
            length = info.size
            if length == VAR:
                try:
                    length, pos = decode_uvarint(data, pos)
                except RemoteProtocolError as exc:
                    raise _binary_error(
                        data, pos, f"/{info.name} value length: {exc.message}"
                    ) from None
                if length == 0:
                    raise _binary_error(data, start, f"/{info.name} has an empty value")
            if length > size - pos:
                raise _binary_error(
                    data,
                    pos,
                    f"/{info.name} value needs {length} bytes but {size - pos} remain",
                )
            value = data[pos : pos + length]
            try:
                info.transcoder.validate(value)
            except ValueError as exc:
                raise _binary_error(data, pos, f"invalid /{info.name} value: {exc}") from None
            pos += length
        parts.append((info, value))
    return tuple(parts)


def encode_parts(parts: tuple[Part, ...] | list[Part]) -> bytes:
    """Write parts in the binary form (no limit checks)."""
    out = []
    for info, value in parts:
        out.append(info.code_bytes)
        if info.size == VAR:
            out.append(encode_uvarint(len(value)))
        out.append(value)
    return b"".join(out)


def check_parts(parts: tuple[Part, ...], data: bytes) -> None:
    """Check the limits and the path rule for parts assembled from other multiaddrs."""
    if len(parts) > MAX_COMPONENTS:
        raise MultiaddrError(f"multiaddr would have {len(parts)} components (max {MAX_COMPONENTS})")
    if len(data) > MAX_MULTIADDR_BYTES:
        raise MultiaddrError(
            f"multiaddr would be {len(data)} bytes long (max {MAX_MULTIADDR_BYTES})"
        )
    for info, _value in parts[:-1]:
        if info.path:
            raise MultiaddrError(f"nothing may follow a /{info.name} path component")


def format_value(info: ProtocolInfo, value: bytes) -> str | None:
    """Return the canonical text of a validated value (None for protocols without one)."""
    if info.transcoder is None:
        return None
    return info.transcoder.format(value)


def format_parts(parts: tuple[Part, ...]) -> str:
    """Write parts in the canonical text form."""
    out = []
    for info, value in parts:
        out.append("/")
        out.append(info.name)
        if info.transcoder is not None:
            text = info.transcoder.format(value)
            if not info.path:  # a path value brings its own leading '/'
                out.append("/")
            out.append(text)
    return "".join(out)

"""The Yamux frame header: 12 bytes, big-endian, before every frame.

``version u8 | type u8 | flags u16 | stream id u32 | length u32`` (hashicorp/yamux spec.md,
libp2p/specs yamux/README.md). Only Data frames carry ``length`` bytes of payload; for a
WindowUpdate ``length`` is the window delta, for a Ping the opaque value echoed back, for a
GoAway the error code.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from ...errors import LocalProtocolError, RemoteProtocolError
from ...wire import IncompleteError

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "INITIAL_WINDOW",
    "MAX_U32",
    "VERSION",
    "YAMUX_PROTOCOL_ID",
    "Flag",
    "FrameHeader",
    "FrameType",
    "GoAwayCode",
    "decode_header",
    "encode_header",
    "parse_header",
]

YAMUX_PROTOCOL_ID: Final = "/yamux/1.0.0"
VERSION: Final = 0
HEADER_SIZE: Final = 12
#: Every stream starts with this receive window in both directions (the spec's 256 KiB).
INITIAL_WINDOW: Final = 256 * 1024
MAX_U32: Final = 0xFFFF_FFFF
#: The packed header; ``HEADER.pack(version, type, flags, stream_id, length)``.
HEADER: Final = struct.Struct(">BBHII")


class FrameType(enum.IntEnum):
    """The frame types."""

    DATA = 0
    WINDOW_UPDATE = 1
    PING = 2
    GO_AWAY = 3


class Flag(enum.IntFlag):
    """The header flags."""

    SYN = 1  # open a stream (Data/WindowUpdate) or ask for a pong (Ping)
    ACK = 2  # accept a stream, or answer a ping
    FIN = 4  # half-close
    RST = 8  # reset


class GoAwayCode(enum.IntEnum):
    """The GoAway error codes."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


_MAX_TYPE = max(FrameType)


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """A decoded header (for tests and debugging; the core parses with :func:`parse_header`)."""

    type: FrameType
    flags: Flag
    stream_id: int
    length: int
    version: int = VERSION

    def encode(self) -> bytes:
        """Return the 12 header bytes."""
        return encode_header(self.type, self.flags, self.stream_id, self.length)


def encode_header(frame_type: int, flags: int, stream_id: int, length: int) -> bytes:
    """Return the 12 header bytes; refuse values that do not fit their fields."""
    if frame_type not in FrameType._value2member_map_:
        raise LocalProtocolError(f"unknown yamux frame type {frame_type}")
    if not 0 <= flags <= 0xFFFF:
        raise LocalProtocolError(f"yamux flags out of range: {flags}")
    if not 0 <= stream_id <= MAX_U32 or not 0 <= length <= MAX_U32:
        raise LocalProtocolError(f"yamux stream id or length out of range: {stream_id}, {length}")
    return HEADER.pack(VERSION, frame_type, flags, stream_id, length)


def parse_header(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int, int, int]:
    """Parse the header at ``data[pos:]``: return ``(type, flags, stream_id, length)``.

    The caller guarantees 12 bytes are there. Raises :class:`RemoteProtocolError` for a
    version other than 0 or an unknown type.
    """
    version, frame_type, flags, stream_id, length = HEADER.unpack_from(data, pos)
    if version != VERSION:
        raise RemoteProtocolError(
            f"unsupported yamux version {version}", protocol=YAMUX_PROTOCOL_ID
        )
    if frame_type > _MAX_TYPE:
        raise RemoteProtocolError(
            f"unknown yamux frame type {frame_type}", protocol=YAMUX_PROTOCOL_ID
        )
    return frame_type, flags, stream_id, length


def decode_header(data: bytes | bytearray | memoryview, pos: int = 0) -> FrameHeader:
    """Decode the header at ``data[pos:]``; :class:`IncompleteError` if under 12 bytes."""
    if len(data) - pos < HEADER_SIZE:
        raise IncompleteError(
            f"yamux header needs {HEADER_SIZE} bytes, got {max(0, len(data) - pos)}",
            protocol=YAMUX_PROTOCOL_ID,
        )
    frame_type, flags, stream_id, length = parse_header(data, pos)
    return FrameHeader(FrameType(frame_type), Flag(flags), stream_id, length)

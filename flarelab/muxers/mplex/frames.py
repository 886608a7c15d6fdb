"""The Mplex frame: ``uvarint(stream_id << 3 | flag) | uvarint(length) | payload``.

libp2p/specs mplex/README.md. The flag says what the frame is and which side of the stream
sent it: the *initiator* (who opened the stream) or the *receiver*. Stream ids are counted
per side (go-mplex and js-mplex both start at 0), so an id names a stream only together
with who opened it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from ...errors import LimitExceededError, LocalProtocolError, RemoteProtocolError
from ...wire import IncompleteError, decode_uvarint, encode_uvarint

__all__ = [
    "MAX_HEADER_SIZE",
    "MAX_MESSAGE_SIZE",
    "MAX_STREAM_ID",
    "MPLEX_PROTOCOL_ID",
    "MplexFlag",
    "MplexFrameHeader",
    "decode_frame",
    "encode_frame",
    "encode_header",
    "parse_header",
]

MPLEX_PROTOCOL_ID: Final = "/mplex/6.7.0"
#: The largest payload go-mplex accepts (1 MiB); we accept the same by default.
MAX_MESSAGE_SIZE: Final = 1 << 20
#: Two varints of at most 9 bytes each.
MAX_HEADER_SIZE: Final = 18
#: Ids must leave room for the 3 flag bits in a 63-bit varint.
MAX_STREAM_ID: Final = (1 << 60) - 1


class MplexFlag(enum.IntEnum):
    """The frame flags (the low 3 bits of the first varint)."""

    NEW_STREAM = 0
    MESSAGE_RECEIVER = 1
    MESSAGE_INITIATOR = 2
    CLOSE_RECEIVER = 3
    CLOSE_INITIATOR = 4
    RESET_RECEIVER = 5
    RESET_INITIATOR = 6

    @property
    def from_initiator(self) -> bool:
        """Tell whether the stream's initiator sent it (NewStream counts as the initiator's)."""
        return self.value % 2 == 0


@dataclass(frozen=True, slots=True)
class MplexFrameHeader:
    """A decoded frame header."""

    stream_id: int
    flag: MplexFlag
    length: int

    def encode(self) -> bytes:
        """Return the header bytes."""
        return encode_header(self.stream_id, self.flag, self.length)


def encode_header(stream_id: int, flag: int, length: int) -> bytes:
    """Return the two header varints; refuse values that do not fit."""
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise LocalProtocolError(f"mplex stream id out of range: {stream_id}")
    if flag not in MplexFlag._value2member_map_:
        raise LocalProtocolError(f"unknown mplex flag {flag}")
    return encode_uvarint(stream_id << 3 | flag) + encode_uvarint(length)


def encode_frame(stream_id: int, flag: int, payload: bytes | bytearray | memoryview = b"") -> bytes:
    """Return a whole frame."""
    return b"".join((encode_header(stream_id, flag, len(payload)), payload))


def parse_header(
    data: bytes | bytearray | memoryview, pos: int, max_length: int
) -> tuple[int, int, int, int] | None:
    """Parse the header at ``data[pos:]``: ``(stream_id, flag, length, end)``, None if cut short.

    Raises :class:`RemoteProtocolError` for a malformed varint or the undefined flag 7, and
    :class:`LimitExceededError` for a length over ``max_length``.
    """
    end = len(data)
    if pos < end and data[pos] < 0x80:  # the usual one-byte header varint
        header = data[pos]
        after = pos + 1
    else:
        try:
            header, after = decode_uvarint(data, pos)
        except IncompleteError:
            return None
    if after < end and data[after] < 0x80:
        length = data[after]
        after += 1
    else:
        try:
            length, after = decode_uvarint(data, after)
        except IncompleteError:
            return None
    flag = header & 7
    if flag == 7:
        raise RemoteProtocolError(
            "mplex frame with the undefined flag 7", protocol=MPLEX_PROTOCOL_ID
        )
    if length > max_length:
        raise LimitExceededError(
            f"mplex message of {length} bytes exceeds the limit of {max_length}",
            protocol=MPLEX_PROTOCOL_ID,
        )
    return header >> 3, flag, length, after


def decode_frame(
    data: bytes | bytearray | memoryview, max_length: int = MAX_MESSAGE_SIZE
) -> tuple[MplexFrameHeader, bytes, int]:
    """Decode one whole frame at the start of ``data``: ``(header, payload, bytes used)``.

    Raises :class:`IncompleteError` if ``data`` holds less than a whole frame.
    """
    try:
        parsed = parse_header(data, 0, max_length)
    except RemoteProtocolError as err:
        err.protocol = err.protocol or MPLEX_PROTOCOL_ID
        raise
    if parsed is None:
        raise IncompleteError("mplex header cut short", protocol=MPLEX_PROTOCOL_ID)
    stream_id, flag, length, pos = parsed
    if len(data) - pos < length:
        raise IncompleteError(
            f"mplex payload cut short: {len(data) - pos} of {length} bytes",
            protocol=MPLEX_PROTOCOL_ID,
        )
    header = MplexFrameHeader(stream_id, MplexFlag(flag), length)
    return header, bytes(data[pos : pos + length]), pos + length

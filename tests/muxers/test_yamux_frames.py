"""The Yamux header codec: layout, validation, round trips, and a fuzzed decoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flarelab.errors import LocalProtocolError, RemoteProtocolError
from flarelab.muxers.yamux.frames import (
    HEADER_SIZE,
    YAMUX_PROTOCOL_ID,
    Flag,
    FrameHeader,
    FrameType,
    GoAwayCode,
    decode_header,
    encode_header,
    parse_header,
)
from flarelab.wire import IncompleteError


def test_header_layout_is_big_endian_twelve_bytes() -> None:
    data = encode_header(FrameType.WINDOW_UPDATE, Flag.SYN | Flag.ACK, 0x01020304, 0x0A0B0C0D)
    assert data == bytes([0, 1, 0, 3, 1, 2, 3, 4, 0x0A, 0x0B, 0x0C, 0x0D])
    assert len(data) == HEADER_SIZE


def test_constants_match_the_spec() -> None:
    assert [t.value for t in FrameType] == [0, 1, 2, 3]
    assert [f.value for f in Flag] == [1, 2, 4, 8]
    assert [c.value for c in GoAwayCode] == [0, 1, 2]
    assert YAMUX_PROTOCOL_ID == "/yamux/1.0.0"


def test_decode_reads_at_an_offset() -> None:
    data = b"xx" + encode_header(FrameType.PING, Flag.ACK, 0, 77)
    assert decode_header(data, 2) == FrameHeader(FrameType.PING, Flag.ACK, 0, 77)


def test_unknown_version_is_a_remote_error_naming_yamux() -> None:
    data = bytes([1]) + encode_header(FrameType.DATA, 0, 1, 0)[1:]
    with pytest.raises(RemoteProtocolError, match="version 1") as info:
        decode_header(data)
    assert info.value.protocol == YAMUX_PROTOCOL_ID


def test_unknown_type_is_a_remote_error() -> None:
    data = bytes([0, 4]) + bytes(10)
    with pytest.raises(RemoteProtocolError, match="type 4"):
        parse_header(data)


def test_short_input_is_incomplete() -> None:
    with pytest.raises(IncompleteError):
        decode_header(bytes(11))


@pytest.mark.parametrize(
    ("frame_type", "flags", "stream_id", "length"),
    [(9, 0, 1, 0), (0, 1 << 16, 1, 0), (0, 0, 1 << 32, 0), (0, 0, 1, -1)],
)
def test_encode_refuses_values_that_do_not_fit(
    frame_type: int, flags: int, stream_id: int, length: int
) -> None:
    with pytest.raises(LocalProtocolError):
        encode_header(frame_type, flags, stream_id, length)


@given(
    frame_type=st.sampled_from(list(FrameType)),
    flags=st.integers(0, 0xFFFF),
    stream_id=st.integers(0, 2**32 - 1),
    length=st.integers(0, 2**32 - 1),
)
def test_round_trip(frame_type: FrameType, flags: int, stream_id: int, length: int) -> None:
    header = FrameHeader(frame_type, Flag(flags), stream_id, length)
    assert decode_header(header.encode()) == header


@given(st.binary(max_size=40))
def test_fuzzed_decoder_raises_only_our_errors(data: bytes) -> None:
    try:
        header = decode_header(data)
    except RemoteProtocolError:  # IncompleteError included
        return
    assert header.encode() == data[:HEADER_SIZE]

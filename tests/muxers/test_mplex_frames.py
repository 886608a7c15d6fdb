"""The Mplex frame codec: layout, limits, round trips, and a fuzzed decoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flarelab.errors import LimitExceededError, LocalProtocolError, RemoteProtocolError
from flarelab.muxers.mplex.frames import (
    MAX_MESSAGE_SIZE,
    MAX_STREAM_ID,
    MPLEX_PROTOCOL_ID,
    MplexFlag,
    MplexFrameHeader,
    decode_frame,
    encode_frame,
    parse_header,
)
from flarelab.wire import IncompleteError


def test_frame_layout() -> None:
    # stream 17, MessageInitiator: header 17 << 3 | 2 = 138 = varint 0x8a 0x01
    assert encode_frame(17, MplexFlag.MESSAGE_INITIATOR, b"hi") == b"\x8a\x01\x02hi"
    assert encode_frame(0, MplexFlag.NEW_STREAM, b"0") == b"\x00\x010"


def test_flags_match_the_spec() -> None:
    assert [f.value for f in MplexFlag] == list(range(7))
    assert MplexFlag.MESSAGE_INITIATOR.from_initiator
    assert not MplexFlag.CLOSE_RECEIVER.from_initiator
    assert MPLEX_PROTOCOL_ID == "/mplex/6.7.0"


def test_flag_seven_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError, match="flag 7"):
        parse_header(b"\x0f\x00", 0, MAX_MESSAGE_SIZE)


def test_oversized_message_is_refused_before_its_body_arrives() -> None:
    header = encode_frame(1, MplexFlag.MESSAGE_RECEIVER)[:1] + b"\x81\x80\x40"  # 1 MiB + 1
    with pytest.raises(LimitExceededError, match="exceeds"):
        parse_header(header, 0, MAX_MESSAGE_SIZE)


def test_a_cut_header_is_incomplete_not_an_error() -> None:
    assert parse_header(b"\x8a", 0, MAX_MESSAGE_SIZE) is None
    assert parse_header(b"\x8a\x01", 0, MAX_MESSAGE_SIZE) is None
    with pytest.raises(IncompleteError):
        decode_frame(b"\x8a\x01\x05ab")


def test_non_minimal_varints_are_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_frame(b"\x80\x00\x00")


def test_encode_refuses_bad_values() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(MAX_STREAM_ID + 1, 0)
    with pytest.raises(LocalProtocolError):
        encode_frame(1, 7)


@given(
    stream_id=st.integers(0, MAX_STREAM_ID),
    flag=st.sampled_from(list(MplexFlag)),
    payload=st.binary(max_size=300),
)
def test_round_trip(stream_id: int, flag: MplexFlag, payload: bytes) -> None:
    frame = encode_frame(stream_id, flag, payload)
    header, body, used = decode_frame(frame + b"trailing")
    assert header == MplexFrameHeader(stream_id, flag, len(payload))
    assert body == payload
    assert used == len(frame)
    assert header.encode() + payload == frame


@given(st.binary(max_size=40))
def test_fuzzed_decoder_raises_only_our_errors(data: bytes) -> None:
    try:
        header, body, used = decode_frame(data, max_length=1000)
    except RemoteProtocolError:
        return
    assert data[:used] == header.encode() + body

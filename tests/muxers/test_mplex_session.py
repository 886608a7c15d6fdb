"""The Mplex core in pairs, no I/O: streams, half-close, resets, limits, violations, fuzz."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from muxer_helpers import CorePair, mplex_frame

from flarelab.errors import LimitExceededError, LocalProtocolError, RemoteProtocolError
from flarelab.muxers.base import TooManyStreamsError
from flarelab.muxers.events import (
    InboundStreamOpened,
    InboundStreamRejected,
    StreamClosed,
    StreamDataReceived,
    StreamEofReceived,
    StreamReset,
)
from flarelab.muxers.mplex import MplexConfig, MplexFlag, MplexSession
from flarelab.muxers.mplex.frames import decode_frame
from flarelab.muxers.state import HalfState, ResetCause


def frames_of(data: bytes) -> list[tuple[int, MplexFlag, bytes]]:
    out = []
    while data:
        header, body, used = decode_frame(data)
        out.append((header.stream_id, header.flag, body))
        data = data[used:]
    return out


def send(core: MplexSession, rec: object, data: bytes) -> None:
    core.send_data(rec, memoryview(data), 1 << 30)  # type: ignore[arg-type]


def read_all(core: MplexSession, rec: object) -> bytes:
    out = bytearray()
    while rec.buffered:  # type: ignore[attr-defined]
        out += core.read(rec, 1 << 30, 0)  # type: ignore[arg-type]
    return bytes(out)


def open_pair_stream(pair: CorePair) -> tuple[object, object]:
    rec = pair.client.open_stream(0)
    pair.flush()
    (opened,) = [e for e in pair.take("server") if isinstance(e, InboundStreamOpened)]
    pair.server.accept_stream(opened.stream)
    return rec, opened.stream


def test_new_stream_is_named_by_its_id_and_ids_count_from_zero() -> None:
    core = MplexSession()
    assert [core.open_stream(0).stream_id for _ in range(3)] == [0, 1, 2]
    assert frames_of(bytes(core.data_to_send())) == [
        (0, MplexFlag.NEW_STREAM, b"0"),
        (1, MplexFlag.NEW_STREAM, b"1"),
        (2, MplexFlag.NEW_STREAM, b"2"),
    ]


def test_messages_use_the_flag_of_the_senders_role() -> None:
    pair = CorePair.mplex()
    crec, srec = open_pair_stream(pair)
    assert srec.name == "0"
    send(pair.client, crec, b"from initiator")
    send(pair.server, srec, b"from receiver")
    assert frames_of(bytes(pair.client.data_to_send())) == [
        (0, MplexFlag.MESSAGE_INITIATOR, b"from initiator")
    ]
    assert frames_of(bytes(pair.server.data_to_send())) == [
        (0, MplexFlag.MESSAGE_RECEIVER, b"from receiver")
    ]


def test_a_64_kib_write_is_one_message_and_the_limit_is_what_peers_accept() -> None:
    pair = CorePair.mplex()
    crec, _ = open_pair_stream(pair)
    send(pair.client, crec, bytes(64 * 1024))
    assert [len(p) for *_, p in frames_of(bytes(pair.client.data_to_send()))] == [64 * 1024]
    send(pair.client, crec, bytes(600 * 1024))
    assert [len(p) for *_, p in frames_of(bytes(pair.client.data_to_send()))] == [
        256 * 1024,
        256 * 1024,
        88 * 1024,
    ]
    with pytest.raises(LocalProtocolError):
        MplexConfig(max_payload=1024 * 1024 + 1)  # go-, js- and rust-mplex refuse more


def test_both_sides_may_use_the_same_id_for_different_streams() -> None:
    pair = CorePair.mplex()
    mine, theirs_seen = open_pair_stream(pair)
    theirs = pair.server.open_stream(0)  # the server's first stream: also id 0
    pair.flush()
    (opened,) = [e for e in pair.take("client") if isinstance(e, InboundStreamOpened)]
    send(pair.client, mine, b"on my 0")
    send(pair.server, theirs, b"on their 0")
    pair.flush()
    assert read_all(pair.server, theirs_seen) == b"on my 0"
    assert read_all(pair.client, opened.stream) == b"on their 0"


def test_close_both_ways_finishes_the_stream() -> None:
    pair = CorePair.mplex()
    crec, srec = open_pair_stream(pair)
    send(pair.client, crec, b"data")
    pair.client.send_eof(crec)
    pair.flush()
    assert [type(e) for e in pair.take("server")] == [StreamDataReceived, StreamEofReceived]
    assert read_all(pair.server, srec) == b"data"
    pair.server.send_eof(srec)
    pair.flush()
    assert pair.client.num_streams == pair.server.num_streams == 0
    assert any(isinstance(e, StreamClosed) for e in pair.take("client"))


def test_reset_tells_the_peer() -> None:
    pair = CorePair.mplex()
    crec, srec = open_pair_stream(pair)
    pair.server.reset_stream(srec)
    wire = bytes(pair.server.data_to_send())
    assert frames_of(wire) == [(0, MplexFlag.RESET_RECEIVER, b"")]
    pair.client.receive_data(wire, 0)
    events = pair.client.take_events()
    assert events[0] == StreamReset(crec, ResetCause.BY_PEER)
    assert crec.recv_state is HalfState.RESET


def test_a_slow_reader_gets_its_stream_reset_not_the_connection() -> None:
    pair = CorePair.mplex(MplexConfig(max_stream_buffer=1000))
    crec, srec = open_pair_stream(pair)
    other_c, other_s = open_pair_stream(pair)
    for _ in range(3):
        send(pair.client, crec, bytes(400))
    pair.flush()
    assert srec.reset_cause is ResetCause.OVERFLOW
    assert crec.reset_cause is ResetCause.BY_PEER
    send(pair.client, other_c, b"alive")
    pair.flush()
    assert read_all(pair.server, other_s) == b"alive"


def test_data_after_close_resets_that_stream_only() -> None:
    pair = CorePair.mplex()
    crec, srec = open_pair_stream(pair)
    pair.client.send_eof(crec)
    pair.flush()
    pair.server.receive_data(mplex_frame(0, MplexFlag.MESSAGE_INITIATOR, b"late"), 0)
    assert srec.reset_cause is ResetCause.PEER_VIOLATION
    assert not pair.server.closed


def test_frames_for_unknown_streams_are_ignored() -> None:
    core = MplexSession()
    core.receive_data(
        mplex_frame(9, MplexFlag.MESSAGE_INITIATOR, b"x")
        + mplex_frame(9, MplexFlag.CLOSE_RECEIVER)
        + mplex_frame(9, MplexFlag.RESET_INITIATOR),
        0,
    )
    assert core.take_events() == []
    assert not core.pending_output


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (MplexConfig(max_inbound_streams=2), "inbound streams"),
        (MplexConfig(accept_backlog=2), "accepted"),
    ],
)
def test_inbound_streams_beyond_a_limit_are_reset(config: MplexConfig, reason: str) -> None:
    core = MplexSession(config=config)
    core.receive_data(b"".join(mplex_frame(i, MplexFlag.NEW_STREAM, b"n") for i in range(3)), 0)
    events = core.take_events()
    assert [type(e) for e in events] == [
        InboundStreamOpened,
        InboundStreamOpened,
        InboundStreamRejected,
    ]
    assert reason in events[2].reason
    assert frames_of(bytes(core.data_to_send())) == [(2, MplexFlag.RESET_RECEIVER, b"")]


def test_outbound_stream_limit() -> None:
    core = MplexSession(config=MplexConfig(max_outbound_streams=1))
    core.open_stream(0)
    with pytest.raises(TooManyStreamsError):
        core.open_stream(0)


def test_long_stream_names_are_cut() -> None:
    core = MplexSession(config=MplexConfig(max_stream_name=4))
    core.receive_data(mplex_frame(0, MplexFlag.NEW_STREAM, b"a-long-name"), 0)
    (opened,) = core.take_events()
    assert opened.stream.name == "a-lo"


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (b"\x07\x00", RemoteProtocolError, "flag 7"),
        (b"\x02\x81\x80\x40", LimitExceededError, "exceeds"),
        (mplex_frame(0, 0, b"a") + mplex_frame(0, 0, b"a"), RemoteProtocolError, "again"),
        (b"\x80\x00\x00", RemoteProtocolError, "minimally"),
    ],
)
def test_violations_end_the_session(data: bytes, error: type[Exception], match: str) -> None:
    core = MplexSession()
    with pytest.raises(error, match=match) as info:
        core.receive_data(data, 0)
    assert info.value.protocol == "/mplex/6.7.0"
    assert core.closed


@settings(max_examples=300)
@given(
    frames=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 7), st.binary(max_size=30)), max_size=15
    ),
    junk=st.binary(max_size=10),
    cuts=st.lists(st.integers(0, 400), max_size=6),
)
def test_random_frames_raise_only_remote_protocol_errors(
    frames: list[tuple[int, int, bytes]], junk: bytes, cuts: list[int]
) -> None:
    from flarelab.wire import encode_uvarint

    data = b"".join(encode_uvarint(s << 3 | f) + encode_uvarint(len(p)) + p for s, f, p in frames)
    data += junk
    core = MplexSession(config=MplexConfig(max_stream_buffer=50, max_message_size=25))
    points = sorted({0, len(data), *[c for c in cuts if c < len(data)]})
    try:
        for start, end in itertools.pairwise(points):
            core.receive_data(data[start:end], 0)
            for event in core.take_events():
                if isinstance(event, InboundStreamOpened):
                    core.accept_stream(event.stream)
            assert all(rec.buffered <= 50 for rec in core.streams.values())
    except RemoteProtocolError:
        assert core.closed
    core.data_to_send()
    core.connection_lost("end")
    assert core.num_streams == 0

"""Protocol violations in the Yamux core: each ends the session with GoAway(protocol error)
and a RemoteProtocolError naming /yamux/1.0.0; fuzzed input raises only our errors."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from muxer_helpers import QUIET, parse_yamux_frames, yamux_frame

from flarelab.errors import LimitExceededError, RemoteProtocolError
from flarelab.muxers.yamux import Flag, FrameType, GoAwayCode, YamuxConfig, YamuxSession
from flarelab.muxers.yamux.frames import INITIAL_WINDOW, MAX_U32


def server_core(config: YamuxConfig = QUIET) -> YamuxSession:
    core = YamuxSession(is_client=False, config=config)
    core.start(0.0)
    return core


def client_core() -> YamuxSession:
    core = YamuxSession(is_client=True, config=QUIET)
    core.start(0.0)
    return core


def assert_goaway_protocol_error(core: YamuxSession) -> None:
    frames = parse_yamux_frames(bytes(core.data_to_send()))
    last, _ = frames[-1]
    assert (last.type, last.length) == (FrameType.GO_AWAY, GoAwayCode.PROTOCOL_ERROR)
    assert core.closed
    assert core.local_goaway == GoAwayCode.PROTOCOL_ERROR


OPEN_1 = yamux_frame(1, Flag.SYN, 1, 0)

VIOLATIONS = [
    pytest.param(server_core, bytes([1]) + bytes(11), RemoteProtocolError, "version", id="version"),
    pytest.param(server_core, bytes([0, 7]) + bytes(10), RemoteProtocolError, "type", id="type"),
    pytest.param(
        server_core,
        yamux_frame(1, Flag.SYN, 2, 0),
        RemoteProtocolError,
        "parity",
        id="syn-even-to-server",
    ),
    pytest.param(
        client_core,
        yamux_frame(0, Flag.SYN, 3, 0),
        RemoteProtocolError,
        "parity",
        id="syn-odd-to-client",
    ),
    pytest.param(
        server_core, yamux_frame(1, Flag.SYN, 0, 0), RemoteProtocolError, "parity", id="syn-on-zero"
    ),
    pytest.param(server_core, OPEN_1 + OPEN_1, RemoteProtocolError, "again", id="syn-reused-open"),
    pytest.param(
        server_core,
        OPEN_1 + yamux_frame(1, Flag.RST, 1, 0) + OPEN_1,
        RemoteProtocolError,
        "again",
        id="syn-reused-closed",
    ),
    pytest.param(
        server_core,
        yamux_frame(0, 0, 5, 1, b"x"),
        RemoteProtocolError,
        "never opened",
        id="data-unopened-peer-id",
    ),
    pytest.param(
        server_core,
        yamux_frame(0, 0, 4, 1, b"x"),
        RemoteProtocolError,
        "never opened",
        id="data-unopened-our-id",
    ),
    pytest.param(
        server_core,
        yamux_frame(0, 0, 0, 1, b"x"),
        RemoteProtocolError,
        "never opened",
        id="data-on-zero",
    ),
    pytest.param(
        server_core,
        OPEN_1 + yamux_frame(0, 0, 1, INITIAL_WINDOW + 1, bytes(INITIAL_WINDOW + 1)),
        LimitExceededError,
        "window",
        id="window-overflow",
    ),
    pytest.param(
        server_core,
        yamux_frame(0, Flag.SYN, 1, INITIAL_WINDOW + 1),
        LimitExceededError,
        "window",
        id="window-overflow-in-syn",
    ),
    pytest.param(
        server_core,
        OPEN_1 + yamux_frame(1, 0, 1, MAX_U32),
        RemoteProtocolError,
        "overflows",
        id="send-window-overflow",
    ),
]


@pytest.mark.parametrize(("make", "data", "error", "match"), VIOLATIONS)
def test_violation_ends_the_session_with_goaway(
    make: type[YamuxSession], data: bytes, error: type[Exception], match: str
) -> None:
    core = make()
    with pytest.raises(error, match=match) as info:
        core.receive_data(data, 0)
    assert info.value.protocol == "/yamux/1.0.0"
    assert_goaway_protocol_error(core)
    core.receive_data(yamux_frame(2, Flag.SYN, 0, 1), 0)  # later input is ignored
    assert not core.pending_output


def test_window_overflow_inside_a_frame_split_across_reads() -> None:
    core = server_core()
    frame = OPEN_1 + yamux_frame(0, 0, 1, INITIAL_WINDOW + 1, bytes(INITIAL_WINDOW + 1))
    core.receive_data(frame[:20], 0)  # the SYN and 8 bytes of the bad header
    with pytest.raises(LimitExceededError):
        core.receive_data(frame[20:], 0)


def test_exceeding_a_grown_window_is_still_a_violation() -> None:
    core = server_core()
    core.receive_data(OPEN_1, 0)
    (opened,) = core.take_events()
    rec = opened.stream
    core.receive_data(yamux_frame(0, 0, 1, INITIAL_WINDOW, bytes(INITIAL_WINDOW)), 0)
    core.read(rec, INITIAL_WINDOW, 0)  # returns one frame's worth; grants it back
    while rec.buffered:
        core.read(rec, INITIAL_WINDOW, 0)
    granted = rec.recv_window
    with pytest.raises(LimitExceededError):
        core.receive_data(yamux_frame(0, 0, 1, granted + 1, bytes(granted + 1)), 0)


# ---------------------------------------------------------------- fuzzing


def frames_strategy() -> st.SearchStrategy[bytes]:
    """Sequences of mostly well-formed frames with hostile field values."""
    frame = st.builds(
        lambda t, f, sid, length, payload: yamux_frame(t, f, sid, length, payload),
        st.sampled_from([0, 0, 1, 1, 2, 3, 4]),
        st.integers(0, 15) | st.integers(0, 0xFFFF),
        st.sampled_from([0, 1, 2, 3, 4, 5, 7, 2**32 - 1]),
        st.integers(0, 40) | st.sampled_from([INITIAL_WINDOW, INITIAL_WINDOW + 1, MAX_U32]),
        st.binary(max_size=40),
    )
    return st.lists(frame, max_size=12).map(b"".join)


@settings(max_examples=300)
@given(
    data=frames_strategy() | st.binary(max_size=200), cuts=st.lists(st.integers(0, 300), max_size=5)
)
def test_random_frames_raise_only_remote_protocol_errors(data: bytes, cuts: list[int]) -> None:
    for make in (server_core, client_core):
        core = make()
        points = sorted({0, len(data), *[c for c in cuts if c < len(data)]})
        try:
            for start, end in itertools.pairwise(points):
                core.receive_data(data[start:end], 1.0)
                core.take_events()
                for rec in list(core.streams.values()):  # the application reads everything
                    while rec.buffered:
                        core.read(rec, 1 << 20, 1.0)
                    assert rec.buffered <= rec.window_max
        except RemoteProtocolError:
            assert core.closed
            assert_goaway_protocol_error(core)
        else:
            assert not core.closed
        core.data_to_send()
        core.handle_timer(100.0)
        core.connection_lost("end of test")
        assert core.num_streams == 0


@given(st.data())
def test_splitting_the_byte_stream_anywhere_delivers_the_same(data: st.DataObject) -> None:
    payloads = data.draw(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=6))
    wire = OPEN_1 + b"".join(yamux_frame(0, 0, 1, len(p), p) for p in payloads)
    wire += yamux_frame(1, Flag.FIN, 1, 0)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(wire) - 1), max_size=20)))
    core = server_core()
    got = bytearray()
    points = [0, *cuts, len(wire)]
    for start, end in itertools.pairwise(points):
        core.receive_data(wire[start:end], 0)
        for event in core.take_events():
            rec = event.stream  # type: ignore[union-attr]
            while rec.buffered:
                got += core.read(rec, data.draw(st.integers(1, 500)), 0)
    assert bytes(got) == b"".join(payloads)

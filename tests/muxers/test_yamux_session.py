"""The Yamux core in pairs, no I/O: streams, flow control, limits, pings, GoAway."""

from __future__ import annotations

from dataclasses import replace

import pytest
from muxer_helpers import QUIET, CorePair, parse_yamux_frames, yamux_frame

from flarelab.errors import ConnectionClosedError, LimitExceededError, LocalProtocolError
from flarelab.muxers.base import TooManyStreamsError
from flarelab.muxers.events import (
    GoAwayReceived,
    InboundStreamOpened,
    InboundStreamRejected,
    KeepaliveTimedOut,
    RttMeasured,
    StreamAcknowledged,
    StreamClosed,
    StreamDataReceived,
    StreamEofReceived,
    StreamReset,
    StreamWindowUpdated,
)
from flarelab.muxers.state import HalfState, ResetCause
from flarelab.muxers.yamux import Flag, FrameType, YamuxConfig, YamuxSession
from flarelab.muxers.yamux.frames import INITIAL_WINDOW

KIB = 1024


def send(core: YamuxSession, rec: object, data: bytes, limit: int = 1 << 30) -> int:
    """Queue data on a stream; return how much the core took."""
    taken, _ = core.send_data(rec, memoryview(data), limit)  # type: ignore[arg-type]
    return taken


def read_all(core: YamuxSession, rec: object, now: float = 0.0) -> bytes:
    """Drain a stream's receive buffer."""
    out = bytearray()
    while rec.buffered:  # type: ignore[attr-defined]
        out += core.read(rec, 1 << 30, now)  # type: ignore[arg-type]
    return bytes(out)


def open_pair_stream(pair: CorePair) -> tuple[object, object]:
    """Open a client stream, deliver its SYN, accept it on the server."""
    rec = pair.client.open_stream(pair.now)
    pair.flush()
    (opened,) = [e for e in pair.take("server") if isinstance(e, InboundStreamOpened)]
    pair.server.accept_stream(opened.stream)
    return rec, opened.stream


# ---------------------------------------------------------------- opening and ids


def test_open_announces_the_stream_with_a_window_update_syn() -> None:
    pair = CorePair.yamux()
    rec = pair.client.open_stream(0.0)
    assert rec.stream_id == 1
    frames = parse_yamux_frames(bytes(pair.client.data_to_send()))
    assert [(h.type, h.flags, h.stream_id, h.length) for h, _ in frames] == [
        (FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0)
    ]


def test_client_ids_are_odd_and_server_ids_even() -> None:
    pair = CorePair.yamux()
    assert [pair.client.open_stream(0).stream_id for _ in range(3)] == [1, 3, 5]
    assert [pair.server.open_stream(0).stream_id for _ in range(3)] == [2, 4, 6]


def test_data_flows_both_ways_and_ack_rides_on_the_first_server_frame() -> None:
    pair = CorePair.yamux()
    crec, srec = open_pair_stream(pair)
    assert send(pair.client, crec, b"hello") == 5
    pair.flush()
    assert [type(e) for e in pair.take("server")] == [StreamDataReceived]
    assert read_all(pair.server, srec) == b"hello"
    assert not crec.acked
    send(pair.server, srec, b"world")
    wire = bytes(pair.server.data_to_send())
    ((header, payload),) = parse_yamux_frames(wire)
    assert header.flags == Flag.ACK
    assert payload == b"world"
    pair.client.receive_data(wire, 0)
    assert [type(e) for e in pair.client.take_events()] == [StreamAcknowledged, StreamDataReceived]
    assert read_all(pair.client, crec) == b"world"


def test_inbound_stream_out_of_order_ids_are_accepted() -> None:
    server = YamuxSession(is_client=False, config=QUIET)
    server.receive_data(yamux_frame(1, Flag.SYN, 3, 0) + yamux_frame(1, Flag.SYN, 1, 0), 0)
    assert sorted(server.streams) == [1, 3]


# ---------------------------------------------------------------- half-close, close, reset


def test_fin_both_ways_finishes_the_stream_on_both_sides() -> None:
    pair = CorePair.yamux()
    crec, srec = open_pair_stream(pair)
    send(pair.client, crec, b"abc")
    pair.client.send_eof(crec)
    pair.flush()
    assert [type(e) for e in pair.take("server")] == [StreamDataReceived, StreamEofReceived]
    assert read_all(pair.server, srec) == b"abc"
    assert srec.recv_state is HalfState.CLOSED
    pair.server.send_eof(srec)
    pair.flush()
    assert any(isinstance(e, StreamClosed) for e in pair.take("server"))
    assert any(isinstance(e, StreamClosed) for e in pair.take("client"))
    assert pair.client.num_streams == pair.server.num_streams == 0


def test_reset_drops_unread_data_and_tells_the_peer() -> None:
    pair = CorePair.yamux()
    crec, srec = open_pair_stream(pair)
    send(pair.client, crec, b"unread")
    pair.flush()
    pair.take("server")
    pair.client.reset_stream(crec)
    pair.flush()
    events = pair.take("server")
    assert [type(e) for e in events] == [StreamReset, StreamClosed]
    assert events[0].cause is ResetCause.BY_PEER
    assert srec.buffered == 0
    assert srec.recv_state is HalfState.RESET
    assert pair.client.num_streams == pair.server.num_streams == 0


def test_closing_with_unread_data_resets() -> None:
    pair = CorePair.yamux()
    crec, srec = open_pair_stream(pair)
    send(pair.client, crec, b"x")
    pair.flush()
    pair.server.close_stream(srec)
    assert srec.reset_cause is ResetCause.LOCAL
    pair.flush()
    assert crec.reset_cause is ResetCause.BY_PEER


def test_data_for_a_closed_handle_is_answered_with_a_reset() -> None:
    pair = CorePair.yamux()
    crec, srec = open_pair_stream(pair)
    pair.server.close_stream(srec)  # FIN; the receive side is abandoned
    assert srec.recv_state is HalfState.ABANDONED
    pair.flush()
    assert any(isinstance(e, StreamEofReceived) for e in pair.take("client"))
    send(pair.client, crec, b"anyone?")
    pair.flush()
    assert srec.reset_cause is ResetCause.ABANDONED
    assert crec.reset_cause is ResetCause.BY_PEER
    assert pair.client.num_streams == pair.server.num_streams == 0


def test_data_after_fin_resets_that_stream_only() -> None:
    pair = CorePair.yamux()
    crec, srec = open_pair_stream(pair)
    other_c, other_s = open_pair_stream(pair)
    pair.client.send_eof(crec)
    pair.flush()
    pair.take("server")
    # a buggy peer sends more data on the stream it half-closed
    pair.server.receive_data(yamux_frame(0, 0, crec.stream_id, 3, b"bad"), 0)
    events = pair.server.take_events()
    assert [type(e) for e in events] == [StreamReset, StreamClosed]
    assert events[0].cause is ResetCause.PEER_VIOLATION
    assert "data after FIN" in srec.close_reason
    frames = parse_yamux_frames(bytes(pair.server.data_to_send()))
    assert [(h.flags, h.stream_id) for h, _ in frames] == [(Flag.RST, crec.stream_id)]
    assert not pair.server.closed
    send(pair.client, other_c, b"still fine")
    pair.flush()
    assert read_all(pair.server, other_s) == b"still fine"


def test_connection_lost_ends_every_stream() -> None:
    pair = CorePair.yamux()
    crec, _ = open_pair_stream(pair)
    pair.client.connection_lost("gone")
    events = pair.client.take_events()
    assert [type(e) for e in events] == [StreamReset, StreamClosed]
    assert crec.reset_cause is ResetCause.CONNECTION_CLOSED
    assert crec.close_reason == "gone"
    with pytest.raises(ConnectionClosedError):
        pair.client.open_stream(0)


# ---------------------------------------------------------------- flow control


def test_the_sender_stops_at_the_window_and_resumes_after_half_is_read() -> None:
    pair = CorePair.yamux()
    crec, srec = open_pair_stream(pair)
    data = bytes(range(256)) * 1024 * 2  # 512 KiB
    assert send(pair.client, crec, data) == INITIAL_WINDOW
    assert send(pair.client, crec, data) == 0
    pair.flush()
    assert srec.buffered == INITIAL_WINDOW
    got = bytearray()
    while len(got) < 128 * KIB - 1:
        got += pair.server.read(srec, 128 * KIB - 1 - len(got), 0)
    assert got == data[: 128 * KIB - 1]
    assert not pair.server.pending_output  # less than half the window consumed
    pair.server.read(srec, 1, 0)
    frames = parse_yamux_frames(bytes(pair.server.data_to_send()))
    assert [(h.type, h.flags, h.length) for h, _ in frames] == [
        (FrameType.WINDOW_UPDATE, Flag.ACK, 128 * KIB)
    ]
    pair.client.receive_data(b"".join(h.encode() for h, _ in frames), 0)
    assert StreamWindowUpdated in [type(e) for e in pair.client.take_events()]
    assert crec.send_window == 128 * KIB


def test_frames_are_at_most_max_payload() -> None:
    pair = CorePair.yamux(YamuxConfig(keepalive_interval=None, rtt_interval=None, max_payload=1000))
    crec, _ = open_pair_stream(pair)
    send(pair.client, crec, bytes(2500))
    frames = parse_yamux_frames(bytes(pair.client.data_to_send()))
    assert [len(p) for _, p in frames] == [1000, 1000, 500]


def test_a_64_kib_write_is_one_frame_and_frames_never_exceed_the_peers_window() -> None:
    pair = CorePair.yamux()
    crec, _ = open_pair_stream(pair)
    assert send(pair.client, crec, bytes(64 * KIB)) == 64 * KIB
    assert [len(p) for _, p in parse_yamux_frames(bytes(pair.client.data_to_send()))] == [64 * KIB]
    assert send(pair.client, crec, bytes(INITIAL_WINDOW)) == INITIAL_WINDOW - 64 * KIB
    assert [len(p) for _, p in parse_yamux_frames(bytes(pair.client.data_to_send()))] == [
        INITIAL_WINDOW - 64 * KIB  # the window left, in one frame
    ]
    pair.client.receive_data(yamux_frame(1, 0, crec.stream_id, 1000), 0)  # 1000 more
    assert send(pair.client, crec, bytes(64 * KIB)) == 1000
    assert [len(p) for _, p in parse_yamux_frames(bytes(pair.client.data_to_send()))] == [1000]


@pytest.mark.parametrize(
    "settings",
    [
        {"max_payload": 0},
        {"max_payload": 1024 * 1024 + 1},  # rust-yamux refuses frames over 1 MiB
        {"autotune_min_rtt": -0.001},
        {"autotune_rtts": 0},
    ],
)
def test_config_refuses_settings_peers_or_tuning_cannot_use(settings: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError):
        YamuxConfig(**settings)  # type: ignore[arg-type]


def test_a_larger_initial_window_is_granted_in_syn_and_accept() -> None:
    config = YamuxConfig(keepalive_interval=None, rtt_interval=None, initial_window=1 << 20)
    pair = CorePair.yamux(config)
    crec, srec = open_pair_stream(pair)
    pair.flush()
    assert crec.send_window == srec.send_window == 1 << 20
    assert crec.acked  # the accept's window update carried the ACK


def measure_rtt(pair: CorePair, rtt: float) -> None:
    """Let the server ping the client once, answered after ``rtt`` seconds."""
    pair.server.handle_timer(pair.now)
    pair.now += rtt
    pair.flush()


def window_growth(
    rtt: float, read_interval: float, config: YamuxConfig, rounds: int = 12
) -> list[int]:
    """Read half a window every ``read_interval`` s (RTT ``rtt``); return the window sizes."""
    pair = CorePair.yamux(replace(config, rtt_interval=30.0))
    measure_rtt(pair, rtt)
    crec, srec = open_pair_stream(pair)
    sizes = []
    for _ in range(rounds):
        while send(pair.client, crec, bytes(64 * KIB)):
            pass
        pair.flush()
        while srec.buffered:
            pair.now += read_interval
            half = srec.window_max // 2
            got = 0
            while got < half and srec.buffered:
                got += len(pair.server.read(srec, half - got, pair.now))
            pair.flush()
        sizes.append(srec.window_max)
    return sizes


def test_autotuning_doubles_a_fast_window_up_to_the_maximum() -> None:
    sizes = window_growth(rtt=0.010, read_interval=0.001, config=QUIET)
    assert sizes[:3] == [2 * INITIAL_WINDOW, 4 * INITIAL_WINDOW, 8 * INITIAL_WINDOW]
    assert max(sizes) == QUIET.max_window


def test_autotuning_leaves_a_slow_window_alone() -> None:
    # 4 RTTs (40 ms) is the bar; half a window every 50 ms is slower
    assert set(window_growth(rtt=0.010, read_interval=0.050, config=QUIET)) == {INITIAL_WINDOW}


def test_autotuning_needs_an_rtt_sample() -> None:
    pair = CorePair.yamux()  # no pings: nothing measured, no growth (as go-yamux)
    crec, srec = open_pair_stream(pair)
    for _ in range(8):
        while send(pair.client, crec, bytes(64 * KIB)):
            pass
        pair.flush()
        read_all(pair.server, srec, pair.now)
        pair.flush()
    assert srec.window_max == INITIAL_WINDOW


def test_autotuning_assumes_an_rtt_of_at_least_the_floor() -> None:
    # a loopback-like sample of 0.1 ms; half a window every 5 ms
    assert max(window_growth(rtt=0.0001, read_interval=0.005, config=QUIET)) == QUIET.max_window
    no_floor = replace(QUIET, autotune_min_rtt=0.0)
    assert set(window_growth(rtt=0.0001, read_interval=0.005, config=no_floor)) == {INITIAL_WINDOW}


def test_autotuning_uses_the_smallest_recent_rtt_sample() -> None:
    config = replace(QUIET, rtt_interval=30.0)
    pair = CorePair.yamux(config)
    measure_rtt(pair, 0.020)
    pair.now += 30
    measure_rtt(pair, 0.200)  # one sample taken while busy
    assert pair.server.rtt == pytest.approx(0.110)  # the smoothed figure, for tracing
    assert pair.server._pings.min_rtt == pytest.approx(0.020)
    assert pair.server._autotune_span == pytest.approx(0.080)  # 4 x 20 ms


def test_autotuning_respects_the_connection_budget() -> None:
    config = YamuxConfig(keepalive_interval=None, rtt_interval=None, max_connection_window=1 << 20)
    assert max(window_growth(rtt=0.010, read_interval=0.001, config=config)) == 1 << 20


# ---------------------------------------------------------------- limits


def test_outbound_stream_limit() -> None:
    core = YamuxSession(is_client=True, config=YamuxConfig(max_outbound_streams=2))
    core.open_stream(0)
    core.open_stream(0)
    with pytest.raises(TooManyStreamsError):
        core.open_stream(0)


def test_ack_backlog_blocks_opening_until_the_peer_acknowledges() -> None:
    pair = CorePair.yamux(
        YamuxConfig(keepalive_interval=None, rtt_interval=None, max_unacked_outbound=3)
    )
    recs = [pair.client.open_stream(0) for _ in range(3)]
    assert not pair.client.can_open_stream
    with pytest.raises(LocalProtocolError):
        pair.client.open_stream(0)
    pair.flush()
    first = next(e.stream for e in pair.take("server") if isinstance(e, InboundStreamOpened))
    send(pair.server, first, b"hi")
    pair.flush()
    assert recs[0].acked
    assert pair.client.can_open_stream


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (YamuxConfig(max_inbound_streams=2), "inbound streams"),
        (YamuxConfig(max_unacked_inbound=2), "not yet acknowledged"),
    ],
)
def test_inbound_streams_beyond_a_limit_are_reset_not_the_connection(
    config: YamuxConfig, reason: str
) -> None:
    server = YamuxSession(is_client=False, config=config)
    server.receive_data(b"".join(yamux_frame(1, Flag.SYN, i, 0) for i in (1, 3, 5)), 0)
    events = server.take_events()
    assert [type(e) for e in events] == [
        InboundStreamOpened,
        InboundStreamOpened,
        InboundStreamRejected,
    ]
    assert reason in events[2].reason
    frames = parse_yamux_frames(bytes(server.data_to_send()))
    assert [(h.flags, h.stream_id) for h, _ in frames] == [(Flag.RST, 5)]
    assert not server.closed


def test_a_stream_closed_before_ack_frees_its_backlog_slot() -> None:
    server = YamuxSession(is_client=False, config=YamuxConfig(max_unacked_inbound=1))
    server.receive_data(yamux_frame(1, Flag.SYN, 1, 0) + yamux_frame(1, Flag.RST, 1, 0), 0)
    server.receive_data(yamux_frame(1, Flag.SYN, 3, 0), 0)
    assert list(server.streams) == [3]


# ---------------------------------------------------------------- frames we ignore


def test_frames_for_forgotten_streams_are_ignored() -> None:
    pair = CorePair.yamux()
    crec, srec = open_pair_stream(pair)
    pair.server.reset_stream(srec)
    pair.flush()
    pair.take("server")
    # data, window updates, FIN and RST still in flight for the reset stream
    late = (
        yamux_frame(0, 0, crec.stream_id, 4, b"late")
        + yamux_frame(1, 0, crec.stream_id, 100)
        + yamux_frame(1, Flag.FIN, crec.stream_id, 0)
        + yamux_frame(1, Flag.RST, crec.stream_id, 0)
    )
    pair.server.receive_data(late, 0)
    assert pair.server.take_events() == []
    assert not pair.server.pending_output


def test_rst_or_fin_for_a_stream_never_announced_is_ignored() -> None:
    # rust-yamux sends SYN with a stream's first frame; one dropped unused sends a bare RST
    server = YamuxSession(is_client=False, config=QUIET)
    server.receive_data(yamux_frame(0, Flag.RST, 7, 0) + yamux_frame(1, Flag.FIN, 9, 0), 0)
    assert server.take_events() == []
    assert not server.closed


# ---------------------------------------------------------------- pings and keepalive


def test_a_ping_is_answered_with_the_same_value() -> None:
    core = YamuxSession(is_client=True, config=QUIET)
    core.receive_data(yamux_frame(2, Flag.SYN, 0, 0xDEADBEEF), 0)
    frames = parse_yamux_frames(bytes(core.data_to_send()))
    assert [(h.type, h.flags, h.stream_id, h.length) for h, _ in frames] == [
        (FrameType.PING, Flag.ACK, 0, 0xDEADBEEF)
    ]


def test_rtt_is_measured_at_start_and_smoothed() -> None:
    config = YamuxConfig(keepalive_interval=None, rtt_interval=30.0)
    pair = CorePair.yamux(config)
    assert pair.client.next_timer() == 0.0
    pair.client.handle_timer(0.0)
    pair.server.handle_timer(0.0)
    pair.now = 0.004
    pair.flush()
    (measured,) = [e for e in pair.take("client") if isinstance(e, RttMeasured)]
    assert measured.rtt == pytest.approx(0.004)
    assert pair.client.rtt == pytest.approx(0.004)
    assert pair.client.next_timer() == pytest.approx(30.004)
    pair.client.handle_timer(30.004)
    pair.now = 30.006
    pair.flush()
    assert pair.client.rtt == pytest.approx(0.003)  # (4 ms + 2 ms) / 2


def test_an_unexpected_pong_is_ignored() -> None:
    core = YamuxSession(is_client=True, config=QUIET)
    core.receive_data(yamux_frame(2, Flag.ACK, 0, 5), 0)
    assert core.take_events() == []
    assert core.rtt is None


def test_keepalive_pings_after_silence_and_times_out_without_an_answer() -> None:
    config = YamuxConfig(keepalive_interval=30.0, ping_timeout=10.0, rtt_interval=None)
    core = YamuxSession(is_client=True, config=config)
    core.start(0.0)
    assert core.next_timer() == 30.0
    core.receive_data(yamux_frame(1, 0, 99, 0), 20.0)  # anything received resets the silence
    assert core.next_timer() == 50.0
    core.handle_timer(30.0)
    assert not core.pending_output  # not due yet: woke early
    core.handle_timer(50.0)
    frames = parse_yamux_frames(bytes(core.data_to_send()))
    assert [(h.type, h.flags) for h, _ in frames] == [(FrameType.PING, Flag.SYN)]
    assert core.next_timer() == 60.0
    core.handle_timer(60.0)
    (timed_out,) = core.take_events()
    assert isinstance(timed_out, KeepaliveTimedOut)
    assert timed_out.idle == 40.0


def test_traffic_while_a_keepalive_ping_waits_keeps_the_connection() -> None:
    config = YamuxConfig(keepalive_interval=30.0, ping_timeout=10.0, rtt_interval=None)
    core = YamuxSession(is_client=True, config=config)
    core.start(0.0)
    core.handle_timer(30.0)
    core.receive_data(yamux_frame(1, 0, 99, 0), 38.0)
    core.handle_timer(40.0)
    assert core.take_events() == []
    assert core.next_timer() == 48.0


def test_an_unanswered_rtt_ping_is_dropped_without_keepalive() -> None:
    config = YamuxConfig(keepalive_interval=None, rtt_interval=30.0, ping_timeout=10.0)
    core = YamuxSession(is_client=True, config=config)
    core.start(0.0)
    core.handle_timer(0.0)
    core.handle_timer(10.0)
    assert core.take_events() == []
    assert core.next_timer() == 40.0


# ---------------------------------------------------------------- GoAway


def test_goaway_is_reported_and_stops_new_streams_both_ways() -> None:
    pair = CorePair.yamux()
    pair.server.go_away()
    pair.flush()
    assert pair.take("client") == [GoAwayReceived(0)]
    with pytest.raises(ConnectionClosedError, match="GoAway"):
        pair.client.open_stream(0)
    with pytest.raises(ConnectionClosedError, match="GoAway"):
        pair.server.open_stream(0)
    pair.server.receive_data(yamux_frame(1, Flag.SYN, 1, 0), 0)  # a client that did not listen
    assert isinstance(pair.server.take_events()[0], InboundStreamRejected)


def test_peer_triggered_control_frames_are_bounded() -> None:
    core = YamuxSession(is_client=True, config=YamuxConfig(max_pending_control=120))
    pings = b"".join(yamux_frame(2, Flag.SYN, 0, i) for i in range(11))
    with pytest.raises(LimitExceededError, match="control frames"):
        core.receive_data(pings, 0)
    assert core.closed

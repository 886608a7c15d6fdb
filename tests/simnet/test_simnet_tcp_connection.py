"""The pure TCP core in pairs, no network (tier 1): handshakes, closes, loss, windows."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simnet_helpers import CorePair, constant_delay, lossy

from flarelab.errors import LocalProtocolError
from flarelab.simnet.packet import ACK, RST, SYN, Segment
from flarelab.simnet.tcp_connection import TcpConfig, TcpConnection, TcpState

S = TcpState


def established(pair: CorePair) -> bool:
    return (pair.a is not None and pair.b is not None
            and pair.a.state is S.ESTABLISHED and pair.b.state is S.ESTABLISHED)


def test_three_way_handshake() -> None:
    pair = CorePair.connect()
    pair.run(until=lambda: established(pair))
    assert pair.flags() == ["a->b SYN", "b->a SYN-ACK", "a->b ACK"]
    assert pair.a is not None and pair.b is not None
    assert pair.a.was_established and pair.b.was_established and pair.b.passive
    assert pair.now == pytest.approx(0.03)  # three one-way trips of 10 ms


def test_simultaneous_open_crosses_two_syns() -> None:
    """RFC 9293 figure 8: SYN, SYN crossing; SYN-ACK, SYN-ACK crossing; both ESTABLISHED."""
    pair = CorePair.simultaneous()
    pair.run(until=lambda: established(pair))
    assert sorted(pair.flags()) == ["a->b SYN", "a->b SYN-ACK", "b->a SYN", "b->a SYN-ACK"]
    assert pair.a is not None and pair.b is not None
    assert not pair.a.passive and not pair.b.passive
    # the data path works both ways afterwards
    pair.a.send(b"hello")
    pair.b.send(b"world")
    pair.flush()
    pair.run()
    assert pair.b.read(100) == b"hello" and pair.a.read(100) == b"world"


def test_simultaneous_open_when_one_syn_is_lost() -> None:
    """What a NAT does to the first SYN of a punch: A's is dropped, B's gets through."""
    dropped = []

    def fate(direction: str, seg: Segment) -> float | None:
        if direction == "a->b" and seg.syn and not dropped:
            dropped.append(seg)
            return None
        return 0.01

    pair = CorePair.simultaneous(fate=fate)
    pair.run(until=lambda: established(pair))
    assert pair.flags() == ["b->a SYN", "a->b SYN-ACK", "b->a ACK"]
    assert pair.now < 0.1  # no retransmission was needed


def test_refused_connect() -> None:
    a = TcpConnection(TcpConfig(), 1000)
    a.connect(0.0)
    (syn,) = a.segments_to_send(0.0)
    reset = syn.reset_reply()
    assert reset is not None and reset.flags == RST | ACK and reset.ack == 1001
    a.receive(reset, 0.01)
    assert (a.state, a.error) == (S.CLOSED, "refused")
    assert a.timer() is None


def test_a_reset_without_the_right_ack_is_ignored_in_syn_sent() -> None:
    a = TcpConnection(TcpConfig(), 1000)
    a.connect(0.0)
    a.segments_to_send(0.0)
    a.receive(Segment(seq=0, ack=555, flags=RST | ACK), 0.01)
    assert a.state is S.SYN_SENT


def test_connect_times_out_after_the_syn_retries_with_backoff() -> None:
    a = TcpConnection(TcpConfig(syn_retries=3), 1000)
    a.connect(0.0)
    sends = []
    now = 0.0
    while a.state is S.SYN_SENT:
        sends += [now for _ in a.segments_to_send(now)]
        when = a.timer()
        assert when is not None
        now = when
        a.handle_timer(now)
    assert a.error == "timeout"
    assert sends == [0.0, 1.0, 3.0, 7.0]  # RTO 1 s doubling: 1, 2, 4, then 8 s to give up
    assert now == 15.0


def test_half_close_fin_then_data_the_other_way() -> None:
    pair = CorePair.connect()
    pair.run(until=lambda: established(pair))
    assert pair.a is not None and pair.b is not None
    pair.a.send(b"request")
    pair.a.shutdown(pair.now)
    pair.flush()
    pair.run()
    assert pair.b.read(100) == b"request" and pair.b.at_eof
    assert (pair.a.state, pair.b.state) == (S.FIN_WAIT_2, S.CLOSE_WAIT)
    pair.b.send(b"response")
    pair.flush()
    pair.run(until=lambda: pair.a is not None and pair.a.readable > 0)
    assert pair.a.read(100) == b"response"
    pair.b.shutdown(pair.now)
    pair.flush()
    pair.run(until=lambda: pair.a is not None and pair.a.state is S.TIME_WAIT)
    assert pair.b.state in (S.LAST_ACK, S.CLOSED)
    start = pair.now
    pair.run()
    assert (pair.a.state, pair.b.state) == (S.CLOSED, S.CLOSED)
    assert pair.now == pytest.approx(start + 60.0)  # TIME-WAIT
    assert pair.a.error is None and pair.b.error is None
    with pytest.raises(LocalProtocolError):
        pair.a.send(b"late")


def test_closing_with_unread_data_resets() -> None:
    pair = CorePair.connect()
    pair.run(until=lambda: established(pair))
    assert pair.a is not None and pair.b is not None
    pair.a.send(b"unread")
    pair.flush()
    pair.run()
    pair.b.close(pair.now)
    pair.flush()
    pair.run()
    assert pair.b.state is S.CLOSED
    assert pair.a.error == "reset"
    assert pair.flags("b->a")[-1] == "b->a RST-ACK"


def test_data_after_a_full_close_is_answered_with_a_reset() -> None:
    pair = CorePair.connect()
    pair.run(until=lambda: established(pair))
    assert pair.a is not None and pair.b is not None
    pair.b.close(pair.now)  # nothing unread: a FIN
    pair.flush()
    pair.run(until=lambda: pair.a is not None and pair.a.fin_received)
    pair.a.send(b"too late")
    pair.flush()
    pair.run()
    assert pair.a.error == "reset"


def test_delayed_ack_every_second_segment_or_after_40_ms() -> None:
    config = TcpConfig(mss=100)
    pair = CorePair.connect(config=config)
    pair.run(until=lambda: established(pair))
    pair.run()
    assert pair.a is not None
    start = len(pair.log)
    pair.a.send(b"x" * 100)
    pair.flush()
    pair.run()
    one = pair.log[start:]
    assert [s.describe() for _, _, s in one] == ["ACK 100 B", "ACK"]
    assert one[1][0] - one[0][0] == pytest.approx(0.04 + 0.01)
    start = len(pair.log)
    pair.a.send(b"x" * 200)
    pair.flush()
    pair.run()
    two = pair.log[start:]
    assert [s.describe() for _, _, s in two] == ["ACK 100 B", "ACK 100 B", "ACK"]
    assert two[2][0] - two[1][0] == pytest.approx(0.01)  # no delay for the second


def test_zero_window_probe_and_window_update() -> None:
    config = TcpConfig(mss=500, send_buffer=4000, receive_buffer=2000)
    pair = CorePair.connect(config=config)
    pair.run(until=lambda: established(pair))
    assert pair.a is not None
    data = bytes(random.Random(1).randbytes(6000))
    sent = pair.a.send(data)
    pair.flush()
    # B never reads: its window closes, and A probes it at growing intervals
    pair.run(until=lambda: pair.now > 60)
    assert pair.b is not None and pair.b.readable == 2000 and pair.a.snd_wnd == 0
    probes = [t for t, d, s in pair.sent if d == "a->b" and len(s.data) == 1]
    assert len(probes) >= 3
    got = bytearray()

    def read_and_feed() -> None:
        nonlocal sent
        assert pair.a is not None and pair.b is not None
        got.extend(pair.b.read(700))
        if sent < len(data):
            sent += pair.a.send(data[sent:])

    pair.run(until=lambda: len(got) == len(data), on_step=read_and_feed)
    assert bytes(got) == data


def test_rto_follows_the_measured_rtt() -> None:
    pair = CorePair.connect(fate=constant_delay(0.3))
    pair.run(until=lambda: established(pair))
    assert pair.a is not None and pair.a.srtt == pytest.approx(0.6)
    assert pair.a.rto == pytest.approx(0.6 + 4 * 0.3)


@given(
    loss=st.sampled_from([0.0, 0.02, 0.1, 0.3]),
    jitter=st.sampled_from([0.0, 0.005, 0.05]),
    seed=st.integers(0, 10_000),
    sizes=st.tuples(st.integers(0, 30_000), st.integers(0, 30_000)),
    simultaneous=st.booleans(),
)
def test_lossy_reordering_links_deliver_every_byte_in_order(
    loss: float, jitter: float, seed: int, sizes: tuple[int, int], simultaneous: bool
) -> None:
    """Whatever the loss and reordering, both directions arrive byte-exact and close cleanly.

    The give-up limits are raised so that bad luck at 30% loss cannot end a connection (a
    real stack would give up too); TIME-WAIT outlasts the largest retransmission interval.
    """
    config = TcpConfig(mss=700, send_buffer=8000, receive_buffer=6000, max_rto=10.0,
                       time_wait=300.0, syn_retries=60, synack_retries=60, retries=60)
    fate = lossy(0.01, loss, seed, jitter)
    pair = (CorePair.simultaneous if simultaneous else CorePair.connect)(config=config, fate=fate)
    pair.run(until=lambda: established(pair))
    rng = random.Random(seed)
    payload = {"a": rng.randbytes(sizes[0]), "b": rng.randbytes(sizes[1])}
    sent = {"a": 0, "b": 0}
    got: dict[str, bytearray] = {"a": bytearray(), "b": bytearray()}

    def pump() -> None:
        for side, other in (("a", "b"), ("b", "a")):
            conn, peer = getattr(pair, side), getattr(pair, other)
            if conn.state in (S.ESTABLISHED, S.CLOSE_WAIT) and conn.fin_seq is None:
                sent[side] += conn.send(payload[side][sent[side]:])
                if sent[side] == len(payload[side]):
                    conn.shutdown(pair.now)
            got[other].extend(peer.read(rng.randint(1, 5000)))

    pair.run(until=lambda: pair.a.state is S.CLOSED and pair.b.state is S.CLOSED,  # type: ignore[union-attr]
             on_step=pump)
    assert pair.a is not None and pair.b is not None
    got["a"] += pair.a.read(1 << 20)  # what arrived after the last pump
    got["b"] += pair.b.read(1 << 20)
    assert bytes(got["b"]) == payload["a"] and bytes(got["a"]) == payload["b"]
    assert pair.a.error is None and pair.b.error is None
    if loss == 0.0 and jitter == 0.0:
        assert pair.a.retransmissions == 0 or simultaneous


def test_segments_are_acknowledged_only_with_ack_flag() -> None:
    """A bare SYN never carries an acknowledgement; everything after the SYN does."""
    pair = CorePair.connect()
    pair.run(until=lambda: established(pair))
    for _, _, seg in pair.log:
        assert bool(seg.flags & ACK) is not (seg.flags == SYN)

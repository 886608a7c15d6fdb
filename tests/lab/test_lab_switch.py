"""The user-space switch's core: latency, learning, flooding, bounds; fuzzed. No root."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flarelab.lab.switch import ETHERNET_HEADER, LatencySwitch

MAC = {n: bytes([2, 0, 0, 0, 0, n]) for n in range(1, 10)}
BROADCAST = b"\xff" * 6


def frame(dst: bytes, src: bytes, payload: bytes = b"x" * 50) -> bytes:
    return dst + src + b"\x08\x00" + payload


def test_unknown_destinations_flood_then_the_switch_learns() -> None:
    switch = LatencySwitch({0: 0.01, 1: 0.02, 2: 0.0})
    first = frame(MAC[2], MAC[1])
    switch.receive(0, first, now=1.0)  # MAC 2 unknown: flooded to 1 and 2
    assert switch.stats.flooded == 1
    assert switch.take_due(1.009) == []
    assert switch.take_due(1.0101) == [(2, first)]  # port 0 + port 2 latency
    assert switch.take_due(1.0299) == []
    assert switch.take_due(1.0301) == [(1, first)]  # port 0 + port 1 latency
    reply = frame(MAC[1], MAC[2])
    switch.receive(1, reply, now=2.0)  # MAC 1 was learned on port 0
    assert switch.next_due() == pytest.approx(2.03)
    assert switch.take_due(3.0) == [(0, reply)]
    assert switch.stats.flooded == 1


def test_broadcast_and_multicast_go_everywhere_else() -> None:
    switch = LatencySwitch({0: 0.0, 1: 0.0, 2: 0.0})
    switch.receive(1, frame(BROADCAST, MAC[1]), now=0.0)
    switch.receive(1, frame(b"\x33\x33\x00\x00\x00\x01", MAC[1]), now=0.0)  # IPv6 multicast
    assert sorted(port for port, _ in switch.take_due(0.0)) == [0, 0, 2, 2]


def test_a_frame_for_its_own_port_is_not_sent_back() -> None:
    switch = LatencySwitch({0: 0.0, 1: 0.0})
    switch.receive(0, frame(BROADCAST, MAC[1]), now=0.0)
    switch.take_due(0.0)
    switch.receive(0, frame(MAC[1], MAC[2]), now=0.0)  # both on port 0
    assert switch.take_due(1.0) == []


def test_order_is_kept_per_path() -> None:
    switch = LatencySwitch({0: 0.005, 1: 0.005})
    frames = [frame(BROADCAST, MAC[1], bytes([i]) * 20) for i in range(20)]
    for i, f in enumerate(frames):
        switch.receive(0, f, now=i * 0.0001)
    assert [f for _, f in switch.take_due(1.0)] == frames


def test_limits_hold() -> None:
    switch = LatencySwitch({0: 1.0, 1: 1.0}, max_queued_bytes=1000, max_macs=3)
    for i in range(30):
        switch.receive(0, frame(BROADCAST, bytes([2, 0, 0, 0, 1, i])), now=0.0)
    assert switch.queued * 64 <= 1000 and switch.stats.dropped_full > 0
    assert len(switch._macs) == 3
    switch.receive(0, b"short", now=0.0)
    switch.receive(7, frame(BROADCAST, MAC[1]), now=0.0)
    assert switch.stats.dropped_short == 1 and switch.stats.dropped_unknown_port == 1


@given(st.lists(st.tuples(st.integers(0, 4), st.binary(max_size=80),
                          st.floats(0, 1, allow_nan=False)), max_size=60),
       st.lists(st.floats(0, 0.05, allow_nan=False), min_size=2, max_size=4))
def test_any_frames_are_delivered_intact_in_time_order(
        arrivals: list[tuple[int, bytes, float]], latencies: list[float]) -> None:
    switch = LatencySwitch(dict(enumerate(latencies)), max_queued_bytes=2000)
    sent: list[bytes] = []
    now = 0.0
    delivered: list[tuple[int, bytes]] = []
    for port, data, step in arrivals:
        now += step
        delivered += switch.take_due(now)
        switch.receive(port, data, now)
        sent.append(data)
    delivered += switch.take_due(now + 1.0)
    assert switch.queued == 0 and switch.next_due() is None
    valid = [f for f in sent if len(f) >= ETHERNET_HEADER]
    assert {f for _, f in delivered} <= set(valid)
    assert all(0 <= port < len(latencies) for port, _ in delivered)
    stats = switch.stats
    assert stats.received == len(arrivals)
    assert stats.delivered == len(delivered)

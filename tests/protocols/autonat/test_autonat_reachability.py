"""The reachability state machine and the probe schedule: pure cores, time passed in (tier 1)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flarelab.multiaddr import Multiaddr
from flarelab.protocols.autonat.reachability import (
    TRANSITIONS,
    AddressReachability,
    Observation,
    Reachability,
    ReachabilityChange,
    ReachabilityTracker,
    aggregate,
)
from flarelab.protocols.autonat.schedule import ProbeSchedule

PUB, PRIV, FAIL = Observation.PUBLIC, Observation.PRIVATE, Observation.FAILED
U, P, X = Reachability.UNKNOWN, Reachability.PUBLIC, Reachability.PRIVATE


def feed(tracker: ReachabilityTracker, *observations: Observation) -> list[ReachabilityChange]:
    changes = []
    for i, obs in enumerate(observations):
        change = tracker.observe(obs, float(i))
        if change is not None:
            changes.append(change)
    return changes


def test_the_table_covers_every_state_and_observation() -> None:
    assert set(TRANSITIONS) == {(s, o) for s in Reachability for o in Observation}
    assert set(TRANSITIONS.values()) == {"vote", "ignore", "gain", "doubt", "fade"}


def test_it_takes_more_than_three_agreeing_answers_to_settle() -> None:
    tracker = ReachabilityTracker()
    assert feed(tracker, PUB, PUB, PUB) == []
    assert (tracker.status, tracker.confidence) == (U, 0)
    assert feed(tracker, PUB) == [ReachabilityChange(U, P, 3)]
    assert tracker.settled and tracker.changed_at == 0.0
    private = ReachabilityTracker()
    assert feed(private, PRIV, PRIV, FAIL, PRIV, PRIV) == [ReachabilityChange(U, X, 3)]


def test_a_contradiction_restarts_the_count() -> None:
    tracker = ReachabilityTracker()
    assert feed(tracker, PUB, PUB, PUB, PRIV, PUB, PUB, PUB) == []
    assert feed(tracker, PUB) == [ReachabilityChange(U, P, 3)]


def test_a_settled_status_flips_after_four_contradictions_in_a_row() -> None:
    tracker = ReachabilityTracker()
    feed(tracker, PUB, PUB, PUB, PUB)
    assert feed(tracker, PRIV, PRIV, PRIV) == []
    assert (tracker.status, tracker.confidence) == (P, 0)
    assert feed(tracker, PRIV) == [ReachabilityChange(P, X, 3)]
    # and back: confidence is what the run of agreeing answers earned
    feed(tracker, PUB, PUB, PUB)
    assert feed(tracker, PUB) == [ReachabilityChange(X, P, 3)]


def test_agreeing_answers_rebuild_confidence_and_a_weak_flip_stays_weak() -> None:
    tracker = ReachabilityTracker()
    feed(tracker, PUB, PUB, PUB, PUB, PRIV, PRIV, PRIV)  # P, confidence 0
    assert feed(tracker, PUB) == [] and tracker.confidence == 1
    assert feed(tracker, PRIV, PUB, PRIV) == []
    assert (tracker.status, tracker.confidence) == (P, 0)
    # the second contradiction in a row flips it: the new status has earned confidence 1
    assert feed(tracker, PRIV) == [ReachabilityChange(P, X, 1)]


def test_failures_fade_confidence_then_the_status() -> None:
    tracker = ReachabilityTracker()
    feed(tracker, PRIV, PRIV, PRIV, PRIV)
    assert feed(tracker, FAIL, FAIL, FAIL) == [] and tracker.confidence == 0
    assert feed(tracker, FAIL) == [ReachabilityChange(X, U, 0)]
    assert tracker.streak == 0
    assert feed(tracker, FAIL, FAIL) == []  # unknown stays unknown


def test_address_changes_lower_full_confidence_by_one() -> None:
    tracker = ReachabilityTracker()
    tracker.addresses_changed()
    assert tracker.confidence == 0
    feed(tracker, PUB, PUB, PUB, PUB)
    tracker.addresses_changed()
    assert (tracker.status, tracker.confidence, tracker.settled) == (P, 2, False)
    tracker.addresses_changed()
    assert tracker.confidence == 2


@given(st.lists(st.sampled_from(list(Observation)), max_size=60), st.integers(0, 5))
def test_invariants(observations: list[Observation], max_confidence: int) -> None:
    tracker = ReachabilityTracker(max_confidence)
    streak_of, streak = None, 0
    for i, obs in enumerate(observations):
        before = tracker.status
        change = tracker.observe(obs, float(i))
        assert 0 <= tracker.confidence <= max_confidence
        if obs is not FAIL:
            streak = streak + 1 if obs is streak_of else 1
            streak_of = obs
        if change is None:
            assert tracker.status is before
            continue
        assert (change.previous, change.current) == (before, tracker.status)
        if before is U:  # settling needs more than max_confidence agreeing answers in a row
            assert obs.reachability is tracker.status and streak > max_confidence
        elif tracker.status is not U:  # a flip is argued for by the answer that caused it
            assert obs.reachability is tracker.status
        else:
            assert obs is FAIL
    assert len(tracker.history) == min(len(observations), 16)


def test_per_address_trackers_are_bounded_and_aggregate() -> None:
    book = AddressReachability(max_addresses=2)
    a, b, c = (Multiaddr(f"/ip4/198.51.100.{i}/tcp/1") for i in (1, 2, 3))
    for t in range(4):
        book.observe(a, PRIV, float(t))
        book.observe(b.with_peer_id("12D3KooWKLMid7L4yvnCxbLTiMNR3LE2PoeY63tPQRrKGbBJESzx"),
                     PRIV, float(t) + 0.5)
    assert (book.status(a), book.status(b)) == (X, X)
    assert aggregate(t for _, t in book.items()) == (X, 3)
    book.observe(c, PUB, 10.0)  # evicts a, the least recently observed
    assert book.get(a) is None and len(book) == 2
    assert book.status(c) is U
    assert aggregate(t for _, t in book.items()) == (U, 0)
    for t in range(3):
        book.observe(c, PUB, 11.0 + t)
    assert aggregate(t for _, t in book.items()) == (P, 3)
    assert book.with_status(P) == [c] and book.with_status(X) == [b]
    assert book.forget([c]) == [b] and len(book) == 1
    assert aggregate([]) == (U, 0)


# ---------------------------------------------------------------- the schedule
def schedule(**overrides: float) -> ProbeSchedule[str]:
    params: dict[str, float] = dict(started_at=100.0, boot_delay=15.0, retry_interval=90.0,
                                    refresh_interval=900.0, min_gap=1.0, throttle=90.0,
                                    max_confidence=3)
    params.update(overrides)
    return ProbeSchedule(**params)  # type: ignore[arg-type]


def test_schedule_follows_go() -> None:
    s = schedule()
    assert s.next_due(U, 0) == 115.0  # boot delay
    s.tried(115.0, found_server=True)
    s.probed(116.0)
    assert s.next_due(U, 0) == 206.0  # unknown: retry
    assert s.next_due(P, 2) == 206.0  # not fully confident: retry
    assert s.next_due(P, 3) == 1016.0  # settled: refresh
    s.inbound(120.0)
    assert s.next_due(P, 3) == 116.0 + 1800.0  # public and dialled: twice as long
    assert s.next_due(X, 3) == 116.0 + 180.0  # private yet dialled: a fifth
    s.probed(116.0, refused=True)
    assert s.next_due(P, 3) == 206.0  # refused: retry


def test_schedule_idles_without_servers_and_hurries_for_a_new_one() -> None:
    s = schedule()
    s.tried(115.0, found_server=False)
    assert s.next_due(U, 0) == 205.0
    s.server_appeared(status_unknown=False)
    assert s.next_due(U, 0) == 116.0  # boot delay over, gap respected
    s.server_appeared(status_unknown=True)
    assert s.next_due(U, 0) == 116.0
    fresh = schedule()
    fresh.server_appeared(status_unknown=True)
    assert fresh.next_due(U, 0) == 100.0  # no boot delay for a server when we know nothing
    fresh.tried(100.0, found_server=True)
    assert fresh.next_due(U, 0) == 115.0


def test_servers_are_throttled() -> None:
    s = schedule()
    rng = random.Random(1)
    assert s.pick([], 0.0, rng) is None and s.free_at([]) is None
    s.asked("a", 10.0)
    assert not s.allowed("a", 99.0) and s.allowed("a", 100.0)
    assert s.pick(["a", "b"], 50.0, rng) == "b"
    s.asked("b", 50.0)
    assert s.pick(["a", "b"], 60.0, rng) is None
    assert s.free_at(["a", "b"]) == 100.0
    for i in range(2000):  # the table stays bounded
        s.asked(str(i), 1000.0 + i)
    assert len(s._asked) <= 1024


def test_addresses_have_their_own_timetable() -> None:
    s = schedule()
    a, b = Multiaddr("/ip4/198.51.100.1/tcp/1"), Multiaddr("/ip4/198.51.100.1/udp/1/quic-v1")
    assert s.addr_due(a, U, 0) == 115.0
    s.tried(115.0, found_server=True)
    s.addr_probed(a, 117.0)
    assert s.addr_due(a, U, 0) == 207.0 and s.addr_due(b, U, 0) == 116.0
    assert s.addr_due(a, P, 3) == 1017.0
    s.addr_probed(a, 117.0, refused=True)
    assert s.addr_due(a, P, 3) == 207.0
    s.forget_addrs([b])
    assert s.addr_due(a, P, 3) == 116.0  # forgotten: due as new


@pytest.mark.parametrize("status", [U, P, X])
def test_interval_table(status: Reachability) -> None:
    s = schedule()
    assert s.interval(status, 0) == 90.0
    expected = 90.0 if status is U else 900.0
    assert s.interval(status, 3) == expected

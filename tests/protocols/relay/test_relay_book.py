"""The relay's pure cores: reservation book, rate limiters, circuit budgets, keeper (tier 1).

No I/O and no trio: time is a number passed in.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flarelab.errors import LocalProtocolError
from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.protocols.relay import (
    CircuitBudget,
    KeeperState,
    Limit,
    Rate,
    RateLimiter,
    RelayLimits,
    ReservationBook,
    ReservationKeeper,
    Status,
)
from flarelab.protocols.relay.book import Accepted, CircuitOpened, Refused
from flarelab.protocols.relay.keeper import TRANSITIONS

PEERS = [PeerId.from_public_key(Ed25519PrivateKey.from_seed(bytes([i]) * 32).public_key)
         for i in range(40)]
NO_RATES = {"reservation_rate_per_peer": None, "reservation_rate_per_ip": None,
            "circuit_rate_per_peer": None, "circuit_rate_per_ip": None}


def book(**limits: object) -> ReservationBook:
    return ReservationBook(RelayLimits(**{**NO_RATES, **limits}))  # type: ignore[arg-type]


def reserve(b: ReservationBook, i: int, *, ip: str = "198.51.100.1", now: float = 0.0,
            conn: int | None = None, relayed: bool = False) -> Accepted | Refused:
    return b.reserve(PEERS[i], ip=ip, connection_id=conn if conn is not None else i,
                     relayed=relayed, now=now)


def test_defaults_are_go_s_and_rust_s() -> None:
    limits = RelayLimits()
    assert limits.reservation_ttl == 3600
    assert limits.max_reservations == 128
    assert limits.max_reservations_per_ip == 8
    assert limits.max_circuits == 16
    assert limits.max_circuits_per_peer == 4
    assert limits.circuit == Limit(duration=120, data=128 * 1024)
    assert limits.reservation_rate_per_peer == Rate(30, 120.0)
    assert limits.reservation_rate_per_ip == Rate(60, 60.0)


def test_reserve_renew_expire_and_die_with_the_connection() -> None:
    b = book(reservation_ttl=100.0)
    assert reserve(b, 1, now=0.0) == Accepted(expires_at=100.0, renewed=False)
    assert reserve(b, 1, now=50.0) == Accepted(expires_at=150.0, renewed=True)
    assert b.reservation(PEERS[1], 149.0) is not None
    assert b.reservation(PEERS[1], 150.0) is None
    assert b.expire(150.0) == [PEERS[1]]
    assert b.reservations() == []
    # a reservation belongs to its connection: another connection closing leaves it
    reserve(b, 2, conn=7, now=0.0)
    assert not b.connection_closed(PEERS[2], 8)
    assert b.connection_closed(PEERS[2], 7)
    assert b.reservation(PEERS[2], 1.0) is None


def test_relayed_and_addressless_reservations_are_refused() -> None:
    b = book()
    assert reserve(b, 1, relayed=True) == Refused(
        Status.PERMISSION_DENIED, "reservation over a relayed connection")
    refused = b.reserve(PEERS[1], ip=None, connection_id=1, relayed=False, now=0.0)
    assert isinstance(refused, Refused) and refused.status is Status.RESERVATION_REFUSED


def test_reservation_caps_total_and_per_ip() -> None:
    b = book(max_reservations=5, max_reservations_per_ip=2)
    assert isinstance(reserve(b, 0, ip="192.0.2.1"), Accepted)
    assert isinstance(reserve(b, 1, ip="192.0.2.1"), Accepted)
    third = reserve(b, 2, ip="192.0.2.1")
    assert third == Refused(Status.RESERVATION_REFUSED, "2 reservations from 192.0.2.1 already")
    assert isinstance(reserve(b, 1, ip="192.0.2.1", now=1.0), Accepted)  # a renewal still fits
    for i in range(3, 6):
        assert isinstance(reserve(b, i, ip=f"192.0.2.{i}"), Accepted)
    full = reserve(b, 6, ip="192.0.2.6")
    assert isinstance(full, Refused) and "maximum of 5" in full.reason
    assert isinstance(reserve(b, 3, ip="192.0.2.3", now=2.0), Accepted)  # renewals always fit
    b.expire(3601.0)
    assert isinstance(reserve(b, 6, ip="192.0.2.6", now=3601.0), Accepted)


def test_reservation_flood_from_one_peer_and_one_ip_is_rate_limited() -> None:
    b = ReservationBook(RelayLimits(reservation_rate_per_peer=Rate(3, 120.0),
                                    reservation_rate_per_ip=Rate(5, 60.0)))
    results = [reserve(b, 1, now=0.0) for _ in range(4)]
    assert [type(r) for r in results] == [Accepted] * 3 + [Refused]
    assert isinstance(results[3], Refused) and "rate limit" in results[3].reason
    assert isinstance(reserve(b, 1, now=120.0), Accepted)  # one token back after 2 min
    # the IP bucket (5, one more a minute): peer 1 took 3 at t=0 (its refusal took none)
    # and 1 at t=120 after 2 came back: 3 left for other peers behind the same IP
    ip_results = [reserve(b, i, now=120.0) for i in range(2, 6)]
    assert [type(r) for r in ip_results] == [Accepted, Accepted, Accepted, Refused]
    assert isinstance(ip_results[3], Refused) and "198.51.100.1" in ip_results[3].reason


def test_rate_limiter_refills_and_bounds_its_memory() -> None:
    limiter = RateLimiter(Rate(2, 10.0), max_keys=3)
    assert limiter.take("a", 0.0) and limiter.take("a", 0.0)
    assert not limiter.take("a", 5.0)
    assert limiter.take("a", 10.0)
    assert limiter.take("b", 0.0) and limiter.take("c", 0.0)
    assert len(limiter) == 3
    assert not limiter.take("d", 1.0)  # every key mid-burst: strangers wait too
    assert limiter.take("d", 30.0)  # refilled buckets are forgotten to make room
    assert len(limiter) <= 3
    with pytest.raises(LocalProtocolError):
        Rate(0, 1.0)


def test_circuits_need_a_reservation_and_fit_the_caps() -> None:
    b = book(max_circuits=5, max_circuits_per_peer=2)
    src, dst = PEERS[1], PEERS[2]
    assert b.open_circuit(src, dst, ip="192.0.2.9", relayed=False, now=0.0) == Refused(
        Status.NO_RESERVATION, f"{dst} holds no reservation here")
    reserve(b, 2)
    assert b.open_circuit(src, dst, ip="192.0.2.9", relayed=True, now=0.0) == Refused(
        Status.PERMISSION_DENIED, "CONNECT over a relayed connection")
    assert b.open_circuit(dst, dst, ip="192.0.2.9", relayed=False, now=0.0) == Refused(
        Status.PERMISSION_DENIED, "a peer cannot connect to itself")
    first = b.open_circuit(src, dst, ip="192.0.2.9", relayed=False, now=0.0)
    second = b.open_circuit(src, dst, ip="192.0.2.9", relayed=False, now=0.0)
    assert isinstance(first, CircuitOpened) and isinstance(second, CircuitOpened)
    assert b.circuits_of(dst) == 2
    third = b.open_circuit(PEERS[3], dst, ip="192.0.2.9", relayed=False, now=0.0)
    assert isinstance(third, Refused) and third.status is Status.RESOURCE_LIMIT_EXCEEDED
    assert "target" in third.reason
    b.close_circuit(first.circuit_id)
    assert isinstance(b.open_circuit(PEERS[3], dst, ip="1.1.1.1", relayed=False, now=0.0),
                      CircuitOpened)
    for i in range(4, 8):
        reserve(b, i)
    opened = [b.open_circuit(PEERS[0], PEERS[i], ip="1.1.1.2", relayed=False, now=0.0)
              for i in (4, 5, 6)]
    assert [type(o) for o in opened] == [CircuitOpened, CircuitOpened, Refused]  # per source
    assert isinstance(b.open_circuit(PEERS[9], PEERS[7], ip="1.1.1.4", relayed=False, now=0.0),
                      CircuitOpened)
    total = b.open_circuit(PEERS[8], PEERS[7], ip="1.1.1.3", relayed=False, now=0.0)
    assert isinstance(total, Refused) and "maximum of 5 circuits" in total.reason
    assert b.num_circuits == 5


def test_circuit_rate_per_source() -> None:
    b = ReservationBook(RelayLimits(circuit_rate_per_peer=Rate(2, 120.0), max_circuits=99,
                                    max_circuits_per_peer=99))
    reserve(b, 2)
    got = [b.open_circuit(PEERS[1], PEERS[2], ip="192.0.2.1", relayed=False, now=0.0)
           for _ in range(3)]
    assert [type(g) for g in got] == [CircuitOpened, CircuitOpened, Refused]
    assert isinstance(got[2], Refused) and got[2].status is Status.RESOURCE_LIMIT_EXCEEDED


def test_circuit_budget_counts_each_direction_and_time() -> None:
    budget = CircuitBudget(Limit(duration=120, data=100), opened_at=10.0)
    assert budget.deadline == 130.0
    assert budget.take("src->dst", 60) == 60
    assert budget.take("dst->src", 100) == 100  # exactly the limit passes
    assert budget.limit_hit is None
    assert budget.take("src->dst", 60) == 40  # the rest is cut: the limit is hit
    assert budget.limit_hit == "data"
    assert budget.relayed == {"src->dst": 100, "dst->src": 100}
    timed = CircuitBudget(Limit(duration=5), opened_at=0.0)
    assert timed.take("src->dst", 10**9) == 10**9
    assert not timed.expired(4.9) and timed.expired(5.0) and timed.limit_hit == "duration"
    assert CircuitBudget(Limit(), 0.0).deadline is None
    with pytest.raises(LocalProtocolError):
        budget.take("sideways", 1)


@given(st.lists(st.tuples(st.sampled_from(CircuitBudget.DIRECTIONS), st.integers(0, 5000)),
                max_size=30), st.integers(1, 20000))
def test_budget_never_lets_more_than_the_limit_through(
    chunks: list[tuple[str, int]], data: int
) -> None:
    budget = CircuitBudget(Limit(data=data), 0.0)
    passed = dict.fromkeys(CircuitBudget.DIRECTIONS, 0)
    for direction, n in chunks:
        passed[direction] += budget.take(direction, n)
    assert all(v <= data for v in passed.values())
    assert passed == budget.relayed
    over = any(sum(n for d, n in chunks if d == direction) > data
               for direction in CircuitBudget.DIRECTIONS)
    assert (budget.limit_hit == "data") == over


# ---------------------------------------------------------------------- the keeper
def test_keeper_reserves_refreshes_at_three_quarters_and_retries_with_backoff() -> None:
    k = ReservationKeeper(backoff_initial=1.0, backoff_max=8.0)
    assert k.state is KeeperState.IDLE and k.due(0.0)
    k.attempt(0.0)
    assert k.next_wakeup() is None  # nothing to wake for while the RESERVE is in flight
    assert k.granted(0.0, 3600.0) == 2700.0
    assert k.state is KeeperState.ACTIVE and k.advertised(100.0)
    assert k.next_wakeup() == 2700.0 and not k.due(2699.0) and k.due(2700.0)
    k.attempt(2700.0)
    assert k.state is KeeperState.REFRESHING
    # refreshes fail: the old reservation stays advertised, retries back off (1, 2, 4, 8, 8)
    retries = []
    now = 2700.0
    for _ in range(5):
        now = k.failed(now)
        retries.append(now)
        assert k.state is KeeperState.ACTIVE and k.advertised(now)
        k.attempt(now)
    assert retries == [2701.0, 2703.0, 2707.0, 2715.0, 2723.0]
    k.granted(now, 3600.0)
    assert k.failures == 0 and k.expires_at == now + 3600.0


def test_keeper_last_refresh_try_comes_before_the_reservation_lapses() -> None:
    k = ReservationKeeper(backoff_initial=1.0, backoff_max=60.0)
    k.attempt(0.0)
    k.granted(0.0, 100.0)
    k.attempt(75.0)
    now = 75.0
    times = []
    while k.state is not KeeperState.BACKOFF:
        now = k.failed(now)
        times.append(now)
        if k.lapsed(now):
            break
        k.attempt(now)
    assert max(t for t in times) <= 100.0
    assert not k.advertised(100.0)


def test_keeper_lapses_and_loses_the_connection() -> None:
    k = ReservationKeeper()
    k.attempt(0.0)
    k.granted(0.0, 100.0)
    assert not k.lapsed(99.0) and k.lapsed(100.0)
    assert k.state is KeeperState.BACKOFF and not k.advertised(100.0)
    k.attempt(100.0)
    k.granted(100.0, 100.0)
    k.lost(120.0)  # the relay connection closed: gone now, retry now
    assert k.state is KeeperState.BACKOFF and not k.advertised(120.0)
    assert k.due(120.0) and k.next_wakeup() == 120.0
    k.attempt(120.0)
    assert k.failed(120.0) == 121.0
    k.close()
    assert k.state is KeeperState.CLOSED and not k.due(1e9) and k.next_wakeup() is None


def test_keeper_misuse_is_refused() -> None:
    k = ReservationKeeper()
    with pytest.raises(LocalProtocolError, match="'granted' in state idle"):
        k.granted(0.0, 10.0)
    with pytest.raises(LocalProtocolError):
        ReservationKeeper(refresh_fraction=1.0)
    k.attempt(0.0)
    with pytest.raises(LocalProtocolError, match="positive lifetime"):
        k.granted(0.0, 0.0)


def test_transition_table_covers_every_state() -> None:
    states = {state for state, _ in TRANSITIONS}
    assert states == set(KeeperState)
    assert all(TRANSITIONS[(s, "close")] is KeeperState.CLOSED for s in KeeperState)

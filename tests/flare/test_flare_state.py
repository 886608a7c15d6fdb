"""The Flare state machine without I/O (tier 1): reachability in, commands and phases out."""

from __future__ import annotations

import pytest

from flarelab.errors import LocalProtocolError
from flarelab.flare import FlareConfig
from flarelab.flare.state import (
    Discover,
    FlareCore,
    FlarePhase,
    Release,
    Reserve,
    ServeRelay,
    Source,
)
from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.multiaddr import Multiaddr
from flarelab.protocols.autonat import Reachability

U, P, X = Reachability.UNKNOWN, Reachability.PUBLIC, Reachability.PRIVATE


def peer(n: int) -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.from_seed(bytes([n]) * 32).public_key)


R1, R2, R3, R4 = peer(1), peer(2), peer(3), peer(4)
ADDR = Multiaddr("/ip4/198.51.100.1/tcp/4001")


def circuit(relay: PeerId) -> Multiaddr:
    return Multiaddr(f"/ip4/198.51.100.1/tcp/4001/p2p/{relay}/p2p-circuit")


def test_private_reserves_on_the_best_candidates_up_to_max_relays() -> None:
    core = FlareCore(max_relays=2)
    assert core.phase is FlarePhase.IDLE
    assert core.add_candidate(R3, None, Source.DISCOVERED, 0.0) == []  # not started yet
    assert core.add_candidate(R2, None, Source.IDENTIFIED, 0.0) == []
    assert core.add_candidate(R1, ADDR, Source.CONFIGURED, 0.0) == []
    assert core.start(0.0) == []
    assert core.phase is FlarePhase.PROBING
    # configured first, then identified; the discovered one waits
    assert core.set_reachability(X, 1.0) == [Reserve(R1, ADDR), Reserve(R2, None)]
    assert core.phase is FlarePhase.RESERVING
    assert core.state.reserving == (R1, R2)
    assert core.reserved(R1, [circuit(R1)], 2.0) == []
    state = core.state
    assert (state.phase, state.relays, state.circuit_addrs, state.reserving) == (
        FlarePhase.RESERVED, (R1,), (circuit(R1),), (R2,))
    assert core.reserved(R2, [circuit(R2)], 2.0) == []
    assert core.state.relays == (R1, R2)
    assert core.tick(100.0) == []  # enough relays: nothing to do
    assert core.next_wakeup() is None


def test_a_refused_relay_backs_off_and_the_next_candidate_takes_its_place() -> None:
    core = FlareCore(max_relays=1, backoff=10.0, backoff_max=25.0)
    for i, r in enumerate((R1, R2)):
        core.add_candidate(r, None, Source.IDENTIFIED, float(i))
    core.start(0.0)
    assert core.set_reachability(X, 0.0) == [Reserve(R1, None)]
    assert core.reserve_failed(R1, "RESERVATION_REFUSED", 1.0) == [Reserve(R2, None)]
    assert core.candidates[R1].reason == "RESERVATION_REFUSED"
    assert core.reserve_failed(R2, "unreachable", 2.0) == []
    assert core.phase is FlarePhase.PRIVATE
    assert core.next_wakeup() == 11.0  # R1's backoff ends first
    assert core.tick(10.9) == []
    assert core.tick(11.0) == [Reserve(R1, None)]
    # the backoff doubles per failure, up to the maximum
    core.reserve_failed(R1, "again", 11.0)
    assert core.candidates[R1].retry_at == 31.0
    core.tick(31.0)
    core.reserve_failed(R1, "and again", 31.0)
    assert core.candidates[R1].retry_at == 56.0


def test_a_lost_reservation_is_released_and_replaced() -> None:
    core = FlareCore(max_relays=1, backoff=30.0)
    core.add_candidate(R1, ADDR, Source.CONFIGURED, 0.0)
    core.add_candidate(R2, None, Source.IDENTIFIED, 0.0)
    core.start(0.0, X)
    core.reserved(R1, [circuit(R1)], 1.0)
    assert core.reservation_lost(R1, "connection closed", 5.0) == [
        Release(R1), Reserve(R2, None)]
    assert core.phase is FlarePhase.RESERVING
    assert core.reservation_lost(R1, "twice", 5.0) == []  # not held any more
    core.reserved(R2, [circuit(R2)], 6.0)
    assert core.state.relays == (R2,)
    assert core.candidates[R1].retry_at == 35.0


def test_public_releases_reservations_and_serves_as_a_relay() -> None:
    core = FlareCore(max_relays=2, relay_service=True)
    core.add_candidate(R1, None, Source.IDENTIFIED, 0.0)
    core.add_candidate(R2, None, Source.IDENTIFIED, 0.0)
    core.start(0.0, X)
    core.reserved(R1, [circuit(R1)], 1.0)
    assert core.set_reachability(P, 2.0) == [Release(R1), Release(R2), ServeRelay(True)]
    state = core.state
    assert (state.phase, state.relays, state.reserving, state.relay_service) == (
        FlarePhase.PUBLIC, (), (), True)
    # a late grant of the released RESERVE is released again
    assert core.reserved(R2, [circuit(R2)], 2.5) == [Release(R2)]
    # unknown changes nothing; private again stops the relay service and reserves
    assert core.set_reachability(U, 3.0) == [ServeRelay(False)]
    assert core.phase is FlarePhase.PROBING
    assert core.set_reachability(X, 4.0) == [Reserve(R1, None), Reserve(R2, None)]
    assert core.stop() == [Release(R1), Release(R2)]
    assert core.phase is FlarePhase.STOPPED


def test_unknown_after_private_keeps_reservations_and_public_may_keep_them() -> None:
    core = FlareCore(max_relays=1, keep_when_public=True)
    core.add_candidate(R1, None, Source.IDENTIFIED, 0.0)
    core.start(0.0, X)
    core.reserved(R1, [circuit(R1)], 1.0)
    assert core.set_reachability(U, 2.0) == []
    assert core.phase is FlarePhase.RESERVED
    assert core.set_reachability(P, 3.0) == []
    assert (core.phase, core.state.relays) == (FlarePhase.PUBLIC, (R1,))


def test_upgrading_shows_over_the_reservation() -> None:
    core = FlareCore()
    core.add_candidate(R1, None, Source.IDENTIFIED, 0.0)
    core.start(0.0, X)
    core.reserved(R1, [circuit(R1)], 1.0)
    core.upgrade_started(R4)
    assert (core.phase, core.state.upgrading) == (FlarePhase.UPGRADING, (R4,))
    core.upgrade_ended(R4)
    assert core.phase is FlarePhase.RESERVED


def test_discovery_is_asked_when_candidates_are_too_few_and_not_too_often() -> None:
    core = FlareCore(max_relays=2, can_discover=True, discover_interval=60.0)
    core.add_candidate(R1, None, Source.CONFIGURED, 0.0)
    core.start(0.0)
    assert core.set_reachability(X, 0.0) == [Reserve(R1, None), Discover()]
    assert core.tick(30.0) == []
    assert core.next_wakeup() == 60.0
    assert core.tick(60.0) == [Discover()]
    assert core.add_candidate(R3, None, Source.DISCOVERED, 61.0) == [Reserve(R3, None)]


def test_candidates_are_bounded_and_better_sources_win() -> None:
    core = FlareCore(max_relays=0, max_candidates=2)
    core.add_candidate(R1, None, Source.DISCOVERED, 0.0)
    core.add_candidate(R2, None, Source.DISCOVERED, 0.0)
    core.add_candidate(R3, None, Source.DISCOVERED, 0.0)  # no room, not better
    assert set(core.candidates) == {R1, R2}
    core.add_candidate(R3, ADDR, Source.CONFIGURED, 0.0)  # better: replaces the worst
    assert set(core.candidates) == {R1, R3}
    core.add_candidate(R1, ADDR, Source.IDENTIFIED, 0.0)  # known: the source improves
    assert (core.candidates[R1].source, core.candidates[R1].addr) == (Source.IDENTIFIED, ADDR)
    assert core.remove_candidate(R1, 0.0) == []
    assert set(core.candidates) == {R3}


def test_bad_configs_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        FlareCore(max_relays=-1)
    with pytest.raises(LocalProtocolError):
        FlareConfig(relay_backoff=0)
    with pytest.raises(LocalProtocolError):
        FlareConfig(max_candidates=0)
    core = FlareCore()
    core.stop()
    with pytest.raises(LocalProtocolError):
        core.start(0.0)


def test_state_describes_itself() -> None:
    core = FlareCore(relay_service=True)
    core.add_candidate(R1, None, Source.IDENTIFIED, 0.0)
    core.start(0.0, X)
    core.reserved(R1, [circuit(R1)], 1.0)
    assert core.state.describe() == f"reserved (reachability private); reserved on {R1.short()}"

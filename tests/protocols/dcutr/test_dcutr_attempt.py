"""The pure DCUtR upgrade machine (tier 1): commands, timing, attempts and outcomes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flarelab.errors import LocalProtocolError
from flarelab.multiaddr import Multiaddr
from flarelab.protocols.dcutr.attempt import (
    TRANSITIONS,
    Command,
    ConnectReceived,
    ConnectSent,
    DialDirect,
    DialTime,
    DirectConnectionSeen,
    ExchangeFailed,
    Finish,
    HolePunchUpgrade,
    OpenRound,
    Outcome,
    Phase,
    Punch,
    PunchFinished,
    ReversalFinished,
    SendSync,
    Start,
    SyncSent,
    Wait,
)
from flarelab.tracing import spans

OURS = (Multiaddr("/ip4/203.0.113.2/tcp/4001"),)
THEIRS = (Multiaddr("/ip4/203.0.113.1/tcp/4001"),)


def test_outcomes_are_the_span_values() -> None:
    assert {o.value for o in Outcome} == {
        v for k, v in vars(spans).items() if k.startswith("OUTCOME_")}
    assert {o for o in Outcome if o.direct} == {
        Outcome.SUCCESS, Outcome.DIRECT_DIAL, Outcome.CONNECTION_REVERSED}


def test_every_phase_has_a_row() -> None:
    assert set(TRANSITIONS) == set(Phase)
    assert TRANSITIONS[Phase.DONE] == frozenset()


def _exchange(m: HolePunchUpgrade, t: float, rtt: float = 0.08) -> list[Command]:
    assert m.handle(ConnectSent(), t) == []
    return m.handle(ConnectReceived(THEIRS, THEIRS), t + rtt)


def test_a_first_attempt_that_succeeds() -> None:
    m = HolePunchUpgrade()
    assert m.handle(Start(OURS), 1.0) == [OpenRound(1, OURS, 11.0)]
    assert m.phase is Phase.CONNECTING
    assert _exchange(m, 1.0) == [SendSync(1, pytest.approx(0.08))]  # type: ignore[list-item]
    (wait,) = m.handle(SyncSent(), 1.1)
    assert isinstance(wait, Wait) and wait.until == pytest.approx(1.14)  # RTT/2 after SYNC
    with pytest.raises(LocalProtocolError, match="early"):
        m.handle(DialTime(), 1.13)
    assert m.handle(DialTime(), 1.14) == [Punch(1, THEIRS, 6.14)]
    assert m.handle(PunchFinished(True, address=THEIRS[0], transport="tcp"), 1.2) == [
        Finish(Outcome.SUCCESS, "", 1)]
    assert (m.done, m.outcome, m.reason, m.address, m.transport) == (
        True, Outcome.SUCCESS, "", THEIRS[0], "tcp")
    (record,) = m.attempts
    assert record.rtt == pytest.approx(0.08) and record.rtt_ms == pytest.approx(80.0)
    assert (record.outcome, record.their_addrs, record.dial_addrs) == (
        Outcome.SUCCESS, THEIRS, THEIRS)


def test_three_failed_punches_then_give_up() -> None:
    m = HolePunchUpgrade()
    m.handle(Start(OURS), 0.0)
    now = 0.0
    for attempt in (1, 2, 3):
        _exchange(m, now)
        m.handle(SyncSent(), now + 0.08)
        m.handle(DialTime(), now + 0.12)
        timed_out = attempt != 2
        commands = m.handle(PunchFinished(False, "" if timed_out else "every dial failed: x",
                                          timed_out=timed_out), now + 5.12)
        now += 5.12
        if attempt < 3:
            assert commands == [OpenRound(attempt + 1, OURS, now + 10.0)]
    assert commands == [Finish(Outcome.FAILED, m.reason, 3)]
    assert m.reason == ("no direct connection after 3 attempts; attempt 3: no direct "
                        "connection within 5 s")
    assert [a.outcome for a in m.attempts] == [Outcome.TIMEOUT, Outcome.FAILED, Outcome.TIMEOUT]


def test_one_attempt_only() -> None:
    m = HolePunchUpgrade(max_attempts=1)
    m.handle(Start(OURS), 0.0)
    _exchange(m, 0.0)
    m.handle(SyncSent(), 0.1)
    m.handle(DialTime(), 0.2)
    assert m.handle(PunchFinished(False, "every dial failed: refused"), 0.3) == [
        Finish(Outcome.FAILED, "no direct connection after 1 attempt; attempt 1: every dial "
               "failed: refused", 1)]
    with pytest.raises(LocalProtocolError):
        HolePunchUpgrade(max_attempts=0)


def test_connection_reversal() -> None:
    m = HolePunchUpgrade(reversal_timeout=5.0)
    assert m.handle(Start(OURS, reversal_addrs=THEIRS), 0.0) == [DialDirect(THEIRS, 5.0)]
    assert m.handle(ReversalFinished(True, address=THEIRS[0], transport="tcp"), 0.1) == [
        Finish(Outcome.DIRECT_DIAL, "", 0)]
    # a failed reversal goes on with the punch
    m = HolePunchUpgrade()
    m.handle(Start(OURS, reversal_addrs=THEIRS), 0.0)
    assert m.handle(ReversalFinished(False, "timed out"), 5.0) == [OpenRound(1, OURS, 15.0)]
    assert m.reversal_reason == "timed out"


def test_nothing_to_offer_or_nobody_to_talk_to() -> None:
    m = HolePunchUpgrade()
    assert m.handle(Start((), our_addrs_reason="no public address"), 0.0) == [
        Finish(Outcome.NO_SUITABLE_ADDRESS, "no public address", 0)]
    m = HolePunchUpgrade()
    m.handle(Start((), reversal_addrs=THEIRS), 0.0)
    (finish,) = m.handle(ReversalFinished(False, "refused"), 0.1)
    assert finish == Finish(
        Outcome.NO_SUITABLE_ADDRESS, "we have no public address to offer (and the direct dial "
        "to A failed: refused)", 0)
    m = HolePunchUpgrade()
    assert m.handle(Start(OURS, speaks_dcutr=False), 0.0) == [
        Finish(Outcome.FAILED, "A does not speak /libp2p/dcutr", 0)]
    # A offers nothing we can use: no SYNC, no retry
    m = HolePunchUpgrade()
    m.handle(Start(OURS), 0.0)
    m.handle(ConnectSent(), 0.0)
    assert m.handle(ConnectReceived(THEIRS, (), "A offered 1 address, none usable"), 0.1) == [
        Finish(Outcome.NO_SUITABLE_ADDRESS, "A offered 1 address, none usable", 1)]
    assert m.attempts[0].outcome is Outcome.NO_SUITABLE_ADDRESS


@pytest.mark.parametrize("outcome", [Outcome.TIMEOUT, Outcome.PROTOCOL_ERROR, Outcome.FAILED])
def test_a_broken_exchange_ends_the_upgrade(outcome: Outcome) -> None:
    m = HolePunchUpgrade()
    m.handle(Start(OURS), 0.0)
    assert m.handle(ExchangeFailed(outcome, "why"), 10.0) == [Finish(outcome, "why", 1)]
    m = HolePunchUpgrade()
    m.handle(Start(OURS), 0.0)
    _exchange(m, 0.0)
    assert m.handle(ExchangeFailed(outcome, "SYNC"), 0.2) == [Finish(outcome, "SYNC", 1)]
    m2 = HolePunchUpgrade()
    m2.handle(Start(OURS), 0.0)
    with pytest.raises(LocalProtocolError, match="cannot fail with outcome"):
        m2.handle(ExchangeFailed(Outcome.SUCCESS, ""), 1.0)


@pytest.mark.parametrize(("steps", "inbound", "outcome"), [
    (0, True, Outcome.CONNECTION_REVERSED),  # while reversing: A dialled us
    (1, True, Outcome.CONNECTION_REVERSED),  # before our SYNC
    (1, False, Outcome.DIRECT_DIAL),  # an outbound one we did not make here
    (2, True, Outcome.SUCCESS),  # after SYNC: A's dial on our SYNC got through first
    (3, False, Outcome.SUCCESS),  # while punching
])
def test_a_direct_connection_that_appears_ends_it(steps: int, inbound: bool,
                                                  outcome: Outcome) -> None:
    m = HolePunchUpgrade()
    m.handle(Start(OURS, reversal_addrs=THEIRS if steps == 0 else ()), 0.0)
    if steps >= 2:
        _exchange(m, 0.0)
    if steps >= 3:
        m.handle(SyncSent(), 0.1)
        m.handle(DialTime(), 0.2)
    (finish,) = m.handle(DirectConnectionSeen(inbound, THEIRS[0], "tcp"), 0.3)
    assert isinstance(finish, Finish) and finish.outcome is outcome and finish.reason == ""
    assert m.address == THEIRS[0]


def test_a_direct_connection_before_we_start() -> None:
    m = HolePunchUpgrade()
    assert m.handle(Start(OURS, direct=False), 0.0) == [
        Finish(Outcome.DIRECT_DIAL, "a direct connection existed already", 0)]
    m = HolePunchUpgrade()
    assert m.handle(Start(OURS, direct=True), 0.0) == [
        Finish(Outcome.CONNECTION_REVERSED, "", 0)]


def test_misuse_is_the_drivers_fault() -> None:
    m = HolePunchUpgrade()
    with pytest.raises(LocalProtocolError, match="phase 'idle' cannot take DialTime"):
        m.handle(DialTime(), 0.0)
    m.handle(Start(OURS), 0.0)
    with pytest.raises(LocalProtocolError, match="before ours was reported sent"):
        m.handle(ConnectReceived(THEIRS, THEIRS), 0.1)
    m.handle(ConnectSent(), 0.0)
    with pytest.raises(LocalProtocolError, match="reported twice"):
        m.handle(ConnectSent(), 0.0)
    m.handle(ConnectReceived(THEIRS, THEIRS), 0.1)
    with pytest.raises(LocalProtocolError, match="before SYNC was reported sent"):
        m.handle(DialTime(), 0.2)
    m.handle(SyncSent(), 0.1)
    with pytest.raises(LocalProtocolError, match="reported twice"):
        m.handle(SyncSent(), 0.1)
    m.handle(DialTime(), 0.2)
    m.handle(PunchFinished(True), 0.3)
    with pytest.raises(LocalProtocolError, match="phase 'done'"):
        m.handle(DirectConnectionSeen(), 0.4)


# ---------------------------------------------------------------- a random driver
@st.composite
def runs(draw: st.DrawFn) -> tuple[HolePunchUpgrade, list[tuple[str, Command | None]]]:
    """Drive a machine with random (but valid) results; return it and its history."""
    m = HolePunchUpgrade(max_attempts=draw(st.integers(1, 4)))
    now = draw(st.floats(0, 1e6))
    history: list[tuple[str, Command | None]] = []
    commands = m.handle(Start(
        OURS if draw(st.booleans()) else (),
        reversal_addrs=THEIRS if draw(st.booleans()) else (),
        speaks_dcutr=draw(st.sampled_from([None, True, False]))), now)
    while commands:
        command = commands.pop(0)
        history.append(("command", command))
        now += draw(st.floats(0, 10))
        if isinstance(command, Finish):
            assert not commands
            break
        if draw(st.integers(0, 15)) == 0:  # a direct connection appears by itself
            commands = m.handle(DirectConnectionSeen(draw(st.booleans())), now)
            continue
        if isinstance(command, DialDirect):
            commands = m.handle(ReversalFinished(draw(st.booleans()), "r"), now)
        elif isinstance(command, OpenRound):
            if draw(st.integers(0, 6)) == 0:
                commands = m.handle(ExchangeFailed(draw(st.sampled_from(
                    [Outcome.TIMEOUT, Outcome.PROTOCOL_ERROR, Outcome.FAILED])), "x"), now)
                continue
            m.handle(ConnectSent(), now)
            usable = THEIRS if draw(st.integers(0, 5)) else ()
            commands = m.handle(ConnectReceived(THEIRS, usable, "none"),
                                now + draw(st.floats(0, 3)))
        elif isinstance(command, SendSync):
            commands = m.handle(SyncSent(), now)
        elif isinstance(command, Wait):
            commands = m.handle(DialTime(), max(now, command.until))
        elif isinstance(command, Punch):
            ok = draw(st.integers(0, 3)) == 0
            commands = m.handle(PunchFinished(ok, "", timed_out=draw(st.booleans())), now)
    return m, history


@given(runs())
def test_every_run_ends_once_with_a_taxonomy_outcome(
    run: tuple[HolePunchUpgrade, list[tuple[str, Command | None]]],
) -> None:
    m, history = run
    finishes = [c for _, c in history if isinstance(c, Finish)]
    assert len(finishes) == 1 and history[-1][1] is finishes[0]
    finish = finishes[0]
    assert m.done and m.outcome is finish.outcome and m.reason == finish.reason
    assert finish.attempts == len(m.attempts) <= m.max_attempts
    assert finish.outcome.direct or finish.reason  # every failure says why
    assert [a.number for a in m.attempts] == list(range(1, len(m.attempts) + 1))
    for record in m.attempts:
        if record.rtt is not None:
            assert record.rtt >= 0
        if record.dial_at is not None:
            assert record.sync_sent_at is not None and record.rtt is not None
            assert record.dial_at == record.sync_sent_at + record.rtt / 2
    if finish.outcome is Outcome.FAILED and m.attempts and m.attempts[-1].rtt is not None:
        assert len(m.attempts) == m.max_attempts or m.attempts[-1].outcome is not None

"""The Flare scenario across NAT pairs on simnet, checked against RFC 4787 theory.

Every trial runs the whole flow (AutoNAT, reservation, relayed dial, DCUtR) on
``Topology.standard(nat_a, nat_b, latency=10 ms)``; whether A and B end up directly
connected must be what :func:`flarelab.simnet.theory.predict` says for DCUtR's timing
(``sync``: the punches cross in the internet). With 10 ms links the answering router's
RST comes too late to spoil the punch, so it succeeds here (the sub-millisecond kernel lab
is where it fails). Failures carry the outcome and reason B's ``dcutr.upgrade`` span shows.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from flarelab.flare import FlareTrial, run_flare_matrix_simnet, run_flare_simnet, summarize
from flarelab.lab import Topology
from flarelab.lab.nat_kinds import simnet_behavior
from flarelab.simnet.theory import predict
from flarelab.tracing import spans
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.clock import TrioClock
from flarelab.tracing.provider import TracingConfig

NO_ADDRESS = ("we have no public address to offer: our listen addresses are private and no "
              "observed address of ours is confirmed yet")


def predicted(trial: FlareTrial) -> bool:
    nat_a = simnet_behavior(trial.nat_a) if trial.nat_a else None
    nat_b = simnet_behavior(trial.nat_b) if trial.nat_b else None
    return predict(nat_a, nat_b, transport="udp" if trial.transport == "quic" else "tcp",
                   order="sync").success


@pytest.mark.parametrize(("nat_a", "nat_b", "transport", "outcome", "reason"), [
    ("home_router", "home_router", "tcp", "success", ""),
    ("home_router", "home_router", "quic", "success", ""),
    ("answering_router", "answering_router", "tcp", "success", ""),
    ("symmetric", "symmetric", "tcp", "no_suitable_address", NO_ADDRESS),
    ("symmetric", "home_router", "quic", "no_suitable_address", "A offered no address at all"),
    (None, "home_router", "tcp", "direct_dial", ""),
])
async def test_nat_pairs(nat_a: str | None, nat_b: str, transport: str, outcome: str,
                         reason: str, autojump_clock: trio.testing.MockClock) -> None:
    bus = SpanBus()
    (trial,) = await run_flare_simnet(
        Topology.standard(nat_a, nat_b, latency=0.01), transport=transport,  # type: ignore[arg-type]
        tracing=TracingConfig(bus=bus, clock=TrioClock(epoch_ns=0)))
    assert (trial.outcome, trial.reason) == (outcome, reason)
    assert trial.direct == (outcome in ("success", "direct_dial"))
    if nat_a is not None:  # a punch (not a connection reversal): theory predicts it
        assert trial.direct == predicted(trial)
    assert trial.reachability_b == "private"
    assert trial.reachability_a == ("public" if nat_a is None else "private")
    assert set(trial.phases) == {"autonat", "reserve", "relayed_dial", "upgrade"}
    if trial.direct:
        assert trial.elapsed is not None and 0 < trial.elapsed < 1.0
        assert trial.address is not None
    # the outcome and reason are what B's trace says
    (upgrade,) = [r for r in bus.history() if r.ended and r.node_label == "b"
                  and r.name == spans.DCUTR_UPGRADE]
    assert upgrade.attributes[spans.LIBP2P_OUTCOME] == outcome
    assert upgrade.attributes.get(spans.LIBP2P_REASON, "") == reason


async def test_a_public_b_needs_no_relay(autojump_clock: trio.testing.MockClock) -> None:
    (trial,) = await run_flare_simnet(Topology.standard("home_router", None, latency=0.01))
    assert (trial.outcome, trial.direct, trial.reachability_b) == ("not_started", True,
                                                                   "public")
    assert trial.reason.startswith("B is public")


async def test_trials_repeat_with_fresh_nodes(autojump_clock: trio.testing.MockClock) -> None:
    trials = await run_flare_simnet(Topology.standard(latency=0.01), transport="quic",
                                    trials=3, seed=5)
    assert [t.trial for t in trials] == [0, 1, 2]
    summary = summarize(trials)
    assert (summary.total, summary.direct, dict(summary.attempts)) == (3, 3, {1: 3})
    assert summary.median is not None and summary.median < 0.5


@pytest.mark.slow
async def test_the_whole_matrix_matches_theory(autojump_clock: trio.testing.MockClock) -> None:
    trials = await run_flare_matrix_simnet()
    assert len(trials) == 32
    for trial in trials:
        if trial.nat_b is None:  # a public B needs neither relay nor punch
            assert (trial.outcome, trial.direct) == ("not_started", True), trial.describe()
        elif trial.nat_a is None:  # B reaches a public A by connection reversal
            assert (trial.outcome, trial.attempts) == ("direct_dial", 0), trial.describe()
        else:  # a hole punch: the theory has a prediction
            assert trial.direct == predicted(trial), trial.describe()
        if not trial.direct:
            assert trial.outcome in ("no_suitable_address", "failed"), trial.describe()
            assert trial.reason

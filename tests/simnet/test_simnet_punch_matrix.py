"""The hole-punching theory matrix: every pair of NAT kinds, UDP and TCP, three orderings.

For each case the simulated punch (flarelab.simnet.punch: real packets through the NAT
models, a real TCP) must agree with what RFC 4787 predicts (flarelab.simnet.theory: rules
only, no simulation). The rows the issue names are also asserted on their own, and the
DCUtR timing cases reproduce what the real lab measured (DESIGN.md, "Real NAT lab").
Every run is on MockClock; the whole matrix takes a few seconds.
"""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from flarelab.simnet import PRESETS, NatBehavior, Network
from flarelab.simnet.punch import DcutrTiming, PunchResult, observer, tcp_punch, udp_punch
from flarelab.simnet.theory import predict

KINDS: list[str | None] = [None, *PRESETS]  # None: a public host, no NAT
ORDERS = ("sync", "a_first", "b_first")


def _nat(kind: str | None) -> NatBehavior | None:
    return PRESETS[kind] if kind else None


async def punch(kind_a: str | None, kind_b: str | None, transport: str, order: str = "sync",
                *, dcutr_delay: float | None = None) -> PunchResult:
    """Build S, A behind ``kind_a``, B behind ``kind_b`` (and a relay) and punch."""
    async with Network(seed=5) as net:
        server, relay = net.add_host("S"), net.add_host("relay")
        a = net.add_router("NAT A", kind_a).add_host("A") if kind_a else net.add_host("A")
        b = net.add_router("NAT B", kind_b).add_host("B") if kind_b else net.add_host("B")
        timing = (None if dcutr_delay is None
                  else DcutrTiming(relay, a, b, a_answer_delay=dcutr_delay))
        async with observer(server) as observe:
            run = udp_punch if transport == "udp" else tcp_punch
            # B's head start (100 ms) outlasts A's packet's trip to NAT B (20.5 ms)
            return await run(a, b, observe, order=order, timing=timing)  # type: ignore[arg-type]


def _name(kind: str | None) -> str:
    return kind or "public"


@pytest.mark.parametrize(
    ("kind_a", "kind_b"), list(itertools.product(KINDS, KINDS)),
    ids=[f"{_name(a)}-{_name(b)}" for a, b in itertools.product(KINDS, KINDS)],
)
async def test_simulation_agrees_with_rfc_4787(
    kind_a: str | None, kind_b: str | None, autojump_clock: trio.testing.MockClock
) -> None:
    disagreements = []
    for transport, order in itertools.product(("udp", "tcp"), ORDERS):
        theory = predict(_nat(kind_a), _nat(kind_b), transport=transport,  # type: ignore[arg-type]
                         order=order)  # type: ignore[arg-type]
        result = await punch(kind_a, kind_b, transport, order)
        if result.success != theory.success:
            disagreements.append((transport, order, result.success, result.notes,
                                  theory.reason))
    assert not disagreements


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_the_rows_the_issue_names(transport: str,
                                        autojump_clock: trio.testing.MockClock) -> None:
    # symmetric on both sides fails, whatever the timing
    for order in ORDERS:
        assert not (await punch("symmetric", "symmetric", transport, order)).success
    # port-restricted cones on both sides succeed when synchronised
    result = await punch("port_restricted_cone", "port_restricted_cone", transport, "sync")
    assert result.success and result.elapsed is not None and result.elapsed < 0.2
    # answering routers fail when the other side's packet arrives first ...
    for order in ("a_first", "b_first"):
        assert not (await punch("answering_router", "answering_router", transport,
                                order)).success
    # ... and succeed when the packets cross in the internet
    assert (await punch("answering_router", "answering_router", transport, "sync")).success


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_dcutr_timing_home_routers_succeed_answering_routers_fail_when_late(
    transport: str, autojump_clock: trio.testing.MockClock
) -> None:
    """What the real lab measured, reproduced with DCUtR's CONNECT / RTT / SYNC timing.

    With A answering CONNECT at once, both dial together and even answering routers get
    through; when A takes 100 ms to answer, B waits RTT/2 longer than it should, A's first
    packet reaches B's router first, and only the home routers (which drop it at input)
    still succeed.
    """
    assert (await punch("home_router", "home_router", transport, dcutr_delay=0.0)).success
    assert (await punch("home_router", "home_router", transport, dcutr_delay=0.1)).success
    assert (await punch("answering_router", "answering_router", transport,
                        dcutr_delay=0.0)).success
    late = await punch("answering_router", "answering_router", transport, dcutr_delay=0.1)
    assert not late.success
    if transport == "tcp":
        assert "A's connect failed: Connection refused" in late.notes


def test_theory_explains_itself() -> None:
    theory = predict(PRESETS["answering_router"], PRESETS["answering_router"],
                     transport="tcp", order="a_first")
    assert not theory.success
    assert "NAT B's stack answered A's first packet" in theory.reason
    theory = predict(PRESETS["symmetric"], PRESETS["full_cone"], transport="udp")
    assert theory.success and "A's NAT maps" in theory.reason

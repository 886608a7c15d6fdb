"""The punch theory matrix in the real lab: every pair of NAT kinds, TCP and UDP, many trials.

    topology = matrix_topology(latency=0.0)
    async with Lab(topology) as lab:
        trials = await run_punch_matrix(lab, case=A_ANSWERS_LATE, trials=3)
    print(summarize(trials))

For each pair (A's kind, B's kind) -- a public host, or behind a home router, an answering
router or a symmetric NAT -- A and B run :func:`flarelab.lab.punch.punch_side`, timed by a
:class:`PunchCase`. The routers' conntrack tables are flushed before every round; all pairs
of a round run at once (each pair on its own ports, so their NAT entries never meet).

Whose packet arrived first decides the outcome with answering routers, so every trial
records when each side sent its first punch packet and :func:`classify_order` names the
order that really happened (``a_first``, ``b_first`` or ``sync``: the packets crossed in
the internet), which is what :func:`predict` hands to :func:`flarelab.simnet.theory.predict`.
:func:`simnet_punch` runs the same pair and timing on the simulated network built from the
same :class:`~flarelab.lab.topology.Topology`.

``python -m flarelab.lab.matrix`` runs it and prints the table (root).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import trio

from ..simnet.nat_behavior import FilteringBehavior, MappingBehavior, NatBehavior
from ..simnet.theory import Order
from ..simnet.theory import predict as theory_predict
from .nat_kinds import NatKind, nat_kind, simnet_behavior
from .punch import (
    OBSERVER_PORT,
    RENDEZVOUS_PORT,
    Role,
    observer_server,
    punch_side,
    rendezvous_server,
)
from .topology import Topology, TopologyBuilder

if TYPE_CHECKING:
    from .lab import Lab
    from .proc import LabProcess

__all__ = [
    "A_ANSWERS_LATE",
    "B_FIRST",
    "CASES",
    "DCUTR",
    "IPV6_FIREWALL",
    "KINDS",
    "PunchCase",
    "PunchTrial",
    "classify_order",
    "matrix_topology",
    "predict",
    "run_punch_matrix",
    "side_host",
    "simnet_punch",
    "summarize",
]

Transport = Literal["tcp", "udp"]
ObservedOrder = Literal["a_first", "b_first", "sync", "unclear"]

#: the kinds of the matrix: a public host (None) and every router the lab builds
KINDS: Final[tuple[NatKind | None, ...]] = (None, *NatKind)
_SHORT: Final = {None: "pub", NatKind.HOME_ROUTER: "home", NatKind.ANSWERING_ROUTER: "answer",
                 NatKind.SYMMETRIC: "sym"}
#: an IPv6 home router: no translation (so mapping is endpoint-independent), a stateful
#: firewall that lets in only replies, unsolicited inbound dropped -- simnet's firewall6
IPV6_FIREWALL: Final = NatBehavior(
    mapping=MappingBehavior.ENDPOINT_INDEPENDENT,
    filtering=FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT, name="IPv6 firewall")


@dataclass(frozen=True, slots=True)
class PunchCase:
    """How a trial is timed: DCUtR's exchange, with A's answer delayed or the starts forced.

    ``answer_delay``: A answers CONNECT this late (B's RTT, so its RTT/2 wait, grows).
    ``a_wait``: A waits this long after SYNC. ``b_wait``: B waits this long after SYNC
    instead of RTT/2. ``order``: the order it is designed to produce (None: whatever the
    machine does).
    """

    name: str
    answer_delay: float = 0.0
    a_wait: float = 0.0
    b_wait: float | None = None
    order: Order | None = None

    def punch_kwargs(self) -> dict[str, Any]:
        return {"answer_delay": self.answer_delay, "a_wait": self.a_wait,
                "b_wait": self.b_wait}


#: DCUtR as specified: the order is whatever the machine produces (with internet latency
#: the packets cross: ``sync``)
DCUTR: Final = PunchCase("dcutr")
#: A takes 200 ms to answer CONNECT, so B waits 100 ms too long: A's packet arrives first
A_ANSWERS_LATE: Final = PunchCase("a-answers-late", answer_delay=0.2, order="a_first")
#: A starts 200 ms after SYNC and B at once: B's packet arrives first
B_FIRST: Final = PunchCase("b-first", a_wait=0.2, b_wait=0.0, order="b_first")
CASES: Final = {case.name: case for case in (DCUTR, A_ANSWERS_LATE, B_FIRST)}


def side_host(side: str, kind: NatKind | None) -> str:
    """The host of side ``a``/``b`` with NAT ``kind`` in the matrix topology (``a-home``)."""
    return f"{side}-{_SHORT[kind]}"


def matrix_topology(kinds: Sequence[NatKind | None] = KINDS, *, latency: float = 0.0,
                    ipv6: bool = False) -> Topology:
    """``relay`` and ``stun`` (public), and one host per side and kind: ``a-pub`` on the
    internet, ``a-home`` behind ``nat-a-home`` (a home router), ... and the same for b."""
    builder = TopologyBuilder(latency=latency, ipv6=ipv6)
    builder.add_host("relay").add_host("stun")
    for side, kind in itertools.product("ab", kinds):
        name = side_host(side, kind)
        if kind is None:
            builder.add_host(name)
        else:
            builder.add_router(f"nat-{name}", kind).add_host(name)
    return builder.build()


def classify_order(first_a: float | None, first_b: float | None, one_way: float,
                   margin: float = 0.001) -> ObservedOrder:
    """Name the order from the sides' first-send times and the one-way delay between them.

    ``a_first``: A's first packet reached B's router before B sent anything; ``sync``: each
    left before the other's arrived; ``unclear``: too close to the line to tell (within
    ``margin`` plus a tenth of the delay, since send times are taken just before the
    system call).
    """
    if first_a is None or first_b is None:
        return "unclear"
    lead = first_b - first_a  # > 0: A started first
    slack = margin + 0.1 * one_way
    if lead > one_way + slack:
        return "a_first"
    if -lead > one_way + slack:
        return "b_first"
    if abs(lead) < one_way - slack:
        return "sync"
    return "unclear"


def predict(kind_a: NatKind | None, kind_b: NatKind | None, transport: Transport,
            order: Order, *, ipv6: bool = False) -> tuple[bool, str]:
    """What RFC 4787 predicts for this pair (IPv6: both routers are plain firewalls)."""
    def behavior(kind: NatKind | None) -> NatBehavior | None:
        if kind is None:
            return None
        return IPV6_FIREWALL if ipv6 else simnet_behavior(kind)

    outcome = theory_predict(behavior(kind_a), behavior(kind_b), transport=transport,
                             order=order)
    return outcome.success, outcome.reason


@dataclass(slots=True)
class PunchTrial:
    """One trial of one pair: both sides' reports, the order seen, and what theory says."""

    kind_a: NatKind | None
    kind_b: NatKind | None
    transport: Transport
    case: str
    trial: int
    ipv6: bool
    a: dict[str, Any]
    b: dict[str, Any]
    order: ObservedOrder
    predicted: bool | None = None
    reason: str = ""

    @property
    def success(self) -> bool:
        """TCP: either side has a connection both greeted over; UDP: B's answer reached A."""
        if self.transport == "udp":
            return bool(self.a.get("success"))
        return bool(self.a.get("success") or self.b.get("success"))

    @property
    def agrees(self) -> bool | None:
        """Whether the lab agreed with the theory (None when the order is unclear)."""
        return None if self.predicted is None else self.success == self.predicted

    @property
    def elapsed(self) -> float | None:
        """Seconds from A's start to its success (TCP: the first side that succeeded)."""
        times = [s["elapsed"] for s in (self.a, self.b) if s.get("success") and s.get("elapsed")
                 is not None]
        if self.transport == "udp":
            return self.a.get("elapsed") if self.a.get("success") else None
        return min(times) if times else None

    def pair(self) -> str:
        return f"{_SHORT[self.kind_a]}-{_SHORT[self.kind_b]}"

    def describe(self) -> str:
        """One line: pair, transport, outcome, order, theory, and the sides' notes."""
        verdict = "direct" if self.success else "failed"
        theory = ("?" if self.predicted is None else
                  "agrees" if self.agrees else f"DISAGREES (theory: {self.reason})")
        notes = "; ".join([*self.a.get("notes", ()), *self.b.get("notes", ())])
        lead = self.lead
        lead_text = "" if lead is None else f" (A led by {lead * 1000:.1f} ms)"
        return (f"{self.pair():12} {self.transport} #{self.trial} {verdict:6} order={self.order}"
                f"{lead_text} {theory}" + (f" [{notes}]" if notes else ""))

    @property
    def lead(self) -> float | None:
        """How long before B's first punch packet A sent its own (negative: B led)."""
        first_a, first_b = self.a.get("first_send"), self.b.get("first_send")
        return None if first_a is None or first_b is None else first_b - first_a


@contextlib.asynccontextmanager
async def punch_services(lab: Lab, *, observer_host: str = "stun",
                         relay_host: str = "relay"
                         ) -> AsyncIterator[dict[int, dict[str, Any] | None]]:
    """Run the observer and the rendezvous relay; yield their addresses by family."""
    observer = await lab.start(observer_host, functools.partial(observer_server,
                                                                port=OBSERVER_PORT))
    try:
        relay = await lab.start(relay_host, functools.partial(rendezvous_server,
                                                              port=RENDEZVOUS_PORT))
        try:
            obs_host, relay_h = lab.topology.host(observer_host), lab.topology.host(relay_host)
            yield {
                4: {"observer": [obs_host.ip, OBSERVER_PORT],
                    "rendezvous": [relay_h.ip, RENDEZVOUS_PORT]},
                6: ({"observer": [obs_host.ip6, OBSERVER_PORT],
                     "rendezvous": [relay_h.ip6, RENDEZVOUS_PORT]} if obs_host.ip6 else None),
            }
        finally:
            await relay.stop()
    finally:
        await observer.stop()


async def run_punch_matrix(
    lab: Lab,
    *,
    case: PunchCase = A_ANSWERS_LATE,
    pairs: Sequence[tuple[NatKind | None, NatKind | None]] | None = None,
    transports: Sequence[Transport] = ("tcp", "udp"),
    trials: int = 3,
    duration: float = 2.0,
    family: int = 4,
    base_port: int = 20000,
    on_trial: Callable[[PunchTrial], None] | None = None,
) -> list[PunchTrial]:
    """Run ``trials`` rounds of every pair and transport in ``lab`` (a
    :func:`matrix_topology`); return every trial, with the order seen and the prediction."""
    topology = lab.topology
    names = set(topology.names())
    kinds = [k for k in KINDS if side_host("a", k) in names and side_host("b", k) in names]
    pairs = list(pairs) if pairs is not None else list(itertools.product(kinds, kinds))
    hosts = sorted({side_host(s, k) for a, b in pairs for s, k in (("a", a), ("b", b))})
    async with punch_services(lab) as services:
        endpoints = services[family]
        if endpoints is None:
            raise ValueError("IPv6 trials need a topology with ipv6=True")
        run = _MatrixRun(endpoints, case, duration, ipv6=family == 6,
                         one_way=2 * topology.latency)  # router to router: two attachments
        try:
            async with trio.open_nursery() as nursery:
                for host in hosts:
                    nursery.start_soon(run.start_agent, lab, host)
            out: list[PunchTrial] = []
            slots = len(pairs) * len(transports)
            for trial in range(trials):
                await lab.flush_conntrack()
                jobs = [(kind_a, kind_b, transport,
                         base_port + (trial * slots + index) % 20000)
                        for index, ((kind_a, kind_b), transport)
                        in enumerate(itertools.product(pairs, transports))]
                results = await run.round(trial, jobs)
                for result in results:
                    if on_trial is not None:
                        on_trial(result)
                out += results
        finally:
            with trio.CancelScope(shield=True):
                for agent in run.agents.values():
                    await agent.aclose()
    return out


@dataclass
class _MatrixRun:
    """What every trial of one :func:`run_punch_matrix` call shares."""

    endpoints: dict[str, Any]
    case: PunchCase
    duration: float
    ipv6: bool
    one_way: float
    agents: dict[str, LabProcess] = field(default_factory=dict)

    async def start_agent(self, lab: Lab, host: str) -> None:
        self.agents[host] = await lab.agent(host)

    async def round(self, trial: int,
                    jobs: list[tuple[NatKind | None, NatKind | None, Transport, int]]
                    ) -> list[PunchTrial]:
        """Run every (kind_a, kind_b, transport, port) job at once; return them in order."""
        results: list[PunchTrial] = []
        async with trio.open_nursery() as nursery:
            for kind_a, kind_b, transport, port in jobs:
                nursery.start_soon(self.trial, kind_a, kind_b, transport, trial, port,
                                   results)
        results.sort(key=lambda t: (str(t.kind_a), str(t.kind_b), t.transport))
        return results

    async def trial(self, kind_a: NatKind | None, kind_b: NatKind | None,
                    transport: Transport, trial: int, port: int, out: list[PunchTrial]
                    ) -> None:
        """Run one trial of one pair; append its :class:`PunchTrial` to ``out``."""
        session = f"{_SHORT[kind_a]}-{_SHORT[kind_b]}-{transport}-{trial}-{port}"
        common = {"port": port, "session": session, "duration": self.duration,
                  **self.endpoints, **self.case.punch_kwargs()}
        reports: dict[str, dict[str, Any]] = {}

        async def side(role: Role, host: str) -> None:
            fn = functools.partial(punch_side, role=role, transport=transport, **common)
            reports[role] = await self.agents[host].call(fn, timeout=self.duration + 40)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, "a", side_host("a", kind_a))
            nursery.start_soon(side, "b", side_host("b", kind_b))
        order = classify_order(reports["a"]["first_send"], reports["b"]["first_send"],
                               self.one_way)
        result = PunchTrial(kind_a, kind_b, transport, self.case.name, trial, self.ipv6,
                            reports["a"], reports["b"], order)
        if order != "unclear":
            result.predicted, result.reason = predict(kind_a, kind_b, transport, order,
                                                      ipv6=self.ipv6)
        out.append(result)


async def simnet_punch(topology: Topology, kind_a: NatKind | None, kind_b: NatKind | None,
                       transport: Transport, case: PunchCase, *, seed: int = 5,
                       duration: float = 5.0) -> bool:
    """Run the same pair and timing on simnet, built from ``topology`` (a
    :func:`matrix_topology`); return whether the punch succeeded. Use a MockClock."""
    from ..simnet import punch as simpunch

    async with topology.simnet_network(seed=seed) as net:
        built = topology.build_simnet(net)
        a, b = built[side_host("a", kind_a)], built[side_host("b", kind_b)]
        relay, stun = built["relay"], built["stun"]
        timing: simpunch.Timing
        if case.b_wait is not None or case.a_wait:
            start_b = case.b_wait or 0.0
            timing = simpunch.Delays(case.a_wait, start_b)
        else:
            timing = simpunch.DcutrTiming(relay, a, b, a_answer_delay=case.answer_delay)  # type: ignore[arg-type]
        async with simpunch.observer(stun) as observe:  # type: ignore[arg-type]
            run = simpunch.udp_punch if transport == "udp" else simpunch.tcp_punch
            result = await run(a, b, observe, timing=timing, duration=duration)  # type: ignore[arg-type]
    return result.success


def summarize(trials: Sequence[PunchTrial]) -> str:
    """A table: per pair and transport, direct/total, the orders seen, theory's verdict."""
    groups: dict[tuple[str, str, str], list[PunchTrial]] = {}
    for t in trials:
        groups.setdefault((t.pair(), t.transport, t.case), []).append(t)
    lines = [f"{'pair':14} {'tr':3} {'case':15} {'direct':>7} {'median ms':>9}  orders"
             "  theory"]
    for (pair, transport, case), group in groups.items():
        wins = [t for t in group if t.success]
        times = sorted(t.elapsed for t in wins if t.elapsed is not None)
        median = f"{times[len(times) // 2] * 1000:.1f}" if times else "-"
        orders = Counter(t.order for t in group)
        verdicts = Counter("?" if t.agrees is None else "ok" if t.agrees else "NO"
                           for t in group)
        lines.append(f"{pair:14} {transport:3} {case:15} {len(wins):>3}/{len(group):<3} "
                     f"{median:>9}  {dict(orders)}  {dict(verdicts)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the matrix in a fresh lab and print every trial and the table."""
    parser = argparse.ArgumentParser(prog="python -m flarelab.lab.matrix",
                                     description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.0,
                        help="one-way latency of each internet attachment, seconds")
    parser.add_argument("--ipv6", action="store_true", help="punch over IPv6")
    parser.add_argument("--transport", choices=["tcp", "udp"], action="append")
    parser.add_argument("--pair", action="append", metavar="A:B",
                        help="only this pair of kinds (public, home_router, "
                             "answering_router, symmetric), e.g. home_router:symmetric")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    from .lab import Lab

    cases = [CASES[name] for name in (args.case or sorted(CASES))]

    def kind(name: str) -> NatKind | None:
        return None if name in ("public", "pub") else nat_kind(name)

    pairs = [(kind(a), kind(b)) for a, b in (p.split(":", 1) for p in args.pair or ())]

    async def run() -> list[PunchTrial]:
        kinds = sorted({k for pair in pairs for k in pair}, key=KINDS.index) or KINDS
        topology = matrix_topology(kinds, latency=args.latency, ipv6=args.ipv6)
        trials: list[PunchTrial] = []
        async with Lab(topology) as lab:
            for case in cases:
                trials += await run_punch_matrix(
                    lab, case=case, trials=args.trials, family=6 if args.ipv6 else 4,
                    pairs=pairs or None,
                    transports=args.transport or ("tcp", "udp"),
                    on_trial=None if args.quiet else lambda t: print(t.describe(), flush=True))
        return trials

    trials = trio.run(run)
    print(summarize(trials))
    disagree = [t for t in trials if t.agrees is False]
    print(f"{len(trials)} trials, {sum(t.success for t in trials)} direct, "
          f"{len(disagree)} disagree with theory, "
          f"{sum(t.agrees is None for t in trials)} of unclear order")
    return 1 if disagree else 0


if __name__ == "__main__":
    raise SystemExit(main())

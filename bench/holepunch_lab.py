"""Benchmark Project Flare's hole punch in the real kernel-NAT lab (root; issue 5's targets).

For each transport (TCP, QUIC): N trials (default 50) of the whole flow in one lab with
port-preserving home routers on both sides -- fresh A and B nodes every trial (new keys, a
new port), conntrack flushed, the relay and the four AutoNAT servers reused -- B is found
private by AutoNAT, reserves on the relay; A dials B through it; DCUtR upgrades the relayed
connection (:mod:`flarelab.lab.flare_run`). Printed per transport: the success rate, the
time from the relayed connection to the direct one (median, p90), the attempts used, the
outcome counts, the relayed RTT (B's DCUtR CONNECT round trip) and the direct handshake
(A's connect to a public node: TCP + Noise + Yamux, or QUIC), and the goals:

1. at least 98% of trials direct, for TCP and for QUIC;
2. the median time to direct at most 2 relayed RTTs plus the direct handshake (the bound
   is computed per trial from that trial's RTT and handshake; the ratio compares medians).

Then symmetric NATs on both sides (a few trials): they must fail, with outcome
``no_suitable_address`` or ``failed`` and a reason a learner can read (printed). With
``--js N``: js-libp2p 3.3 as A and B (``interop/js/peer.mjs --dcutr``) through the same
kind of lab, no goal (DESIGN.md: it relays but never goes direct here).

Run (as root): ``.venv/bin/python bench/holepunch_lab.py [--trials 50] [--json FILE]``
(about 5 minutes; ``--quick``: 10 trials per transport, about a minute; ``--latency 0.01``
puts 10 ms on every internet attachment). Not part of run_all.py: it needs root and takes
minutes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from _common import Report, Result, add_json_arg, finish

from flarelab.flare.report import FlareTrial, summarize
from flarelab.lab import Lab, LabUnavailableError, NatKind, Topology, check_available
from flarelab.lab.flare_nodes import FlareLabSettings
from flarelab.lab.flare_run import infrastructure, run_flare_lab

GOAL_RATE = 0.98
#: the time to direct may take this many relayed RTTs plus the direct handshake
GOAL_RTTS = 2.0


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run_transport(transport: str, trials: int, first: int, latency: float = 0.0
                        ) -> list[FlareTrial]:
    """``trials`` Flare flows over ``transport`` between two home routers."""
    out: list[FlareTrial] = []

    def on_trial(trial: FlareTrial) -> None:
        out.append(trial)
        _say(f"  {trial.describe()}")

    topology = Topology.standard(NatKind.HOME_ROUTER, NatKind.HOME_ROUTER, latency=latency)
    async with Lab(topology) as lab, infrastructure(lab) as infra:
        await run_flare_lab(lab, transport=transport, trials=trials,  # type: ignore[arg-type]
                            on_trial=on_trial, infra=infra, first_trial=first)
    return out


async def run_symmetric(trials: int) -> list[FlareTrial]:
    """A few trials with symmetric NATs on both sides (TCP, then QUIC)."""
    out: list[FlareTrial] = []
    topology = Topology.standard(NatKind.SYMMETRIC, NatKind.SYMMETRIC)
    settings = FlareLabSettings(punch_timeout=2.0)
    async with Lab(topology) as lab, infrastructure(lab, settings) as infra:
        for index, (transport, count) in enumerate((("tcp", (trials + 1) // 2),
                                                    ("quic", trials // 2))):
            if count:
                out += await run_flare_lab(lab, transport=transport,  # type: ignore[arg-type]
                                           trials=count, infra=infra, settings=settings,
                                           first_trial=100 + 10 * index)
    return out


async def run_js(trials: int) -> list[FlareTrial]:
    """js-libp2p 3.3 as A and B (DCUtR on) through the lab's flarelab relay."""
    from flarelab.lab.flare_js import run_js_pair

    topology = Topology.standard(NatKind.HOME_ROUTER, NatKind.HOME_ROUTER)
    async with Lab(topology) as lab, infrastructure(lab) as infra:
        relay = next(a for a in infra.relay if a.startswith("/ip4/") and "/tcp/" in a)
        return await run_js_pair(lab, relay, trials=trials)


def _ms(value: float | None) -> float:
    return value * 1000.0 if value is not None else float("nan")


def figures(report: Report, transport: str, trials: list[FlareTrial]) -> None:
    """Add one transport's figures and its two goals to the report."""
    summary = summarize(trials)
    direct = [t for t in trials if t.direct]
    rtts = [t.phases["relayed_rtt"] for t in trials if "relayed_rtt" in t.phases]
    shakes = [t.phases["handshake"] for t in trials if "handshake" in t.phases]
    bounds = [GOAL_RTTS * t.phases["relayed_rtt"] + t.phases["handshake"] for t in direct
              if "relayed_rtt" in t.phases and "handshake" in t.phases]
    name = f"lab.holepunch.{transport}"
    rate = report.add(Result(f"{name}.direct_rate", summary.rate * 100, "%", {
        "direct": summary.direct, "total": summary.total,
        "attempts": dict(summary.attempts), "outcomes": dict(summary.outcomes)}))
    median = report.add(Result(f"{name}.to_direct.median", _ms(summary.median), "ms",
                               {"p90_ms": round(_ms(summary.p90), 1)}))
    report.add(Result(f"{name}.to_direct.p90", _ms(summary.p90), "ms"))
    report.add(Result(f"{name}.relayed_rtt.median",
                      _ms(statistics.median(rtts)) if rtts else float("nan"), "ms"))
    report.add(Result(f"{name}.direct_handshake.median",
                      _ms(statistics.median(shakes)) if shakes else float("nan"), "ms"))
    bound = report.add(Result(f"{name}.bound.median",
                              _ms(statistics.median(bounds)) if bounds else float("nan"), "ms",
                              {"what": f"{GOAL_RTTS:g} relayed RTTs + direct handshake"}))
    autonat = [t.phases["autonat"] for t in trials if "autonat" in t.phases]
    report.add(Result(f"{name}.autonat_private.median",
                      _ms(statistics.median(autonat)) if autonat else float("nan"), "ms"))
    report.ratio(f"[1] {transport}: direct rate / 98%", rate.value / 100, GOAL_RATE, 1.0,
                 higher_is_better=True)
    report.ratio(f"[2] {transport}: median to direct / ({GOAL_RTTS:g} RTT + handshake)",
                 median, bound, 1.0)
    report.note(f"{transport}: attempts {dict(summary.attempts)}, outcomes "
                f"{dict(summary.outcomes)}; {summary.line(transport)}")
    for trial in trials:
        if not trial.direct:
            report.note(f"{transport} not direct: {trial.describe()}")


def symmetric_figures(report: Report, trials: list[FlareTrial]) -> None:
    """Symmetric NATs: every trial must fail with a readable reason."""
    expected = [t for t in trials if not t.direct
                and t.outcome in ("no_suitable_address", "failed") and len(t.reason) > 20]
    report.add(Result("lab.holepunch.symmetric.expected_failures",
                      len(expected) / max(1, len(trials)) * 100, "%",
                      {"outcomes": dict(summarize(trials).outcomes)}))
    report.ratio("[3] symmetric: trials failing as expected / all", len(expected),
                 max(1, len(trials)), 1.0, higher_is_better=True)
    for trial in trials[:4]:
        report.note(f"symmetric: {trial.describe()}")


async def amain(args: argparse.Namespace) -> Report:
    where = (f"{args.latency * 1000:g} ms per internet attachment" if args.latency
             else "sub-millisecond internet")
    report = Report(f"flarelab lab: Flare hole punch between home routers (kernel NAT, "
                    f"{where})")
    transports = [t for t in args.transports.split(",") if t]
    for index, transport in enumerate(transports):
        started = time.monotonic()
        _say(f"{transport}: {args.trials} trials ...")
        trials = await run_transport(transport, args.trials, first=index * 200,
                                     latency=args.latency)
        _say(f"{transport}: {summarize(trials).line(transport)} "
             f"({time.monotonic() - started:.0f} s)")
        figures(report, transport, trials)
    if args.symmetric:
        _say(f"symmetric: {args.symmetric} trials ...")
        symmetric_figures(report, await run_symmetric(args.symmetric))
    if args.js:
        _say(f"js-libp2p A and B: {args.js} trials ...")
        js = await run_js(args.js)
        summary = summarize(js)
        report.add(Result("lab.holepunch.js_libp2p.direct_rate", summary.rate * 100, "%",
                          {"direct": summary.direct, "total": summary.total,
                           "outcomes": dict(summary.outcomes)}))
        report.note(f"js-libp2p 3.3 A and B (no goal; DESIGN.md expects 0 direct): "
                    f"{summary.line('js')}")
        for trial in js[:2]:
            report.note(f"js: {trial.describe()}")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50, help="trials per transport (50)")
    parser.add_argument("--quick", action="store_true", help="10 trials per transport")
    parser.add_argument("--transports", default="tcp,quic", help="tcp,quic (default)")
    parser.add_argument("--symmetric", type=int, default=3,
                        help="symmetric-symmetric trials (default 3; 0: none)")
    parser.add_argument("--js", type=int, default=0,
                        help="also N trials with js-libp2p 3.3 as A and B (needs interop/js)")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="one-way delay per internet attachment, seconds (user-space "
                             "switch; default 0: the kernel bridge)")
    add_json_arg(parser)
    args = parser.parse_args()
    if args.quick:
        args.trials = min(args.trials, 10)
    try:
        check_available()
    except LabUnavailableError as exc:
        print(f"holepunch_lab: the lab cannot run here: {exc}", file=sys.stderr)
        return 1
    report: Any = trio.run(amain, args)
    finish(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

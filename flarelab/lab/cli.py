"""``flarelab lab ...``: the real NAT lab from the command line.

    sudo flarelab lab holepunch                          # TCP, home routers, one trial
    sudo flarelab lab holepunch --transport quic --trials 10 --trace flare.jsonl
    sudo flarelab lab holepunch --nat symmetric          # both routers symmetric: fails
    sudo flarelab lab holepunch --nat home_router,answering_router --ipv6

It checks first that the lab can run here (root, ``ip``, ``nft``, ``conntrack``), builds
the lab (a relay, AutoNAT servers, A and B behind NAT routers), runs the Flare flow per
trial with a line per phase, and prints a one-line summary last. The exit code is 0 when
the lab ran -- whether or not the punches succeeded -- and 1 when it could not run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..flare.report import FlareTrial

__all__ = ["add_lab_parser", "run_lab_command"]


def add_lab_parser(sub: Any) -> None:
    """Add the ``lab`` command group to the ``flarelab`` parser's subcommands."""
    lab = sub.add_parser("lab", help="the real kernel-NAT lab (root): hole punching for real")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True)
    punch = lab_sub.add_parser(
        "holepunch",
        help="run the Flare flow (AutoNAT, relay reservation, DCUtR) between two NATed peers",
        description="Build network namespaces with a relay, AutoNAT servers and two peers "
                    "behind nftables NAT routers; B reserves on the relay, A dials it "
                    "through the relay, and DCUtR tries to go direct. Needs root.")
    punch.add_argument("--transport", choices=("tcp", "quic"), default="tcp",
                       help="what A and B punch with (default: tcp)")
    punch.add_argument("--trials", type=_positive, default=1,
                       help="how many times (fresh peers each time; default: 1)")
    punch.add_argument("--nat", default="home_router", metavar="KIND[,KIND]",
                       help="the routers of A and B: home_router, answering_router, symmetric "
                            "(one kind for both, or A's,B's; default: home_router)")
    punch.add_argument("--ipv6", action="store_true",
                       help="punch over IPv6 (the routers are stateful firewalls, no NAT)")
    punch.add_argument("--js-relay", action="store_true",
                       help="use a js-libp2p relay (interop/js) instead of flarelab's")
    punch.add_argument("--trace", metavar="FILE",
                       help="write every node's spans to FILE (JSON lines)")
    punch.add_argument("-v", "--verbose", action="store_true",
                       help="print each trial's addresses and phase times")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _say(text: str) -> None:
    print(text, flush=True)


async def run_lab_command(args: argparse.Namespace) -> int:
    """Run ``flarelab lab <command>``; return the exit code."""
    return await _holepunch(args)


async def _holepunch(args: argparse.Namespace) -> int:
    import trio

    from ..errors import FlarelabError
    from ..flare.report import summarize
    from . import Lab, Topology, check_available
    from .errors import LabError, LabUnavailableError
    from .flare_run import run_flare_lab
    from .nat_kinds import nat_kind

    kinds = [k for k in args.nat.split(",") if k.strip()]
    if len(kinds) not in (1, 2):
        _err("flarelab lab holepunch: --nat takes one kind or two (A's,B's)")
        return 2
    try:
        nat_a, nat_b = (nat_kind(kinds[0]), nat_kind(kinds[-1]))
    except FlarelabError as exc:
        _err(f"flarelab lab holepunch: {exc}")
        return 2
    try:
        await trio.to_thread.run_sync(check_available)
    except LabUnavailableError as exc:
        _err(f"flarelab lab holepunch: the lab cannot run here: {exc}")
        _err("  (the same flow runs without root on the simulated network: "
             "flarelab.flare.run_flare_simnet)")
        return 1
    topology = Topology.standard(nat_a, nat_b, ipv6=args.ipv6)
    family: Literal[4, 6] = 6 if args.ipv6 else 4
    relay: Literal["flarelab", "js"] = "js" if args.js_relay else "flarelab"
    _say(f"lab: {args.trials} trial(s), {args.transport}/ip{family}, A behind "
         f"{nat_a.value}, B behind {nat_b.value}, {relay} relay")
    for line in topology.describe().splitlines():
        _say(f"  {line}")
    started = time.monotonic()
    trials: list[FlareTrial] = []

    def on_trial(trial: FlareTrial) -> None:
        trials.append(trial)
        _say(f"  {trial.describe()}")
        if args.verbose:
            phases = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in trial.phases.items())
            _say(f"    address {trial.address}; reachability A {trial.reachability_a}, "
                 f"B {trial.reachability_b}; {phases}")

    def progress(line: str) -> None:
        _say(f"  [{time.monotonic() - started:6.1f} s] {line}")

    try:
        async with Lab(topology) as lab:
            _say(f"  [{time.monotonic() - started:6.1f} s] namespaces built (lab {lab.id})")
            await run_flare_lab(lab, transport=args.transport, trials=args.trials,
                                family=family, on_trial=on_trial, progress=progress,
                                relay=relay)
            if args.trace:
                shutil.copyfile(lab.trace_file, args.trace)
                _say(f"  spans of every node written to {args.trace}")
    except LabError as exc:
        _err(f"flarelab lab holepunch: the lab failed: {exc}")
        return 1
    _say(summarize(trials).line(f"{args.transport} {nat_a.value}->{nat_b.value}"))
    return 0


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)

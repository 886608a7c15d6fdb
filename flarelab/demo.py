"""``make demo``: two local nodes talk libp2p, and the trace shows every step.

Node A dials node B over TCP on loopback; the connection is secured with Noise and
multiplexed with Yamux; both sides identify each other; A pings B and runs a perf
measurement; then A opens a second connection over QUIC (TLS 1.3 and native streams) and
pings again. The trace of both nodes is printed as one readable tree.

Then Project Flare, on flarelab's simulated internet in virtual time (no root needed): A
and B sit behind home-router NATs; AutoNAT tells them they are private, B reserves a slot
on a public relay, A reaches B through it, and DCUtR punches a direct connection, over TCP
and over QUIC. The hole-punch part of that trace is printed too.

Run it with ``python -m flarelab.demo [--size 16MiB] [--trace FILE] [--no-flare]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import trio

from .cli import parse_size
from .node import Node, NodeConfig
from .protocols.ping import PING_PROTOCOL, ping_stream
from .tracing.bus import SpanBus
from .tracing.pretty import format_trace
from .tracing.provider import TracingConfig

if TYPE_CHECKING:
    from .flare.simnet_run import TransportName

__all__ = ["main", "run_demo", "run_flare_demo"]

#: the spans of the hole-punch story printed at the end (AutoNAT is summed up in a line)
FLARE_SPANS = ("relay.reserve", "relay.connect", "relay.circuit", "dcutr.upgrade",
               "dcutr.attempt", "holepunch.dial")
#: one-way latency of each simulated internet link (relay, servers, the two NATs)
FLARE_LATENCY = 0.015


def _say(text: str = "") -> None:
    print(text, flush=True)


async def run_demo(size: int = 16 * 1024 * 1024, trace_file: str | None = None) -> SpanBus:
    """Run the demo; return the span bus holding both nodes' spans."""
    bus = SpanBus()

    def config(label: str) -> NodeConfig:
        return NodeConfig(
            listen_addrs=["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"],
            label=label,
            tracing=TracingConfig(label=label, bus=bus, trace_file=trace_file),
        )

    async with Node(config("A")) as a, Node(config("B")) as b:
        _say("Two libp2p nodes on this machine:")
        for node in (a, b):
            _say(f"  {node.label}  {node.peer_id}  listening on "
                 + " and ".join(str(x) for x in node.listen_addrs()))
        _say()
        tcp_addr, quic_addr = b.addrs[0], b.addrs[1]
        with trio.fail_after(30):
            conn = await a.connect(tcp_addr)
            _say(f"A dialled B: {conn.transport} + {conn.security} + {conn.muxer_protocol}, "
                 f"connection {conn.id} to {conn.remote_peer.short()}")
            info = await a.identify_peer(b.peer_id)
            _say(f"B identified itself: agent {info.agent_version!r}, "
                 f"{len(info.protocols)} protocols, signed peer record "
                 f"{'verified' if info.signed_record else 'missing'}")
            _say(f"  B sees A at {info.observed_addr}")
            rtts = await a.ping(b.peer_id, 3)
            _say("A pinged B: " + ", ".join(f"{r:.3f} ms" for r in rtts))
            result = await a.perf(b.peer_id, upload=size, download=size)
            _say(f"perf: sent {size / 2**20:.0f} MiB at {result.upload_mbps:.0f} MB/s, "
                 f"received {size / 2**20:.0f} MiB at {result.download_mbps:.0f} MB/s")
            quic = await a.connect(quic_addr, force_new=True)
            stream = await quic.new_stream(PING_PROTOCOL)
            rtts = await ping_stream(stream, 3, tracer=a.tracer, peer=quic.remote_peer)
            await stream.aclose()
            _say(f"A dialled B again over {quic.transport} + {quic.security}: pings "
                 + ", ".join(f"{r:.3f} ms" for r in rtts))
    return bus


async def run_flare_demo(transport: TransportName) -> tuple[SpanBus, str]:
    """Run the Flare flow once on simnet (home routers both sides); return spans and a line."""
    from .flare import run_flare_simnet
    from .lab.topology import Topology

    bus = SpanBus()
    topology = Topology.standard("home_router", "home_router", latency=FLARE_LATENCY)
    (trial,) = await run_flare_simnet(topology, transport=transport, bus=bus)
    took = f"{trial.elapsed * 1000:.0f} ms" if trial.elapsed is not None else "-"
    probes = sum(1 for r in bus.history() if r.name == "autonat.probe" and r.end_ns
                 and r.resource.get("libp2p.node_label") == "b")
    line = (f"{transport}: AutoNAT said A {trial.reachability_a}, B {trial.reachability_b} "
            f"({probes} probes by B); relayed, then {trial.outcome} {took} later, "
            f"{trial.attempts} attempt(s)"
            + (f" via {trial.address}" if trial.address else "")
            + (f" ({trial.reason})" if not trial.direct and trial.reason else ""))
    return bus, line


def _flare_part(width: int) -> None:
    import trio.testing

    _say()
    _say("Project Flare on a simulated internet (virtual time, "
         f"{FLARE_LATENCY * 1000:.0f} ms per link): A and B")
    _say("behind home-router NATs, a public relay and three AutoNAT servers. AutoNAT ->")
    _say("private -> reserve on the relay -> A dials B through it -> DCUtR hole punch -> direct.")
    _say()
    bus = None
    transports: tuple[TransportName, ...] = ("tcp", "quic")
    for transport in transports:
        clock = trio.testing.MockClock(autojump_threshold=0)
        bus, line = trio.run(run_flare_demo, transport, clock=clock)
        _say("  " + line)
    assert bus is not None
    peers = {"a", "b", "relay"}
    records = [r for r in bus.history()
               if r.end_ns is not None and r.name in FLARE_SPANS
               and r.resource.get("libp2p.node_label") in peers]
    _say()
    _say("The hole punch over QUIC, from the trace (A, B and the relay):")
    _say()
    print(format_trace(records, width=width, color=sys.stdout.isatty()))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m flarelab.demo``."""
    parser = argparse.ArgumentParser(prog="python -m flarelab.demo", description=__doc__)
    parser.add_argument("--size", type=parse_size, default=parse_size("16MiB"))
    parser.add_argument("--trace", metavar="FILE", help="also write the spans to FILE")
    parser.add_argument("--width", type=int, default=110)
    parser.add_argument("--no-flare", action="store_true",
                        help="skip the hole-punch part (Project Flare on simnet)")
    args = parser.parse_args(argv)
    bus = trio.run(run_demo, args.size, args.trace)
    records = [r for r in bus.history() if r.end_ns is not None]
    _say()
    _say("The trace of both nodes (each line a span: node, offset, duration, what happened):")
    _say()
    print(format_trace(records, width=args.width, color=sys.stdout.isatty()))
    if args.trace:
        _say(f"\nSpans written to {args.trace}; replay them with: flarelab trace show {args.trace}")
    if not args.no_flare:
        _flare_part(args.width)
    return 0


if __name__ == "__main__":
    sys.exit(main())

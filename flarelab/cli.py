"""The ``flarelab`` command: run a node, ping, perf and identify peers, read traces.

    flarelab node --listen /ip4/0.0.0.0/tcp/4001 --listen /ip4/0.0.0.0/udp/4001/quic-v1
    flarelab ping /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...
    flarelab ping /ip4/127.0.0.1/udp/4001/quic-v1/p2p/12D3KooW...
    flarelab perf ADDR --upload 10MiB --download 10MiB
    flarelab identify ADDR
    flarelab trace show trace.jsonl
    flarelab trace view trace.jsonl -o trace.html
    sudo flarelab lab holepunch --transport quic --trials 5

Every command takes ``--trace FILE`` (append the spans as JSON lines) and exits non-zero
with a one-line reason on failure.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from . import __version__
from .errors import FlarelabError
from .lab.cli import add_lab_parser, run_lab_command

if TYPE_CHECKING:
    from .node import Node, NodeConfig

__all__ = ["main", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?)[bB]?\s*$")
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """Parse a byte count: ``1048576``, ``10MiB`` (binary), ``10MB`` or ``10M`` (decimal)."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1048576, 10MiB or 10MB)")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** _UNITS[unit.lower()])


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", metavar="FILE", help="append spans to FILE as JSON lines")
    parser.add_argument(
        "--print-trace", action="store_true", help="print a readable trace when done"
    )
    parser.add_argument("--key", metavar="FILE", help="identity key file (created if missing)")
    parser.add_argument("--label", help="a name for this node in traces")
    parser.add_argument(
        "--muxer",
        default="yamux,mplex",
        help="stream muxers in order of preference (default: yamux,mplex)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="give up after this many seconds"
    )
    parser.add_argument(
        "--no-quic", action="store_true", help="no QUIC transport (TCP only)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``flarelab`` command."""
    parser = argparse.ArgumentParser(
        prog="flarelab", description="A traced libp2p node for learning hole punching."
    )
    parser.add_argument("--version", action="version", version=f"flarelab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    node = sub.add_parser("node", help="run a node that serves ping, identify and perf")
    node.add_argument(
        "--listen",
        action="append",
        metavar="MULTIADDR",
        help="address to listen on (repeatable; default /ip4/0.0.0.0/tcp/0 and, unless"
        " --no-quic, /ip4/0.0.0.0/udp/0/quic-v1)",
    )
    node.add_argument(
        "--connect", action="append", default=[], metavar="ADDR",
        help="peer to connect to at start (repeatable): AutoNAT servers, relays, bootstrap",
    )
    node.add_argument(
        "--flare", action="store_true",
        help="Project Flare: AutoNAT, relay reservations when private, DCUtR hole punching",
    )
    node.add_argument(
        "--relay", action="append", default=[], metavar="ADDR",
        help="relay to reserve on when private (repeatable, .../p2p/<id>; implies --flare)",
    )
    node.add_argument(
        "--serve-relay", action="store_true",
        help="serve as a Circuit Relay v2 relay (always; with --flare: only while public)",
    )
    _common(node)

    ping = sub.add_parser("ping", help="ping a peer")
    ping.add_argument("addr", metavar="ADDR", help="multiaddr of the peer (with /p2p/<id>)")
    ping.add_argument("-n", "--count", type=int, default=3, help="how many pings (default 3)")
    _common(ping)

    perf = sub.add_parser("perf", help="measure throughput to a peer (/perf/1.0.0)")
    perf.add_argument("addr", metavar="ADDR")
    perf.add_argument("--upload", type=parse_size, default=parse_size("10MiB"))
    perf.add_argument("--download", type=parse_size, default=parse_size("10MiB"))
    _common(perf)

    ident = sub.add_parser("identify", help="ask a peer to identify itself")
    ident.add_argument("addr", metavar="ADDR")
    ident.add_argument("--json", action="store_true", help="print JSON instead of text")
    _common(ident)

    trace = sub.add_parser("trace", help="work with trace files")
    trace_sub = trace.add_subparsers(dest="trace_command", required=True)
    show = trace_sub.add_parser("show", help="print a trace file as a readable tree")
    show.add_argument("file")
    show.add_argument("--width", type=int, default=100)
    show.add_argument("--verbose", action="store_true")
    view = trace_sub.add_parser(
        "view", help="write a trace file as a standalone HTML page (sequence diagram, waterfall)"
    )
    view.add_argument("file")
    view.add_argument("-o", "--output", metavar="HTML",
                      help="where to write the page (default: FILE with .html)")
    view.add_argument("--title", help="the page's title (default: the file's name)")
    add_lab_parser(sub)  # flarelab lab holepunch ... (flarelab/lab/cli.py)
    return parser


def _node_config(args: argparse.Namespace, listen: Sequence[str] = ()) -> NodeConfig:
    from .identity import Ed25519PrivateKey, load_private_key, save_private_key
    from .node import NodeConfig
    from .tracing.bus import SpanBus
    from .tracing.provider import TracingConfig

    key = None
    if args.key:
        path = Path(args.key)
        if path.exists():
            key = load_private_key(path)
        else:
            key = Ed25519PrivateKey.generate()
            save_private_key(key, path)
    muxers = tuple(_MUXERS[m.strip()] for m in args.muxer.split(",") if m.strip())
    bus = SpanBus() if args.print_trace else None
    tracing = TracingConfig(label=args.label, trace_file=args.trace, bus=bus)
    args._bus = bus
    return NodeConfig(
        key=key,
        listen_addrs=list(listen),
        label=args.label,
        muxers=muxers,
        tracing=tracing,
        enable_quic=not args.no_quic,
    )


_MUXERS = {"yamux": "/yamux/1.0.0", "mplex": "/mplex/6.7.0"}


def _print_trace(args: argparse.Namespace) -> None:
    bus = getattr(args, "_bus", None)
    if bus is None:
        return
    from .tracing.pretty import format_trace

    records = [r for r in bus.history() if r.end_ns is not None]
    print(format_trace(records, color=sys.stdout.isatty()))


async def _cmd_node(args: argparse.Namespace) -> int:
    from .node import Node, PeerConnected, PeerDisconnected, PeerIdentified

    listen = args.listen or ["/ip4/0.0.0.0/tcp/0"] + (
        [] if args.no_quic else ["/ip4/0.0.0.0/udp/0/quic-v1"]
    )
    config = _node_config(args, listen)
    flare = bool(args.flare or args.relay)
    if flare:
        from .flare import FlareConfig

        config = replace(config, flare=FlareConfig(relays=tuple(args.relay),
                                                   relay_service=args.serve_relay))
    watched: tuple[type, ...] = (PeerConnected, PeerDisconnected, PeerIdentified)
    if flare:
        from .flare import FlareStateChanged
        from .protocols.dcutr import HolePunchFailed, HolePunchSucceeded

        watched += (FlareStateChanged, HolePunchSucceeded, HolePunchFailed)
    async with Node(config) as node:
        if args.serve_relay and not flare:
            from .protocols.relay import RelayService

            RelayService(node)
        print(node.peer_id, flush=True)
        for addr in node.addrs:
            print(addr, flush=True)
        with node.events.subscribe(*watched) as events:
            async with trio.open_nursery() as nursery:

                async def log_events() -> None:
                    async for event in events:
                        _err(_describe_event(event))

                async def connect(addr: str) -> None:
                    try:
                        await node.connect(addr)
                    except (FlarelabError, OSError, trio.TooSlowError) as exc:
                        _err(f"could not connect to {addr}: {exc}")

                nursery.start_soon(log_events)
                for addr in args.connect:
                    nursery.start_soon(connect, addr)
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
                nursery.cancel_scope.cancel()
    _print_trace(args)
    return 0


def _relay_aware(node: Node, addr: str) -> None:
    """Let ``node`` dial ``.../p2p/RELAY/p2p-circuit/p2p/PEER`` addresses when ``addr`` is one."""
    if "/p2p-circuit" in addr:
        from .protocols.relay import RelayTransport

        RelayTransport.install(node)


def _describe_event(event: object) -> str:
    """One stderr line about a node event the ``node`` command follows."""
    from .flare import FlareStateChanged
    from .node import PeerConnected, PeerDisconnected, PeerIdentified
    from .protocols.dcutr import HolePunchFailed, HolePunchSucceeded

    if isinstance(event, PeerConnected):
        c = event.connection
        kind = " relayed" if c.limited else ""
        return f"connected: {event.peer} ({c.direction}{kind} via {c.remote_addr})"
    if isinstance(event, PeerDisconnected):
        return f"disconnected: {event.peer}"
    if isinstance(event, PeerIdentified):
        return f"identified: {event.peer} agent={event.info.agent_version}"
    if isinstance(event, FlareStateChanged):
        lines = [f"flare: {event.state.describe()}"]
        lines += [f"flare: reachable via {a}" for a in event.state.circuit_addrs]
        return "\n".join(lines)
    if isinstance(event, HolePunchSucceeded | HolePunchFailed):
        result = event.result
        where = f" via {result.address}" if result.address is not None else ""
        why = f" ({result.reason})" if result.reason and not result.ok else ""
        return (f"hole punch with {result.peer}: {result.outcome}{where} after "
                f"{result.elapsed * 1000:.0f} ms, {result.attempts} attempt(s){why}")
    return repr(event)


async def _cmd_ping(args: argparse.Namespace) -> int:
    from .node import Node

    async with Node(_node_config(args)) as node:
        _relay_aware(node, args.addr)
        with trio.fail_after(args.timeout):
            conn = await node.connect(args.addr)
            print(f"connected to {conn.remote_peer} via {conn.remote_addr}")
            rtts = await node.ping(conn.remote_peer, args.count)
        for i, rtt in enumerate(rtts, 1):
            print(f"ping {i}: {rtt:.3f} ms")
        print(
            f"{len(rtts)} pings, min/median/max = {min(rtts):.3f}/"
            f"{sorted(rtts)[len(rtts) // 2]:.3f}/{max(rtts):.3f} ms"
        )
    _print_trace(args)
    return 0


async def _cmd_perf(args: argparse.Namespace) -> int:
    from .node import Node

    async with Node(_node_config(args)) as node:
        _relay_aware(node, args.addr)
        with trio.fail_after(args.timeout):
            result = await node.perf(args.addr, upload=args.upload, download=args.download)
        print(
            f"uploaded {result.upload_bytes} bytes ({result.upload_mbps:.1f} MB/s), "
            f"downloaded {result.download_bytes} bytes ({result.download_mbps:.1f} MB/s), "
            f"total {result.total_seconds * 1000:.1f} ms"
        )
    _print_trace(args)
    return 0


async def _cmd_identify(args: argparse.Namespace) -> int:
    from .node import Node

    async with Node(_node_config(args)) as node:
        _relay_aware(node, args.addr)
        with trio.fail_after(args.timeout):
            conn = await node.connect(args.addr)
            info = await node.identify_peer(conn.remote_peer)
        record = info.signed_record
        data = {
            "peer_id": str(conn.remote_peer),
            "agent_version": info.agent_version,
            "protocol_version": info.protocol_version,
            "listen_addrs": [str(a) for a in info.listen_addrs],
            "observed_addr": str(info.observed_addr) if info.observed_addr else None,
            "protocols": list(info.protocols),
            "signed_peer_record": None
            if record is None
            else {"seq": record.seq, "addrs": [str(a) for a in record.addrs], "verified": True},
        }
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            for key, value in data.items():
                if isinstance(value, list):
                    print(f"{key}:")
                    for item in value:
                        print(f"  {item}")
                else:
                    print(f"{key}: {value}")
    _print_trace(args)
    return 0


def _cmd_trace_show(args: argparse.Namespace) -> int:
    from .tracing.export import read_trace
    from .tracing.pretty import format_trace

    records = read_trace(args.file)
    print(format_trace(records, width=args.width, verbose=args.verbose,
                       color=sys.stdout.isatty()))
    return 0


def _cmd_trace_view(args: argparse.Namespace) -> int:
    from .tracing.export import read_trace

    try:
        from .workbench.html import write_trace_html
    except ImportError as exc:
        _err(f"flarelab trace view needs the workbench extra "
             f"(pip install 'flarelab[workbench]'): {exc}")
        return 1
    source = Path(args.file)
    records = read_trace(source)
    output = Path(args.output) if args.output else source.with_suffix(".html")
    write_trace_html(records, output, title=args.title or f"flarelab trace: {source.name}")
    print(f"{output}: {len(records)} span records")
    return 0


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


_ASYNC = {"node": _cmd_node, "ping": _cmd_ping, "perf": _cmd_perf, "identify": _cmd_identify,
          "lab": run_lab_command}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    if getattr(args, "verbose", False):
        import logging

        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        if args.command == "trace":
            if args.trace_command == "view":
                return _cmd_trace_view(args)
            return _cmd_trace_show(args)
        return trio.run(_ASYNC[args.command], args)
    except KeyboardInterrupt:
        return 130
    except trio.TooSlowError:
        _err(f"flarelab {args.command}: timed out after {args.timeout} s")
        return 1
    except (FlarelabError, OSError, ValueError) as exc:
        _err(f"flarelab {args.command}: {exc}")
        return 1
    except BaseExceptionGroup as group:  # errors that escaped a nursery
        first = _first_leaf(group)
        _err(f"flarelab {args.command}: {first}")
        return 1


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    sys.exit(main())

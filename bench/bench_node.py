"""Benchmark the flarelab node core (TCP + Noise + Yamux) against baselines from the same run.

Goals (each printed as a ratio with PASS/FAIL; the baselines are measured here, in this run):

1. perf throughput on one stream, byte-exact (`/flarelab/bench/perf-checked/1.0.0`, see
   _nodeperf.py): >= 4x py-libp2p 0.8.1 and >= 25% of a raw trio TCP copy, one process
   (both nodes on one trio loop) and two (the server node in a `--serve` child), each
   against the baseline of the same shape, in rounds (raw TCP, ours, py-libp2p); the goal
   figure is the median of the per-round ratios (_node_throughput.py). The real
   `/perf/1.0.0` (lengths only) and Mplex are reported beside them, without a goal.
2. tracing costs at most 5% of perf throughput: the same exchange between two nodes with
   tracing disabled and two with a span bus + JSON-lines file on both, interleaved ABBA,
   the median of the pairs' ratios (wall clock and per CPU second).
3. dial + Noise + Yamux: median at most 3 ms, a fresh connection per sample
   (`connect(force_new=True)`), timed until `connect` returns (the connection takes
   streams) and until a first ping on a newly negotiated stream is answered; also from a
   fresh client node per sample.
   Also with the server in a child process.
4. ping RTT median at most 0.3 ms: many pings on one stream, after a warm-up (one
   process and two).
5. RSS of a node in a fresh child process, listening, with one connection and a finished
   ping and identify: at most 40 MiB (the default config and TCP only; also after import,
   with tracing on, and with flarelab compiled at import).

Run: `.venv/bin/python bench/bench_node.py [--quick] [--goals 1,3] [--json FILE]`
(about 90 s; `--quick` about 20 s). See bench/README.md for what each figure means.
"""

# ruff: noqa: E402 - a `--serve` child records its RSS before it imports flarelab.
from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

_RSS_BEFORE_IMPORT = math.nan
_IMPORT_START = math.nan
if "--serve" in sys.argv:
    from _common import rss_mib

    _RSS_BEFORE_IMPORT = rss_mib()
    _IMPORT_START = time.perf_counter()

import trio
from _common import (
    MIB,
    Report,
    Result,
    add_json_arg,
    emit_json,
    finish,
    rss_mib,
    spawn_python,
    wait_for_stdin_eof,
)
from _nodeperf import (
    PERF_CHECKED,
    SCRIPT,
    Plan,
    latency_result,
    loaded_extras,
    node_config,
    node_pair,
    otel_sdk_loaded,
    perf_checked,
    serve_perf_checked,
    start_child,
)

import flarelab
from flarelab.node import Node, PeerDisconnected, PeerIdentified
from flarelab.protocols.ping import PING_PROTOCOL, ping_stream

FLARELAB_DIR = Path(flarelab.__file__).resolve().parent
GOAL_CONNECT_MS = 3.0
GOAL_PING_MS = 0.3
GOAL_RSS_MIB = 40.0
WARMUP_CONNECTS = 10
RSS_PERF_MIB = 64  # each way, for the "after perf" RSS row


def add_failures(report: Report, results: list[Result]) -> None:
    """Note every failed run of these results (they are excluded from the medians)."""
    for result in results:
        for failure in result.extra.get("failures", []):
            report.note(f"{result.name} FAILED run: {failure}")
        for error in result.extra.get("errors", []):
            report.note(f"{result.name} error in {error}")


# --- goals 3 and 4: connect and ping latency -----------------------------------------------


async def measure_connect(plan: Plan) -> dict[str, Result]:
    """Time fresh connections to a loopback node: here (force_new, then fresh client nodes)
    and in a child process (force_new).

    Each sample: `connect` returns (the connection takes streams), then a first stream is
    negotiated (a full multistream round trip) and one ping answered; then the connection
    closes and the next sample waits until the server has let go of it.
    """
    samples: dict[str, list[float]] = {}

    async def sample(client: Node, addr: Any, label: str, warm: bool) -> None:
        start = time.perf_counter()
        conn = await client.connect(addr, force_new=True)
        returned = time.perf_counter()
        stream = await conn.new_stream([PING_PROTOCOL])
        await ping_stream(stream, 1)
        pinged = time.perf_counter()
        await stream.aclose()
        await conn.aclose()
        if warm:
            samples.setdefault(f"{label}.returned", []).append(returned - start)
            samples.setdefault(f"{label}.first_ping", []).append(pinged - start)

    async with Node(node_config(label="S")) as server:
        addr = server.addrs[0]
        with server.events.subscribe(PeerDisconnected) as gone:
            async with Node(node_config(listen=False, label="C")) as client:
                for i in range(WARMUP_CONNECTS + plan.connects):
                    await sample(client, addr, "flarelab.connect.1proc", i >= WARMUP_CONNECTS)
                    with trio.fail_after(10):
                        await gone.next()  # the server let go: no teardown in the next sample
            for i in range(1 + plan.fresh_connects):
                async with Node(node_config(listen=False, label="F")) as fresh:
                    await sample(fresh, addr, "flarelab.connect.1proc.fresh_node", i >= 1)
                with trio.fail_after(10):
                    await gone.next()
    if plan.two_process:
        async with AsyncExitStack() as stack:
            child, ready = await start_child(stack, "--muxer", "yamux")
            client = await stack.enter_async_context(Node(node_config(listen=False, label="C")))
            for i in range(WARMUP_CONNECTS + plan.connects):
                await sample(client, ready["addr"], "flarelab.connect.2proc", i >= WARMUP_CONNECTS)
                with trio.fail_after(10):
                    while "disconnected" not in await child.read_json():
                        pass
    return {name: latency_result(name, values) for name, values in samples.items()}


async def measure_ping(plan: Plan) -> dict[str, Result]:
    """Time pings on one stream: both nodes here, then the server in a child process."""
    warmup = 200
    results: dict[str, Result] = {}
    async with node_pair() as (server, client):
        rtts = await client.ping(server.peer_id, warmup + plan.pings)
    results["flarelab.ping_rtt.1proc"] = latency_result(
        "flarelab.ping_rtt.1proc", [ms / 1000 for ms in rtts[warmup:]]
    )
    if plan.two_process:
        async with AsyncExitStack() as stack:
            _, ready = await start_child(stack, "--muxer", "yamux")
            client = await stack.enter_async_context(Node(node_config(listen=False, label="C")))
            conn = await client.connect(ready["addr"])
            rtts = await client.ping(conn.remote_peer, warmup + plan.pings)
        results["flarelab.ping_rtt.2proc"] = latency_result(
            "flarelab.ping_rtt.2proc", [ms / 1000 for ms in rtts[warmup:]]
        )
    return results


async def measure_latency_baselines(plan: Plan) -> dict[str, Result]:
    """Measure raw trio TCP connect and 1-byte RTT (the floor under goals 3 and 4).

    In this process (the baselines' own figures) and, for the two-process rows, to an echo
    child: a wake-up in another process costs more than a task switch in this one.
    """
    from baselines.raw_tcp import connect_latency, ping_pong_rtt

    results = {r.name: r for r in [*await connect_latency(), await ping_pong_rtt()]}
    if plan.two_process:
        async with spawn_python(SCRIPT, "--echo") as child:
            with trio.fail_after(60):
                port = int((await child.read_json())["port"])
            connects: list[float] = []
            for i in range(WARMUP_CONNECTS + plan.connects):
                start = time.perf_counter()
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                elapsed = time.perf_counter() - start
                await stream.aclose()
                if i >= WARMUP_CONNECTS:
                    connects.append(elapsed)
            rtts: list[float] = []
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                for i in range(200 + plan.pings):
                    start = time.perf_counter()
                    await stream.send_all(b"x")
                    if await stream.receive_some(1) != b"x":
                        raise RuntimeError("the echo child answered something else")
                    if i >= 200:
                        rtts.append(time.perf_counter() - start)
        for name, samples in (
            ("raw_tcp.connect.2proc", connects),
            ("raw_tcp.rtt_1byte.2proc", rtts),
        ):
            results[name] = latency_result(name, samples)
    return results


async def echo() -> None:
    """Be a raw TCP echo child: announce a port, echo every connection until stdin closes."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    emit_json({"ready": True, "port": listener.socket.getsockname()[1]})

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, [listener])
        await wait_for_stdin_eof()
        nursery.cancel_scope.cancel()


# --- goal 5: memory ---------------------------------------------------------------------------


def installed_copy(folder: str) -> str:
    """Copy the flarelab package into folder and compile its bytecode, as pip would install it.

    Returns folder, for the child's PYTHONPATH (it comes before the editable install's finder).
    """
    shutil.copytree(
        FLARELAB_DIR, Path(folder) / "flarelab", ignore=shutil.ignore_patterns("__pycache__")
    )
    command = [sys.executable, "-m", "compileall", "-q", str(Path(folder) / "flarelab")]
    subprocess.run(command, check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
    return folder


async def rss_probe(
    *, tracing: str, installed: str | None, quic: str = "default", perf_mib: int = 0
) -> tuple[dict[str, Any], dict[str, float]]:
    """Start a fresh serving child; return its ready message and its RSS at each stage.

    Stages: "listening"; "connected" (one connection from a node here, 10 pings and
    identify done both ways); "after_perf" (if perf_mib: one perf-checked exchange).
    ``installed``: a folder with a compiled copy of flarelab (`installed_copy`) for the
    child to import; None: the source tree, compiled at import (PYTHONDONTWRITEBYTECODE).
    """
    rss: dict[str, float] = {}
    env = (
        {"PYTHONPATH": installed, "PYTHONDONTWRITEBYTECODE": "1"}
        if installed
        else {"PYTHONDONTWRITEBYTECODE": "1"}
    )
    with tempfile.TemporaryDirectory(prefix="flarelab-bench-") as tmp:
        args = ["--serve", "--tracing", tracing, "--trace-file", str(Path(tmp) / "serve.jsonl")]
        args += ["--quic", quic]
        async with spawn_python(SCRIPT, *args, env=env) as child:
            with trio.fail_after(60):
                ready = await child.read_json()
            rss["listening"] = rss_mib(child.pid)
            async with Node(node_config(listen=False, label="C")) as client:
                with trio.fail_after(30):
                    conn = await client.connect(ready["addr"])
                    await client.ping(conn.remote_peer, 10)
                    await client.identify_peer(conn.remote_peer)
                    identified = await child.read_json()  # the child identified us too
                if not identified.get("identified"):
                    raise RuntimeError(f"the serving child did not identify us: {identified}")
                rss["connected"] = rss_mib(child.pid)
                if perf_mib:
                    nbytes = perf_mib * MIB
                    await perf_checked(client, conn.remote_peer, nbytes, nbytes, seed=7)
                    rss["after_perf"] = rss_mib(child.pid)
    return ready, rss


async def measure_rss() -> dict[str, Result]:
    """Measure fresh child nodes' RSS: after import, listening, connected (ping + identify).

    flarelab is an editable install and this environment sets PYTHONDONTWRITEBYTECODE, so
    its modules would be compiled from source at every import (the compiler's garbage stays
    in RSS), while py-libp2p, trio and cryptography load the bytecode pip compiled. Like
    with like: the goal figure's child imports a compiled copy of flarelab (as installed by
    pip); the ``from_source`` row shows the source tree compiled at import.
    """
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="flarelab-installed-") as tmp:
        installed = await trio.to_thread.run_sync(installed_copy, tmp)
        probes = {
            "": await rss_probe(tracing="off", installed=installed, perf_mib=RSS_PERF_MIB),
            ".tracing": await rss_probe(tracing="bus+file", installed=installed),
            ".from_source": await rss_probe(tracing="off", installed=None),
            ".tcp_only": await rss_probe(tracing="off", installed=installed, quic="off"),
        }
    for suffix, (ready, rss) in probes.items():
        info = {
            "transports": ",".join(ready["transports"]),
            "otel_sdk": ready["otel_sdk"],
            "extras": ",".join(ready["extras"]) or "none",
            "modules": ready["modules"],
        }
        if not suffix:
            results["flarelab.rss.after_import"] = Result(
                "flarelab.rss.after_import",
                ready["rss_after_import"],
                "MiB",
                {"before_import": ready["rss_before_import"], "import_ms": ready["import_ms"]},
            )
            results["flarelab.rss.node_listening"] = Result(
                "flarelab.rss.node_listening", rss["listening"], "MiB"
            )
        else:
            name = f"flarelab.rss.after_import{suffix}"
            results[name] = Result(
                name, ready["rss_after_import"], "MiB", {"import_ms": ready["import_ms"]}
            )
        name = f"flarelab.rss.node_connected{suffix}"
        results[name] = Result(name, rss["connected"], "MiB", info)
        if "after_perf" in rss:
            served = {"served_MiB": 2 * RSS_PERF_MIB}
            results["flarelab.rss.node_after_perf"] = Result(
                "flarelab.rss.node_after_perf", rss["after_perf"], "MiB", served
            )
    return results


# --- the serving child ------------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    """Be a server node in a child process: announce the address, report identifies."""
    rss_after_import = rss_mib()
    import_ms = (time.perf_counter() - _IMPORT_START) * 1000
    quic = {"on": True, "off": False, "default": None}[args.quic]
    config = node_config(
        muxer=args.muxer,
        tracing=args.tracing,
        trace_file=args.trace_file,
        label="serve",
        quic=quic,
    )
    async with Node(config) as node, trio.open_nursery() as nursery:
        node.set_handler(PERF_CHECKED, serve_perf_checked)
        with node.events.subscribe(PeerIdentified, PeerDisconnected) as events:
            emit_json(
                {
                    "ready": True,
                    "addr": str(node.addrs[0]),
                    "rss_before_import": round(_RSS_BEFORE_IMPORT, 1),
                    "rss_after_import": round(rss_after_import, 1),
                    "import_ms": round(import_ms),
                    "transports": [type(t).__name__ for t in node.transports],
                    "otel_sdk": otel_sdk_loaded(),
                    "extras": loaded_extras(),
                    "modules": len(sys.modules),
                }
            )

            async def announce() -> None:
                async for event in events:
                    what = "identified" if isinstance(event, PeerIdentified) else "disconnected"
                    emit_json({what: str(event.peer), "rss": round(rss_mib(), 1)})

            nursery.start_soon(announce)
            await wait_for_stdin_eof()
            nursery.cancel_scope.cancel()


# --- main -------------------------------------------------------------------------------------


async def bench(plan: Plan, goals: set[int], report: Report) -> None:
    """Measure the chosen goals in order and add their rows and ratios to report."""
    timings: list[str] = []

    async def timed(label: str, job: Any) -> dict[str, Result]:
        start = time.perf_counter()
        results: dict[str, Result] = await job
        timings.append(f"{label} {time.perf_counter() - start:.1f} s")
        report.extend(results)
        add_failures(report, list(results.values()))
        return results

    if 1 in goals or 2 in goals:
        import _node_throughput as tp  # the baselines: not for the serving child

        if 1 in goals:
            start = time.perf_counter()
            results, series = await tp.measure_throughput(plan, report)
            timings.append(f"throughput {time.perf_counter() - start:.1f} s")
            report.extend(results)
            add_failures(report, list(results.values()))
            tp.throughput_ratios(report, results, series, pylibp2p=plan.pylibp2p)
        if 2 in goals:
            tp.tracing_ratios(report, await timed("tracing", tp.measure_tracing(plan, report)))
    if 3 in goals:
        connect = await timed("connect", measure_connect(plan))
        for mode in ("1proc", "2proc"):
            ours = connect.get(f"flarelab.connect.{mode}.returned")
            if ours is not None:
                report.ratio(
                    f"[3] connect {mode}, connection returned / 3 ms", ours, GOAL_CONNECT_MS, 1.0
                )
    if 4 in goals:
        ping = await timed("ping", measure_ping(plan))
        for mode in ("1proc", "2proc"):
            ours = ping.get(f"flarelab.ping_rtt.{mode}")
            if ours is not None:
                report.ratio(f"[4] ping RTT {mode} / 0.3 ms", ours, GOAL_PING_MS, 1.0)
    if 3 in goals or 4 in goals:
        await timed("raw TCP latency", measure_latency_baselines(plan))
    if 5 in goals:
        rss = await timed("rss", measure_rss())
        for suffix, label in (("", "default config"), (".tcp_only", "TCP only")):
            ours = rss.get(f"flarelab.rss.node_connected{suffix}")
            if ours is not None:
                transports = ours.extra.get("transports", "")
                name = f"[5] RSS connected node, {label} ({transports}) / 40 MiB"
                report.ratio(name, ours, GOAL_RSS_MIB, 1.0)
    context_notes(report)
    report.note("took: " + ", ".join(timings))


def context_notes(report: Report) -> None:
    """Note how the latency and memory figures compare with the baselines (no goals)."""
    have = {r.name: r for r in report.results}

    def compare(ours: str, base: str) -> None:
        if ours in have and base in have and have[base].value > 0:
            factor = have[ours].value / have[base].value
            report.note(f"{ours} = {factor:.2f}x {base} (no goal)")

    compare("flarelab.connect.1proc.returned", "pylibp2p.connect.no_dial_wait")
    compare("flarelab.connect.1proc.fresh_node.returned", "pylibp2p.connect.no_dial_wait")
    compare("flarelab.connect.1proc.returned", "raw_tcp.connect")
    compare("flarelab.ping_rtt.1proc", "pylibp2p.ping_rtt")
    compare("flarelab.ping_rtt.1proc", "raw_tcp.rtt_1byte")
    compare("flarelab.ping_rtt.2proc", "raw_tcp.rtt_1byte.2proc")
    compare("flarelab.connect.2proc.returned", "raw_tcp.connect.2proc")
    compare("flarelab.rss.node_connected", "pylibp2p.rss.node_listening")


def main() -> None:
    """Parse options, run the chosen goals, print the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="1/8 of the bytes, one round, fewer samples"
    )
    parser.add_argument("--repeat", type=int, help="throughput rounds (3)")
    parser.add_argument("--mib", type=int, help="MiB each way per perf exchange (256)")
    parser.add_argument("--goals", default="1,2,3,4,5", help="comma list of goals to measure")
    parser.add_argument("--one-process", action="store_true", help="skip two-process runs")
    parser.add_argument("--no-pylibp2p", action="store_true", help="skip the py-libp2p baseline")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--muxer", default="yamux", help=argparse.SUPPRESS)
    parser.add_argument("--tracing", default="off", help=argparse.SUPPRESS)
    parser.add_argument("--trace-file", help=argparse.SUPPRESS)
    parser.add_argument("--quic", default="default", help=argparse.SUPPRESS)
    add_json_arg(parser)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, args)
        return
    if args.echo:
        trio.run(echo)
        return
    changes: dict[str, Any] = {
        "two_process": not args.one_process,
        "pylibp2p": not args.no_pylibp2p,
    }
    if args.repeat:
        changes["repeat"] = args.repeat
    if args.mib:
        changes["mib"] = args.mib
    plan = Plan.quick(**changes) if args.quick else Plan(**changes)
    goals = {int(g) for g in args.goals.split(",") if g.strip()}
    report = Report("flarelab node: TCP + Noise + Yamux over loopback, against same-run baselines")
    start = time.perf_counter()
    trio.run(bench, plan, goals, report)
    report.note(f"all measured in {time.perf_counter() - start:.1f} s")
    finish(report, args.json)


if __name__ == "__main__":
    main()

"""Benchmark the flarelab node core (TCP + Noise + Yamux) against baselines from the same run.

Goals (each printed as a ratio with PASS/FAIL; the baselines are measured here, in this run):

1. perf throughput on one stream, byte-exact (`/flarelab/bench/perf-checked/1.0.0`, see
   _nodeperf.py): >= 4x py-libp2p 0.8.1 and >= 25% of a raw trio TCP copy, one process
   (both nodes on one trio loop) and two (the server node in a `--serve` child), each
   against the baseline of the same shape. Our runs alternate with the raw TCP runs, and
   py-libp2p runs between our first and second rounds. The real `/perf/1.0.0` (lengths
   only) and Mplex are reported beside them, without a goal.
2. tracing costs at most 5% of perf throughput: the same exchange between two nodes with
   tracing disabled and two with a span bus + JSON-lines file on both, interleaved ABBA.
3. dial + Noise + Yamux: median at most 3 ms, a fresh connection per sample
   (`connect(force_new=True)`), timed until `connect` returns (the connection takes
   streams) and until a first ping on a newly negotiated stream is answered; also from a
   fresh client node per sample.
4. ping RTT median at most 0.3 ms: many pings on one stream, after a warm-up.
5. RSS of a node in a fresh child process, listening, with one connection and a finished
   ping and identify: at most 40 MiB (also after import, and with tracing on).

Run: `.venv/bin/python bench/bench_node.py [--quick] [--goals 1,3] [--json FILE]`
(about 70 s; `--quick` about 25 s). See bench/README.md for what each figure means.
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
from dataclasses import dataclass
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
    Child,
    Report,
    Result,
    Stats,
    TransferCheck,
    add_json_arg,
    emit_json,
    finish,
    rss_mib,
    spawn_python,
    wait_for_stdin_eof,
)
from _nodeperf import (
    PERF_CHECKED,
    Exchange,
    loaded_extras,
    node_config,
    node_pair,
    otel_sdk_loaded,
    perf_checked,
    serve_perf_checked,
)

import flarelab
from flarelab.node import Node, PeerDisconnected, PeerIdentified
from flarelab.protocols.ping import PING_PROTOCOL, ping_stream

SCRIPT = Path(__file__).resolve()
FLARELAB_DIR = Path(flarelab.__file__).resolve().parent
GOAL_VS_PYLIBP2P = 4.0
GOAL_VS_RAW_TCP = 0.25
GOAL_TRACING = 0.95
GOAL_CONNECT_MS = 3.0
GOAL_PING_MS = 0.3
GOAL_RSS_MIB = 40.0
WARMUP_CONNECTS = 10


@dataclass(frozen=True, slots=True)
class Plan:
    """How much to measure (the defaults, or `--quick`)."""

    mib: int = 256  # each way per perf exchange of ours
    raw_mib: int = 512  # per raw TCP / ChaCha copy run
    repeat: int = 3  # throughput runs of each kind
    pylibp2p_scale: float = 1.0  # 128 MiB each way per py-libp2p run
    tracing_mib: int = 64  # each way per tracing-overhead exchange
    tracing_rounds: int = 10  # exchanges per tracing configuration
    connects: int = 200
    fresh_connects: int = 30
    pings: int = 2000
    two_process: bool = True
    pylibp2p: bool = True

    @classmethod
    def quick(cls, **changes: Any) -> Plan:
        """Return the `--quick` plan: about 1/8 of the bytes, fewer samples."""
        return cls(
            **{
                "mib": 32,
                "raw_mib": 128,
                "repeat": 1,
                "pylibp2p_scale": 0.125,
                "tracing_mib": 16,
                "tracing_rounds": 6,
                "connects": 50,
                "fresh_connects": 10,
                "pings": 500,
                **changes,
            }
        )


# --- summaries -------------------------------------------------------------------------------


def summarize_exchanges(name: str, runs: list[Exchange], **extra: object) -> list[Result]:
    """Make upload and download Results (median MB/s over byte-exact runs)."""
    from baselines.pipe import TransferRun, summarize

    results = []
    for direction in ("upload", "download"):
        transfers = []
        for run in runs:
            check: TransferCheck = getattr(run, direction)
            if not run.ok(direction) and check.ok:  # arrived whole, yet the exchange failed
                check = TransferCheck(check.expected, check.received, first_mismatch=check.expected)
            seconds = getattr(run, f"{direction}_seconds")
            transfers.append(TransferRun(check.expected, seconds, check))
        result = summarize(f"{name}.{direction}", transfers, **extra)
        errors = [f"run {i + 1}: {r.error}" for i, r in enumerate(runs) if r.error]
        if errors:
            extra_with_errors = {**result.extra, "errors": errors}
            result = Result(result.name, result.value, result.unit, extra_with_errors)
        results.append(result)
    return results


def latency_result(name: str, samples_s: list[float], **extra: object) -> Result:
    """Make a millisecond Result (median, p90, n) from samples in seconds."""
    stats = Stats.of(samples_s).scaled(1000)
    return Result(name, stats.median, "ms", {"p90": stats.p90, "n": len(samples_s), **extra})


def add_failures(report: Report, results: list[Result]) -> None:
    """Note every failed run of these results (they are excluded from the medians)."""
    for result in results:
        for failure in result.extra.get("failures", []):
            report.note(f"{result.name} FAILED run: {failure}")
        for error in result.extra.get("errors", []):
            report.note(f"{result.name} error in {error}")


# --- goal 1: throughput ------------------------------------------------------------------------


async def start_child(stack: AsyncExitStack, *args: str) -> tuple[Child, dict[str, Any]]:
    """Start a `--serve` child node and return it with its ready message."""
    child = await stack.enter_async_context(spawn_python(SCRIPT, "--serve", *args))
    with trio.fail_after(60):
        ready = await child.read_json()
    return child, ready


async def measure_throughput(plan: Plan, report: Report) -> dict[str, Result]:
    """Measure perf throughput (ours, raw TCP alternating; py-libp2p after round one)."""
    from baselines.chacha_pipe import measure_chacha
    from baselines.pipe import IdentityCodec, copy_one_process, copy_two_process, summarize
    from baselines.raw_tcp import SCRIPT as RAW_SCRIPT
    from baselines.run import BaselineError, measure_pylibp2p

    nbytes, raw_bytes = plan.mib * MIB, plan.raw_mib * MIB
    raw = IdentityCodec()
    ours: dict[str, list[Exchange]] = {}
    perf10: dict[str, list[tuple[float, float]]] = {}
    raw_runs: dict[str, list[Any]] = {"1proc": [], "2proc": []}
    results: dict[str, Result] = {}
    async with AsyncExitStack() as stack:
        pairs = {m: await stack.enter_async_context(node_pair(muxer=m)) for m in ("yamux", "mplex")}
        targets: dict[str, tuple[Node, Any]] = {
            f"1proc.{m}": (client, server.peer_id) for m, (server, client) in pairs.items()
        }
        if plan.two_process:
            for muxer in ("yamux", "mplex"):
                _, ready = await start_child(stack, "--muxer", muxer)
                client = await stack.enter_async_context(
                    Node(node_config(muxer=muxer, listen=False, label="C"))
                )
                conn = await client.connect(ready["addr"])
                targets[f"2proc.{muxer}"] = (client, conn.remote_peer)
        for client, peer in targets.values():  # warm up every path
            await perf_checked(client, peer, 16 * MIB, 16 * MIB, seed=99)
        await copy_one_process(raw, 64 * MIB)
        for i in range(plan.repeat):
            for mode in ("1proc", "2proc") if plan.two_process else ("1proc",):
                if mode == "1proc":
                    raw_runs[mode].append(await copy_one_process(raw, raw_bytes, seed=i + 1))
                else:
                    raw_runs[mode] += await copy_two_process(
                        raw, RAW_SCRIPT, [], raw_bytes, 1, seed=i + 1, warmup_bytes=16 * MIB
                    )
                for key, (client, peer) in targets.items():
                    if not key.startswith(mode):
                        continue
                    run = await perf_checked(client, peer, nbytes, nbytes, seed=2 * i + 1)
                    ours.setdefault(key, []).append(run)
                    if key.endswith("yamux"):
                        got = await client.perf(peer, upload=nbytes, download=nbytes)
                        perf10.setdefault(key, []).append((got.upload_mbps, got.download_mbps))
            if i == 0 and plan.pylibp2p:
                try:
                    start = time.perf_counter()
                    notes: list[str] = []
                    results.update(
                        await measure_pylibp2p(
                            scale=plan.pylibp2p_scale,
                            repeat=plan.repeat,
                            two_process=plan.two_process,
                            notes=notes,
                        )
                    )
                    for text in notes:
                        report.note(f"py-libp2p: {text}")
                    report.note(f"py-libp2p took {time.perf_counter() - start:.1f} s")
                except BaselineError as err:
                    report.note(f"py-libp2p baseline FAILED: {err}")
    for mode, runs in raw_runs.items():
        if runs:
            results[f"raw_tcp.copy.{mode}"] = summarize(f"raw_tcp.copy.{mode}", runs)
    results.update(await measure_chacha(raw_bytes, plan.repeat, two_process=plan.two_process))
    for key, runs in ours.items():
        mode, muxer = key.split(".")
        name = f"flarelab.perf_checked.{mode}" + ("" if muxer == "yamux" else f".{muxer}")
        for result in summarize_exchanges(name, runs, muxer=muxer):
            results[result.name] = result
    for key, pairs_mbps in perf10.items():
        mode = key.split(".")[0]
        for index, direction in enumerate(("upload", "download")):
            values = [p[index] for p in pairs_mbps]
            name = f"flarelab.perf.{mode}.{direction}"
            results[name] = Result(
                name,
                Stats.of(values).median,
                "MB/s",
                {
                    "runs": len(values),
                    "MiB_per_run": plan.mib,
                    "best": round(max(values), 1),
                    "checked": "length-only",
                    "protocol": "/perf/1.0.0",
                },
            )
    return results


def throughput_ratios(report: Report, results: dict[str, Result]) -> None:
    """Add goal 1's ratios (and the ChaCha share as a note)."""
    nan = Result("missing", math.nan, "MB/s")
    for mode in ("1proc", "2proc"):
        for direction in ("upload", "download"):
            ours = results.get(f"flarelab.perf_checked.{mode}.{direction}")
            if ours is None:
                continue
            py = results.get(f"pylibp2p.perf.{mode}.{direction}", nan)
            raw = results.get(f"raw_tcp.copy.{mode}", nan)
            report.ratio(f"[1] {mode} {direction} vs py-libp2p", ours, py, GOAL_VS_PYLIBP2P)
            report.ratio(f"[1] {mode} {direction} vs raw TCP copy", ours, raw, GOAL_VS_RAW_TCP)
            chacha = results.get(f"chacha_pipe.copy.{mode}")
            if chacha is not None:
                share = ours.value / chacha.value
                report.note(f"{ours.name}: {share:.0%} of the ChaCha pipe ceiling (no goal)")
            mplex = results.get(f"flarelab.perf_checked.{mode}.mplex.{direction}")
            if mplex is not None and py is not nan:
                report.note(f"{mplex.name}: {mplex.value / py.value:.1f}x py-libp2p (no goal)")


# --- goal 2: tracing overhead ----------------------------------------------------------------


async def measure_tracing(plan: Plan, report: Report) -> dict[str, Result]:
    """Time the same exchange on untraced and traced node pairs, interleaved ABBA.

    Each round runs both back to back, so the ratio of a round's two runs is taken at one
    moment of a machine whose speed wanders; the goal figure is the median of those ratios.
    """
    nbytes = plan.tracing_mib * MIB
    runs: dict[str, list[Exchange]] = {"off": [], "bus+file": []}
    with tempfile.TemporaryDirectory(prefix="flarelab-bench-") as tmp:
        async with (
            node_pair(tracing="off") as (off_server, off_client),
            node_pair(tracing="bus+file", trace_dir=Path(tmp)) as (on_server, on_client),
        ):
            pairs = {"off": (off_client, off_server), "bus+file": (on_client, on_server)}
            for client, server in pairs.values():
                await perf_checked(client, server.peer_id, 16 * MIB, 16 * MIB, seed=99)
            for i in range(plan.tracing_rounds):
                order = list(pairs) if i % 4 in (0, 3) else list(reversed(pairs))
                for mode in order:
                    client, server = pairs[mode]
                    runs[mode].append(
                        await perf_checked(client, server.peer_id, nbytes, nbytes, seed=2 * i + 1)
                    )
        spans_written = count_lines(tmp)
    results: dict[str, Result] = {}
    for mode, mode_runs in runs.items():
        good = [r for r in mode_runs if not math.isnan(r.combined_mbps)]
        name = f"flarelab.tracing_{mode.replace('+', '_')}.1proc"
        extra: dict[str, Any] = {
            "runs": len(mode_runs),
            "MiB_each_way": plan.tracing_mib,
            "checked": f"{len(mode_runs) - len(good)} of {len(mode_runs)} FAILED"
            if len(good) < len(mode_runs)
            else "byte-exact",
            "mbps_each": [round(r.combined_mbps, 1) for r in mode_runs],
        }
        if mode != "off":
            extra["spans_written"] = spans_written
        wall = Stats.of([r.combined_mbps for r in good]).median if good else math.nan
        cpu = Stats.of([r.cpu_mbps for r in good]).median if good else math.nan
        results[name] = Result(name, wall, "MB/s", extra)
        results[f"{name}.cpu"] = Result(f"{name}.cpu", cpu, "MB/s", {"per": "CPU second"})
    for what in ("wall", "cpu"):
        ratios = [
            getattr(on, attr) / getattr(off, attr)
            for off, on in zip(runs["off"], runs["bus+file"], strict=True)
            for attr in ["combined_mbps" if what == "wall" else "cpu_mbps"]
        ]
        ratios = [r for r in ratios if not math.isnan(r)]
        name = f"flarelab.tracing.traced_over_untraced.{what}"
        value = Stats.of(ratios).median if ratios else math.nan
        results[name] = Result(
            name, value, "x", {"pairs": len(ratios), "each": [round(r, 3) for r in ratios]}
        )
    if not spans_written:
        report.note("tracing: the traced nodes wrote no spans; the comparison is void")
    return results


def count_lines(folder: str) -> int:
    """Return the number of lines in folder's JSON-lines trace files (one span each)."""
    total = 0
    for path in Path(folder).glob("*.jsonl"):
        with path.open("rb") as f:
            total += sum(1 for _ in f)
    return total


# --- goals 3 and 4: connect and ping latency -----------------------------------------------


async def measure_connect(plan: Plan, report: Report) -> dict[str, Result]:
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


async def measure_latency_baselines() -> dict[str, Result]:
    """Measure raw trio TCP connect and 1-byte RTT (the floor under goals 3 and 4)."""
    from baselines.raw_tcp import connect_latency, ping_pong_rtt

    return {r.name: r for r in [*await connect_latency(), await ping_pong_rtt()]}


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
    *, tracing: str, installed: str | None, perf_mib: int = 0
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


async def measure_rss(plan: Plan, report: Report) -> dict[str, Result]:
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
            "": await rss_probe(tracing="off", installed=installed, perf_mib=2 * plan.tracing_mib),
            ".tracing": await rss_probe(tracing="bus+file", installed=installed),
            ".from_source": await rss_probe(tracing="off", installed=None),
        }
    for suffix, (ready, rss) in probes.items():
        info = {
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
            served = {"served_MiB": 4 * plan.tracing_mib}
            results["flarelab.rss.node_after_perf"] = Result(
                "flarelab.rss.node_after_perf", rss["after_perf"], "MiB", served
            )
    return results


# --- the serving child ------------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    """Be a server node in a child process: announce the address, report identifies."""
    rss_after_import = rss_mib()
    import_ms = (time.perf_counter() - _IMPORT_START) * 1000
    config = node_config(
        muxer=args.muxer, tracing=args.tracing, trace_file=args.trace_file, label="serve"
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

    if 1 in goals:
        throughput_ratios(report, await timed("throughput", measure_throughput(plan, report)))
    if 2 in goals:
        tracing = await timed("tracing", measure_tracing(plan, report))
        for what, label in (("wall", "wall clock"), ("cpu", "per CPU second")):
            paired = tracing[f"flarelab.tracing.traced_over_untraced.{what}"]
            report.ratio(
                f"[2] traced / untraced perf, {label}, median of pairs",
                paired.value,
                1.0,
                GOAL_TRACING,
                higher_is_better=True,
            )
    if 3 in goals:
        connect = await timed("connect", measure_connect(plan, report))
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
        await timed("raw TCP latency", measure_latency_baselines())
    if 5 in goals:
        rss = await timed("rss", measure_rss(plan, report))
        ours = rss["flarelab.rss.node_connected"]
        report.ratio("[5] RSS node connected / 40 MiB", ours, GOAL_RSS_MIB, 1.0)
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
    compare("flarelab.rss.node_connected", "pylibp2p.rss.node_listening")


def main() -> None:
    """Parse options, run the chosen goals, print the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1/8 of the bytes, one run each")
    parser.add_argument("--repeat", type=int, help="throughput runs of each kind (3)")
    parser.add_argument("--mib", type=int, help="MiB each way per perf exchange (256)")
    parser.add_argument("--goals", default="1,2,3,4,5", help="comma list of goals to measure")
    parser.add_argument("--one-process", action="store_true", help="skip two-process runs")
    parser.add_argument("--no-pylibp2p", action="store_true", help="skip the py-libp2p baseline")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--muxer", default="yamux", help=argparse.SUPPRESS)
    parser.add_argument("--tracing", default="off", help=argparse.SUPPRESS)
    parser.add_argument("--trace-file", help=argparse.SUPPRESS)
    add_json_arg(parser)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, args)
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

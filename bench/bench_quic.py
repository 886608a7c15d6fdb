"""Benchmark flarelab's QUIC against plain aioquic and py-libp2p's QUIC, in the same run.

Goals (each printed as a ratio with PASS/FAIL):

1. perf throughput over QUIC on loopback, byte-exact, one stream, one process: at least
   85% of plain aioquic driven by its own asyncio glue with the same datagram size, for
   every size measured (1200 and 1452 bytes, the path sizes, and 16000, what flarelab uses
   on loopback). Ours is the whole node: two `Node`s, `/flarelab/bench/perf-checked/1.0.0`
   (bench/_nodeperf.py: a header, the `Pattern` stream checked byte for byte by the
   server, a report, then the download checked by the client). Plain aioquic runs the
   same exchange on one stream of `aioquic.asyncio.connect`/`serve`. Upload is the goal
   figure; download is reported beside it. The raw transport (one QUIC stream, no node)
   is reported too.
2. at least 4x py-libp2p 0.8.1's QUIC (bench/pylibp2p/perf.py --quic, in .venv-pylibp2p;
   its truncated transfers are reported and do not count).
3. dial + handshake until the peer is verified and the connection can take streams:
   median at most 5 ms on loopback, a fresh connection (and certificate) per sample, from
   a transport that listens too (as a node does: its dials leave from the listen socket),
   with the listener in this process (`1proc`) and in a child (`2proc`). Reported beside
   them: `1proc.own_socket`, a transport that does not listen (each dial opens and later
   closes its own socket; timed in one process it also pays for the listener finishing
   its side of the handshake, which a dial from a served socket does not wait for).

Every transfer is checked byte-exact (length and every byte); a failed check voids that
run and is reported.

Run: `.venv/bin/python bench/bench_quic.py [--quick] [--mib N] [--repeat N] [--json FILE]`
(about 60 s with py-libp2p; `--quick` about 25 s; `--no-pylibp2p` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import ssl
import struct
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from _common import (
    BENCH_DIR,
    CHUNK,
    MIB,
    PatternChecker,
    Report,
    Result,
    Stats,
    TransferCheck,
    add_json_arg,
    emit_json,
    finish,
    median,
    run_python,
    spawn_python,
    throughput_mbps,
    wait_for_stdin_eof,
)
from _nodeperf import PERF_CHECKED, pattern, perf_checked, serve_perf_checked

from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.multiaddr import Multiaddr
from flarelab.node import Node, NodeConfig
from flarelab.transports.quic import QuicConfig, QuicTransport
from flarelab.transports.quic.tls import ALPN, generate_credentials

SIZES = (1200, 1452, 16000)
GOAL_VS_AIOQUIC = 0.85
GOAL_VS_PYLIBP2P = 4.0
GOAL_DIAL_MS = 5.0
_HEADER = struct.Struct(">QQQ")  # upload bytes, download bytes, seed (as _nodeperf)
_REPORT = struct.Struct(">Qq")  # bytes received, first wrong offset or -1


# ------------------------------------------------------------------ plain aioquic (asyncio)


def aioquic_exchange(size: int, upload: int, download: int, seed: int) -> dict[str, Any]:
    """One perf-checked exchange over plain aioquic and its asyncio glue (both ends here)."""
    return asyncio.run(_aioquic_exchange(size, upload, download, seed))


async def _aioquic_exchange(size: int, upload: int, download: int, seed: int) -> dict[str, Any]:
    from aioquic.asyncio import connect, serve
    from aioquic.quic.configuration import QuicConfiguration

    creds = generate_credentials(Ed25519PrivateKey.generate(), now=_utc_now())
    server_config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
    server_config.max_datagram_size = size
    server_config.certificate, server_config.private_key = creds.certificate, creds.private_key

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up, down, s = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        checker = PatternChecker(pattern(s), up)
        while data := await reader.read(1 << 18):
            checker.feed(data)
        result = checker.result()
        writer.write(_REPORT.pack(result.received, result.first_mismatch))
        for piece in pattern(s + 1).chunks(down, CHUNK):
            writer.write(piece)
            await writer.drain()
        writer.write_eof()

    tasks: set[asyncio.Task[None]] = set()

    def stream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(handle(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await serve(
        "127.0.0.1", 0, configuration=server_config, stream_handler=stream_handler
    )
    port = server._transport.get_extra_info("sockname")[1]
    client_config = QuicConfiguration(
        is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE
    )
    client_config.max_datagram_size = size
    try:
        async with connect("127.0.0.1", port, configuration=client_config) as client:
            reader, writer = await client.create_stream()
            start = time.perf_counter()
            writer.write(_HEADER.pack(upload, download, seed))
            for piece in pattern(seed).chunks(upload, CHUNK):
                writer.write(piece)
                await writer.drain()
            writer.write_eof()
            received, first = _REPORT.unpack(await reader.readexactly(_REPORT.size))
            uploaded = time.perf_counter()
            checker = PatternChecker(pattern(seed + 1), download)
            while data := await reader.read(1 << 18):
                checker.feed(data)
            end = time.perf_counter()
    finally:
        server.close()
    return {
        "upload": TransferCheck(upload, received, first),
        "upload_seconds": uploaded - start,
        "download": checker.result(),
        "download_seconds": end - uploaded,
    }


def _utc_now() -> Any:
    import datetime

    return datetime.datetime.now(datetime.UTC)


# ------------------------------------------------------------------ flarelab


async def node_exchange(size: int, upload: int, download: int, seed: int) -> dict[str, Any]:
    """One perf-checked exchange between two flarelab nodes over QUIC."""
    config = NodeConfig(
        listen_addrs=["/ip4/127.0.0.1/udp/0/quic-v1"],
        quic=QuicConfig(max_datagram_size=size),
        enable_identify=False,
    )
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(Node(config))
        client = await stack.enter_async_context(Node(config))
        server.set_handler(PERF_CHECKED, serve_perf_checked)
        conn = await client.connect(server.addrs[0])
        assert conn.transport == "quic", conn
        assert conn.muxer.core.datagram_size == size  # type: ignore[attr-defined]
        exchange = await perf_checked(client, server.peer_id, upload, download, seed)
    return {
        "upload": exchange.upload,
        "upload_seconds": exchange.upload_seconds,
        "download": exchange.download,
        "download_seconds": exchange.download_seconds,
        "error": exchange.error,
    }


async def stream_exchange(size: int, upload: int, seed: int) -> dict[str, Any]:
    """Upload over one raw QUIC stream (QuicTransport, no node), checked by the server."""
    config = QuicConfig(max_datagram_size=size)
    server_key = Ed25519PrivateKey.generate()
    server_t = QuicTransport(server_key, config=config)
    client_t = QuicTransport(Ed25519PrivateKey.generate(), config=config)
    report: list[TransferCheck] = []

    async def handler(secured: Any) -> None:
        conn = secured.muxer
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            stream = await conn.accept_stream()
            checker = PatternChecker(pattern(seed), upload)
            while data := await stream.receive_some():
                checker.feed(data)
            result = checker.result()
            report.append(result)
            await stream.send_all(_REPORT.pack(result.received, result.first_mismatch))
            await stream.aclose()
            await conn.wait_closed()

    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            server_t.listen, Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1"), handler, nursery
        )
        addr = listener.addrs[0].with_peer_id(PeerId.from_public_key(server_key.public_key))
        secured = await client_t.dial(addr)
        conn = secured.muxer
        nursery.start_soon(conn.run)
        stream = await conn.open_stream()
        start = time.perf_counter()
        for piece in pattern(seed).chunks(upload, CHUNK):
            await stream.send_all(piece)
        await stream.send_eof()
        reply = b""
        while data := await stream.receive_some():
            reply += data
        seconds = time.perf_counter() - start
        await conn.aclose()
        await listener.aclose()
        nursery.cancel_scope.cancel()
    received, first = _REPORT.unpack(reply)
    return {"upload": TransferCheck(upload, received, first), "upload_seconds": seconds}


async def dial_samples(
    addr: Multiaddr, count: int, *, listening: bool
) -> tuple[list[float], list[float]]:
    """Time `QuicTransport.dial` to a verified, stream-ready connection, fresh each time.

    ``listening``: the dialling transport listens too, so dials leave from its listen
    socket (what a node does); otherwise each dial opens its own socket.
    """
    client_t = QuicTransport(Ed25519PrivateKey.generate())
    samples: list[float] = []
    cpu: list[float] = []  # this process's CPU time per dial: what a busy machine leaves alone
    async with trio.open_nursery() as nursery:
        if listening:
            await nursery.start(
                client_t.listen, Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1"), _serve, nursery
            )
        for i in range(count + 3):
            start, cpu_start = time.perf_counter(), time.process_time()
            secured = await client_t.dial(addr)
            elapsed = time.perf_counter() - start
            if i >= 3:  # warm-up: imports, first certificates
                samples.append(elapsed)
                cpu.append(time.process_time() - cpu_start)
            async with trio.open_nursery() as inner:
                inner.start_soon(secured.muxer.run)
                await secured.muxer.aclose()
        nursery.cancel_scope.cancel()
    return samples, cpu


async def _serve(secured: Any) -> None:
    await secured.muxer.run()


async def quic_listener(
    nursery: trio.Nursery, task_status: trio.TaskStatus[Multiaddr] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on QUIC and serve every connection until cancelled; report the address."""
    key = Ed25519PrivateKey.generate()
    transport = QuicTransport(key)

    async def handler(secured: Any) -> None:
        await secured.muxer.run()

    listener = await nursery.start(
        transport.listen, Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1"), handler, nursery
    )
    task_status.started(listener.addrs[0].with_peer_id(PeerId.from_public_key(key.public_key)))


async def measure_dials(count: int) -> dict[str, tuple[list[float], list[float]]]:
    """Dial samples with the listener in this process and in a child process."""
    out = {}
    async with trio.open_nursery() as nursery:
        addr = await nursery.start(quic_listener, nursery)
        gc.collect()
        out["1proc"] = await dial_samples(addr, count, listening=True)
        gc.collect()
        out["1proc.own_socket"] = await dial_samples(addr, count, listening=False)
        nursery.cancel_scope.cancel()
    async with spawn_python(__file__, "--serve") as child:
        with trio.fail_after(60):
            ready = await child.read_json()
        gc.collect()
        out["2proc"] = await dial_samples(Multiaddr(ready["addr"]), count, listening=True)
    return out


async def serve_child() -> None:
    """The `--serve` child: a QUIC listener until stdin closes."""
    async with trio.open_nursery() as nursery:
        addr = await nursery.start(quic_listener, nursery)
        emit_json({"addr": str(addr)})
        await wait_for_stdin_eof()
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ reporting


def summarize(
    name: str, runs: list[dict[str, Any]], direction: str, report: Report, **extra: Any
) -> Result:
    """A throughput Result (median of the byte-exact runs) for one direction."""
    speeds = []
    failures = []
    for i, run in enumerate(runs, 1):
        check: TransferCheck = run[direction]
        error = run.get("error", "") if direction == "download" else ""
        if check.ok and not error:
            speeds.append(throughput_mbps(check.expected, run[f"{direction}_seconds"]))
        else:
            failures.append(f"run {i}: {check.describe()} {error}".strip())
    for failure in failures:
        report.note(f"{name} {failure}")
    value = median(speeds) if speeds else math.nan
    checked = "byte-exact" if not failures else f"{len(failures)} of {len(runs)} FAILED"
    return report.add(
        Result(
            name,
            value,
            "MB/s",
            {"runs": len(runs), "best": max(speeds, default=math.nan), "checked": checked, **extra},
        )
    )


def pylibp2p_quic(mib: int, repeat: int, report: Report) -> Result | None:
    """Run py-libp2p 0.8.1's QUIC perf in .venv-pylibp2p; None when it is not installed."""
    venv = BENCH_DIR.parent / ".venv-pylibp2p"
    if not (venv / "bin" / "python").exists():
        report.note("py-libp2p QUIC skipped: run bench/pylibp2p/setup.sh first")
        return None
    json_path = Path(f"/tmp/flarelab-bench-quic-{time.time_ns()}.json")
    args = ["--one-process", "--mib", "1", "--repeat", str(repeat), "--connects", "1"]
    args += ["--pings", "10"]
    done = run_python(
        BENCH_DIR / "pylibp2p" / "perf.py",
        *args,
        "--quic",
        str(mib),
        "--json",
        str(json_path),
        venv=venv,
        timeout=600,
    )
    if done.returncode != 0 or not json_path.exists():
        report.note(f"py-libp2p QUIC run failed (exit {done.returncode})")
        return None
    import json

    data = json.loads(json_path.read_text())
    json_path.unlink()
    for item in data.get("results", []):
        if item["name"] == "pylibp2p.quic.perf.1proc.upload":
            result = Result.from_dict(item)
            report.add(result)
            for failure in result.extra.get("failures", []):
                report.note(f"{result.name} {failure}")
            return result
    report.note("py-libp2p QUIC reported no upload figure")
    return None


async def run(args: argparse.Namespace, report: Report) -> None:
    gc.collect()  # each phase starts from a clean heap (the transfers leave cycles behind)
    dials = await measure_dials(args.dials)
    budget = Result("budget", GOAL_DIAL_MS, "ms")
    for mode, (samples, cpu) in dials.items():
        stats = Stats.of(samples).scaled(1000)
        extra = {"p90": stats.p90, "n": len(samples), "cpu_ms": median(cpu) * 1000}
        dial = report.add(Result(f"flarelab.quic.dial.{mode}", stats.median, "ms", extra))
        if mode != "1proc.own_socket":  # reported, not a goal: see the module docstring
            report.ratio(f"[3] dial + handshake ready, {mode} / 5 ms", dial, budget, 1.0)
    upload = args.mib * MIB
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        base_runs, node_runs, raw_runs = [], [], []
        for round_ in range(args.repeat):  # interleaved: a busy moment hits both
            seed = 1000 * size + round_
            gc.collect()
            base_runs.append(
                await trio.to_thread.run_sync(aioquic_exchange, size, upload, upload // 4, seed)
            )
            gc.collect()
            node_runs.append(await node_exchange(size, upload, upload // 4, seed))
            gc.collect()
            raw_runs.append(await stream_exchange(size, upload, seed))
        base = summarize(f"aioquic.asyncio.{size}.upload", base_runs, "upload", report)
        ours = summarize(f"flarelab.quic.perf.{size}.upload", node_runs, "upload", report)
        summarize(f"flarelab.quic.perf.{size}.download", node_runs, "download", report)
        summarize(f"flarelab.quic.stream.{size}.upload", raw_runs, "upload", report)
        report.ratio(
            f"[1] perf upload, {size}-byte datagrams, vs plain aioquic", ours, base,
            GOAL_VS_AIOQUIC,
        )


def main() -> None:
    """Measure and print the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=32, help="MiB uploaded per run (32)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (3)")
    parser.add_argument("--dials", type=int, default=50, help="dials to time (50)")
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="datagram sizes (1200,1452,16000)"
    )
    parser.add_argument("--pylibp2p-mib", type=int, default=8, help="py-libp2p QUIC MiB (8)")
    parser.add_argument("--pylibp2p-runs", type=int, default=5, help="py-libp2p QUIC runs (5)")
    parser.add_argument("--no-pylibp2p", action="store_true", help="skip py-libp2p's QUIC")
    parser.add_argument("--quick", action="store_true", help="8 MiB, 1 run, 20 dials")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    add_json_arg(parser)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve_child)
        return
    if args.quick:
        args.mib, args.repeat, args.dials = 8, 1, 20
        args.pylibp2p_mib, args.pylibp2p_runs = 4, 3
    report = Report("flarelab QUIC over loopback vs plain aioquic and py-libp2p QUIC")
    started = time.perf_counter()
    trio.run(run, args, report)
    if not args.no_pylibp2p:
        theirs = pylibp2p_quic(args.pylibp2p_mib, args.pylibp2p_runs, report)
        if theirs is not None:
            biggest = max(int(s) for s in args.sizes.split(","))
            ours = report.get(f"flarelab.quic.perf.{biggest}.upload")
            report.ratio(
                "[2] perf upload vs py-libp2p 0.8.1 QUIC", ours, theirs, GOAL_VS_PYLIBP2P
            )
    report.note(f"all measured in {time.perf_counter() - started:.1f} s")
    finish(report, args.json)


if __name__ == "__main__":
    main()

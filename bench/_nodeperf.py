"""The node side of bench_node.py: a byte-exact perf protocol, node pairs and the serving child.

`/flarelab/bench/perf-checked/1.0.0` is `/perf/1.0.0` plus a report, exactly as
bench/pylibp2p/perf.py speaks it to py-libp2p: the client sends a 24-byte header (upload
bytes, download bytes, pattern seed), uploads the `Pattern(seed)` stream in 64 KiB writes and
closes its write side; the server checks every byte up to the end of stream, replies with a
16-byte report (bytes received, first wrong offset or -1), then sends `Pattern(seed + 1)` and
closes. Upload is timed from the header to the report, download from the report to the end of
stream. The benchmark registers the handler; the node knows nothing of it.

This module imports flarelab but not the baselines, so a `--serve` child of bench_node.py
holds only what a node needs (its RSS is one of the goals).
"""

from __future__ import annotations

import math
import struct
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import trio
from _common import (
    BENCH_DIR,
    CHUNK,
    Child,
    Pattern,
    PatternChecker,
    Result,
    Stats,
    TransferCheck,
    spawn_python,
    throughput_mbps,
)

from flarelab.node import Node, NodeConfig
from flarelab.node.connection import NetStream
from flarelab.tracing.provider import TracingConfig

__all__ = [
    "MUXERS",
    "PERF_CHECKED",
    "SCRIPT",
    "Exchange",
    "Plan",
    "latency_result",
    "loaded_extras",
    "node_config",
    "node_pair",
    "otel_sdk_loaded",
    "perf_checked",
    "serve_perf_checked",
    "start_child",
]

SCRIPT = BENCH_DIR / "bench_node.py"  # also the child that serves (`--serve`)
PERF_CHECKED = "/flarelab/bench/perf-checked/1.0.0"
MUXERS = {"yamux": "/yamux/1.0.0", "mplex": "/mplex/6.7.0"}
LISTEN = "/ip4/127.0.0.1/tcp/0"
_HEADER = struct.Struct(">QQQ")  # upload bytes, download bytes, seed
_REPORT = struct.Struct(">Qq")  # upload bytes received, first wrong offset or -1
#: what a client may ask the benchmark's server to receive or send per exchange
MAX_TRANSFER = 1 << 40
#: seconds an exchange may take: this floor plus one second per 10 MB
TIMEOUT_FLOOR = 30.0
#: modules that a plain node must not pull in (the workbench's extras)
WORKBENCH_EXTRAS = ("bokeh", "ipywidgets", "jupyter_bokeh", "IPython", "numpy", "pandas")


@dataclass(frozen=True, slots=True)
class Plan:
    """How much bench_node.py measures (the defaults, or `--quick`)."""

    mib: int = 256  # each way per perf exchange of ours
    raw_mib: int = 512  # per raw TCP / ChaCha copy run
    repeat: int = 3  # throughput rounds (each: ours, raw TCP, py-libp2p)
    pylibp2p_scale: float = 1.0  # 128 MiB each way per py-libp2p run
    tracing_mib: int = 32  # each way per tracing-overhead exchange
    tracing_rounds: int = 20  # exchanges per tracing configuration
    connects: int = 200
    fresh_connects: int = 30
    pings: int = 2000
    two_process: bool = True
    pylibp2p: bool = True

    @classmethod
    def quick(cls, **changes: Any) -> Plan:
        """Return the `--quick` plan: about 1/8 of the bytes, one round, fewer samples."""
        settings: dict[str, Any] = {
            "mib": 32,
            "raw_mib": 128,
            "repeat": 1,
            "pylibp2p_scale": 0.125,
            "tracing_mib": 32,
            "tracing_rounds": 8,
            "connects": 50,
            "fresh_connects": 10,
            "pings": 500,
        }
        return cls(**{**settings, **changes})


def latency_result(name: str, samples_s: list[float], **extra: object) -> Result:
    """Make a millisecond Result (median, p90, n) from samples in seconds."""
    stats = Stats.of(samples_s).scaled(1000)
    return Result(name, stats.median, "ms", {"p90": stats.p90, "n": len(samples_s), **extra})


async def start_child(stack: AsyncExitStack, *args: str) -> tuple[Child, dict[str, Any]]:
    """Start a `bench_node.py --serve` child node; return it with its ready message."""
    child = await stack.enter_async_context(spawn_python(SCRIPT, "--serve", *args))
    with trio.fail_after(60):
        ready = await child.read_json()
    return child, ready


@lru_cache(maxsize=8)
def pattern(seed: int) -> Pattern:
    """Return the (cached) pattern of seed: building one draws 1 MiB of random bytes."""
    return Pattern(seed)


# --- the perf-checked protocol -------------------------------------------------------------


async def read_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    """Read exactly n bytes or raise EOFError."""
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        if not data:
            raise EOFError(f"stream ended after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


async def send_pattern(stream: trio.abc.SendStream, seed: int, total: int) -> None:
    """Send total bytes of Pattern(seed) in 64 KiB writes (as every baseline does)."""
    for piece in pattern(seed).chunks(total, CHUNK):
        await stream.send_all(piece)


async def receive_checked(stream: trio.abc.ReceiveStream, checker: PatternChecker) -> None:
    """Receive (in the stream's own read size) and check until end of stream."""
    while data := await stream.receive_some():
        checker.feed(data)


async def serve_perf_checked(stream: NetStream) -> None:
    """Serve one perf-checked exchange (the node closes the stream after the handler)."""
    upload, download, seed = _HEADER.unpack(await read_exactly(stream, _HEADER.size))
    if upload > MAX_TRANSFER or download > MAX_TRANSFER:
        await stream.reset()
        return
    checker = PatternChecker(pattern(seed), upload)
    await receive_checked(stream, checker)
    result = checker.result()
    await stream.send_all(_REPORT.pack(result.received, result.first_mismatch))
    await send_pattern(stream, seed + 1, download)
    await stream.send_eof()


@dataclass(frozen=True, slots=True)
class Exchange:
    """One perf-checked exchange: each direction timed and checked, CPU time, any error."""

    upload: TransferCheck
    upload_seconds: float
    download: TransferCheck
    download_seconds: float
    cpu_seconds: float  # this process, for the whole exchange
    error: str = ""

    def ok(self, direction: str) -> bool:
        """Tell whether one direction arrived byte-exact (the download also ended cleanly)."""
        check: TransferCheck = getattr(self, direction)
        clean = not self.error if direction == "download" else True
        return check.ok and clean and not math.isnan(getattr(self, f"{direction}_seconds"))

    def mbps(self, direction: str) -> float:
        """Return one direction's MB/s (nan unless it is ok)."""
        if not self.ok(direction):
            return math.nan
        seconds = getattr(self, f"{direction}_seconds")
        return throughput_mbps(getattr(self, direction).expected, seconds)

    @property
    def combined_mbps(self) -> float:
        """Return both directions' bytes over both directions' time (nan unless both ok)."""
        if not (self.ok("upload") and self.ok("download")):
            return math.nan
        total = self.upload.expected + self.download.expected
        return throughput_mbps(total, self.upload_seconds + self.download_seconds)

    @property
    def cpu_mbps(self) -> float:
        """Return both directions' bytes per CPU second of this process."""
        total = self.upload.expected + self.download.expected
        return throughput_mbps(total, self.cpu_seconds) if self.combined_mbps > 0 else math.nan


def _cpu() -> float:
    return time.process_time()


async def perf_checked(node: Node, peer: object, upload: int, download: int, seed: int) -> Exchange:
    """Run one perf-checked exchange on a new stream to peer; failures become checks."""
    upload_check = TransferCheck(upload, 0)
    download_checker = PatternChecker(pattern(seed + 1), download)
    upload_seconds = download_seconds = math.nan
    timeout = TIMEOUT_FLOOR + (upload + download) / 10e6
    cpu_start = _cpu()
    stream: NetStream | None = None
    error = ""
    try:
        with trio.fail_after(timeout):
            stream = await node.new_stream(peer, PERF_CHECKED)  # type: ignore[arg-type]
            start = time.perf_counter()
            await stream.send_all(_HEADER.pack(upload, download, seed))
            await send_pattern(stream, seed, upload)
            await stream.send_eof()
            received, first_mismatch = _REPORT.unpack(await read_exactly(stream, _REPORT.size))
            upload_check = TransferCheck(upload, received, first_mismatch)
            uploaded = time.perf_counter()
            upload_seconds = uploaded - start
            await receive_checked(stream, download_checker)
            download_seconds = time.perf_counter() - uploaded
    except (Exception, trio.TooSlowError) as err:
        error = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        if stream is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.reset()
    else:
        await stream.aclose()
    return Exchange(
        upload_check,
        upload_seconds,
        download_checker.result(),
        download_seconds,
        _cpu() - cpu_start,
        error,
    )


# --- nodes -----------------------------------------------------------------------------------


def node_config(
    *,
    muxer: str = "yamux",
    listen: bool = True,
    tracing: str = "off",
    trace_file: str | Path | None = None,
    label: str | None = None,
    quic: bool | None = None,
) -> NodeConfig:
    """Return a loopback TCP node's config: one muxer, tracing "off" or "bus+file".

    "bus+file" gives the node its own span bus (with a listener, as a widget would have)
    and a JSON-lines trace file; it imports the OpenTelemetry SDK. ``quic``: turn the QUIC
    transport on or off where the node has one (None: the node's default).
    """
    if tracing == "off":
        tracing_config = TracingConfig(label=label, enabled=False)
    elif tracing == "bus+file":
        from flarelab.tracing.bus import SpanBus

        if trace_file is None:
            raise ValueError("bus+file tracing needs a trace file")
        bus = SpanBus()
        bus.add_listener(lambda record: None)
        tracing_config = TracingConfig(label=label, bus=bus, trace_file=trace_file)
    else:
        raise ValueError(f"unknown tracing mode {tracing!r}")
    config = NodeConfig(
        listen_addrs=[LISTEN] if listen else [],
        label=label,
        muxers=(MUXERS[muxer],),
        tracing=tracing_config,
    )
    if quic is not None and "enable_quic" in {f.name for f in fields(NodeConfig)}:
        config = replace(config, enable_quic=quic)
    return config


@asynccontextmanager
async def node_pair(
    *, muxer: str = "yamux", tracing: str = "off", trace_dir: Path | None = None
) -> AsyncIterator[tuple[Node, Node]]:
    """Run a listening server node (serving perf-checked) and a connected client node."""
    files = {side: trace_dir / f"{muxer}-{side}.jsonl" if trace_dir else None for side in "sc"}
    server_config = node_config(muxer=muxer, tracing=tracing, trace_file=files["s"], label="S")
    client_config = node_config(
        muxer=muxer, listen=False, tracing=tracing, trace_file=files["c"], label="C"
    )
    async with Node(server_config) as server, Node(client_config) as client:
        server.set_handler(PERF_CHECKED, serve_perf_checked)
        await client.connect(server.addrs[0])
        yield server, client


def loaded_extras() -> list[str]:
    """Return the workbench extras this process has imported (should be none)."""
    return [name for name in WORKBENCH_EXTRAS if name in sys.modules]


def otel_sdk_loaded() -> bool:
    """Tell whether the OpenTelemetry SDK is imported in this process."""
    return "opentelemetry.sdk.trace" in sys.modules

"""Cost of one traced protocol step: the no-op tracer against the SDK with the bus and a file.

The step is what a ping looks like in a driver: a span with two attributes, a message.sent
and a message.received event, and one attribute set before it ends. Configurations, all in
this process and measured alternately:

* ``noop``: ``NO_TRACER``, what every node pays when nothing consumes spans;
* ``sdk``: a node's SDK provider with no processor (the SDK's own cost);
* ``sdk+bus``: plus the live span bus (a start and an end record per span, one listener);
* ``sdk+bus+file``: plus the JSON-lines trace file (what ``flarelab --trace`` runs);
* ``sdk+bus+file+clock``: plus the TrioClock (simulations on a mock clock), inside trio.

Also: bytes of bus history per span, and the RSS and SDK import of a node process with
tracing off and on (child processes).

Run: ``.venv/bin/python bench/bench_tracing.py [--spans 20000] [--repeat 5] [--json FILE]``
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from _common import Report, Result, add_json_arg, finish, median
from opentelemetry.trace import Tracer

from flarelab.tracing import spans
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.clock import TrioClock
from flarelab.tracing.provider import NodeTracing, TracingConfig

PEER = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaaaaa"
REMOTE = "12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBbbbbbb"
ATTRS = {spans.LIBP2P_REMOTE_PEER_ID: REMOTE, spans.LIBP2P_PROTOCOL: "/ipfs/ping/1.0.0"}


def traced_step(tracer: Tracer) -> None:
    """Trace one ping-like protocol step."""
    with tracer.start_as_current_span(spans.PING, attributes=ATTRS) as span:
        spans.message_sent(span, "ping", 32)
        spans.message_received(span, "pong", 32)
        span.set_attribute(spans.LIBP2P_RTT_MS, 0.42)


def per_span_us(tracer: Tracer, n: int) -> float:
    """Return microseconds per traced step over n steps."""
    gc.collect()
    start = time.perf_counter()
    for _ in range(n):
        traced_step(tracer)
    return (time.perf_counter() - start) / n * 1e6


def make_tracers(tmp: Path, clock: TrioClock | None = None) -> dict[str, NodeTracing]:
    """Build one NodeTracing per configuration."""
    bus = SpanBus(history=10_000)
    bus.add_listener(lambda record: None)
    bus_file = SpanBus(history=10_000)
    bus_file.add_listener(lambda record: None)
    configs = {
        "noop": TracingConfig(label="noop"),
        "sdk": TracingConfig(label="sdk", otlp=False),
        "sdk+bus": TracingConfig(label="bus", bus=bus),
        "sdk+bus+file": TracingConfig(label="file", bus=bus_file, trace_file=tmp / "t.jsonl"),
    }
    if clock is not None:
        configs = {"sdk+bus+file+clock": TracingConfig(
            label="clock", bus=SpanBus(history=10_000), trace_file=tmp / "c.jsonl", clock=clock
        )}
    tracings = {name: NodeTracing.create(config, PEER) for name, config in configs.items()}
    if "sdk" in tracings:  # an SDK provider with no processor: build it by hand
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider(shutdown_on_exit=False)
        tracings["sdk"] = NodeTracing(
            label="sdk", peer_id=PEER, tracer=provider.get_tracer("flarelab"),
            provider=provider, meter=tracings["noop"].meter,
        )
    return tracings


def measure_all(n: int, repeat: int, tmp: Path) -> dict[str, list[float]]:
    """Measure every configuration ``repeat`` times, alternating between them."""
    tracings = make_tracers(tmp)
    samples: dict[str, list[float]] = {name: [] for name in tracings}
    for tracing in tracings.values():  # warm up
        per_span_us(tracing.tracer, min(n, 2000))
    for _ in range(repeat):
        for name, tracing in tracings.items():
            samples[name].append(per_span_us(tracing.tracer, n))
    for tracing in tracings.values():
        tracing.shutdown()

    async def with_clock() -> None:
        clocked = make_tracers(tmp, TrioClock())["sdk+bus+file+clock"]
        per_span_us(clocked.tracer, min(n, 2000))
        samples["sdk+bus+file+clock"] = [per_span_us(clocked.tracer, n) for _ in range(repeat)]
        clocked.shutdown()

    trio.run(with_clock)
    return samples


def history_bytes_per_span(n: int = 5000) -> float:
    """Return bytes the bus history holds per span (its start and end records)."""
    bus = SpanBus(history=2 * n)
    tracing = NodeTracing.create(TracingConfig(bus=bus), PEER)
    traced_step(tracing.tracer)
    bus.clear_history()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(n):
        traced_step(tracing.tracer)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(bus.history()) == 2 * n
    return (after - before) / n


def node_process(mode: str) -> dict[str, float]:
    """Return RSS (MiB) and SDK modules of a child that builds one node's tracing."""
    setup = {
        "off": "TracingConfig(label='A')",
        "bus+file": "TracingConfig(label='A', bus=__import__('flarelab.tracing.bus', "
                    "fromlist=['SpanBus']).SpanBus(), trace_file=sys.argv[1])",
    }[mode]
    code = (
        "import sys, time\n"
        "t0 = time.perf_counter()\n"
        "import trio\n"
        "from flarelab.tracing.provider import NodeTracing, TracingConfig\n"
        "from flarelab.tracing import spans\n"
        f"tracing = NodeTracing.create({setup}, {PEER!r})\n"
        "for _ in range(100):\n"
        "    with tracing.tracer.start_as_current_span(spans.PING) as s:\n"
        "        spans.message_sent(s, 'ping', 32)\n"
        "elapsed = time.perf_counter() - t0\n"
        "statm = open('/proc/self/statm').read().split()\n"
        "import os\n"
        "rss = int(statm[1]) * os.sysconf('SC_PAGE_SIZE') / (1 << 20)\n"
        "sdk = sum(1 for m in sys.modules if m.startswith('opentelemetry.sdk'))\n"
        "tracing.shutdown()\n"
        "print(rss, sdk, elapsed * 1000)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", code, str(Path(tmp) / "t.jsonl")],
            capture_output=True, text=True, check=True, timeout=120,
            cwd=Path(__file__).resolve().parents[1],
        )
    rss, sdk, ms = out.stdout.split()
    return {"rss_mib": float(rss), "sdk_modules": float(sdk), "startup_ms": float(ms)}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print (or write) the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000, help="spans per measurement")
    parser.add_argument("--repeat", type=int, default=5)
    add_json_arg(parser)
    args = parser.parse_args(argv)

    report = Report("tracing: cost per traced protocol step")
    with tempfile.TemporaryDirectory() as tmp:
        samples = measure_all(args.spans, args.repeat, Path(tmp))
    results: dict[str, Result] = {}
    for name, values in samples.items():  # best of the runs: the least disturbed figure
        results[name] = report.add(Result(
            f"span.{name}", min(values), "us",
            {"median": median(values), "spans": args.spans, "runs": len(values)},
        ))
    report.add(Result("bus.history_per_span", history_bytes_per_span(), "B"))
    for mode in ("off", "bus+file"):
        probe = node_process(mode)
        report.add(Result(f"node.rss.tracing_{mode}", probe["rss_mib"], "MiB",
                          {"sdk_modules": int(probe["sdk_modules"]),
                           "startup_ms": probe["startup_ms"]}))
    # Informational goals: our synchronous processors should not cost more than the SDK's
    # own span machinery does, and the no-op tracer should stay around a microsecond.
    report.ratio("bus+file over bare sdk", results["sdk+bus+file"], results["sdk"], 3.0)
    report.ratio("noop over bare sdk", results["noop"], results["sdk"], 0.2)
    finish(report, args.json)


if __name__ == "__main__":
    main()

"""Profile the node's hot paths with py-spy and say where the time goes, layer by layer.

Runs a workload in a child under `py-spy record` (a sampling profiler: no instrumentation,
so per-call Python costs are not inflated as under cProfile) and aggregates the samples by
the layer of the innermost flarelab/trio frame ("self" time: where the CPU was) and by the
layers on the stack ("inclusive"). Time in C (ChaCha20-Poly1305, socket syscalls) counts
for the Python line that called it; `--lines` lists the hottest lines.

Workloads (both nodes in one process, as bench_node.py's one-process figures):

* `perf-checked`: `/flarelab/bench/perf-checked/1.0.0`, 64 KiB writes, every byte checked;
* `perf`: the real `/perf/1.0.0` (`node.perf`), zeros in 256 KiB writes;
* `connect`: `connect(force_new=True)`, a stream and one ping, close, repeated;
* `ping`: pings on one stream.

Needs py-spy (`.venv/bin/pip install py-spy`). Run:
`.venv/bin/python bench/profile_node.py perf-checked [--mib 256] [--repeat 4] [--lines 25]`
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BENCH = Path(__file__).resolve().parent
MIB = 1 << 20
WORKLOADS = ("perf-checked", "perf", "connect", "ping")

#: (substring of a frame's file, layer), first match wins
LAYERS: tuple[tuple[str, str], ...] = (
    ("flarelab/security/noise/", "noise"),
    ("flarelab/muxers/driver.py", "muxer driver"),
    ("flarelab/muxers/stream.py", "muxer driver"),
    ("flarelab/muxers/", "muxer core"),
    ("flarelab/mss.py", "mss"),
    ("flarelab/wire.py", "wire"),
    ("flarelab/protocols/identify", "identify"),
    ("flarelab/protocols/perf.py", "perf loop"),
    ("flarelab/protocols/ping.py", "ping"),
    ("_nodeperf.py", "perf loop"),
    ("_pattern.py", "byte check"),
    ("flarelab/identity/", "identity (keys, peer records)"),
    ("flarelab/protobuf.py", "protobuf codec"),
    ("flarelab/pb/", "protobuf codec"),
    ("flarelab/node/", "node"),
    ("flarelab/transports/", "transport"),
    ("flarelab/multiaddr/", "multiaddr"),
    ("flarelab/tracing/", "tracing"),
    ("opentelemetry/", "opentelemetry"),
    ("trio/_socket.py", "trio socket (+ syscalls)"),
    ("trio/_highlevel_socket.py", "trio socket (+ syscalls)"),
    ("trio/_core/_io_epoll.py", "trio epoll wait"),
    ("trio/", "trio scheduler"),
    ("outcome/", "trio scheduler"),
    ("cryptography/", "cryptography (Python side)"),
)


# --- the workloads (run in the profiled child) -------------------------------------------


async def workload(name: str, mib: int, repeat: int, identify: bool = True) -> None:
    """Run one workload (both nodes in this process) and print what it achieved."""
    import trio
    from _nodeperf import node_config, node_pair, perf_checked

    from flarelab.node import Node, PeerDisconnected
    from flarelab.protocols.ping import PING_PROTOCOL, ping_stream

    await trio.lowlevel.checkpoint()
    nbytes = mib * MIB
    if name in ("perf-checked", "perf"):
        async with node_pair() as (server, client):
            await perf_checked(client, server.peer_id, 16 * MIB, 16 * MIB, seed=99)
            for i in range(repeat):
                if name == "perf":
                    got = await client.perf(server.peer_id, upload=nbytes, download=nbytes)
                    up, down = got.upload_mbps, got.download_mbps
                else:
                    run = await perf_checked(client, server.peer_id, nbytes, nbytes, seed=i + 1)
                    up, down = run.mbps("upload"), run.mbps("download")
                print(f"run {i + 1}: upload {up:.0f} MB/s, download {down:.0f} MB/s", flush=True)
    elif name == "connect":
        server_config = replace(node_config(label="S"), enable_identify=identify)
        client_config = replace(node_config(listen=False, label="C"), enable_identify=identify)
        async with Node(server_config) as server:
            with server.events.subscribe(PeerDisconnected) as gone:
                async with Node(client_config) as client:
                    start = time.perf_counter()
                    for _ in range(repeat * 100):
                        conn = await client.connect(server.addrs[0], force_new=True)
                        stream = await conn.new_stream([PING_PROTOCOL])
                        await ping_stream(stream, 1)
                        await stream.aclose()
                        await conn.aclose()
                        with trio.fail_after(10):
                            await gone.next()
                    each = (time.perf_counter() - start) / (repeat * 100) * 1000
                    print(f"{repeat * 100} connects, {each:.2f} ms each (profiled)", flush=True)
    elif name == "ping":
        async with node_pair() as (server, client):
            rtts = await client.ping(server.peer_id, repeat * 5000)
            rtts.sort()
            print(f"{len(rtts)} pings, median {rtts[len(rtts) // 2]:.3f} ms (profiled)")


# --- aggregation -------------------------------------------------------------------------


def layer_of(frame: str) -> str | None:
    """Return the layer of one py-spy frame `func (file:line)`, None if it is not ours."""
    for needle, layer in LAYERS:
        if needle in frame:
            return layer
    return None


def aggregate(raw: Path) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """Return self samples by layer, inclusive samples by layer, self samples by line, total."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    total = 0
    for text in raw.read_text().splitlines():
        stack, _, count_text = text.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if "unrolled_run" not in stack:  # imports and start-up, not the workload
            continue
        total += count
        leaf_layer = None
        for frame in reversed(frames):
            leaf_layer = layer_of(frame)
            if leaf_layer is not None:
                lines[frame.split(" ", 1)[0] + " " + _short(frame)] += count
                break
        own[leaf_layer or "other"] += count
        for layer in {layer_of(f) for f in frames} - {None, "trio scheduler"}:
            inclusive[layer] += count  # type: ignore[index]
    return own, inclusive, lines, total


def _short(frame: str) -> str:
    location = frame[frame.find("(") + 1 : frame.rfind(")")]
    for prefix in ("site-packages/", "/work/main/", str(BENCH.parent) + "/"):
        if prefix in location:
            location = location.split(prefix, 1)[1]
    return f"({location})"


def render(
    own: Counter[str], inclusive: Counter[str], lines: Counter[str], total: int, top: int
) -> str:
    """Return the layer table and the hottest lines."""
    out = [f"{total} samples in the trio run", "", f"{'layer':<32} {'self':>7} {'inclusive':>10}"]
    for layer, count in own.most_common():
        incl = inclusive.get(layer)
        incl_text = f"{incl / total:>9.1%}" if incl else f"{'':>9}"
        out.append(f"{layer:<32} {count / total:>7.1%} {incl_text}")
    out += ["", f"hottest lines (self), top {top}:"]
    for line, count in lines.most_common(top):
        out.append(f"{count / total:6.1%}  {line}")
    return "\n".join(out)


def main() -> None:
    """Profile a workload in a child under py-spy, then print where the time went."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--mib", type=int, default=256, help="MiB each way per perf run")
    parser.add_argument("--repeat", type=int, default=4, help="runs (x100 connects, x5000 pings)")
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--lines", type=int, default=25, help="hottest lines to list")
    parser.add_argument(
        "--no-identify", action="store_true", help="connect: nodes without identify"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import _nodeperf  # noqa: F401 - import everything before the trio run: the aggregation
        import trio  # counts only samples inside it

        import flarelab.node
        import flarelab.protocols.identify_service
        import flarelab.protocols.ping  # noqa: F401

        trio.run(workload, args.workload, args.mib, args.repeat, not args.no_identify)
        return
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        sys.exit("py-spy is not installed: .venv/bin/pip install py-spy")
    with tempfile.TemporaryDirectory(prefix="flarelab-profile-") as tmp:
        raw = Path(tmp) / "samples.txt"
        command = [spy, "record", "--rate", str(args.rate), "--format", "raw", "-o", str(raw)]
        command += ["--", sys.executable, __file__, "--child", args.workload]
        command += ["--mib", str(args.mib), "--repeat", str(args.repeat)]
        command += ["--no-identify"] if args.no_identify else []
        done = subprocess.run(command, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if done.returncode != 0 or not raw.exists():
            sys.exit(f"py-spy failed (exit {done.returncode})")
        own, inclusive, lines, total = aggregate(raw)
    print(render(own, inclusive, lines, total, args.lines))


if __name__ == "__main__":
    main()

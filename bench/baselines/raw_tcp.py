"""Measure raw trio TCP over loopback: copy throughput, connect latency, 1-byte ping-pong RTT.

The ceiling for everything flarelab does over TCP. Copy: 64 KiB writes of a patterned stream,
checked byte for byte, in one process (sender and receiver tasks on one trio loop) and in two
(a child receives). Run standalone: `.venv/bin/python bench/baselines/raw_tcp.py`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from _common import GIB, MIB, Report, Result, Stats, add_json_arg, finish

from baselines.pipe import IdentityCodec, copy_one_process, copy_two_process, serve, summarize

SCRIPT = Path(__file__).resolve()


async def connect_latency(count: int = 200, warmup: int = 20) -> list[Result]:
    """Time connects to a loopback listener in this process, two ways.

    `raw_tcp.connect`: `trio.open_tcp_stream` (address parsing, happy eyeballs, a stream
    object), what a transport built on trio's high-level API pays. `raw_tcp.connect_socket`:
    a bare `trio.socket` connect, the kernel's handshake plus one trio wake-up.
    """
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    port = listener.socket.getsockname()[1]
    samples: list[float] = []
    socket_samples: list[float] = []
    async with trio.open_nursery() as nursery:

        async def accept_and_close() -> None:
            async with listener:
                while True:
                    stream = await listener.accept()
                    await stream.aclose()

        nursery.start_soon(accept_and_close)
        for i in range(warmup + count):
            start = time.perf_counter()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            elapsed = time.perf_counter() - start
            await stream.aclose()
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
            with sock:
                socket_start = time.perf_counter()
                await sock.connect(("127.0.0.1", port))
                socket_elapsed = time.perf_counter() - socket_start
            if i >= warmup:
                samples.append(elapsed)
                socket_samples.append(socket_elapsed)
        nursery.cancel_scope.cancel()
    results = []
    for name, values in (("raw_tcp.connect", samples), ("raw_tcp.connect_socket", socket_samples)):
        stats = Stats.of(values).scaled(1000)
        results.append(Result(name, stats.median, "ms", {"p90": stats.p90, "n": count}))
    return results


async def ping_pong_rtt(count: int = 2000, warmup: int = 100) -> Result:
    """Time 1-byte request/1-byte echo round trips on one loopback connection (TCP_NODELAY)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    port = listener.socket.getsockname()[1]
    async with listener:
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
    samples: list[float] = []

    async def echo() -> None:
        while data := await server.receive_some(1):
            await server.send_all(data)

    async with client, server, trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        for i in range(warmup + count):
            start = time.perf_counter()
            await client.send_all(b"x")
            reply = await client.receive_some(1)
            elapsed = time.perf_counter() - start
            if reply != b"x":
                raise RuntimeError(f"ping-pong echo returned {reply!r}")
            if i >= warmup:
                samples.append(elapsed)
        await client.send_eof()
    stats = Stats.of(samples).scaled(1000)
    return Result("raw_tcp.rtt_1byte", stats.median, "ms", {"p90": stats.p90, "n": count})


async def measure_raw_tcp(
    total: int = GIB, repeat: int = 3, *, two_process: bool = True, compare: bool = True
) -> dict[str, Result]:
    """Measure every raw TCP baseline and return the results by name."""
    codec = IdentityCodec()
    await copy_one_process(codec, 64 * MIB)  # warm up the loop and the socket buffers
    one = [await copy_one_process(codec, total, seed=i + 1, compare=compare) for i in range(repeat)]
    results = [summarize("raw_tcp.copy.1proc", one)]
    if two_process:
        two = await copy_two_process(codec, SCRIPT, [], total, repeat, compare=compare)
        results.append(summarize("raw_tcp.copy.2proc", two))
    results.extend(await connect_latency())
    results.append(await ping_pong_rtt())
    return {r.name: r for r in results}


def main() -> None:
    """Run the raw TCP baselines and print them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=GIB // MIB, help="MiB per copy run (1024)")
    parser.add_argument("--repeat", type=int, default=3, help="copy runs per mode (3)")
    parser.add_argument("--one-process", action="store_true", help="skip the two-process copy")
    parser.add_argument(
        "--no-compare",
        action="store_true",
        help="check lengths only, not every byte (shows what the comparison costs)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    add_json_arg(parser)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, IdentityCodec())
        return
    results = trio.run(
        lambda: measure_raw_tcp(
            args.mib * MIB,
            args.repeat,
            two_process=not args.one_process,
            compare=not args.no_compare,
        )
    )
    report = Report("raw trio TCP over loopback")
    report.extend(results)
    finish(report, args.json)


if __name__ == "__main__":
    main()

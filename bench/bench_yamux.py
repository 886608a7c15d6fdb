"""Throughput of one Yamux (and Mplex) stream against the bare byte stream under it.

Three transports, each in this one process on one trio loop: trio's memory stream pair, a
loopback TCP connection, and loopback TCP + Noise (the full stack flarelab runs). On each,
the raw pair (the baseline), one Yamux stream and one Mplex stream move the same patterned
data in ``--chunk`` writes; runs alternate between them, so a busy moment hurts all alike;
every transfer is checked byte for byte (``--check sha256`` hashes instead, ``none`` only
counts). Each row gives the best and median wall-clock MB/s, and ``cpu`` = MB per CPU
second of this process (steadier than wall time when other jobs share the machine).

Ratios: muxer / raw per transport, and the full stack (TCP + Noise + Yamux) against the
500 MB/s goal for one stream in one process.

Latency (``--pings``, 0 to skip): a 32-byte echo round trip over the raw pair, a Yamux and
an Mplex stream of each transport, the three interleaved ping by ping (so they share every
busy moment); rows ``{transport}.{muxer}.ping`` give the median and p90 in ms, and a note
says what each muxer adds to a round trip.

Run: ``.venv/bin/python bench/bench_yamux.py [--mib 128] [--repeat 3] [--chunk 65536]
[--pings 3000] [--transports memory,tcp,noise]``
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
import trio.testing
from _common import (
    MB,
    MIB,
    Pattern,
    PatternChecker,
    Report,
    Result,
    Stats,
    add_json_arg,
    finish,
    median,
)

from flarelab.identity import generate_private_key
from flarelab.muxers import MplexConnection, YamuxConnection
from flarelab.muxers.driver import MuxerDriver
from flarelab.security.noise import noise_handshake

Pair = tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]
GOAL_FULL_STACK_MBPS = 500.0


# ---------------------------------------------------------------- transports


async def memory_pair() -> Pair:
    """Return trio's in-memory stream pair."""
    return trio.testing.memory_stream_pair()


async def tcp_pair() -> Pair:
    """Return a connected loopback TCP pair."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        box: list[trio.SocketStream] = []

        async def connect() -> None:
            box.append(await trio.open_tcp_stream("127.0.0.1", port))

        nursery.start_soon(connect)
        server = await listeners[0].accept()
    for listener in listeners:
        await listener.aclose()
    return box[0], server


async def noise_pair() -> Pair:
    """Return a loopback TCP pair secured with a real Noise XX handshake."""
    left, right = await tcp_pair()
    out: dict[bool, trio.abc.HalfCloseableStream] = {}

    async def handshake(stream: trio.abc.Stream, initiator: bool) -> None:
        key = generate_private_key()
        out[initiator] = await noise_handshake(stream, local_key=key, is_initiator=initiator)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(handshake, left, True)
        nursery.start_soon(handshake, right, False)
    return out[True], out[False]


TRANSPORTS: dict[str, Callable[[], Awaitable[Pair]]] = {
    "memory": memory_pair,
    "tcp": tcp_pair,
    "noise": noise_pair,
}


# ---------------------------------------------------------------- one transfer


class Checker:
    """Byte-exact (pattern), hashed (sha256) or counted (none) reception."""

    def __init__(self, mode: str, pattern: Pattern, total: int) -> None:
        self.mode = mode
        self.total = total
        self.pattern_check = PatternChecker(pattern, total, compare=mode == "pattern")
        self.hash = hashlib.sha256() if mode == "sha256" else None
        self.expected_hash = b""
        if self.hash is not None:
            expected = hashlib.sha256()
            for piece in pattern.chunks(total, 1 << 18):
                expected.update(piece)
            self.expected_hash = expected.digest()

    def feed(self, data: bytes | bytearray) -> None:
        """Check the next received piece."""
        if self.hash is not None:
            self.hash.update(data)
            self.pattern_check.received += len(data)
        else:
            self.pattern_check.feed(data)

    def verify(self, what: str) -> None:
        """Raise if the transfer was not exact."""
        check = self.pattern_check.result()
        if not check.ok:
            raise RuntimeError(f"{what}: {check.describe()}")
        if self.hash is not None and self.hash.digest() != self.expected_hash:
            raise RuntimeError(f"{what}: sha256 mismatch")


async def pump(
    sender: trio.abc.HalfCloseableStream,
    receiver: trio.abc.ReceiveStream,
    pattern: Pattern,
    total: int,
    chunk: int,
    checker: Checker,
) -> None:
    """Send ``total`` pattern bytes in ``chunk`` writes, then EOF; receive and check them."""

    async def send() -> None:
        for piece in pattern.chunks(total, chunk):
            await sender.send_all(piece)
        await sender.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while data := await receiver.receive_some(1 << 18):
            checker.feed(data)


async def run_one(
    transport: str, muxer: str, total: int, chunk: int, mode: str, seed: int
) -> tuple[float, float]:
    """Move ``total`` bytes once; return (wall seconds, CPU seconds)."""
    left, right = await TRANSPORTS[transport]()
    pattern = Pattern(seed)
    checker = Checker(mode, pattern, total)
    what = f"{transport}/{muxer}"
    if muxer == "raw":
        wall, cpu = time.perf_counter(), time.process_time()
        await pump(left, right, pattern, total, chunk, checker)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        await left.aclose()
        await right.aclose()
    else:
        cls = YamuxConnection if muxer == "yamux" else MplexConnection
        client: MuxerDriver = cls(left, is_initiator=True)
        server: MuxerDriver = cls(right, is_initiator=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            await nursery.start(server.run)
            out = await client.open_stream()
            await out.send_all(b"x")  # let the peer see the stream
            inbound = await server.accept_stream()
            assert await inbound.receive_some(1) == b"x"
            wall, cpu = time.perf_counter(), time.process_time()
            await pump(out, inbound, pattern, total, chunk, checker)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            await client.aclose()
            await server.aclose()
    checker.verify(what)
    return wall, cpu


# ---------------------------------------------------------------- round trips

PING_SIZE = 32
PING_WARMUP = 200


async def echo(stream: trio.abc.Stream) -> None:
    """Send back whatever arrives, until EOF or the stream breaks."""
    try:
        while data := await stream.receive_some():
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def ping_once(stream: trio.abc.Stream, message: bytes) -> float:
    """Send ``message`` and wait for all of it to come back; return the seconds it took."""
    start = time.perf_counter()
    await stream.send_all(message)
    got = 0
    while got < len(message):
        data = await stream.receive_some()
        if not data:
            raise RuntimeError("the echo ended early")
        got += len(data)
    return time.perf_counter() - start


async def ping_rtts(transport: str, count: int) -> dict[str, list[float]]:
    """Ping over the raw pair, a Yamux and an Mplex stream of ``transport``, interleaved."""
    senders: dict[str, trio.abc.Stream] = {}
    closers: list[trio.abc.AsyncResource] = []
    async with trio.open_nursery() as nursery:
        for muxer in ("raw", "yamux", "mplex"):
            left, right = await TRANSPORTS[transport]()
            closers += [left, right]
            if muxer == "raw":
                nursery.start_soon(echo, right)
                senders[muxer] = left
                continue
            cls = YamuxConnection if muxer == "yamux" else MplexConnection
            client: MuxerDriver = cls(left, is_initiator=True)
            server: MuxerDriver = cls(right, is_initiator=False)
            await nursery.start(client.run)
            await nursery.start(server.run)
            closers += [client, server]  # type: ignore[list-item]
            out = await client.open_stream()
            await out.send_all(b"x")
            inbound = await server.accept_stream()
            assert await inbound.receive_some(1) == b"x"
            nursery.start_soon(echo, inbound)
            senders[muxer] = out
        names = list(senders)
        rtts: dict[str, list[float]] = {name: [] for name in names}
        message = bytes(PING_SIZE)
        for i in range(PING_WARMUP + count):
            shift = i % len(names)  # rotate who goes first
            for name in names[shift:] + names[:shift]:
                rtt = await ping_once(senders[name], message)
                if i >= PING_WARMUP:
                    rtts[name].append(rtt)
        with trio.CancelScope(shield=True):
            for resource in closers:
                await resource.aclose()
        nursery.cancel_scope.cancel()
    return rtts


def add_ping_results(report: Report, transport: str, rtts: dict[str, list[float]]) -> None:
    """Record the round-trip rows of one transport and what each muxer adds."""
    stats = {name: Stats.of(samples).scaled(1e3) for name, samples in rtts.items()}
    for name, st in stats.items():
        report.add(
            Result(
                f"{transport}.{name}.ping",
                st.median,
                "ms",
                {"p90": round(st.p90, 4), "n": len(st.samples), "bytes": PING_SIZE},
            )
        )
    added = ", ".join(
        f"{name} +{(stats[name].median - stats['raw'].median) * 1e3:.0f} us"
        for name in ("yamux", "mplex")
    )
    report.note(f"{transport}: round trip over raw {stats['raw'].median * 1e3:.0f} us; {added}")


# ---------------------------------------------------------------- the benchmark


async def bench(args: argparse.Namespace) -> Report:
    """Run every combination ``repeat`` times, alternating; return the report."""
    total = args.mib * MIB
    muxers = ["raw", "yamux", "mplex"]
    transports = [t for t in TRANSPORTS if t in args.transports.split(",")]
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for transport in transports:  # warm up each path once (imports, socket buffers)
        for muxer in muxers:
            await run_one(transport, muxer, min(total, 16 * MIB), args.chunk, "none", 0)
    for rep in range(args.repeat):
        for transport in transports:
            for muxer in muxers:
                result = await run_one(transport, muxer, total, args.chunk, args.check, rep + 1)
                runs.setdefault((transport, muxer), []).append(result)

    report = Report(f"one muxed stream vs the raw pair: {args.mib} MiB in {args.chunk} B writes")
    results: dict[tuple[str, str], Result] = {}
    for (transport, muxer), samples in runs.items():
        rates = [total / wall / MB for wall, _ in samples]
        cpu_rates = [total / cpu / MB for _, cpu in samples]
        results[(transport, muxer)] = report.add(
            Result(
                f"{transport}.{muxer}",
                max(rates),
                "MB/s",
                {"median": median(rates), "cpu": max(cpu_rates), "runs": len(rates)},
            )
        )
    for transport in transports:
        for muxer in ("yamux", "mplex"):
            report.ratio(
                f"{transport}: {muxer} / raw",
                results[(transport, muxer)],
                results[(transport, "raw")],
                goal=0.8 if transport == "noise" else 0.3,
            )
    if "noise" in transports:
        full = results[("noise", "yamux")]
        report.ratio(
            "full stack (TCP+Noise+Yamux) vs 500 MB/s",
            full,
            GOAL_FULL_STACK_MBPS,
            goal=1.0,
        )
        report.note(
            "full stack by CPU time: "
            f"{full.extra['cpu']:.0f} MB per CPU second (wall figures suffer when the "
            "machine is shared)"
        )
    report.note(f"transfers checked: {args.check}")
    if args.pings:
        for transport in transports:
            add_ping_results(report, transport, await ping_rtts(transport, args.pings))
    return report


def main() -> None:
    """Parse options, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=128, help="MiB per transfer (128)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each combination (3)")
    parser.add_argument("--chunk", type=int, default=64 * 1024, help="bytes per write (65536)")
    parser.add_argument(
        "--check",
        choices=["pattern", "sha256", "none"],
        default="pattern",
        help="byte-exact comparison (default), a SHA-256 of the stream, or lengths only",
    )
    parser.add_argument(
        "--transports", default="memory,tcp,noise", help="comma list of memory,tcp,noise"
    )
    parser.add_argument(
        "--pings", type=int, default=3000, help="32-byte round trips per stream (0: none)"
    )
    add_json_arg(parser)
    args = parser.parse_args()
    finish(trio.run(bench, args), args.json)


if __name__ == "__main__":
    main()

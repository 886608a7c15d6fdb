"""Measure py-libp2p 0.8.1 over TCP + Noise + Yamux: the baseline flarelab must beat.

Runs in .venv-pylibp2p (`bash bench/pylibp2p/setup.sh` makes it), never in .venv:
`.venv-pylibp2p/bin/python bench/pylibp2p/perf.py [--json FILE]`.

- throughput on one stream, perf-style (the client sends a header, uploads, closes its write
  side; the server reads to EOF, reports what it got, then sends the download), in one process
  (both hosts on one trio loop) and in two (a `--serve` child). Every transfer is checked byte
  for byte and by length; a truncated or failed transfer is reported and not counted.
- connect: `host.connect` = TCP dial + multistream + Noise XX + multistream + Yamux, until the
  connection is registered. With the defaults its dial also waits out the swarm's 250 ms
  happy-eyeballs delay; `connect.no_dial_wait` sets `max_connections_per_peer=1`, which ends
  that wait as soon as one connection exists.
- ping: 32-byte /ipfs/ping/1.0.0 round trips on one open stream (the host's own handler).
- rss: a `--serve` child right after `import libp2p`, and while running (listening, then
  after serving the two-process transfers).

The hosts are given exactly Noise (`/noise`) and Yamux (`/yamux/1.0.0`), not py-libp2p's
defaults (which would also offer TLS, SECIO, plaintext and Mplex), and every connection is
checked to have negotiated them.

`--quic MIB` adds py-libp2p's QUIC (its own TLS and streams) perf in one process, off by
default: it moves about 1-2 MB/s here, ends most streams with a reset instead of an end of
stream, and now and then loses a stream's tail behind a clean end of stream.
"""

# ruff: noqa: E402 - a `--serve` child records its RSS before it imports py-libp2p.
from __future__ import annotations

import argparse
import logging
import math
import os
import secrets
import struct
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_RSS_BEFORE_IMPORT: float | None = None
if "--serve" in sys.argv:
    from _common import rss_mib

    _RSS_BEFORE_IMPORT = rss_mib()

import multiaddr
import trio
from _common import (
    CHUNK,
    MIB,
    Pattern,
    PatternChecker,
    Report,
    Result,
    Stats,
    TransferCheck,
    add_json_arg,
    emit_json,
    finish,
    rss_mib,
    spawn_python,
    throughput_mbps,
    wait_for_stdin_eof,
)
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair as create_ed25519_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.ping import ID as PING_ID
from libp2p.host.ping import PING_LENGTH
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

SCRIPT = Path(__file__).resolve()
LIBP2P_VERSION = "0.8.1"
PERF_CHECKED_ID = TProtocol("/flarelab/bench/perf-checked/1.0.0")
LISTEN = {
    "tcp": multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0"),
    "quic": multiaddr.Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1"),
}
_HEADER = struct.Struct(">QQQ")  # upload bytes, download bytes, seed
_REPORT = struct.Struct(">Qq")  # upload bytes received, first wrong offset or -1
TRANSFER_TIMEOUT_FLOOR = 30.0  # seconds; plus one second per 10 MB


class TransferFailed(Exception):
    """A perf transfer broke off: what arrived is in `check`."""

    def __init__(self, message: str, check: TransferCheck) -> None:
        super().__init__(message)
        self.check = check


# --- hosts ---------------------------------------------------------------------------------


def make_host(*, transport: str = "tcp", no_dial_wait: bool = False) -> IHost:
    """Return a py-libp2p host: TCP with exactly Noise and Yamux, or QUIC (its own TLS)."""
    key_pair = create_ed25519_key_pair()
    config = ConnectionConfig(max_connections_per_peer=1) if no_dial_wait else None
    if transport == "quic":
        return new_host(
            key_pair=key_pair,
            listen_addrs=[LISTEN["quic"]],
            enable_quic=True,
            connection_config=config,
        )
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_ID: noise},
        muxer_opt={TProtocol(YAMUX_ID): Yamux},
        listen_addrs=[LISTEN["tcp"]],
        connection_config=config,
    )


@asynccontextmanager
async def running_host(
    *, transport: str = "tcp", no_dial_wait: bool = False
) -> AsyncIterator[IHost]:
    """Run a host listening on loopback with the perf-checked handler set."""
    host = make_host(transport=transport, no_dial_wait=no_dial_wait)
    async with host.run(listen_addrs=[LISTEN[transport]]):
        host.set_stream_handler(PERF_CHECKED_ID, handle_perf_checked)
        yield host


def full_addr(host: IHost) -> multiaddr.Multiaddr:
    """Return the host's first listen address with its /p2p/ peer id."""
    for addr in host.get_addrs():
        if "/p2p/" in str(addr):
            return addr
    return host.get_addrs()[0].encapsulate(multiaddr.Multiaddr(f"/p2p/{host.get_id()}"))


def negotiated(host: IHost, peer: PeerInfo, transport: str = "tcp") -> dict[str, str]:
    """Return what the connection to peer runs on; over TCP insist on Noise + Yamux."""
    conns = host.get_network().get_connections(peer.peer_id)
    if not conns:
        raise RuntimeError(f"no connection to {peer.peer_id}")
    conn: Any = conns[0]
    if transport == "quic":
        return {"connection": type(conn.muxed_conn).__name__}
    security = str(conn.get_negotiated_security_protocol())
    muxer = str(conn.get_negotiated_muxer_protocol())
    if security != NOISE_ID or muxer != YAMUX_ID:
        raise RuntimeError(f"expected {NOISE_ID} + {YAMUX_ID}, negotiated {security} + {muxer}")
    return {"security": security, "muxer": muxer}


# --- the perf-checked protocol -------------------------------------------------------------


async def read_some(stream: INetStream, n: int) -> bytes:
    """Read up to n bytes; b'' at end of stream (py-libp2p raises StreamEOF or returns b'')."""
    try:
        data: bytes = await stream.read(n)
    except StreamEOF:
        return b""
    return data


async def read_exactly(stream: INetStream, n: int) -> bytes:
    """Read exactly n bytes or raise EOFError."""
    buf = bytearray()
    while len(buf) < n:
        data = await read_some(stream, n - len(buf))
        if not data:
            raise EOFError(f"stream ended after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


async def write_pattern(stream: INetStream, pattern: Pattern, total: int) -> None:
    """Write total pattern bytes in 64 KiB writes."""
    for piece in pattern.chunks(total, CHUNK):
        await stream.write(bytes(piece))


async def read_checked(stream: INetStream, checker: PatternChecker) -> None:
    """Read and check until end of stream."""
    while data := await read_some(stream, CHUNK):
        checker.feed(data)


async def handle_perf_checked(stream: INetStream) -> None:
    """Serve one perf-checked exchange: check the upload, report, send the download."""
    try:
        upload, download, seed = _HEADER.unpack(await read_exactly(stream, _HEADER.size))
        checker = PatternChecker(Pattern(seed), upload)
        await read_checked(stream, checker)
        result = checker.result()
        await stream.write(_REPORT.pack(result.received, result.first_mismatch))
        await write_pattern(stream, Pattern(seed + 1), download)
        await stream.close()
    except Exception as err:  # a broken exchange: reset so the client sees it, keep serving
        logging.getLogger("bench.pylibp2p").warning("perf-checked handler: %r", err)
        try:
            await stream.reset()
        except Exception:
            pass


@dataclass(frozen=True, slots=True)
class PerfRun:
    """One perf-checked exchange: each direction timed and checked, and any error."""

    upload_seconds: float
    upload: TransferCheck
    download_seconds: float
    download: TransferCheck
    error: str = ""  # set when the exchange raised (a reset instead of EOF counts too)

    def ok(self, direction: str) -> bool:
        """Tell whether a direction arrived byte-exact and ended cleanly.

        The upload is done once the server's report arrives; an error after that spoils only
        the download (a reset instead of an end of stream counts as an error).
        """
        check: TransferCheck = getattr(self, direction)
        if direction == "upload":
            return check.ok and not math.isnan(self.upload_seconds)
        return check.ok and not self.error

    def mbps(self, direction: str) -> float:
        """Return one direction's MB/s (nan unless `ok(direction)`)."""
        if not self.ok(direction):
            return math.nan
        check: TransferCheck = getattr(self, direction)
        return throughput_mbps(check.expected, getattr(self, f"{direction}_seconds"))


async def perf_checked(
    host: IHost, peer: PeerInfo, upload: int, download: int, seed: int
) -> PerfRun:
    """Run one perf-checked exchange on a new stream; failures become checks, not exceptions."""
    upload_check = TransferCheck(upload, 0)
    download_checker = PatternChecker(Pattern(seed + 1), download)
    upload_seconds = download_seconds = math.nan
    timeout = TRANSFER_TIMEOUT_FLOOR + (upload + download) / 10e6
    stream: INetStream | None = None
    try:
        with trio.fail_after(timeout):
            stream = await host.new_stream(peer.peer_id, [PERF_CHECKED_ID])
            start = time.perf_counter()
            await stream.write(_HEADER.pack(upload, download, seed))
            await write_pattern(stream, Pattern(seed), upload)
            await stream.close_write()
            received, first_mismatch = _REPORT.unpack(await read_exactly(stream, _REPORT.size))
            upload_check = TransferCheck(upload, received, first_mismatch)
            uploaded = time.perf_counter()
            upload_seconds = uploaded - start
            await read_checked(stream, download_checker)
            download_seconds = time.perf_counter() - uploaded
    except (Exception, trio.TooSlowError) as err:
        error = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        if stream is not None:
            try:
                await stream.reset()
            except Exception:
                pass
        check = download_checker.result()
        return PerfRun(upload_seconds, upload_check, download_seconds, check, error)
    try:
        await stream.close()
    except Exception:
        pass
    return PerfRun(upload_seconds, upload_check, download_seconds, download_checker.result())


def summarize_perf(
    prefix: str, runs: list[PerfRun], nbytes: int, info: dict[str, Any]
) -> list[Result]:
    """Make upload and download Results (median MB/s over byte-exact runs) with failure notes."""
    results = []
    for direction in ("upload", "download"):
        rates = [r.mbps(direction) for r in runs]
        good = [x for x in rates if not math.isnan(x)]
        failures = [
            f"run {i + 1} {direction}: {getattr(r, direction).describe()}"
            + (f"; {r.error}" if r.error else "")
            for i, r in enumerate(runs)
            if not r.ok(direction)
        ]
        extra: dict[str, Any] = {
            "runs": len(runs),
            "MiB_per_run": round(nbytes / MIB, 1),
            "best": round(max(good), 1) if good else math.nan,
            "checked": f"{len(failures)} of {len(runs)} FAILED" if failures else "byte-exact",
            **info,
            "mbps_each": [round(x, 1) for x in rates],
        }
        if failures:
            extra["failures"] = failures
        value = Stats.of(good).median if good else math.nan
        results.append(Result(f"{prefix}.{direction}", value, "MB/s", extra))
    return results


async def perf_series(
    host: IHost, peer: PeerInfo, nbytes: int, repeat: int, warmup: int
) -> list[PerfRun]:
    """Run a warm-up exchange, then repeat exchanges of nbytes each way (reconnecting if needed)."""
    if warmup:
        await perf_checked(host, peer, warmup, warmup, seed=100)
    runs = []
    for i in range(repeat):
        if not host.get_network().get_connections(peer.peer_id):
            await host.connect(peer)
        runs.append(await perf_checked(host, peer, nbytes, nbytes, seed=2 * i + 1))
    return runs


# --- measurements --------------------------------------------------------------------------


async def throughput_one_process(
    nbytes: int, repeat: int, warmup: int, transport: str = "tcp"
) -> list[Result]:
    """Measure perf-checked throughput between two hosts on one trio loop."""
    prefix = "pylibp2p.perf.1proc" if transport == "tcp" else f"pylibp2p.{transport}.perf.1proc"
    async with (
        running_host(transport=transport) as server,
        running_host(transport=transport) as client,
    ):
        peer = info_from_p2p_addr(full_addr(server))
        await client.connect(peer)
        info = negotiated(client, peer, transport)
        runs = await perf_series(client, peer, nbytes, repeat, warmup)
        return summarize_perf(prefix, runs, nbytes, info)


async def throughput_two_process(nbytes: int, repeat: int, warmup: int) -> list[Result]:
    """Measure perf-checked throughput to a `--serve` child; also take the child's RSS."""
    async with spawn_python(SCRIPT, "--serve") as child:
        ready = await child.read_json()
        peer = info_from_p2p_addr(multiaddr.Multiaddr(ready["addr"]))
        rss_listening = rss_mib(child.pid)
        async with running_host() as client:
            await client.connect(peer)
            info = negotiated(client, peer)
            runs = await perf_series(client, peer, nbytes, repeat, warmup)
            rss_after = rss_mib(child.pid)
        results = summarize_perf("pylibp2p.perf.2proc", runs, nbytes, info)
    results.append(
        Result(
            "pylibp2p.rss.after_import",
            ready["rss_after_import"],
            "MiB",
            {"before_import": ready["rss_before_import"]},
        )
    )
    results.append(Result("pylibp2p.rss.node_listening", rss_listening, "MiB"))
    served = {"served_MiB": 2 * nbytes * repeat // MIB}
    results.append(Result("pylibp2p.rss.node_after_perf", rss_after, "MiB", served))
    return results


async def connect_latency(count: int, *, no_dial_wait: bool) -> Result:
    """Time host.connect (dial + Noise + Yamux, connection registered) from fresh client hosts.

    A new client host per sample: py-libp2p's disconnect alone takes about 200 ms, and a
    fresh host also keeps one sample's caches out of the next.
    """
    name = "pylibp2p.connect.no_dial_wait" if no_dial_wait else "pylibp2p.connect"
    samples = []
    info: dict[str, str] = {}
    async with running_host() as server:
        peer = info_from_p2p_addr(full_addr(server))
        for i in range(count + 1):
            async with running_host(no_dial_wait=no_dial_wait) as client:
                start = time.perf_counter()
                await client.connect(peer)
                elapsed = time.perf_counter() - start
                info = negotiated(client, peer)
            if i > 0:  # the first connect also warms imports and caches
                samples.append(elapsed)
    stats = Stats.of(samples).scaled(1000)
    return Result(name, stats.median, "ms", {"p90": stats.p90, "n": count, **info})


async def ping_rtt(count: int, warmup: int = 100) -> Result:
    """Time 32-byte /ipfs/ping/1.0.0 round trips on one stream, served by the host's handler."""
    samples = []
    async with running_host() as server, running_host() as client:
        peer = info_from_p2p_addr(full_addr(server))
        await client.connect(peer)
        stream = await client.new_stream(peer.peer_id, [PING_ID])
        for i in range(warmup + count):
            payload = secrets.token_bytes(PING_LENGTH)
            start = time.perf_counter()
            await stream.write(payload)
            reply = await read_exactly(stream, PING_LENGTH)
            elapsed = time.perf_counter() - start
            if reply != payload:
                raise RuntimeError("ping reply differs from the payload")
            if i >= warmup:
                samples.append(elapsed)
        await stream.close()
    stats = Stats.of(samples).scaled(1000)
    return Result("pylibp2p.ping_rtt", stats.median, "ms", {"p90": stats.p90, "n": count})


async def measure_pylibp2p(
    nbytes: int = 128 * MIB,
    repeat: int = 3,
    *,
    connects: int = 10,
    pings: int = 1000,
    two_process: bool = True,
    quic_mib: int = 0,
) -> list[Result]:
    """Measure every py-libp2p baseline (and QUIC throughput if quic_mib)."""
    warmup = 4 * MIB
    results = await throughput_one_process(nbytes, repeat, warmup)
    if two_process:
        results += await throughput_two_process(nbytes, repeat, warmup)
    results.append(await connect_latency(connects, no_dial_wait=False))
    results.append(await connect_latency(3 * connects, no_dial_wait=True))
    results.append(await ping_rtt(pings))
    if quic_mib:
        results += await throughput_one_process(quic_mib * MIB, repeat, MIB, transport="quic")
    return results


# --- entry points --------------------------------------------------------------------------


async def serve() -> None:
    """Be the two-process server: announce the address and RSS, serve until stdin closes."""
    rss_after_import = rss_mib()
    async with running_host() as host:
        emit_json(
            {
                "ready": True,
                "addr": str(full_addr(host)),
                "rss_before_import": round(_RSS_BEFORE_IMPORT or math.nan, 1),
                "rss_after_import": round(rss_after_import, 1),
            }
        )
        await wait_for_stdin_eof()


class CountingHandler(logging.Handler):
    """Count py-libp2p's log records by level (and optionally let them through)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        """Count the record."""
        self.counts[record.levelname] = self.counts.get(record.levelname, 0) + 1


def capture_logging(verbose: bool) -> CountingHandler:
    """Count py-libp2p's warnings and errors instead of printing them (all of them if verbose).

    Disconnecting right after a timed connect makes py-libp2p log failed identify streams;
    that noise would bury the report, so the report only says how many records there were.
    """
    counter = CountingHandler()
    libp2p_logger = logging.getLogger("libp2p")
    libp2p_logger.addHandler(counter)
    if verbose:
        printer = logging.StreamHandler(sys.stderr)
        printer.setLevel(logging.WARNING)
        libp2p_logger.addHandler(printer)
    logging.getLogger("bench.pylibp2p").addHandler(logging.StreamHandler(sys.stderr))
    return counter


def main() -> None:
    """Run the py-libp2p baselines and print them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=128, help="MiB each way per perf run (128)")
    parser.add_argument("--repeat", type=int, default=3, help="perf runs per mode (3)")
    parser.add_argument("--connects", type=int, default=10, help="connects to time (10)")
    parser.add_argument("--pings", type=int, default=1000, help="pings to time (1000)")
    parser.add_argument("--one-process", action="store_true", help="skip the two-process run")
    parser.add_argument(
        "--quic",
        type=int,
        default=0,
        metavar="MIB",
        help="also measure QUIC perf, MIB each way per run (off; it runs at about 2 MB/s)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--verbose", action="store_true", help="print py-libp2p's warnings")
    add_json_arg(parser)
    args = parser.parse_args()
    log_counts = capture_logging(args.verbose)
    if args.serve:
        trio.run(serve)
        return
    tuning = sorted(k for k in os.environ if k.startswith("PY_YAMUX_"))
    results = trio.run(
        lambda: measure_pylibp2p(
            args.mib * MIB,
            args.repeat,
            connects=args.connects,
            pings=args.pings,
            two_process=not args.one_process,
            quic_mib=args.quic,
        )
    )
    report = Report(f"py-libp2p {LIBP2P_VERSION} TCP + Noise + Yamux over loopback")
    report.extend(results)
    for result in results:
        for failure in result.extra.get("failures", []):
            report.note(f"{result.name} {failure}")
    if log_counts.counts:
        counts = ", ".join(f"{n} {level}" for level, n in sorted(log_counts.counts.items()))
        report.note(f"py-libp2p logged {counts} records in this process (--verbose shows them)")
    if tuning:
        report.note(f"PY_YAMUX_* tuning variables set: {', '.join(tuning)} (not the defaults)")
    finish(report, args.json)


if __name__ == "__main__":
    main()

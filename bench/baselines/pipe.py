"""Copy a patterned byte stream over loopback TCP with trio, through a pluggable codec.

The same engine serves raw_tcp.py (identity codec) and chacha_pipe.py (framed
ChaCha20-Poly1305): in one process (a sender task and a receiver task on one trio loop) or
in two (this process sends and times; a child started with the script's `--serve` receives).
Every transfer is checked byte for byte against the pattern and its length; a run whose
check fails is reported, never counted.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio
from _common import (
    CHUNK,
    Pattern,
    PatternChecker,
    Result,
    Stats,
    TransferCheck,
    emit_json,
    spawn_python,
    throughput_mbps,
    wait_for_stdin_eof,
)

RECEIVE_SIZE = CHUNK
_HEADER = struct.Struct(">QQ?")  # total bytes, pattern seed, compare bytes (sender -> receiver)
_REPORT = struct.Struct(">Qq")  # bytes received, first wrong offset or -1 (receiver -> sender)


class Encoder(Protocol):
    """Turn one plaintext chunk into the bytes to put on the wire."""

    def encode(self, chunk: memoryview) -> bytes | memoryview: ...


class Decoder(Protocol):
    """Turn received wire bytes into plaintext pieces."""

    def decode(self, data: bytes | bytearray) -> Sequence[bytes | bytearray | memoryview]: ...

    def finish(self) -> None:
        """Raise if the stream ended inside a frame."""


class Codec(Protocol):
    """Make the encoder for a sender and the decoder for a receiver."""

    name: str

    def encoder(self) -> Encoder: ...

    def decoder(self) -> Decoder: ...


class IdentityCodec:
    """Put chunks on the wire unchanged: the raw TCP copy."""

    name = "raw"

    def encoder(self) -> IdentityCodec:
        """Return self: encoding is the identity."""
        return self

    def decoder(self) -> IdentityCodec:
        """Return self: decoding is the identity."""
        return self

    def encode(self, chunk: memoryview) -> memoryview:
        """Return chunk unchanged."""
        return chunk

    def decode(self, data: bytes | bytearray) -> tuple[bytes | bytearray]:
        """Return data unchanged."""
        return (data,)

    def finish(self) -> None:
        """Accept any end: there are no frames."""


@dataclass(frozen=True, slots=True)
class TransferRun:
    """One timed transfer and its byte-exact check."""

    nbytes: int
    seconds: float
    check: TransferCheck

    @property
    def mbps(self) -> float:
        """Return the throughput in MB/s."""
        return throughput_mbps(self.nbytes, self.seconds)


def summarize(name: str, runs: Sequence[TransferRun], **extra: object) -> Result:
    """Make one Result (median MB/s of the runs whose check passed) from several runs."""
    good = [r for r in runs if r.check.ok]
    bad = [r for r in runs if not r.check.ok]
    value = Stats.of([r.mbps for r in good]).median if good else math.nan
    compared = all(r.check.compared for r in runs)
    info: dict[str, object] = {
        "runs": len(runs),
        "MiB_per_run": round(runs[0].nbytes / (1 << 20), 1) if runs else 0,
        "best": round(max((r.mbps for r in good), default=math.nan), 1),
        "checked": f"{len(bad)} of {len(runs)} FAILED"
        if bad
        else ("byte-exact" if compared else "length-only"),
        **extra,
        "mbps_each": [round(r.mbps, 1) for r in runs],
    }
    if bad:
        info["failures"] = [r.check.describe() for r in bad]
    return Result(name, value, "MB/s", info)


async def _send_pattern(
    stream: trio.abc.SendStream, encoder: Encoder, pattern: Pattern, total: int, chunk: int
) -> None:
    """Send total pattern bytes in chunk-sized writes."""
    for piece in pattern.chunks(total, chunk):
        await stream.send_all(encoder.encode(piece))


async def _receive_checked(
    stream: trio.abc.ReceiveStream, decoder: Decoder, checker: PatternChecker
) -> None:
    """Receive and check until end of stream."""
    while data := await stream.receive_some(RECEIVE_SIZE):
        for piece in decoder.decode(data):
            checker.feed(piece)
    decoder.finish()


async def copy_one_process(
    codec: Codec, total: int, *, seed: int = 1, chunk: int = CHUNK, compare: bool = True
) -> TransferRun:
    """Copy total bytes from a sender task to a receiver task over loopback TCP."""
    pattern = Pattern(seed)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    port = listener.socket.getsockname()[1]
    async with listener:
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
    checker = PatternChecker(pattern, total, compare=compare)
    encoder, decoder = codec.encoder(), codec.decoder()

    async def sender() -> None:
        await _send_pattern(client, encoder, pattern, total, chunk)
        await client.send_eof()

    async with client, server:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await _receive_checked(server, decoder, checker)
        seconds = time.perf_counter() - start
    return TransferRun(total, seconds, checker.result())


async def serve(codec: Codec) -> None:
    """Be the receiving child: announce a port, check each connection's stream, report back.

    Runs until stdin closes (the parent's `spawn_python` exit).
    """
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    emit_json({"ready": True, "port": listener.socket.getsockname()[1]})

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            header = await _receive_exactly(stream, _HEADER.size)
            total, seed, compare = _HEADER.unpack(header)
            checker = PatternChecker(Pattern(seed), total, compare=compare)
            await _receive_checked(stream, codec.decoder(), checker)
            result = checker.result()
            await stream.send_all(_REPORT.pack(result.received, result.first_mismatch))

    async with trio.open_nursery() as nursery:

        async def accept_loop() -> None:
            async with listener:
                while True:
                    stream = await listener.accept()
                    await handle(stream)

        nursery.start_soon(accept_loop)
        await wait_for_stdin_eof()
        nursery.cancel_scope.cancel()


async def _receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    """Read exactly n bytes or raise EOFError."""
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        if not data:
            raise EOFError(f"stream ended after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


async def copy_two_process(
    codec: Codec,
    script: Path,
    serve_args: Sequence[str],
    total: int,
    repeat: int,
    *,
    seed: int = 1,
    chunk: int = CHUNK,
    compare: bool = True,
    warmup_bytes: int = 64 << 20,
) -> list[TransferRun]:
    """Send to a child started as `script --serve *serve_args`; time until its report arrives."""
    pattern = Pattern(seed)
    runs: list[TransferRun] = []
    async with spawn_python(script, "--serve", *serve_args) as child:
        ready = await child.read_json()
        port = int(ready["port"])

        async def one(nbytes: int) -> TransferRun:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                encoder = codec.encoder()
                start = time.perf_counter()
                await stream.send_all(_HEADER.pack(nbytes, seed, compare))
                await _send_pattern(stream, encoder, pattern, nbytes, chunk)
                await stream.send_eof()
                received, first_mismatch = _REPORT.unpack(
                    await _receive_exactly(stream, _REPORT.size)
                )
                seconds = time.perf_counter() - start
            check = TransferCheck(nbytes, received, first_mismatch, compare)
            return TransferRun(nbytes, seconds, check)

        if warmup_bytes:
            await one(warmup_bytes)
        for _ in range(repeat):
            runs.append(await one(total))
    return runs

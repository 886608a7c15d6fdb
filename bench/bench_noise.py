"""Throughput of NoiseStream over loopback TCP, next to a bare framed-ChaCha pipe.

Both run in this one process, on one trio loop, over a real loopback TCP socket pair, with
64 KiB writes of the same pseudo-random data; the receiver hashes every byte it gets and the
run counts only if the SHA-256 matches what was sent. The baseline frames and
ChaCha20-Poly1305-encrypts each write exactly as Noise does (two frames per 64 KiB write,
65519 + 17 bytes of plaintext) with no handshake and no stream machinery: the ceiling for
NoiseStream. Runs alternate between the two; the best and median of each are printed, with
the ratio of NoiseStream to the pipe, by wall clock and per CPU-second.

Run: ``.venv/bin/python bench/bench_noise.py [--mib 256] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from flarelab.identity import Ed25519PrivateKey
from flarelab.security.noise import noise_handshake


class NoHash:
    """A stand-in for hashlib's objects that checks nothing (to see what hashing costs)."""

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Ignore ``data``."""

    def digest(self) -> bytes:
        """Return the empty digest."""
        return b""


Hasher = Callable[[], "NoHash | hashlib._Hash"]
Runner = Callable[[list[memoryview], int, Hasher], Awaitable[tuple[float, bytes]]]
HASHES: dict[str, Hasher] = {"sha256": hashlib.sha256, "none": NoHash}

CHUNK = 64 * 1024
MIB = 1 << 20
POOL = 4 * MIB + 12_345  # the data cycles through this pool at a shifting offset
MAX_PLAINTEXT = 65519
TAG = 16
_LEN = struct.Struct(">H")
_NONCE = struct.Struct("<4xQ")

Pipe = tuple[trio.abc.Stream, trio.abc.Stream]


def chunks(pool: memoryview, total: int) -> list[memoryview]:
    """Return the 64 KiB windows of the pool that make up ``total`` bytes."""
    out = []
    offset = 0
    sent = 0
    while sent < total:
        size = min(CHUNK, total - sent)
        if offset + size > len(pool):
            offset = (offset + 4099) % (len(pool) - CHUNK)
        out.append(pool[offset : offset + size])
        offset += size
        sent += size
    return out


async def tcp_pair() -> Pipe:
    """Return a connected (client, server) pair of loopback TCP streams."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        client_box: list[trio.SocketStream] = []

        async def connect() -> None:
            client_box.append(await trio.open_tcp_stream("127.0.0.1", port))

        nursery.start_soon(connect)
        server = await listeners[0].accept()
    for listener in listeners:
        await listener.aclose()
    return client_box[0], server


# ---------------------------------------------------------------- the bare framed-ChaCha pipe


class BarePipe:
    """Noise framing and ChaCha20-Poly1305 with a fixed key: no handshake, no stream class."""

    def __init__(self) -> None:
        key = hashlib.sha256(b"bench_noise").digest()
        self.send_aead = ChaCha20Poly1305(key)
        self.recv_aead = ChaCha20Poly1305(key)
        self.send_nonce = 0
        self.recv_nonce = 0

    def encode(self, chunk: memoryview) -> bytearray:
        """Frame and encrypt one write."""
        frames = -(-len(chunk) // MAX_PLAINTEXT)
        out = bytearray(len(chunk) + frames * (2 + TAG))
        view = memoryview(out)
        pos = 0
        for start in range(0, len(chunk), MAX_PLAINTEXT):
            piece = chunk[start : start + MAX_PLAINTEXT]
            sealed = len(piece) + TAG
            _LEN.pack_into(out, pos, sealed)
            pos += 2
            self.send_aead.encrypt_into(
                _NONCE.pack(self.send_nonce), piece, None, view[pos : pos + sealed]
            )
            self.send_nonce += 1
            pos += sealed
        view.release()
        return out

    async def receive(self, stream: trio.abc.ReceiveStream, total: int, new_hash: Hasher) -> bytes:
        """Receive, decrypt and hash ``total`` bytes of plaintext; return the digest."""
        digest = new_hash()
        buf = bytearray()
        got = 0
        while got < total:
            data = await stream.receive_some(256 * 1024)
            if not data:
                raise RuntimeError("bare pipe ended early")
            buf += data
            pos = 0
            end = len(buf)
            with memoryview(buf) as view:
                while end - pos >= 2:
                    (sealed,) = _LEN.unpack_from(view, pos)
                    if end - pos - 2 < sealed:
                        break
                    start = pos + 2
                    plain = self.recv_aead.decrypt(
                        _NONCE.pack(self.recv_nonce), view[start : start + sealed], None
                    )
                    self.recv_nonce += 1
                    digest.update(plain)
                    got += len(plain)
                    pos = start + sealed
            del buf[:pos]
        return digest.digest()


async def run_bare(writes: list[memoryview], total: int, new_hash: Hasher) -> tuple[float, bytes]:
    """Time one transfer through the bare pipe; return (seconds, received digest)."""
    client, server = await tcp_pair()
    pipe = BarePipe()
    result: list[bytes] = []

    async def send() -> None:
        for chunk in writes:
            await client.send_all(pipe.encode(chunk))

    async def receive() -> None:
        result.append(await pipe.receive(server, total, new_hash))

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(receive)
    elapsed = time.perf_counter() - start
    await client.aclose()
    await server.aclose()
    return elapsed, result[0]


# ---------------------------------------------------------------- NoiseStream


async def run_noise(writes: list[memoryview], total: int, new_hash: Hasher) -> tuple[float, bytes]:
    """Time one transfer through NoiseStream (handshake excluded)."""
    client, server = await tcp_pair()
    streams: dict[str, trio.abc.Stream] = {}

    async def handshake(name: str, stream: trio.abc.Stream, initiator: bool) -> None:
        streams[name] = await noise_handshake(
            stream, local_key=Ed25519PrivateKey.generate(), is_initiator=initiator
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(handshake, "client", client, True)
        nursery.start_soon(handshake, "server", server, False)
    sender, receiver = streams["client"], streams["server"]
    result: list[bytes] = []

    async def send() -> None:
        for chunk in writes:
            await sender.send_all(chunk)

    async def receive() -> None:
        digest = new_hash()
        got = 0
        while got < total:
            data = await receiver.receive_some()
            if not data:
                raise RuntimeError("noise stream ended early")
            digest.update(data)
            got += len(data)
        result.append(digest.digest())

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(receive)
    elapsed = time.perf_counter() - start
    await sender.aclose()
    await receiver.aclose()
    return elapsed, result[0]


# ---------------------------------------------------------------- main


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _summary(name: str, values: list[float], unit: str) -> str:
    return (
        f"  {name:24s} best {max(values):7.1f} {unit}   median "
        f"{statistics.median(values):7.1f} {unit}   ({', '.join(f'{v:.0f}' for v in values)})"
    )


async def bench(total: int, repeat: int, check: str) -> None:
    """Run both transfers ``repeat`` times, alternating, and print the comparison.

    Besides wall-clock MB/s it prints MB per CPU-second of this process (sender and
    receiver both run in it), which stays meaningful when other work shares the machine.
    """
    new_hash = HASHES[check]
    pool = memoryview(os.urandom(POOL))
    writes = chunks(pool, total)
    expected = new_hash()
    for chunk in writes:
        expected.update(chunk)
    want = expected.digest()
    runners: dict[str, Runner] = {"bare framed-ChaCha pipe": run_bare, "NoiseStream": run_noise}
    # Warm up both (imports, allocator, socket buffers).
    for run in runners.values():
        await run(writes[: (32 * MIB) // CHUNK], min(total, 32 * MIB), new_hash)
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    for i in range(repeat):
        order = list(runners.items())
        for name, run in order if i % 2 == 0 else order[::-1]:
            cpu_start = _cpu_seconds()
            seconds, digest = await run(writes, total, new_hash)
            cpu_used = _cpu_seconds() - cpu_start
            if digest != want:
                raise SystemExit(f"{name}: the received bytes do not match what was sent")
            wall[name].append(total / seconds / 1e6)
            cpu[name].append(total / cpu_used / 1e6)
    print(
        f"{total / MIB:.0f} MiB per run in 64 KiB writes, {repeat} runs each, one process, "
        f"loopback TCP, receiver check: {check}"
    )
    for label, rates, unit in (("wall clock", wall, "MB/s"), ("per CPU-second", cpu, "MB/cpu-s")):
        print(f" {label}:")
        for name, values in rates.items():
            print(_summary(name, values, unit))
        bare, noise = rates["bare framed-ChaCha pipe"], rates["NoiseStream"]
        print(
            f"  ratio NoiseStream / pipe: best {max(noise) / max(bare):.3f}, "
            f"median {statistics.median(noise) / statistics.median(bare):.3f}"
        )


def main() -> None:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB per run (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument(
        "--check",
        choices=sorted(HASHES),
        default="sha256",
        help="how the receiver checks the data: sha256 (default) or none (length only)",
    )
    args = parser.parse_args()
    trio.run(bench, args.mib * MIB, args.repeat, args.check)


if __name__ == "__main__":
    main()

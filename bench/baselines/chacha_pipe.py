"""Measure a bare trio pipe that frames and ChaCha20-Poly1305-encrypts 64 KiB writes.

The Noise-like ceiling for TCP+Noise+Yamux: Noise transport framing exactly (2-byte
big-endian length, at most 65535 bytes of ciphertext, so at most 65519 of plaintext per frame;
nonce = 4 zero bytes + 64-bit little-endian counter; 16-byte tag) but no handshake (a key derived
from the seed) and no muxer. A 64 KiB write becomes two frames (65519 + 17 bytes), as it does
through Noise. The receiver authenticates, decrypts and checks every byte.
Run standalone: `.venv/bin/python bench/baselines/chacha_pipe.py`.
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from _common import GIB, MIB, Report, Result, add_json_arg, finish
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from baselines.pipe import copy_one_process, copy_two_process, serve, summarize

SCRIPT = Path(__file__).resolve()
NOISE_MAX_MESSAGE = 65535
TAG_SIZE = 16
MAX_PLAINTEXT = NOISE_MAX_MESSAGE - TAG_SIZE  # 65519
_LENGTH = struct.Struct(">H")
_NONCE = struct.Struct("<4xQ")


class FrameError(Exception):
    """The pipe's framing broke (a frame cut off at end of stream)."""


class ChaChaEncoder:
    """Split a write into Noise-sized frames, encrypt each into one reused buffer."""

    def __init__(self, key: bytes, max_plaintext: int) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._max = max_plaintext
        self._nonce = 0
        self._buffer = bytearray()

    def encode(self, chunk: memoryview) -> memoryview:
        """Return the frames for chunk (a view of an internal buffer, valid until next call)."""
        frames = -(-len(chunk) // self._max) if chunk else 0
        size = len(chunk) + frames * (_LENGTH.size + TAG_SIZE)
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        out = memoryview(self._buffer)
        pos = 0
        for start in range(0, len(chunk), self._max):
            piece = chunk[start : start + self._max]
            sealed = len(piece) + TAG_SIZE
            _LENGTH.pack_into(out, pos, sealed)
            pos += _LENGTH.size
            nonce = _NONCE.pack(self._nonce)
            self._nonce += 1
            self._aead.encrypt_into(nonce, piece, None, out[pos : pos + sealed])
            pos += sealed
        return out[:pos]


class ChaChaDecoder:
    """Reassemble frames from received bytes, authenticate and decrypt them in order."""

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._nonce = 0
        self._buffer = bytearray()

    def decode(self, data: bytes | bytearray) -> list[bytes]:
        """Return the plaintexts of every frame completed by data (raises InvalidTag)."""
        self._buffer += data
        out = []
        pos = 0
        end = len(self._buffer)
        with memoryview(self._buffer) as view:
            while end - pos >= _LENGTH.size:
                (length,) = _LENGTH.unpack_from(view, pos)
                if end - pos - _LENGTH.size < length:
                    break
                start = pos + _LENGTH.size
                nonce = _NONCE.pack(self._nonce)
                self._nonce += 1
                out.append(self._aead.decrypt(nonce, view[start : start + length], None))
                pos = start + length
        del self._buffer[:pos]
        return out

    def finish(self) -> None:
        """Raise FrameError if the stream ended inside a frame."""
        if self._buffer:
            raise FrameError(f"stream ended inside a frame ({len(self._buffer)} bytes left)")


class ChaChaCodec:
    """Noise-like framing with ChaCha20-Poly1305 under a key derived from a seed."""

    name = "chacha20poly1305"

    def __init__(self, seed: int = 1, max_plaintext: int = MAX_PLAINTEXT) -> None:
        if not 1 <= max_plaintext <= MAX_PLAINTEXT:
            raise ValueError(f"max plaintext per frame must be 1..{MAX_PLAINTEXT}")
        self.key = hashlib.sha256(b"flarelab bench chacha %d" % seed).digest()
        self.max_plaintext = max_plaintext

    def encoder(self) -> ChaChaEncoder:
        """Return a fresh encoder (nonce 0)."""
        return ChaChaEncoder(self.key, self.max_plaintext)

    def decoder(self) -> ChaChaDecoder:
        """Return a fresh decoder (nonce 0)."""
        return ChaChaDecoder(self.key)


async def measure_chacha(
    total: int = GIB, repeat: int = 3, *, two_process: bool = True, compare: bool = True
) -> dict[str, Result]:
    """Measure the ChaCha pipe in one process (and two) and return the results by name."""
    codec = ChaChaCodec()
    await copy_one_process(codec, 32 * MIB)  # warm up
    one = [await copy_one_process(codec, total, seed=i + 1, compare=compare) for i in range(repeat)]
    results = [summarize("chacha_pipe.copy.1proc", one, frame=codec.max_plaintext)]
    if two_process:
        two = await copy_two_process(
            codec, SCRIPT, [], total, repeat, compare=compare, warmup_bytes=32 * MIB
        )
        results.append(summarize("chacha_pipe.copy.2proc", two, frame=codec.max_plaintext))
    return {r.name: r for r in results}


def main() -> None:
    """Run the ChaCha pipe baseline and print it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=GIB // MIB, help="MiB per copy run (1024)")
    parser.add_argument("--repeat", type=int, default=3, help="copy runs per mode (3)")
    parser.add_argument("--one-process", action="store_true", help="skip the two-process copy")
    parser.add_argument(
        "--no-compare", action="store_true", help="check lengths only, not every byte"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    add_json_arg(parser)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, ChaChaCodec())
        return
    results = trio.run(
        lambda: measure_chacha(
            args.mib * MIB,
            args.repeat,
            two_process=not args.one_process,
            compare=not args.no_compare,
        )
    )
    report = Report("framed ChaCha20-Poly1305 pipe over loopback TCP")
    report.extend(results)
    finish(report, args.json)


if __name__ == "__main__":
    main()

"""Check transferred bytes exactly: a deterministic pattern both ends can rebuild.

The sender sends `Pattern.view` slices; the receiver feeds what it gets to a
`PatternChecker`, which compares every byte with the pattern (a memcmp, far cheaper than
hashing at GB/s) and counts them: a `TransferCheck` says whether the stream arrived whole, in
order and byte-exact, and if not, where it first went wrong. Standard library only (this
module is imported from other virtualenvs too). Import it through `_common`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CHUNK = 64 * 1024

# Odd, so every 64 KiB-aligned chunk of the first ~68 GB starts at a different pattern offset:
# a lost, repeated or reordered chunk always shows up as a mismatch.
PATTERN_PERIOD = (1 << 20) + 7
MAX_SPAN = 1 << 18  # the longest slice `Pattern.view` hands out


class Pattern:
    """A deterministic pseudo-random byte stream that both ends of a transfer can rebuild.

    The sender sends `view(offset, n)` slices; the receiver compares every byte it gets with
    the same slices (a memcmp, far cheaper than hashing at GB/s). Byte-exact, and a mismatch
    names its first offset.
    """

    def __init__(self, seed: int, period: int = PATTERN_PERIOD) -> None:
        if period < MAX_SPAN:
            raise ValueError(f"pattern period must be >= {MAX_SPAN}")
        self.seed = seed
        self.period = period
        base = random.Random(seed).randbytes(period)
        self._bytes = base + base[:MAX_SPAN]
        self._view = memoryview(self._bytes)

    def view(self, offset: int, size: int) -> memoryview:
        """Return the pattern bytes at stream offset [offset, offset + size), zero-copy."""
        if not 0 <= size <= MAX_SPAN:
            raise ValueError(f"pattern span must be 0..{MAX_SPAN}, got {size}")
        start = offset % self.period
        return self._view[start : start + size]

    def matches(self, offset: int, data: bytes | bytearray | memoryview) -> bool:
        """Tell whether data equals the pattern at offset."""
        pos = 0
        total = len(data)
        while pos < total:
            span = min(MAX_SPAN, total - pos)
            start = (offset + pos) % self.period
            # A bytearray on the left compares by memcmp with any buffer; bytes == memoryview
            # would fall back to memoryview's item-by-item comparison (30x slower).
            if bytearray(self._view[start : start + span]) != data[pos : pos + span]:
                return False
            pos += span
        return True

    def chunks(self, total: int, size: int = CHUNK, start: int = 0) -> Iterator[memoryview]:
        """Yield the stream [start, start + total) as slices of at most size bytes."""
        offset = start
        end = start + total
        while offset < end:
            n = min(size, end - offset)
            yield self.view(offset, n)
            offset += n

    def first_mismatch(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Return the stream offset of the first byte of data that differs (-1 if none)."""
        for i, byte in enumerate(bytes(data)):
            start = (offset + i) % self.period
            if self._bytes[start] != byte:
                return offset + i
        return -1


@dataclass(frozen=True, slots=True)
class TransferCheck:
    """What a receiver got, against what it should have got."""

    expected: int
    received: int
    first_mismatch: int = -1  # stream offset of the first wrong byte, -1 if none
    compared: bool = True  # False: only the length was checked

    @property
    def ok(self) -> bool:
        """Tell whether every byte arrived, in order, and nothing more."""
        return self.received == self.expected and self.first_mismatch < 0

    @property
    def truncated(self) -> bool:
        """Tell whether the stream ended early."""
        return self.received < self.expected

    def describe(self) -> str:
        """Say what went wrong (or 'ok')."""
        if self.ok:
            how = "byte-exact" if self.compared else "length only, bytes not compared"
            return f"ok ({self.received} bytes, {how})"
        problems = []
        if self.first_mismatch >= 0:
            problems.append(f"first wrong byte at offset {self.first_mismatch}")
        if self.received != self.expected:
            kind = "truncated" if self.truncated else "too long"
            problems.append(f"{kind}: got {self.received} of {self.expected} bytes")
        return "; ".join(problems)

    def as_dict(self) -> dict[str, Any]:
        """Return the check as JSON-ready data."""
        return {
            "ok": self.ok,
            "expected": self.expected,
            "received": self.received,
            "first_mismatch": self.first_mismatch,
            "compared": self.compared,
        }


class TransferError(Exception):
    """A benchmark transfer did not deliver its bytes exactly; the numbers are void."""

    def __init__(self, what: str, check: TransferCheck) -> None:
        super().__init__(f"{what}: {check.describe()}")
        self.check = check


class PatternChecker:
    """Compare a received stream, piece by piece, with the pattern it should carry.

    With compare=False only the length is checked (to measure what the comparison costs).
    """

    def __init__(
        self, pattern: Pattern, expected: int, start: int = 0, *, compare: bool = True
    ) -> None:
        self.pattern = pattern
        self.expected = expected
        self.start = start
        self.compare = compare
        self.received = 0
        self.first_mismatch = -1

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Check the next received piece."""
        n = len(data)
        if self.compare and self.first_mismatch < 0:
            offset = self.start + self.received
            if self.received + n > self.expected:
                good = max(0, self.expected - self.received)
                if not self.pattern.matches(offset, data[:good]):
                    self.first_mismatch = self.pattern.first_mismatch(offset, data[:good])
            elif not self.pattern.matches(offset, data):
                self.first_mismatch = self.pattern.first_mismatch(offset, data)
        self.received += n

    def result(self) -> TransferCheck:
        """Return the check so far (call at end of stream)."""
        first = self.first_mismatch - self.start if self.first_mismatch >= 0 else -1
        return TransferCheck(self.expected, self.received, first, self.compare)

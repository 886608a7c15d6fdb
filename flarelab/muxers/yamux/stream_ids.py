"""Remember which stream ids the peer has used, in bounded memory, to catch reuse.

Yamux peers number their streams 1, 3, 5, ... (client) or 2, 4, 6, ... (server) and never
reuse an id. They usually announce them in order, but not always: go-yamux allocates the id
before queueing the SYN, so two streams opened at once can arrive swapped, and rust-yamux
announces a stream only with its first frame. So the set is "every id below the highest
seen, except the gaps", with the gaps kept as a short sorted list of ranges. A peer that
leaves more than ``max_gaps`` separate holes loses the oldest: ids in them count as used.
"""

from __future__ import annotations

from bisect import bisect_right

__all__ = ["StreamIdSet"]


class StreamIdSet:
    """The set of stream ids of one parity that the peer has used."""

    __slots__ = ("_gaps", "_max_gaps", "_next")

    def __init__(self, first: int, *, max_gaps: int = 1024) -> None:
        self._next = first  # the lowest id above every id seen so far
        self._gaps: list[tuple[int, int]] = []  # unused ranges [low, high], sorted, step 2
        self._max_gaps = max_gaps

    def __contains__(self, stream_id: int) -> bool:
        if stream_id >= self._next:
            return False
        return self._gap_index(stream_id) < 0

    def _gap_index(self, stream_id: int) -> int:
        i = bisect_right(self._gaps, (stream_id, 1 << 64)) - 1
        if i >= 0 and self._gaps[i][0] <= stream_id <= self._gaps[i][1]:
            return i
        return -1

    def add(self, stream_id: int) -> bool:
        """Record ``stream_id`` as used; return False if it already was (a reuse)."""
        if stream_id >= self._next:
            if stream_id > self._next:
                self._gaps.append((self._next, stream_id - 2))
                if len(self._gaps) > self._max_gaps:
                    del self._gaps[0]
            self._next = stream_id + 2
            return True
        i = self._gap_index(stream_id)
        if i < 0:
            return False
        low, high = self._gaps[i]
        pieces = []
        if low < stream_id:
            pieces.append((low, stream_id - 2))
        if stream_id < high:
            pieces.append((stream_id + 2, high))
        self._gaps[i : i + 1] = pieces
        if len(self._gaps) > self._max_gaps:
            del self._gaps[0]
        return True

    @property
    def gaps(self) -> int:
        """Return how many separate ranges of unused ids below the highest are remembered."""
        return len(self._gaps)

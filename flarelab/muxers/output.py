"""The queue of bytes a muxer core wants written, in order.

Control frames (window updates, SYN/ACK/FIN/RST, pings, GoAway) are small and frequent, so
consecutive ones are coalesced into one buffer. Data frames are queued as their parts: the
header and a *view* of the caller's payload, not a copy. Whoever takes the output joins the
parts (the one copy of the payload on the way out) and writes them in one ``send_all``, so
the order of the queue is the order on the wire: a SYN before its stream's data, a FIN
after it.

Borrowing the caller's memory needs care: the caller must leave it unchanged until its
parts were taken (:meth:`OutputQueue.is_taken` with the ticket :meth:`~OutputQueue.add_data`
returned), or call :meth:`OutputQueue.own` to copy whatever is still borrowed.
"""

from __future__ import annotations

from collections import deque

__all__ = ["OutputQueue"]

Part = bytes | bytearray | memoryview


class OutputQueue:
    """Frames waiting to be written."""

    __slots__ = ("_items", "_pushed", "_taken", "control", "size")

    def __init__(self) -> None:
        self._items: deque[Part] = deque()
        self._pushed = 0  # parts ever queued
        self._taken = 0  # parts ever taken
        self.size = 0  # bytes queued
        self.control = 0  # of which control frames (reset when taken)

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def add_control(self, frame: bytes) -> None:
        """Queue a control frame (coalesced with control frames just before it)."""
        items = self._items
        if items and type(items[-1]) is bytearray:
            items[-1] += frame  # type: ignore[operator]
        else:
            items.append(bytearray(frame))
            self._pushed += 1
        self.size += len(frame)
        self.control += len(frame)

    def add_data(self, parts: list[Part]) -> int:
        """Queue the parts of one or more data frames; return a ticket for :meth:`is_taken`."""
        self._items.extend(parts)
        self._pushed += len(parts)
        for part in parts:
            self.size += len(part)
        return self._pushed

    def is_taken(self, ticket: int) -> bool:
        """Tell whether everything queued up to ``ticket`` has been taken."""
        return self._taken >= ticket

    def take(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Remove and return queued bytes, at least one part and about ``max_bytes``."""
        items = self._items
        if not items:
            return b""
        if max_bytes is None or max_bytes >= self.size:
            count = len(items)
            taken = list(items)
            items.clear()
        else:
            taken = []
            total = 0
            while items and (not taken or total + len(items[0]) <= max_bytes):
                part = items.popleft()
                taken.append(part)
                total += len(part)
            count = len(taken)
        self._taken += count
        data = taken[0] if count == 1 and type(taken[0]) is not memoryview else b"".join(taken)
        self.size -= len(data)
        self.control = 0
        return data

    def own(self) -> None:
        """Copy every borrowed view still queued, so its owner may reuse its memory."""
        items = self._items
        for i, part in enumerate(items):
            if type(part) is memoryview:
                items[i] = bytes(part)

    def clear(self) -> None:
        """Drop everything queued (counts as taken)."""
        self._taken = self._pushed
        self._items.clear()
        self.size = 0
        self.control = 0

"""Relaying bytes between the two halves of a circuit, within its limits.

The relay joins the source's hop stream and the target's stop stream: two pumps copy
bytes each way with backpressure (one bounded read at a time). An end-of-stream on one
side half-closes the other. When a :class:`~.book.CircuitBudget` says a direction carried
its data limit, or the duration limit passes, or either side resets, both streams are
reset -- as go-libp2p and rust-libp2p do.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Protocol

import trio

from ...wire import StreamReader
from .book import CircuitBudget

__all__ = ["CircuitEnd", "splice"]


class _ResettableStream(Protocol):
    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...
    async def send_eof(self) -> None: ...
    async def aclose(self) -> None: ...
    async def reset(self) -> None: ...


@dataclass
class CircuitEnd:
    """How a circuit ended: ``reason`` is ``closed``, ``data limit``, ``duration limit``
    or what broke it; ``reset`` tells whether both streams were reset."""

    reason: str = "closed"
    reset: bool = False


async def splice(
    src: _ResettableStream,
    src_reader: StreamReader,
    dst: _ResettableStream,
    dst_reader: StreamReader,
    budget: CircuitBudget,
    *,
    buffer_size: int = 16384,
) -> CircuitEnd:
    """Copy ``src`` <-> ``dst`` until both ends close, a limit is hit, or one breaks.

    The readers may hold bytes already read past the handshake; they are relayed first
    (and counted).
    """
    end = CircuitEnd()
    done = 0

    async def pump(reader: StreamReader, out: _ResettableStream, direction: str) -> None:
        nonlocal done
        try:
            while True:
                data = await reader.receive_some(buffer_size)
                if not data:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await out.send_eof()
                    break
                allowed = budget.take(direction, len(data))
                if allowed:
                    await out.send_all(data[:allowed])
                if allowed < len(data):
                    _fail(end, "data limit")
                    scope.cancel()
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            _fail(end, f"{direction} broke: {exc or type(exc).__name__}")
            scope.cancel()
            return
        done += 1

    deadline = budget.deadline
    try:
        with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, src_reader, dst, "src->dst")
                nursery.start_soon(pump, dst_reader, src, "dst->src")
        if done < 2 and not end.reset and budget.expired(trio.current_time()):
            _fail(end, "duration limit")
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            for stream in (src, dst):
                with contextlib.suppress(Exception):
                    await (stream.reset() if end.reset else stream.aclose())
    return end


def _fail(end: CircuitEnd, reason: str) -> None:
    if not end.reset:
        end.reason = reason
        end.reset = True

"""What every live view shares: records collected as they come, drawn in batches.

A span bus listener runs inside the node that made the span (on the trio thread), so it must
be quick: :class:`LiveFeed` only appends the record to a bounded queue and wakes the view's
updater. The updater (:meth:`LiveView.run`, a trio task on the notebook's
:class:`~flarelab.workbench.runner.TrioRunner`) wakes at most ``rate`` times a second and
draws everything that arrived since the last time in one batch: one
``ColumnDataSource.stream`` per source, so a burst of a thousand spans costs the browser a
handful of messages and the kernel stays free.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import trio

from ...errors import LocalProtocolError

if TYPE_CHECKING:
    from ...tracing.bus import SpanBus
    from ...tracing.records import SpanRecord

__all__ = ["DEFAULT_RATE", "MAX_QUEUED", "LiveFeed", "LiveView"]

#: batches drawn per second at most
DEFAULT_RATE: Final = 20.0
#: records waiting to be drawn at most (beyond it the oldest are dropped and counted)
MAX_QUEUED: Final = 200_000


class LiveFeed:
    """A bounded queue of span records filled by a bus listener; wakes an updater task."""

    def __init__(self, max_queued: int = MAX_QUEUED) -> None:
        self._queue: deque[SpanRecord] = deque()
        self.max_queued = max_queued
        #: records dropped because the queue was full
        self.dropped = 0
        self._bus: SpanBus | None = None
        self._wakeup: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: int | None = None
        #: True after :meth:`poke` until the next :meth:`take`
        self.poked = False

    def __len__(self) -> int:
        return len(self._queue)

    def attach(self, bus: SpanBus, *, replay: bool = True) -> None:
        """Listen to a span bus (with ``replay``, its history first)."""
        if self._bus is not None:
            raise LocalProtocolError("this view already follows a span bus")
        self._bus = bus
        bus.add_listener(self.push, replay=replay)

    def detach(self) -> None:
        """Stop listening."""
        if self._bus is not None:
            self._bus.remove_listener(self.push)
            self._bus = None

    def push(self, record: SpanRecord) -> None:
        """Queue a record (a bus listener: quick, never blocks)."""
        queue = self._queue
        if len(queue) >= self.max_queued:
            queue.popleft()
            self.dropped += 1
        queue.append(record)
        self._wake()

    def poke(self) -> None:
        """Wake the updater without a record (something else changed)."""
        self.poked = True
        self._wake()

    def _wake(self) -> None:
        event = self._wakeup
        if event is None or event.is_set():
            return
        if threading.get_ident() == self._thread:
            event.set()
        elif self._token is not None:
            try:
                self._token.run_sync_soon(event.set)
            except trio.RunFinishedError:
                pass

    def extend(self, records: Iterable[SpanRecord]) -> None:
        """Queue many records."""
        for record in records:
            self.push(record)

    def take(self) -> list[SpanRecord]:
        """Return and forget every queued record."""
        out = list(self._queue)
        self._queue.clear()
        self.poked = False
        return out

    async def wait(self) -> None:
        """Wait until something is queued (from a trio task)."""
        if self._queue or self.poked:
            await trio.lowlevel.checkpoint()
            return
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()
        self._wakeup = event = trio.Event()
        await event.wait()


class LiveView:
    """A view fed by a :class:`LiveFeed`; subclasses implement :meth:`flush`."""

    def __init__(self, *, rate: float = DEFAULT_RATE) -> None:
        if rate <= 0:
            raise LocalProtocolError(f"rate must be > 0, not {rate}")
        self.feed = LiveFeed()
        self.rate = rate
        #: batches drawn so far
        self.batches = 0

    def flush(self) -> int:
        """Draw what the feed holds; return how many records it took."""
        raise NotImplementedError

    def idle_after(self) -> float | None:
        """Return after how many idle seconds :meth:`on_idle` is due (None: never)."""
        return None

    def on_idle(self) -> None:
        """Called when nothing arrived for :meth:`idle_after` seconds."""

    def follow(self, bus: SpanBus, *, replay: bool = True) -> None:
        """Take records from a span bus from now on (its history first, with ``replay``)."""
        self.feed.attach(bus, replay=replay)

    async def run(self) -> None:
        """Draw batches as records arrive, at most ``rate`` a second (a trio task)."""
        period = 1.0 / self.rate
        try:
            while True:
                idle = self.idle_after()
                with trio.move_on_after(math.inf if idle is None else idle) as waited:
                    await self.feed.wait()
                if waited.cancelled_caught:
                    self.on_idle()
                    continue
                if self.flush():
                    self.batches += 1
                await trio.sleep(period)
        finally:
            self.flush()

    def close(self) -> None:
        """Stop following the bus."""
        self.feed.detach()

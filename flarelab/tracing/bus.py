"""The live span bus: every span's start and end, as records, to whoever watches.

:class:`SpanBus` is an OpenTelemetry ``SpanProcessor``. Add it to one node's provider or to
many (each record's ``resource`` says which node made it); it publishes a
:class:`~flarelab.tracing.records.SpanRecord` when a span starts and another when it ends,
in that order (and, for long-lived spans whose owner asks, progress snapshots in between:
:meth:`SpanBus.publish_progress`), to

* subscriptions (:meth:`SpanBus.subscribe`): trio async iterators over a bounded memory
  channel. Publishing never blocks a node: when a subscriber falls behind and its buffer is
  full, the oldest (or, if asked, the newest) record is dropped and counted in
  :attr:`Subscription.dropped`;
* listeners (:meth:`SpanBus.add_listener`): plain callbacks run synchronously on the
  publishing thread (widgets). A listener must be quick and must not start spans;
* a bounded history ring, so a late subscriber or listener can replay what it missed.

Threads: nodes make spans on the trio thread (also in guest mode, where that is the host
loop's thread). Publishing takes a re-entrant lock, so records from other threads are
serialised too; a record published from a thread other than a subscription's own trio
thread is handed over with ``TrioToken.run_sync_soon`` (never blocking), so it may arrive
after records the trio thread publishes later. Subscribe, receive and close on the trio
thread (trio's channels are not thread-safe). Shutting down a provider does not close the
bus (it may serve other nodes): call :meth:`SpanBus.close` when done.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Final, Literal

import trio
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import Span as SdkSpan

from ..errors import LocalProtocolError
from .records import SpanRecord

__all__ = ["DEFAULT_HISTORY", "Overflow", "SpanBus", "SpanListener", "Subscription"]

logger = logging.getLogger(__name__)

#: Records kept for replay by default (a start and an end record per span).
DEFAULT_HISTORY: Final = 50_000

Overflow = Literal["drop_oldest", "drop_newest"]
SpanListener = Callable[[SpanRecord], None]


class Subscription:
    """One subscriber's bounded queue of span records; iterate it with ``async for``.

    Made by :meth:`SpanBus.subscribe` inside ``trio.run``. Records replayed from the bus's
    history (if asked for) come first, then live ones. Iteration ends after
    :meth:`close` (or :meth:`SpanBus.close`) once the buffered records are consumed.
    """

    def __init__(self, bus: SpanBus, max_buffer: int, overflow: Overflow) -> None:
        self._bus = bus
        self._send, self._receive = trio.open_memory_channel[SpanRecord](max_buffer)
        self._backlog: deque[SpanRecord] = deque()
        self._overflow: Overflow = overflow
        self._thread = threading.get_ident()
        self._token = trio.lowlevel.current_trio_token()
        self._closed = False
        self.max_buffer: Final = max_buffer
        #: How many records were dropped because this subscriber fell behind.
        self.dropped = 0

    @property
    def closed(self) -> bool:
        """True once the subscription no longer receives new records."""
        return self._closed

    @property
    def pending(self) -> int:
        """How many records wait to be received (replay backlog included)."""
        return len(self._backlog) + self._receive.statistics().current_buffer_used

    def _deliver(self, record: SpanRecord) -> None:
        """Offer a record from whichever thread publishes it; never block."""
        if threading.get_ident() == self._thread:
            self._offer(record)
            return
        try:
            self._token.run_sync_soon(self._offer, record)
        except trio.RunFinishedError:
            self.dropped += 1

    def _offer(self, record: SpanRecord) -> None:
        if self._closed:
            return
        try:
            self._send.send_nowait(record)
        except trio.WouldBlock:
            self.dropped += 1
            if self._overflow == "drop_oldest":
                try:
                    self._receive.receive_nowait()
                except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                    return
                self._send.send_nowait(record)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def receive_nowait(self) -> SpanRecord:
        """Return the next record if one is waiting, else raise ``trio.WouldBlock``."""
        if self._backlog:
            return self._backlog.popleft()
        try:
            return self._receive.receive_nowait()
        except trio.EndOfChannel:
            raise trio.WouldBlock from None

    async def receive(self) -> SpanRecord:
        """Wait for the next record; ``trio.EndOfChannel`` once closed and drained."""
        if self._backlog:
            await trio.lowlevel.checkpoint()
            return self._backlog.popleft()
        return await self._receive.receive()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> SpanRecord:
        try:
            return await self.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop receiving new records; iteration ends once the buffered ones are read."""
        if self._closed:
            return
        self._closed = True
        self._bus._unsubscribe(self)
        self._send.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()


class SpanBus(SpanProcessor):
    """A span processor that publishes span starts and ends to subscribers and listeners."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        if history < 0:
            raise LocalProtocolError(f"history must be >= 0, not {history}")
        self._lock = threading.RLock()
        self._history: deque[SpanRecord] = deque(maxlen=history)
        self._subscriptions: tuple[Subscription, ...] = ()
        self._listeners: tuple[SpanListener, ...] = ()
        self._closed = False
        #: How many records were published since the bus was made.
        self.published = 0
        #: How many times a listener raised (each is logged; the listener stays).
        self.listener_errors = 0

    # ------------------------------------------------------------ SpanProcessor
    def on_start(self, span: SdkSpan, parent_context: otel_context.Context | None = None) -> None:
        """Publish the record of a span that just started."""
        self.publish(SpanRecord.from_readable_span(span, ended=False))

    def on_end(self, span: ReadableSpan) -> None:
        """Publish the record of a span that just ended."""
        self.publish(SpanRecord.from_readable_span(span, ended=True))

    def shutdown(self) -> None:
        """Do nothing: a provider's shutdown must not close a bus other nodes may use."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Return True: the bus delivers synchronously and holds nothing back."""
        return True

    # ------------------------------------------------------------ publishing
    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def publish(self, record: SpanRecord) -> None:
        """Add a record to the history and hand it to every subscriber and listener."""
        with self._lock:
            if self._closed:
                return
            self._history.append(record)
            self.published += 1
            for sub in self._subscriptions:
                sub._deliver(record)
            for listener in self._listeners:
                self._call(listener, record)

    def publish_progress(self, span: object) -> None:
        """Publish a running span as it is now: a start record holding its events so far.

        For long-lived spans that collect events as things happen (a NAT session lives until
        it expires): live views see each event at once instead of at the span's end. Only the
        bus gets it (trace files and OTLP still see one start and one end). Consumers that
        keep one record per span already ignore a second start record of a span they know.
        ``span`` is an SDK span, or a clocked span wrapping one; anything else is ignored.
        """
        inner = getattr(span, "wrapped", span)
        if self._closed or not isinstance(inner, ReadableSpan):
            return
        self.publish(SpanRecord.from_readable_span(inner, ended=False))

    def _call(self, listener: SpanListener, record: SpanRecord) -> None:
        try:
            listener(record)
        except Exception:
            self.listener_errors += 1
            logger.exception("span bus listener %r failed", listener)

    def history(self) -> list[SpanRecord]:
        """Return the records still in the history ring, oldest first."""
        with self._lock:
            return list(self._history)

    def clear_history(self) -> None:
        """Forget the history (subscriptions are not affected)."""
        with self._lock:
            self._history.clear()

    # ------------------------------------------------------------ consumers
    def subscribe(
        self, max_buffer: int = 1000, *, replay: bool = False, overflow: Overflow = "drop_oldest"
    ) -> Subscription:
        """Subscribe from inside ``trio.run``; with ``replay``, history comes first.

        ``max_buffer`` bounds the records waiting for this subscriber; when it is full,
        ``overflow`` says whether the oldest waiting record or the new one is dropped.
        The replayed history is a snapshot held by the subscription and does not count
        against ``max_buffer``.
        """
        if max_buffer < 1:
            raise LocalProtocolError(f"max_buffer must be >= 1, not {max_buffer}")
        if overflow not in ("drop_oldest", "drop_newest"):
            raise LocalProtocolError(f"overflow must be drop_oldest or drop_newest: {overflow!r}")
        sub = Subscription(self, max_buffer, overflow)
        with self._lock:
            if replay:
                sub._backlog.extend(self._history)
            if self._closed:
                sub.close()
            else:
                self._subscriptions = (*self._subscriptions, sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscriptions = tuple(s for s in self._subscriptions if s is not sub)

    def add_listener(self, listener: SpanListener, *, replay: bool = False) -> None:
        """Call ``listener(record)`` for every record from now on (history first if asked)."""
        with self._lock:
            if replay:
                for record in self._history:
                    self._call(listener, record)
            if not self._closed:
                self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: SpanListener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        with self._lock:
            self._listeners = tuple(cb for cb in self._listeners if cb is not listener)

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """Return the open subscriptions."""
        return self._subscriptions

    def close(self) -> None:
        """End every subscription, drop every listener and ignore later spans."""
        with self._lock:
            self._closed = True
            subs, self._subscriptions, self._listeners = self._subscriptions, (), ()
        for sub in subs:
            sub.close()

    def __enter__(self) -> SpanBus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.close()


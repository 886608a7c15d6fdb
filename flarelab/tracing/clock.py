"""Injectable time for span timestamps, so simulations on trio's MockClock trace in virtual time.

The OpenTelemetry SDK stamps spans and events with the wall clock. In a simulation that
runs on ``trio.testing.MockClock`` the wall clock barely moves while virtual seconds pass,
so every span would last ~0 ms. :class:`ClockedTracer` wraps a tracer and stamps the start,
end, events and exceptions of every span it makes from a clock function you pass in;
:class:`TrioClock` is such a function reading ``trio.current_time()``.

Only spans made through the wrapper are stamped; the wrapper costs one extra call per span
operation and is used only when a clock is configured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import trio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util import types

try:  # the API's own decorator: works around sync and async functions alike
    from opentelemetry.util._decorator import _agnosticcontextmanager as _span_manager
except ImportError:  # pragma: no cover - older opentelemetry-api
    from contextlib import contextmanager as _span_manager  # type: ignore[assignment]

__all__ = ["Clock", "ClockedSpan", "ClockedTracer", "TrioClock"]

#: A clock: nanoseconds since the Unix epoch.
Clock = Callable[[], int]


class TrioClock:
    """Read trio's clock (real or mocked) as nanoseconds since the epoch.

    The first reading inside ``trio.run`` anchors trio time to ``epoch_ns`` (default: the
    wall clock at that moment), so later readings advance exactly as trio's clock does.
    Outside ``trio.run`` it falls back to the wall clock. Share one instance between all
    nodes of one run, and make a new one for every ``trio.run``.
    """

    __slots__ = ("_anchor_ns", "_epoch_ns")

    def __init__(self, epoch_ns: int | None = None) -> None:
        self._epoch_ns = epoch_ns
        self._anchor_ns: int | None = None

    def __call__(self) -> int:
        try:
            now_ns = round(trio.current_time() * 1e9)
        except RuntimeError:  # not inside trio.run
            return time.time_ns()
        if self._anchor_ns is None:
            epoch = self._epoch_ns if self._epoch_ns is not None else time.time_ns()
            self._anchor_ns = epoch - now_ns
        return self._anchor_ns + now_ns


class ClockedSpan(Span):
    """A span whose end, events and exceptions are stamped by a clock."""

    __slots__ = ("_clock", "_record_exception", "_set_status_on_exception", "_span")

    def __init__(
        self, span: Span, clock: Clock, record_exception: bool, set_status_on_exception: bool
    ) -> None:
        self._span = span
        self._clock = clock
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception

    @property
    def wrapped(self) -> Span:
        """Return the span this one stamps."""
        return self._span

    def end(self, end_time: int | None = None) -> None:
        """End the span at ``end_time`` or now by the clock."""
        self._span.end(end_time if end_time is not None else self._clock())

    def get_span_context(self) -> SpanContext:
        """Return the wrapped span's context."""
        return self._span.get_span_context()

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        """Set several attributes."""
        self._span.set_attributes(attributes)

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        """Set one attribute."""
        self._span.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        """Add an event stamped now by the clock (unless ``timestamp`` is given)."""
        when = timestamp if timestamp is not None else self._clock()
        self._span.add_event(name, attributes, when)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        """Add a link to another span."""
        self._span.add_link(context, attributes)

    def update_name(self, name: str) -> None:
        """Rename the span."""
        self._span.update_name(name)

    def is_recording(self) -> bool:
        """Return whether the wrapped span records."""
        return self._span.is_recording()

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the span's status."""
        self._span.set_status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Record an exception event stamped now by the clock."""
        self._span.record_exception(
            exception, attributes, timestamp if timestamp is not None else self._clock(), escaped
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if isinstance(exc_val, Exception) and self.is_recording():
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ClockedSpan.__slots__:
            raise AttributeError(name)
        return getattr(self._span, name)


class ClockedTracer(Tracer):
    """A tracer that stamps every span it makes with ``clock`` instead of the wall clock."""

    def __init__(self, tracer: Tracer, clock: Clock) -> None:
        self._tracer = tracer
        self._clock = clock

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        """Start a span stamped now by the clock (unless ``start_time`` is given)."""
        span = self._tracer.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time if start_time is not None else self._clock(),
            record_exception,
            set_status_on_exception,
        )
        return ClockedSpan(span, self._clock, record_exception, set_status_on_exception)

    @_span_manager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        """Start a span, make it current for the block, and end it on exit."""
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception,
            set_status_on_exception,
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current

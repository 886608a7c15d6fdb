"""Tracing: span names and helpers (spans), per-node providers, the live span bus, exporters.

The names below load their module on first use, so ``import flarelab.tracing`` (which every
driver does, for :mod:`flarelab.tracing.spans`) does not import the OpenTelemetry SDK: a
node whose spans nobody consumes never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .bus import SpanBus, Subscription
    from .clock import ClockedTracer, TrioClock
    from .export import (
        JsonLinesSpanExporter,
        iter_trace,
        otlp_metric_reader,
        otlp_processor,
        read_trace,
        write_trace,
    )
    from .metrics import NodeMetrics
    from .pretty import format_timeline, format_trace
    from .provider import NodeTracing, TracingConfig
    from .records import SpanEventRecord, SpanRecord, TraceFormatError, short_peer_id

_EXPORTS = {
    "ClockedTracer": "clock",
    "JsonLinesSpanExporter": "export",
    "NodeMetrics": "metrics",
    "NodeTracing": "provider",
    "SpanBus": "bus",
    "SpanEventRecord": "records",
    "SpanRecord": "records",
    "Subscription": "bus",
    "TraceFormatError": "records",
    "TracingConfig": "provider",
    "TrioClock": "clock",
    "format_timeline": "pretty",
    "format_trace": "pretty",
    "iter_trace": "export",
    "otlp_metric_reader": "export",
    "otlp_processor": "export",
    "read_trace": "export",
    "short_peer_id": "records",
    "write_trace": "export",
}

__all__ = [
    "ClockedTracer",
    "JsonLinesSpanExporter",
    "NodeMetrics",
    "NodeTracing",
    "SpanBus",
    "SpanEventRecord",
    "SpanRecord",
    "Subscription",
    "TraceFormatError",
    "TracingConfig",
    "TrioClock",
    "format_timeline",
    "format_trace",
    "iter_trace",
    "otlp_metric_reader",
    "otlp_processor",
    "read_trace",
    "short_peer_id",
    "write_trace",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

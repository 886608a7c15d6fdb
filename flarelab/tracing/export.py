"""Exporters: the JSON-lines trace file (write, read back) and OTLP through the official exporter.

A trace file holds one :class:`~flarelab.tracing.records.SpanRecord` per line, in JSON. Any
number of nodes may append to the same file: each batch is written with a single
``write()`` on a file opened in append mode, so lines from different nodes never mix
within a line. :func:`read_trace` reads it back, and forgives a truncated last line (a node
killed mid-write).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .records import SpanRecord, TraceFormatError

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import SpanProcessor

__all__ = [
    "OTLP_MISSING",
    "JsonLinesSpanExporter",
    "iter_trace",
    "otlp_metric_reader",
    "otlp_processor",
    "read_trace",
    "write_trace",
]

logger = logging.getLogger(__name__)

OTLP_MISSING = (
    "OTLP export needs the official exporter, opentelemetry-exporter-otlp-proto-http: "
    "install flarelab's 'otlp' extra (pip install 'flarelab[otlp]')"
)


class JsonLinesSpanExporter(SpanExporter):
    """Append every exported span to ``path`` as one JSON line (its end record)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = open(self.path, "ab", buffering=0)  # noqa: SIM115
        #: How many spans were written.
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the spans as one batch of lines, in one write."""
        data = "".join(
            SpanRecord.from_readable_span(span, ended=True).to_json() + "\n" for span in spans
        ).encode("ascii")
        with self._lock:
            if self._file is None:
                return SpanExportResult.FAILURE
            try:
                _write_all(self._file, data)
            except OSError:
                logger.exception("writing spans to %s failed", self.path)
                return SpanExportResult.FAILURE
            self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Return True: every batch is written unbuffered."""
        return True

    def shutdown(self) -> None:
        """Close the file; later exports fail."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _write_all(file: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = file.write(view)
        if written is None:  # pragma: no cover - only for non-blocking files
            raise BlockingIOError("trace file would block")
        view = view[written:]


def write_trace(
    path: str | os.PathLike[str], records: Iterable[SpanRecord], *, append: bool = False
) -> int:
    """Write records to a trace file (e.g. a bus's history); return how many."""
    lines = [record.to_json() + "\n" for record in records]
    with open(path, "ab" if append else "wb", buffering=0) as file:
        _write_all(file, "".join(lines).encode("ascii"))
    return len(lines)


def iter_trace(path: str | os.PathLike[str], *, strict: bool = True) -> Iterator[SpanRecord]:
    """Yield the records of a trace file in file order.

    A last line without its newline that does not parse is a write cut short and is
    skipped. Any other malformed line raises :class:`TraceFormatError` naming the file and
    line, unless ``strict`` is false, in which case it is skipped and logged.
    """
    with open(path, "rb") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                yield SpanRecord.from_json(line)
            except TraceFormatError as exc:
                if not line.endswith(b"\n"):
                    logger.info("%s:%d: skipped a truncated last line", path, number)
                    return
                if strict:
                    raise TraceFormatError(f"{path}:{number}: {exc}") from None
                logger.warning("%s:%d: skipped a malformed line: %s", path, number, exc)


def read_trace(path: str | os.PathLike[str], *, strict: bool = True) -> list[SpanRecord]:
    """Return the records of a trace file (see :func:`iter_trace`)."""
    return list(iter_trace(path, strict=strict))


def otlp_processor(endpoint: str | None = None) -> SpanProcessor:
    """Return a BatchSpanProcessor that exports over OTLP/HTTP with the official exporter.

    ``endpoint`` is the full traces URL; by default the exporter reads
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (+ ``/v1/traces``)
    and the other standard ``OTEL_EXPORTER_OTLP_*`` variables. Raises ``ImportError`` with
    the install hint if the exporter is not installed.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ImportError(OTLP_MISSING) from exc
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))


def otlp_metric_reader(endpoint: str | None = None) -> MetricReader:
    """Return a periodic reader that exports metrics over OTLP/HTTP (``/v1/metrics``)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError as exc:
        raise ImportError(OTLP_MISSING) from exc
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    return PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint))

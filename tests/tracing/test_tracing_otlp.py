"""OTLP export: built only when the endpoint variable is set; spans and metrics reach the endpoint.

The "collector" is a tiny HTTP server on 127.0.0.1 (port 0) in a thread; it records each POST
before answering, so once the node's tracing has shut down (which waits for the export),
the requests are there. Waits are bounded; nothing sleeps.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from flarelab.tracing.export import OTLP_MISSING, otlp_processor
from flarelab.tracing.provider import NodeTracing, TracingConfig, otlp_configured
from flarelab.tracing.spans import NO_TRACER

A = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaaaaa"


class _Collector(BaseHTTPRequestHandler):
    received: queue.Queue[tuple[str, str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.put((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, queue.Queue[tuple[str, str, bytes]]]]:
    received: queue.Queue[tuple[str, str, bytes]] = queue.Queue()
    handler = type("Handler", (_Collector,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS",
                 "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)


def test_no_endpoint_no_otlp() -> None:
    assert not otlp_configured()
    config = TracingConfig()
    assert not config.wants_otlp()
    assert NodeTracing.create(config, A).tracer is NO_TRACER


async def test_spans_and_metrics_are_posted(
    monkeypatch: pytest.MonkeyPatch, collector: tuple[str, queue.Queue[tuple[str, str, bytes]]]
) -> None:
    url, received = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    assert otlp_configured()
    tracing = NodeTracing.create(TracingConfig(label="A"), A)
    assert tracing.enabled
    with tracing.tracer.start_as_current_span("ping", attributes={"libp2p.rtt_ms": 0.5}):
        pass
    tracing.metrics.record_stream("/ipfs/ping/1.0.0", direction="outbound")
    await tracing.aclose()  # flushes both exporters, in a worker thread

    posts = {}
    for _ in range(2):
        path, content_type, body = received.get(timeout=10)
        posts[path] = body
        assert content_type == "application/x-protobuf"
    assert set(posts) == {"/v1/traces", "/v1/metrics"}

    traces = ExportTraceServiceRequest.FromString(posts["/v1/traces"])
    (resource_spans,) = traces.resource_spans
    resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert resource["service.name"] == "flarelab"
    assert resource["libp2p.node_label"] == "A"
    assert resource["service.instance.id"] == A
    (span,) = resource_spans.scope_spans[0].spans
    assert span.name == "ping"
    assert resource_spans.scope_spans[0].scope.name == "flarelab"

    metrics = ExportMetricsServiceRequest.FromString(posts["/v1/metrics"])
    names = [m.name for rm in metrics.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics]
    assert "libp2p_swarm_streams_opened" in names


def test_explicit_false_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    assert TracingConfig().wants_otlp()
    assert NodeTracing.create(TracingConfig(otlp=False), A).tracer is NO_TRACER


def test_missing_exporter_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(ImportError, match=r"flarelab\[otlp\]") as info:
        otlp_processor()
    assert str(info.value) == OTLP_MISSING
    with pytest.raises(ImportError, match="opentelemetry-exporter-otlp-proto-http"):
        NodeTracing.create(TracingConfig(otlp=True, meter_provider=_noop_meter_provider()), A)


def _noop_meter_provider():  # type: ignore[no-untyped-def]
    from opentelemetry.metrics import NoOpMeterProvider

    return NoOpMeterProvider()

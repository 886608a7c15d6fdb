"""NodeTracing: one provider per node, no-op (and no SDK) when nothing consumes spans, clocks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from flarelab.errors import LocalProtocolError
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.clock import ClockedSpan, TrioClock
from flarelab.tracing.provider import NodeTracing, TracingConfig
from flarelab.tracing.spans import NO_TRACER

A = "12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaaaaa"
B = "12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBbbbbbb"


@pytest.fixture(autouse=True)
def _no_otlp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)


def test_two_nodes_two_providers_two_resources() -> None:
    bus_a, bus_b = SpanBus(), SpanBus()
    a = NodeTracing.create(TracingConfig(label="A", bus=bus_a), A)
    b = NodeTracing.create(TracingConfig(label="B", bus=bus_b), B)
    assert a.provider is not b.provider
    assert a.enabled
    with a.tracer.start_as_current_span("dial"), b.tracer.start_as_current_span("accept"):
        pass
    assert [r.name for r in bus_a.history()] == ["dial", "dial"]
    assert [r.name for r in bus_b.history()] == ["accept", "accept"]
    res_a, res_b = bus_a.history()[0].resource, bus_b.history()[0].resource
    assert {k: res_a[k] for k in ("service.name", "service.instance.id", "libp2p.peer_id",
                                  "libp2p.node_label")} == {
        "service.name": "flarelab", "service.instance.id": A, "libp2p.peer_id": A,
        "libp2p.node_label": "A",
    }
    assert res_b["libp2p.peer_id"] == B
    assert res_b["libp2p.node_label"] == "B"
    # the "accept" span started while A's span was current, but in B's provider: same trace
    # context is allowed across providers in one process, the resource still says B
    assert bus_b.history()[0].node_label == "B"
    # nothing was set globally
    assert not hasattr(trace.get_tracer_provider(), "add_span_processor")
    a.shutdown()
    b.shutdown()
    a.shutdown()  # idempotent


def test_nothing_consumes_spans_means_no_op() -> None:
    for config in (TracingConfig(), TracingConfig(enabled=False, bus=SpanBus(), otlp=True)):
        tracing = NodeTracing.create(config, A)
        assert tracing.tracer is NO_TRACER
        assert not tracing.enabled
        assert isinstance(tracing.provider, trace.NoOpTracerProvider)
        assert not tracing.metrics.enabled
        with tracing.tracer.start_as_current_span("x") as span:
            assert not span.is_recording()
        tracing.metrics.record_dial(0.1, transport="tcp")
        assert tracing.force_flush()
        tracing.shutdown()


def test_default_label_is_the_short_peer_id() -> None:
    tracing = NodeTracing.create(TracingConfig(), A)
    assert tracing.label == "12*aaaaaa"
    assert "12*aaaaaa" in repr(tracing)
    with pytest.raises(LocalProtocolError):
        TracingConfig(label="  ")


def test_otel_sdk_disabled_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert NodeTracing.create(TracingConfig(bus=SpanBus()), A).tracer is NO_TRACER


def test_disabled_node_does_not_import_the_sdk() -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from flarelab.tracing.provider import NodeTracing, TracingConfig
        from flarelab.tracing import spans
        tracing = NodeTracing.create(TracingConfig(label="A"), "{A}")
        with tracing.tracer.start_as_current_span(spans.PING) as span:
            spans.message_sent(span, "ping", 32)
        tracing.metrics.record_stream("/ipfs/ping/1.0.0", direction="outbound")
        tracing.shutdown()
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk")))
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=root, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_metrics_go_to_a_configured_meter_provider() -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    tracing = NodeTracing.create(TracingConfig(meter_provider=meter_provider), A)
    assert tracing.tracer is NO_TRACER  # metrics on, spans off
    tracing.metrics.record_connection_opened("outbound", "tcp", security="/noise")
    data = reader.get_metrics_data()
    assert data is not None
    names = [m.name for rm in data.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics]
    assert names == ["libp2p_swarm_connections_opened"]
    tracing.shutdown()  # does not shut down a meter provider it does not own
    tracing.metrics.record_connection_opened("outbound", "tcp")
    assert reader.get_metrics_data() is not None
    meter_provider.shutdown()


async def test_trio_clock_stamps_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    bus = SpanBus()
    clock = TrioClock(epoch_ns=1_000_000_000_000)
    tracing = NodeTracing.create(TracingConfig(bus=bus, clock=clock), A)
    start = clock()
    with tracing.tracer.start_as_current_span("ping") as span:
        assert isinstance(span, ClockedSpan)
        await trio.sleep(1.5)
        span.add_event("message.sent")
        with tracing.tracer.start_as_current_span("inner"):
            await trio.sleep(0.25)
    inner, outer = [r for r in bus.history() if r.ended]
    assert outer.start_ns == start
    assert outer.duration_ns == 1_750_000_000
    assert outer.events[0].time_ns == start + 1_500_000_000
    assert inner.parent_id == outer.span_id
    assert inner.duration_ns == 250_000_000
    # exceptions are stamped and recorded too
    async def fail_in_span() -> None:
        with tracing.tracer.start_as_current_span("bad"):
            await trio.sleep(0.5)
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await fail_in_span()
    bad = bus.history()[-1]
    assert bad.status == "error"
    assert bad.events[0].name == "exception"
    assert bad.events[0].time_ns == bad.end_ns == bad.start_ns + 500_000_000
    # a span used directly as a context manager, and one ended by hand
    span = tracing.tracer.start_span("manual")
    with pytest.raises(KeyError), span:
        raise KeyError("k")
    assert bus.history()[-1].status == "error"
    await tracing.aclose()


def test_trio_clock_outside_trio_is_wall_time() -> None:
    import time

    before = time.time_ns()
    assert TrioClock()() >= before

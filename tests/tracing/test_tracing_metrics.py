"""NodeMetrics: go-libp2p names and labels on a real SDK meter; nothing at all on a no-op meter."""

from __future__ import annotations

from typing import Any

from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from flarelab.tracing.metrics import HANDSHAKE_LATENCY_BUCKETS, NodeMetrics


def _collect(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics}


def _points(metric: Any) -> list[tuple[dict[str, Any], Any]]:
    out = []
    for point in metric.data.data_points:
        value = point.value if hasattr(point, "value") else (point.count, point.sum)
        out.append((dict(point.attributes), value))
    return sorted(out, key=_order)


def _order(point: tuple[dict[str, Any], Any]) -> str:
    return repr(sorted(point[0].items()))


def test_instruments_names_labels_and_values() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    m = NodeMetrics(provider.get_meter("flarelab"))
    assert m.enabled
    m.record_connection_opened("outbound", "tcp", security="/noise", muxer="/yamux/1.0.0",
                               ip_version="ip4")
    m.record_connection_closed("outbound", "tcp", duration_s=3.0, security="/noise",
                               muxer="/yamux/1.0.0", ip_version="ip4")
    m.record_connection_closed("inbound", "")
    m.record_refused(transport="tcp")
    m.record_handshake(0.004, transport="tcp", security="/noise", muxer="/yamux/1.0.0")
    m.record_dial(0.01, transport="tcp", num_dials=2)
    m.record_dial(5.0, transport="tcp", ok=False, num_dials=9)
    m.record_dial_error(transport="tcp", error="connection refused", ip_version="ip4")
    m.record_stream("/ipfs/ping/1.0.0", direction="outbound")
    m.identify.record_identify(direction="outbound")
    m.identify.record_identify_push(direction="inbound")
    got = _collect(reader)
    conn = {"dir": "outbound", "transport": "tcp", "security": "/noise",
            "muxer": "/yamux/1.0.0", "early_muxer": "false", "ip_version": "ip4"}
    assert _points(got["libp2p_swarm_connections_opened"]) == [(conn, 1)]
    assert _points(got["libp2p_swarm_connections_closed"]) == sorted(
        [(conn, 1), ({"dir": "inbound", "transport": "unknown", "security": "", "muxer": "",
                      "early_muxer": "false", "ip_version": ""}, 1)], key=_order)
    assert _points(got["libp2p_swarm_connection_duration"]) == [(conn, (1, 3.0))]
    assert got["libp2p_swarm_connection_duration"].unit == "s"
    assert _points(got["libp2p_swarm_connections_refused"]) == [({"transport": "tcp"}, 1)]
    handshake = got["libp2p_swarm_handshake_latency"]
    assert handshake.data.data_points[0].explicit_bounds == HANDSHAKE_LATENCY_BUCKETS
    assert _points(got["libp2p_swarm_dials_per_peer"]) == sorted(
        [({"outcome": "success", "num_dials": "2"}, 1),
         ({"outcome": "failed", "num_dials": ">=6"}, 1)], key=_order)
    assert _points(got["libp2p_swarm_dial_duration"]) == sorted(
        [({"outcome": "success", "transport": "tcp"}, (1, 0.01)),
         ({"outcome": "failed", "transport": "tcp"}, (1, 5.0))], key=_order)
    assert _points(got["libp2p_swarm_dial_errors"]) == [
        ({"transport": "tcp", "error": "connection refused", "ip_version": "ip4"}, 1)]
    assert _points(got["libp2p_swarm_streams_opened"]) == [
        ({"protocol": "/ipfs/ping/1.0.0", "dir": "outbound"}, 1)]
    assert _points(got["libp2p_identify_identify"]) == [
        ({"dir": "outbound", "outcome": "success"}, 1)]
    assert _points(got["libp2p_identify_identify_push"]) == [({"dir": "inbound"}, 1)]
    provider.shutdown()


def test_go_bucket_layout() -> None:
    assert len(HANDSHAKE_LATENCY_BUCKETS) == 35
    assert HANDSHAKE_LATENCY_BUCKETS[0] == 0.001
    assert abs(HANDSHAKE_LATENCY_BUCKETS[1] - 0.0013) < 1e-12


def test_noop_meter_records_nothing_and_is_disabled() -> None:
    m = NodeMetrics(NoOpMeter("flarelab"))
    assert not m.enabled
    assert not m.identify.enabled
    m.record_dial(0.1, transport="tcp", num_dials=1)
    m.identify.record_identify(direction="inbound")

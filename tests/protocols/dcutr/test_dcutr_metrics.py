"""go-libp2p's hole-punch metrics: names, labels, per-address outcomes; and from a real punch."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from dcutr_helpers import next_event, scenario
from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from flarelab.multiaddr import Multiaddr
from flarelab.protocols.dcutr import HolePunchMetrics, HolePunchSucceeded
from flarelab.protocols.dcutr.metrics import num_attempts_label

TCP4 = Multiaddr("/ip4/203.0.113.1/tcp/4001")
QUIC4 = Multiaddr("/ip4/203.0.113.1/udp/4001/quic-v1")
TCP6 = Multiaddr("/ip6/2001:db8::1/tcp/4001")


def _points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    out = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for p in metric.data.data_points:
                        value = p.value if hasattr(p, "value") else p.count
                        out.append((dict(p.attributes), value))
    return sorted(out, key=lambda p: repr(sorted(p[0].items())))


def test_per_address_outcomes_as_go_computes_them() -> None:
    reader = InMemoryMetricReader()
    m = HolePunchMetrics(MeterProvider(metric_readers=[reader]).get_meter("t"), True)
    # we offered TCP and QUIC over IPv4 and TCP over IPv6; the peer offered TCP and QUIC
    # over IPv4; the connection came over QUIC
    m.record_finished(side="initiator", attempts=2, outcome="success",
                      ours=[TCP4, QUIC4, TCP6], theirs=[TCP4, QUIC4], direct=QUIC4,
                      elapsed=0.3)
    m.record_finished(side="receiver", attempts=1, outcome="failed", ours=[TCP4],
                      theirs=[TCP4], direct=None)
    m.record_direct_dial(ok=False)
    base = {"side": "initiator", "num_attempts": "2"}
    assert _points(reader, "libp2p_holepunch_address_outcomes") == sorted([
        ({**base, "ipv": "ip4", "transport": "tcp", "outcome": "cancelled"}, 1),
        ({**base, "ipv": "ip4", "transport": "quic-v1", "outcome": "success"}, 1),
        ({**base, "ipv": "ip6", "transport": "tcp", "outcome": "no_suitable_address"}, 1),
        ({"side": "receiver", "num_attempts": "1", "ipv": "ip4", "transport": "tcp",
          "outcome": "failed"}, 1),
    ], key=lambda p: repr(sorted(p[0].items())))
    assert _points(reader, "libp2p_holepunch_outcomes") == sorted([
        ({**base, "outcome": "success"}, 1),
        ({"side": "receiver", "num_attempts": "1", "outcome": "failed"}, 1),
    ], key=lambda p: repr(sorted(p[0].items())))
    assert _points(reader, "libp2p_holepunch_direct_dials") == [({"outcome": "failed"}, 1)]
    assert _points(reader, "libp2p_holepunch_time_to_direct") == [
        ({"side": "initiator", "transport": "quic-v1"}, 1)]
    assert [num_attempts_label(n) for n in (0, 3, 5, 6)] == ["0", "3", "5", "> 5"]


def test_a_noop_meter_records_nothing() -> None:
    m = HolePunchMetrics(NoOpMeter("x"), False)
    m.record_finished(side="initiator", attempts=1, outcome="success", ours=[TCP4],
                      theirs=[TCP4], direct=TCP4, elapsed=1.0)
    m.record_direct_dial(ok=True)


async def test_a_punch_counts_on_both_sides(autojump_clock: trio.testing.MockClock) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    async with scenario("home_router", "home_router", meter_provider=provider) as sc:
        await sc.relayed()
        await next_event(sc.b, HolePunchSucceeded)
        await trio.sleep(0.1)
    assert _points(reader, "libp2p_holepunch_outcomes") == [
        ({"side": "initiator", "num_attempts": "1", "outcome": "success"}, 1),
        ({"side": "receiver", "num_attempts": "1", "outcome": "success"}, 1),
    ]
    assert [p[0]["outcome"] for p in _points(reader, "libp2p_holepunch_address_outcomes")] == [
        "success", "success"]

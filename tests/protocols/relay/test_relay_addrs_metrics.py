"""Circuit addresses (what the transport dials and listens on) and the relay metrics family
(tier 1: no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.multiaddr import Multiaddr, MultiaddrError
from flarelab.protocols.relay import (
    Limit,
    RelayServiceMetrics,
    Reservation,
    Status,
    split_circuit_addr,
)
from flarelab.protocols.relay.metrics import response_status

R, T = (PeerId.from_public_key(Ed25519PrivateKey.from_seed(bytes([i]) * 32).public_key)
        for i in (1, 2))
BASE = "/ip4/198.51.100.7/tcp/4001"


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        (f"{BASE}/p2p/{R}/p2p-circuit/p2p/{T}", (BASE, R, T)),
        (f"{BASE}/p2p/{R}/p2p-circuit", (BASE, R, None)),
        (f"/p2p/{R}/p2p-circuit/p2p/{T}", ("", R, T)),
        (f"/dns4/relay.example/udp/1/quic-v1/p2p/{R}/p2p-circuit", (
            "/dns4/relay.example/udp/1/quic-v1", R, None)),
        (f"{BASE}/p2p-circuit/p2p/{T}", None),  # which relay?
        (f"{BASE}/p2p/{R}", None),  # no circuit
        (f"/p2p/{R}/p2p-circuit/p2p/{T}/p2p-circuit", None),  # relays of relays
        (f"/p2p/{T}/ip4/1.2.3.4/tcp/1/p2p/{R}/p2p-circuit", None),
        (f"{BASE}/p2p/{R}/p2p-circuit/ip4/1.2.3.4/tcp/1", None),
    ],
)
def test_split_circuit_addr(addr: str, expected: tuple[str, PeerId, PeerId | None] | None) -> None:
    got = split_circuit_addr(Multiaddr(addr))
    if expected is None:
        assert got is None
    else:
        assert got is not None
        relay_addr, relay, target = got
        assert (str(relay_addr), relay, target) == expected


@given(st.binary(max_size=120))
def test_split_circuit_addr_never_raises_on_any_valid_multiaddr(data: bytes) -> None:
    try:
        addr = Multiaddr.from_bytes(data)
    except (MultiaddrError, ValueError):
        return
    parts = split_circuit_addr(addr)
    if parts is not None:
        assert addr.is_relayed
        assert parts[1] is not None


def test_circuit_addrs_come_from_the_relay_or_from_where_we_reached_it() -> None:
    other = PeerId.from_public_key(Ed25519PrivateKey.from_seed(b"\x09" * 32).public_key)
    rsvp = Reservation(
        relay=R, expire=10,
        relay_addrs=(Multiaddr(f"{BASE}/p2p/{R}"), Multiaddr(f"/ip4/1.1.1.1/tcp/1/p2p/{other}"),
                     Multiaddr(f"{BASE}/p2p/{R}")),
        voucher=None, limit=Limit(),
    )
    assert rsvp.circuit_addrs() == [Multiaddr(f"{BASE}/p2p/{R}/p2p-circuit")]
    bare = Reservation(R, 10, (), None, None)
    assert bare.circuit_addrs((Multiaddr("/ip4/127.0.0.1/tcp/5"),)) == [
        Multiaddr(f"/ip4/127.0.0.1/tcp/5/p2p/{R}/p2p-circuit")]


def test_metrics_names_labels_and_go_s_status_groups() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    m = RelayServiceMetrics(provider.get_meter("flarelab"))
    m.relay_status(True)
    m.reservation_allowed(renewed=False)
    m.reservation_allowed(renewed=True)
    m.reservations_closed(2)
    m.reservation_request_handled(Status.OK)
    m.reservation_request_handled(Status.RESERVATION_REFUSED)
    m.connection_request_handled(Status.NO_RESERVATION)
    m.connection_request_handled(Status.CONNECTION_FAILED)
    m.connection_opened()
    m.connection_closed(3.0, limit_hit="duration")
    m.bytes_transferred(1000)
    data = reader.get_metrics_data()
    assert data is not None
    got = {metric.name: sorted(((dict(p.attributes), getattr(p, "value", None))
                                for p in metric.data.data_points), key=repr)
           for rm in data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics}
    assert got["libp2p_relaysvc_status"] == [({}, 1)]
    assert got["libp2p_relaysvc_reservations"] == [
        ({"type": "closed"}, 2), ({"type": "opened"}, 1), ({"type": "renewed"}, 1)]
    assert got["libp2p_relaysvc_reservation_request_response_status"] == [
        ({"status": "ok"}, 1), ({"status": "rejected"}, 1)]
    assert got["libp2p_relaysvc_reservation_rejections"] == [
        ({"reason": "ip constraint violation"}, 1)]
    assert got["libp2p_relaysvc_connection_request_response_status"] == [
        ({"status": "error"}, 1), ({"status": "rejected"}, 1)]
    assert got["libp2p_relaysvc_connection_rejections"] == [({"reason": "no reservation"}, 1)]
    assert got["libp2p_relaysvc_connections"] == [({"type": "closed"}, 1), ({"type": "opened"}, 1)]
    assert got["libp2p_relaysvc_limits_hit"] == [({"limit": "duration"}, 1)]
    assert got["libp2p_relaysvc_data_transferred_bytes"] == [({}, 1000)]
    assert "libp2p_relaysvc_connection_duration" in got
    assert [response_status(s) for s in Status] == [
        "ok", "rejected", "rejected", "rejected", "error", "rejected", "rejected", "error"]


def test_metrics_on_a_no_op_meter_do_nothing() -> None:
    m = RelayServiceMetrics(NoOpMeter("x"))
    assert not m.enabled
    m.relay_status(True)
    m.connection_closed(1.0, limit_hit="data")
    m.reservation_request_handled(Status.PERMISSION_DENIED)

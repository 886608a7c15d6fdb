"""Relays on the simulated internet, on MockClock (tier 3): peers behind NATs meet through a
public relay; limits reset circuits; reservations refresh, lapse and come back; floods and
caps are refused. Every run is deterministic; nothing sleeps on the wall clock.
"""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from relay_helpers import ended, events, sink, trio_unix_time

from flarelab.errors import DialError
from flarelab.identity import PeerId
from flarelab.multiaddr import Multiaddr
from flarelab.node import ConnectionClosed, LocalAddressesChanged, Node
from flarelab.node.connection import NetStream
from flarelab.protocols.relay import (
    HOP_PROTOCOL,
    STOP_PROTOCOL,
    KeeperState,
    Limit,
    RelayClientConfig,
    RelayLimits,
    RelayRefusedError,
    RelayService,
    RelayServiceConfig,
    RelayTransport,
    Status,
    reserve,
)
from flarelab.simnet import Network
from flarelab.tracing import spans
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.clock import TrioClock
from flarelab.tracing.provider import TracingConfig

SINK = "/flarelab/test/sink/1.0.0"
CLIENT = RelayClientConfig(unix_time=trio_unix_time)


def service(node: Node, acl: object = None, **limits: object) -> RelayService:
    config = RelayServiceConfig(limits=RelayLimits(**limits), unix_time=trio_unix_time,  # type: ignore[arg-type]
                                acl=acl)  # type: ignore[arg-type]
    return RelayService(node, config)


def tracing(bus: SpanBus) -> TracingConfig:
    return TracingConfig(bus=bus, clock=TrioClock(epoch_ns=0))


class Deny:
    """An ACL that refuses everything while ``on``."""

    def __init__(self) -> None:
        self.on = False

    def allow_reserve(self, peer: PeerId, addr: Multiaddr) -> bool:
        return not self.on

    def allow_connect(self, src: PeerId, src_addr: Multiaddr, dst: PeerId) -> bool:
        return not self.on


async def test_peers_behind_nats_reach_each_other_through_a_public_relay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = SpanBus()
    async with Network(seed=5, tracing=tracing(bus)) as net:
        hr = net.add_host("relay")
        ha = net.add_router("NAT A", "home_router").add_host("A")
        hb = net.add_router("NAT B", "home_router").add_host("B")
        async with hr.node() as r, ha.node() as a, hb.node() as b:
            service(r)
            RelayTransport.install(a, CLIENT)
            RelayTransport.install(b, CLIENT)
            with trio.fail_after(60):
                await b.listen(f"/ip4/{hr.ip}/tcp/4001/p2p/{r.peer_id}/p2p-circuit")
                # the relay is public here: its reservation names its TCP and QUIC addresses
                circuits = {Multiaddr(f"/ip4/{hr.ip}/tcp/4001/p2p/{r.peer_id}/p2p-circuit"),
                            Multiaddr(f"/ip4/{hr.ip}/udp/4001/quic-v1/p2p/{r.peer_id}"
                                      "/p2p-circuit")}
                assert set(b.extra_addrs[f"relay:{r.peer_id}"]) == circuits
                # nobody outside can dial B directly ...
                with pytest.raises(DialError):
                    await a.connect(Multiaddr(f"{b.listen_addrs()[0]}/p2p/{b.peer_id}"))
                # ... but through the relay, A reaches B (over QUIC to the relay)
                target = f"/ip4/{hr.ip}/udp/4001/quic-v1/p2p/{r.peer_id}/p2p-circuit"
                conn = await a.connect(f"{target}/p2p/{b.peer_id}")
                assert conn.limited and conn.remote_peer == b.peer_id
                rtts = await a.ping(b.peer_id, 2)
                info = await a.identify_peer(b.peer_id)
                assert circuits <= set(info.listen_addrs)
                a_conn = r.connections(a.peer_id)[0]
                assert a_conn.transport == "quic"
            # relayed round trip: A-relay and relay-B, 2 x (10 + 10.5) ms each way
            assert rtts == pytest.approx([82.0, 82.0], abs=1.0)
    # the sequence, told by spans alone: B reserves, A connects, the relay bridges
    (rsv_b,) = ended(bus, spans.RELAY_RESERVE, "B")
    (rsv_r,) = ended(bus, spans.RELAY_RESERVE, "relay")
    (conn_a,) = ended(bus, spans.RELAY_CONNECT, "A")
    (conn_b,) = ended(bus, spans.RELAY_CONNECT, "B")
    (circuit,) = ended(bus, spans.RELAY_CIRCUIT, "relay")
    assert events(rsv_b) == [("message.sent", "hop.reserve"), ("message.received", "hop.status")]
    assert events(rsv_r) == [("message.received", "hop.reserve"), ("message.sent", "hop.status")]
    assert events(conn_a) == [("message.sent", "hop.connect"), ("message.received", "hop.status")]
    assert events(conn_b) == [("message.received", "stop.connect"),
                              ("message.sent", "stop.status")]
    assert events(circuit) == [
        ("message.received", "hop.connect"), ("message.sent", "stop.connect"),
        ("message.received", "stop.status"), ("message.sent", "hop.status"),
    ]
    order = [rsv_b.start_ns, conn_a.start_ns, circuit.start_ns, conn_b.start_ns]
    assert order == sorted(order)
    assert rsv_r.attributes[spans.LIBP2P_RELAY_EXPIRE] == rsv_b.attributes[
        spans.LIBP2P_RELAY_EXPIRE]
    assert rsv_r.attributes[spans.LIBP2P_RELAY_RENEWED] is False
    assert circuit.attributes[spans.LIBP2P_RELAY_LIMIT_DATA] == 131072
    assert circuit.attributes[spans.LIBP2P_RELAY_LIMIT_DURATION] == 120
    assert circuit.attributes[spans.LIBP2P_RELAY_BYTES_SRC_TO_DST] > 0
    assert spans.LIBP2P_RELAY_LIMIT_HIT not in circuit.attributes


async def _send(stream: trio.abc.SendStream, nbytes: int) -> None:
    for _ in range(nbytes // 4096):
        await stream.send_all(b"x" * 4096)


async def test_data_limit_resets_both_streams(autojump_clock: trio.testing.MockClock) -> None:
    bus = SpanBus()
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    async with Network(seed=6, tracing=tracing(bus)) as net:
        hr, ha, hb = net.add_host("relay"), net.add_host("A"), net.add_host("B")
        r_config = dataclasses.replace(tracing(bus), label="relay", meter_provider=meters)
        async with hr.node(tracing=r_config, enable_quic=False) as r, \
                ha.node(enable_quic=False) as a, hb.node(enable_quic=False) as b:
            service(r)
            RelayTransport.install(a, CLIENT)
            RelayTransport.install(b, CLIENT)
            b.set_handler(SINK, sink, allow_limited=True)
            with trio.fail_after(60):
                await b.listen(f"{r.addrs[0]}/p2p-circuit")
                conn = await a.connect(f"{r.addrs[0]}/p2p-circuit/p2p/{b.peer_id}")
                opened = trio.current_time()
                with b.events.subscribe(ConnectionClosed) as closed_at_b:
                    stream = await conn.new_stream(SINK)
                    with pytest.raises(trio.BrokenResourceError):
                        await _send(stream, 64 * 4096)  # 256 KiB: twice the relay's 128 KiB
                    await conn.closed.wait()
                    assert trio.current_time() - opened < 5
                    # both sides of the circuit were reset
                    await closed_at_b.next(predicate=lambda e: e.connection.limited)
    (circuit,) = ended(bus, spans.RELAY_CIRCUIT, "relay")
    assert circuit.attributes[spans.LIBP2P_RELAY_LIMIT_HIT] == "data"
    assert circuit.attributes[spans.LIBP2P_RELAY_BYTES_SRC_TO_DST] == 131072
    assert circuit.attributes[spans.LIBP2P_CLOSE_REASON] == "data limit"
    data = reader.get_metrics_data()
    assert data is not None
    got = {m.name: [(dict(p.attributes), getattr(p, "value", None))
                    for p in m.data.data_points]
           for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert got["libp2p_relaysvc_limits_hit"] == [({"limit": "data"}, 1)]
    assert ({"type": "opened"}, 1) in got["libp2p_relaysvc_connections"]
    assert ({"type": "closed"}, 1) in got["libp2p_relaysvc_connections"]
    # opened, and closed when B's connection to the relay closed at the end
    assert sorted(got["libp2p_relaysvc_reservations"], key=str) == [
        ({"type": "closed"}, 1), ({"type": "opened"}, 1)]
    assert ({"status": "ok"}, 1) in got["libp2p_relaysvc_connection_request_response_status"]
    assert got["libp2p_relaysvc_status"] == [({}, 1)]
    [(_, transferred)] = got["libp2p_relaysvc_data_transferred_bytes"]
    assert transferred >= 131072


async def test_duration_limit_resets_an_idle_relayed_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = SpanBus()
    async with Network(seed=7, tracing=tracing(bus)) as net:
        hr, ha, hb = net.add_host("relay"), net.add_host("A"), net.add_host("B")
        async with hr.node(enable_quic=False) as r, ha.node(enable_quic=False) as a, \
                hb.node(enable_quic=False) as b:
            service(r, circuit=Limit(duration=30))
            RelayTransport.install(a, CLIENT)
            RelayTransport.install(b, CLIENT)
            with trio.fail_after(120):
                await b.listen(f"{r.addrs[0]}/p2p-circuit")
                conn = await a.connect(f"{r.addrs[0]}/p2p-circuit/p2p/{b.peer_id}")
                opened = trio.current_time()
                await a.ping(b.peer_id)
                await conn.closed.wait()
                lasted = trio.current_time() - opened
            assert 29.5 < lasted < 30.1  # the relay counts from its OK, before the upgrade
            assert b.extra_addrs  # the reservation itself is untouched
            # and a new relayed connection can be made at once
            with trio.fail_after(10):
                assert len(await a.ping(f"{r.addrs[0]}/p2p-circuit/p2p/{b.peer_id}")) == 1
    first = ended(bus, spans.RELAY_CIRCUIT, "relay")[0]
    assert first.attributes[spans.LIBP2P_RELAY_LIMIT_HIT] == "duration"
    assert first.attributes[spans.LIBP2P_CLOSE_REASON] == "duration limit"
    assert first.attributes[spans.LIBP2P_RELAY_LIMIT_DATA] == 0


async def test_reservation_refreshes_lapses_and_comes_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = SpanBus()
    acl = Deny()
    async with Network(seed=8, tracing=tracing(bus)) as net:
        hr, hb = net.add_host("relay"), net.add_router("NAT B").add_host("B")
        async with hr.node(enable_quic=False) as r, hb.node(enable_quic=False) as b:
            svc = service(r, acl=acl, reservation_ttl=100.0)
            transport = RelayTransport.install(b, CLIENT)
            changes: list[tuple[float, bool]] = []
            b.events.add_listener(lambda e: changes.append(
                (round(trio.current_time()), any(a.is_relayed for a in e.addrs)))
                if isinstance(e, LocalAddressesChanged) else None)
            start = trio.current_time()
            await b.listen(f"{r.addrs[0]}/p2p-circuit")
            (listener,) = transport.listeners()
            await trio.sleep_until(start + 74)
            assert listener.granted == 1
            await trio.sleep_until(start + 76)  # refreshed after 3/4 of 100 s
            assert listener.granted == 2 and listener.keeper.state is KeeperState.ACTIVE
            renewed = [s.attributes[spans.LIBP2P_RELAY_RENEWED]
                       for s in ended(bus, spans.RELAY_RESERVE, "relay")]
            assert renewed == [False, True]
            acl.on = True  # the relay now refuses: refreshes fail, the reservation lapses
            await trio.sleep_until(start + 176)
            assert b.extra_addrs == {}
            assert listener.keeper.state is KeeperState.BACKOFF
            assert isinstance(listener.last_error, RelayRefusedError)
            assert listener.last_error.status is Status.PERMISSION_DENIED
            assert svc.book.reservation(b.peer_id, trio.current_time()) is None
            acl.on = False
            with trio.fail_after(120):
                await listener.wait_changed()
            assert listener.granted == 3 and b.extra_addrs
            back_at = round(trio.current_time() - start)
    # addresses: advertised at 0, withdrawn when the reservation lapsed (75 + 100 = 175
    # after the refresh), advertised again at the next retry (withdrawn at shutdown)
    advertised = [(t - round(start), on) for t, on in changes]
    assert advertised[0] == (0, True)
    assert advertised.index((175, False)) < advertised.index((back_at, True))
    assert advertised[-1] == (back_at, False)
    failed = [s for s in ended(bus, spans.RELAY_RESERVE, "B")
              if s.attributes.get(spans.LIBP2P_RELAY_STATUS) == "PERMISSION_DENIED"]
    tries = [round(s.start_ns / 1e9 - start) for s in failed]
    assert tries[:4] == [150, 151, 153, 157]  # backoff 1, 2, 4 ... after the refresh at 150
    assert max(tries) <= 175


async def test_re_reserves_when_the_relay_connection_is_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with Network(seed=9) as net:
        hr, hb = net.add_host("relay"), net.add_router("NAT B").add_host("B")
        async with hr.node(enable_quic=False) as r, hb.node(enable_quic=False) as b:
            svc = service(r)
            transport = RelayTransport.install(b, CLIENT)
            with trio.fail_after(30):
                await b.listen(f"{r.addrs[0]}/p2p-circuit")
                (listener,) = transport.listeners()
                first = svc.book.reservation(b.peer_id, trio.current_time())
                assert first is not None
                await r.disconnect(b.peer_id)  # the reservation dies with the connection
                await listener.wait_changed()
                assert b.extra_addrs == {}
                await listener.wait_changed()
            assert listener.granted == 2 and b.extra_addrs
            again = svc.book.reservation(b.peer_id, trio.current_time())
            assert again is not None and again.connection_id != first.connection_id
            # closing the listener withdraws the addresses and stops refreshing
            await listener.aclose()
            assert b.extra_addrs == {}
            await trio.sleep(1)
            assert transport.listeners() == []


async def test_per_ip_cap_and_a_reservation_flood(autojump_clock: trio.testing.MockClock) -> None:
    async with Network(seed=10) as net:
        hr = net.add_host("relay")
        nat = net.add_router("NAT", "home_router")
        hosts = [nat.add_host(f"C{i}") for i in range(3)]
        async with hr.node(enable_quic=False) as r, hosts[0].node(enable_quic=False) as c0, \
                hosts[1].node(enable_quic=False) as c1, hosts[2].node(enable_quic=False) as c2:
            svc = service(r, max_reservations_per_ip=2)
            for c in (c0, c1, c2):
                RelayTransport.install(c, CLIENT)
            with trio.fail_after(60):
                await c0.listen(f"{r.addrs[0]}/p2p-circuit")
                await c1.listen(f"{r.addrs[0]}/p2p-circuit")
                with pytest.raises(RelayRefusedError) as info:  # the third behind one IP
                    await c2.listen(f"{r.addrs[0]}/p2p-circuit")
                assert info.value.status is Status.RESERVATION_REFUSED
                # a flood of RESERVEs from one peer: 30 in a burst, then refused
                conn = c0.connections(r.peer_id)[0]
                answers = []
                for _ in range(40):
                    try:
                        await reserve(conn, local_peer=c0.peer_id, unix_time=trio_unix_time)
                        answers.append(Status.OK)
                    except RelayRefusedError as err:
                        answers.append(err.status)
                # one token was taken by the listen: 29 more, then refusals
                assert answers == [Status.OK] * 29 + [Status.RESERVATION_REFUSED] * 11
                # the flood disturbed nobody: c0 keeps its reservation, c1 can refresh
                assert svc.book.reservation(c0.peer_id, trio.current_time()) is not None
                c1_conn = c1.connections(r.peer_id)[0]
                await reserve(c1_conn, local_peer=c1.peer_id, unix_time=trio_unix_time)


async def test_circuit_caps_refuse_with_resource_limit_exceeded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with Network(seed=11) as net:
        hr, ha = net.add_host("relay"), net.add_host("A")
        hb = net.add_router("NAT B").add_host("B")
        async with hr.node(enable_quic=False) as r, ha.node(enable_quic=False) as a, \
                hb.node(enable_quic=False) as b:
            service(r, max_circuits_per_peer=1)
            RelayTransport.install(a, CLIENT)
            RelayTransport.install(b, CLIENT)
            circuit = f"{r.addrs[0]}/p2p-circuit/p2p/{b.peer_id}"
            with trio.fail_after(30):
                await b.listen(f"{r.addrs[0]}/p2p-circuit")
                await a.connect(circuit)
                with pytest.raises(DialError) as info:
                    await a.connect(circuit, force_new=True)
            # one CONNECT (the circuit address is tried once), refused by the cap
            refused = [(addr, err) for addr, err in info.value.attempts
                       if isinstance(err, RelayRefusedError)]
            assert [(addr, err.status) for addr, err in refused] == [
                (Multiaddr(f"{r.addrs[0]}/p2p-circuit"), Status.RESOURCE_LIMIT_EXCEEDED)]


async def test_silent_peers_time_out_and_the_relay_keeps_serving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = SpanBus()
    async with Network(seed=12, tracing=tracing(bus)) as net:
        hr, ha, hb = net.add_host("relay"), net.add_host("A"), net.add_host("B")
        async with hr.node(enable_quic=False) as r, ha.node(enable_quic=False) as a, \
                hb.node(enable_quic=False) as b:
            service(r)
            RelayTransport.install(a, CLIENT)

            async def silent(stream: NetStream) -> None:
                await trio.sleep_forever()

            # B reserves by hand and then never answers the relay's STOP CONNECT
            b.set_handler(STOP_PROTOCOL, silent)
            to_relay = await b.connect(r.addrs[0])
            await reserve(to_relay, local_peer=b.peer_id, unix_time=trio_unix_time)
            started = trio.current_time()
            with trio.fail_after(30), pytest.raises(DialError) as info:
                await a.connect(f"{r.addrs[0]}/p2p-circuit/p2p/{b.peer_id}")
            # the relay gives the target 5 s, and answers before A's 10 s are up
            assert trio.current_time() - started == pytest.approx(5.0, abs=0.2)
            assert isinstance(info.value.__cause__, RelayRefusedError)
            assert info.value.__cause__.status is Status.CONNECTION_FAILED
            # a client that opens a hop stream and says nothing is cut off after 10 s
            stream = await a.new_stream(r.addrs[0], HOP_PROTOCOL)
            started = trio.current_time()
            with trio.fail_after(30), pytest.raises(trio.BrokenResourceError):
                await stream.receive_some(100)
            assert trio.current_time() - started == pytest.approx(10.0, abs=0.2)
            # neither disturbed anything: A can still reserve
            conn = a.connections(r.peer_id)[0]
            assert (await reserve(conn, local_peer=a.peer_id,
                                  unix_time=trio_unix_time)).relay == r.peer_id
    (circuit,) = ended(bus, spans.RELAY_CIRCUIT)
    assert circuit.attributes[spans.LIBP2P_RELAY_STATUS] == "CONNECTION_FAILED"
    assert "did not answer STOP CONNECT within 5.0 s" in str(
        circuit.attributes[spans.LIBP2P_REASON])
    handled = ended(bus, spans.STREAM_HANDLE, "relay",
                    where=lambda rec: rec.status == "error")
    assert any("no hop request within 10.0 s" in (rec.description or "") for rec in handled)

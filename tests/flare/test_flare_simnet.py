"""The whole Flare flow on the simulated internet, on MockClock (tier 3).

The lab's topology (``relay``, AutoNAT servers ``s1``-``s3``, ``a`` and ``b`` behind NAT
routers) built on simnet by :func:`flarelab.flare.simnet_run.flare_simnet`: AutoNAT finds
A and B private and the relay public, B reserves on the relay, A dials B's circuit
address, B's DCUtR service upgrades the relayed connection, new streams go direct and the
relayed connection closes after the grace. Each test asserts the exact phases the nodes
went through.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from flarelab.errors import LocalProtocolError
from flarelab.flare import FlareConfig, FlarePhase, enable_flare
from flarelab.flare.simnet_run import SIMNET_AUTONAT, flare_simnet
from flarelab.lab import Topology
from flarelab.node import NodeConfig
from flarelab.protocols.autonat import Reachability
from flarelab.protocols.dcutr import HolePunchSucceeded
from flarelab.protocols.relay import HOP_PROTOCOL, RelayService
from flarelab.simnet import Network
from flarelab.tracing import spans
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.clock import TrioClock
from flarelab.tracing.provider import TracingConfig

X, P = Reachability.PRIVATE, Reachability.PUBLIC
CLOSED = "upgraded to a direct connection (DCUtR)"


def phases(flare: Any) -> list[str]:
    return [state.phase.value for state in flare.history]


@pytest.mark.parametrize(("transport", "ipv6"), [
    ("tcp", False), ("quic", False), ("tcp", True), ("quic", True)])
async def test_the_whole_flow(transport: str, ipv6: bool,
                              autojump_clock: trio.testing.MockClock) -> None:
    bus = SpanBus()
    tracing = TracingConfig(bus=bus, clock=TrioClock(epoch_ns=0))
    topology = Topology.standard(ipv6=ipv6, latency=0.01)
    async with flare_simnet(topology, transport=transport,  # type: ignore[arg-type]
                            tracing=tracing) as world:
        a, b, relay = world.a, world.b, world.relay
        flare_a, flare_b = world.flare("a"), world.flare("b")
        with trio.fail_after(60):
            await world.join()
            state_b = await flare_b.wait_for(FlarePhase.RESERVED)
            await flare_a.wait_for(FlarePhase.RESERVED)
            await world.flare("relay").wait_for(FlarePhase.PUBLIC)
        assert (flare_a.reachability, flare_b.reachability) == (X, X)
        assert state_b.relays == (relay.peer_id,)
        # B advertises its LAN address(es) and its circuit addresses, nothing public
        policy = b.config.address_policy
        assert all(a.is_relayed or not policy.is_public(a) for a in b.advertised_addrs())
        assert set(state_b.circuit_addrs) <= set(b.advertised_addrs())
        # ... but it knows its public (observed) address, which DCUtR offers
        nat_b = topology.router("nat-b")
        observed = [str(x) for x in b.observed_addrs.confirmed(trio.current_time())]
        expected_ip = f"/ip6/{topology.host('b').ip6}" if ipv6 else f"/ip4/{nat_b.wan_ip}"
        assert any(x.startswith(expected_ip) for x in observed)

        circuit = next(c for c in state_b.circuit_addrs
                       if ("quic-v1" in c.protocol_names()) == (transport == "quic"))
        with b.events.subscribe(HolePunchSucceeded) as events, trio.fail_after(30):
            relayed = await a.connect(circuit.encapsulate(f"/p2p/{b.peer_id}"))
            assert relayed.limited
            done = await events.next()
        result = done.result
        assert (done.outcome, result.attempts) == ("success", 1)
        assert result.transport == ("quic-v1" if transport == "quic" else "tcp")
        # new streams use the direct connection; the relayed one closes after the grace
        assert b.best_connection(a.peer_id) is result.connection
        assert len(await a.ping(b.peer_id, 1)) == 1
        assert not a.best_connection(b.peer_id).limited  # type: ignore[union-attr]
        await trio.sleep(6)
        assert relayed.is_closed
        assert phases(flare_b) == ["idle", "probing", "reserving", "reserved", "upgrading",
                                   "reserved"]
        assert phases(flare_a) == ["idle", "probing", "reserving", "reserved"]
        assert phases(world.flare("relay")) == ["idle", "probing", "public"]

    # the spans tell the same story: probes, the reservation, the upgrade
    def named(label: str, name: str) -> list[Any]:
        return [r for r in bus.history() if r.ended and r.node_label == label
                and r.name == name]

    assert named("b", spans.AUTONAT_PROBE)
    assert len(named("b", spans.RELAY_RESERVE)) >= 1
    (upgrade,) = named("b", spans.DCUTR_UPGRADE)
    assert upgrade.attributes[spans.LIBP2P_OUTCOME] == "success"


async def test_a_public_node_does_not_reserve_and_may_serve_as_a_relay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    topology = Topology.standard(None, "home_router", latency=0.01)
    async with flare_simnet(topology, relay_service=True) as world:
        with trio.fail_after(60):
            await world.join()
            await world.flare("a").wait_for(FlarePhase.PUBLIC)
            await world.b.connect(world.a.addrs[0])  # B meets A, now a relay
            await world.flare("b").wait_for(lambda s: len(s.relays) == 2)
        flare_a = world.flare("a")
        assert phases(flare_a) == ["idle", "probing", "public"]
        assert flare_a.state.relay_service and flare_a.relay_service is not None
        assert HOP_PROTOCOL in world.a.protocols()
        # B found A as a relay through identify and reserved there too
        assert set(world.flare("b").state.relays) == {world.relay.peer_id, world.a.peer_id}


async def test_a_lost_relay_is_replaced_by_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with flare_simnet(Topology.standard(latency=0.01), max_relays=1) as world:
        spare = world.servers[0]
        RelayService(spare)  # a second relay, which B finds through identify
        flare_b = world.flare("b")
        with trio.fail_after(60):
            await world.join()
            await flare_b.wait_for(FlarePhase.RESERVED)
            assert flare_b.state.relays == (world.relay.peer_id,)
            await world.b.disconnect(world.relay.peer_id)  # the relay is gone
            state = await flare_b.wait_for(
                lambda s: s.relays == (spare.peer_id,) and s.phase is FlarePhase.RESERVED)
        assert all(str(spare.peer_id) in str(c) for c in state.circuit_addrs)
        assert phases(flare_b)[-3:] == ["reserved", "reserving", "reserved"]
        lost = flare_b.core.candidates[world.relay.peer_id]
        assert lost.failures == 1 and lost.reason == "the connection to the relay closed"
        assert [x.relay for x in flare_b.relay_transport.listeners()] == [spare.peer_id]
        circuit = next(c for c in state.circuit_addrs)
        assert circuit.encapsulate(f"/p2p/{world.b.peer_id}") in [
            x for x in world.b.addrs if x.is_relayed]


async def test_the_config_flag_and_enable_flare_on_a_running_node(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with Network(seed=1) as net:
        host = net.add_host("p")
        node = host.node(NodeConfig(flare=FlareConfig(autonat=SIMNET_AUTONAT)))
        flare = node.flare
        assert flare is not None and flare.state.phase is FlarePhase.IDLE
        async with node:
            with trio.fail_after(5):
                await flare.wait_for(FlarePhase.PROBING)
            with pytest.raises(LocalProtocolError):
                enable_flare(node)
            await flare.aclose()
            assert node.flare is None and "flare" not in node.address_filters
            with trio.fail_after(5):
                await flare.wait_for(FlarePhase.STOPPED)
        other = net.add_host("q").node()
        async with other:
            late = enable_flare(other, FlareConfig(autonat=SIMNET_AUTONAT))
            with trio.fail_after(5):
                await late.wait_for("probing")
            assert other.flare is late


def _collect(reader: InMemoryMetricReader) -> dict[str, dict[tuple[Any, ...], Any]]:
    out: dict[str, dict[tuple[Any, ...], Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        label = resource.resource.attributes.get("service.instance.id", "")
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (label, *sorted((point.attributes or {}).items()))
                    value = getattr(point, "value", None)
                    if value is None:
                        value = getattr(point, "count", None)
                    out.setdefault(metric.name, {})[key] = value
    return out


async def test_metrics_of_every_family(autojump_clock: trio.testing.MockClock) -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    tracing = TracingConfig(enabled=True, meter_provider=meters)
    async with flare_simnet(Topology.standard(latency=0.01), tracing=tracing) as world:
        with trio.fail_after(60):
            await world.join()
            state = await world.flare("b").wait_for(FlarePhase.RESERVED)
            await world.flare("a").wait_for(FlarePhase.RESERVED)
            with world.b.events.subscribe(HolePunchSucceeded) as events:
                await world.a.connect(state.circuit_addrs[0].encapsulate(
                    f"/p2p/{world.b.peer_id}"))
                await events.next()
        metrics = world.b.metrics
        assert metrics.holepunch is world.flare("b").holepunch.metrics
        assert metrics.autonat is world.flare("b").autonat.metrics
        assert metrics.autorelay is world.flare("b").metrics
        names = set(_collect(reader))
    for name in ("libp2p_holepunch_outcomes", "libp2p_holepunch_time_to_direct",
                 "libp2p_autonat_reachability_status", "libp2p_autonat_received_dial_response",
                 "libp2p_relaysvc_reservations", "libp2p_autorelay_reservations_opened",
                 "libp2p_autorelay_status", "libp2p_autorelay_relay_addresses_count",
                 "libp2p_swarm_connections_opened"):
        assert name in names, name
    meters.shutdown()

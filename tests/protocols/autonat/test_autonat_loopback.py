"""AutoNAT between real nodes over TCP on loopback (tier 4).

Loopback is private space, so these nodes treat 127.0.0.0/8 as public (the lab widens the
policy the same way). Real sockets, so the real clock: every wait is bounded by
``trio.fail_after``, nothing sleeps, dial timeouts are short.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from autonat_helpers import LOOPBACK_POLICY, events
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from flarelab.errors import LocalProtocolError
from flarelab.multiaddr import DEFAULT_POLICY, Multiaddr
from flarelab.node import ConnectionOpened, Node, NodeConfig, PeerConnected
from flarelab.node.connection import NetStream
from flarelab.protocols.autonat import (
    V1_PROTOCOL,
    V2_DIAL_BACK_PROTOCOL,
    V2_DIAL_REQUEST_PROTOCOL,
    AutoNATConfig,
    AutoNATService,
    Observation,
    RateLimits,
    Reachability,
    ReachabilityChanged,
    V1Status,
    probe_v1,
    probe_v2,
    start_autonat,
)
from flarelab.protocols.autonat import attributes as attr
from flarelab.protocols.autonat.messages import (
    V2_MAX_MESSAGE,
    decode_v2_message,
    encode_v2_dial_back,
    encode_v2_response,
)
from flarelab.tracing import spans
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.provider import TracingConfig
from flarelab.wire import StreamReader, length_prefixed

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
#: quick to fail on loopback (a refused port fails at once anyway)
FAST = AutoNATConfig(hide_dial_timing=False, v1_dial_timeout=5.0, v2_dial_timeout=5.0,
                     boot_delay=0.0, amplification_dial_wait=0.0)
QUIET = dataclasses.replace(FAST, client_v1=False, client_v2=False)


@contextlib.asynccontextmanager
async def nodes(n: int, *, policy: Any = LOOPBACK_POLICY, bus: SpanBus | None = None,
                **overrides: Any) -> AsyncIterator[list[Node]]:
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for i in range(n):
            label = "ABCDEFGH"[i]
            config = NodeConfig(listen_addrs=[LOOPBACK], label=label, address_policy=policy,
                                enable_quic=False,
                                tracing=TracingConfig(label=label, bus=bus) if bus else None,
                                **overrides)
            out.append(await stack.enter_async_context(Node(config)))
        yield out


async def connected(a: Node, b: Node) -> None:
    """Connect ``a`` to ``b`` and wait until ``a`` knows what ``b`` speaks."""
    await a.connect(b.addrs[0])
    await a.identify_peer(b.peer_id)


def closed_port() -> Multiaddr:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")


async def test_v1_dial_back_reaches_a_public_node_on_a_fresh_connection() -> None:
    bus = SpanBus()
    async with nodes(2, bus=bus) as (a, b):
        AutoNATService(b, QUIET)
        with trio.fail_after(20):
            await connected(a, b)
            with a.events.subscribe(ConnectionOpened) as opened:
                result = await probe_v1(a, b.peer_id, a.listen_addrs(), tracer=a.tracer)
                dial_back = await opened.next(predicate=lambda e: e.connection.direction
                                              == "inbound")
    assert (result.observation, result.status) == (Observation.PUBLIC, "OK")
    assert result.response is not None and result.response.addr == a.listen_addrs()[0]
    # the dial-back was a new connection from B, and not from B's listen port
    conn = dial_back.connection
    assert conn.remote_peer == b.peer_id
    assert conn.remote_addr.host_port()[1] != b.listen_addrs()[0].host_port()[1]
    ended = [r for r in bus.history() if r.ended]
    probe = next(r for r in ended if r.name == spans.AUTONAT_PROBE)
    assert probe.resource[spans.LIBP2P_NODE_LABEL] == "A"
    assert events(probe) == [("message.sent", "DIAL"), ("message.received", "DIAL_RESPONSE")]
    assert probe.attributes[spans.LIBP2P_OUTCOME] == spans.OUTCOME_SUCCESS
    assert probe.attributes[attr.REACHABILITY] == "public"
    back = next(r for r in ended if r.name == spans.AUTONAT_DIAL_BACK)
    assert back.resource[spans.LIBP2P_NODE_LABEL] == "B"
    assert back.attributes[spans.LIBP2P_OUTCOME] == spans.OUTCOME_SUCCESS
    tcp = next(r for r in ended if r.name == spans.TCP_DIAL and r.parent_id is not None
               and _descends(r, back, ended))
    assert tcp.attributes[spans.LIBP2P_REUSE_PORT] is False


def _descends(record: Any, ancestor: Any, records: list[Any]) -> bool:
    by_id = {r.span_id: r for r in records}
    while record.parent_id is not None:
        if record.parent_id == ancestor.span_id:
            return True
        record = by_id.get(record.parent_id)
        if record is None:
            return False
    return False


async def test_v1_a_closed_port_is_private_although_we_are_connected() -> None:
    async with nodes(2) as (a, b):
        AutoNATService(b, QUIET)
        with trio.fail_after(20):
            await connected(a, b)
            result = await probe_v1(a, b.peer_id, [closed_port()])
        assert a.connections(b.peer_id)  # the connection we had is still there, and unused
    assert (result.observation, result.status) == (Observation.PRIVATE, "E_DIAL_ERROR")


async def test_requests_for_other_ips_or_private_addresses_are_refused() -> None:
    async with nodes(2) as (a, b):
        AutoNATService(b, QUIET)
        with trio.fail_after(20):
            await connected(a, b)
            port = a.listen_addrs()[0].host_port()[1]
            asked = [Multiaddr(f"/ip4/127.0.0.2/tcp/{port}"), Multiaddr("/ip4/10.1.2.3/tcp/1"),
                     Multiaddr("/ip4/8.8.8.8/tcp/53")]
            result = await probe_v1(a, b.peer_id, asked)
    assert result.response is not None
    assert (result.response.status, result.observation) == (V1Status.E_DIAL_REFUSED, None)
    assert result.response.text == "no address to dial: 3 addresses not on the observed IP"
    # with the default policy loopback is private: the server will not test us at all
    async with nodes(2, policy=DEFAULT_POLICY) as (a, b):
        AutoNATService(b, QUIET)
        with trio.fail_after(20):
            await connected(a, b)
            strict = await probe_v1(a, b.peer_id, a.listen_addrs())
            v2 = AutoNATService(a, FAST)  # not started: its receiver serves, it never probes
            assert v2.receiver is not None
            second = await probe_v2(a, b.peer_id, a.listen_addrs(), v2.receiver, config=FAST)
    assert strict.response is not None and strict.response.status == V1Status.E_DIAL_REFUSED
    assert "is not public" in strict.response.text
    assert second.status == "E_DIAL_REFUSED/UNUSED" and second.observation is None


async def test_v1_rate_limit_per_peer() -> None:
    config = dataclasses.replace(QUIET, v1_limits=RateLimits(per_window=10,
                                                             per_peer_per_window=2))
    async with nodes(2) as (a, b):
        AutoNATService(b, config)
        with trio.fail_after(20):
            await connected(a, b)
            results = [await probe_v1(a, b.peer_id, a.listen_addrs()) for _ in range(3)]
    assert [r.status for r in results] == ["OK", "OK", "E_DIAL_REFUSED"]
    assert results[2].response is not None
    assert results[2].response.text == "too many dials (peer rate limit)"


async def test_v2_per_address_with_a_nonce_and_dial_data() -> None:
    async with nodes(2) as (a, b):
        service = AutoNATService(a, FAST)  # not started: its receiver serves, it never probes
        AutoNATService(b, QUIET)
        assert service.receiver is not None
        config = dataclasses.replace(FAST, max_dial_data=100_000)
        with trio.fail_after(30):
            await connected(a, b)
            public = await probe_v2(a, b.peer_id, a.listen_addrs(), service.receiver,
                                    config=config)
            private = await probe_v2(a, b.peer_id, [closed_port()], service.receiver,
                                     config=config)
            port = a.listen_addrs()[0].host_port()[1]
            other_ip = Multiaddr(f"/ip4/127.0.0.2/tcp/{port}")  # nobody listens there
            paid = await probe_v2(a, b.peer_id, [other_ip], service.receiver, config=config)
    assert (public.addr, public.observation, public.status) == (
        a.listen_addrs()[0], Observation.PUBLIC, "OK/OK")
    assert (private.observation, private.status) == (Observation.PRIVATE, "OK/E_DIAL_ERROR")
    assert (paid.addr, paid.observation) == (other_ip, Observation.PRIVATE)
    assert 30_000 <= paid.dial_data <= 100_000


async def test_v2_a_server_that_answers_over_the_existing_connection_is_not_believed() -> None:
    """What py-libp2p's server does: the nonce comes back, but on the connection we had."""

    async def lazy_server(stream: NetStream) -> None:
        reader = StreamReader(stream)
        request = decode_v2_message(await reader.read_length_prefixed(V2_MAX_MESSAGE))
        back = await stream.connection.new_stream(V2_DIAL_BACK_PROTOCOL)
        await back.send_all(length_prefixed(encode_v2_dial_back(request.nonce)))  # type: ignore[union-attr]
        await back.send_eof()
        await StreamReader(back).read_length_prefixed(1024)
        await stream.send_all(length_prefixed(encode_v2_response(200, 0, 200)))

    async with nodes(2) as (a, b):
        service = AutoNATService(a, FAST)
        assert service.receiver is not None
        b.set_handler(V2_DIAL_REQUEST_PROTOCOL, lazy_server)
        with trio.fail_after(20):
            await connected(a, b)
            result = await probe_v2(a, b.peer_id, [closed_port()], service.receiver,
                                    config=FAST)
    assert result.response is not None and result.status == "OK/OK"
    assert result.observation is None
    assert result.outcome == spans.OUTCOME_PROTOCOL_ERROR
    assert "existing connection" in result.reason


async def test_no_autonat_over_a_limited_connection() -> None:
    async with nodes(2) as (a, b):
        AutoNATService(b, QUIET)
        transport = b.transports[0]
        with trio.fail_after(20):
            # B holds a limited (as if relayed) connection to A; A sees a plain inbound one
            with a.events.subscribe(PeerConnected) as connected_to_a:
                raw = await transport.dial(a.listen_addrs()[0], expected_peer=a.peer_id)
                await b.upgrade_and_run(raw, expected_peer=a.peer_id, is_initiator=True,
                                        limited=True)
                await connected_to_a.next()
            assert b.connections(a.peer_id)[0].limited and not a.connections()[0].limited
            result = await probe_v1(a, b.peer_id, a.listen_addrs())
    assert result.response is None and result.observation is Observation.FAILED
    assert "none of the protocols offered" in result.status


async def test_the_service_learns_public_from_four_servers() -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    config = NodeConfig(listen_addrs=[LOOPBACK], label="A", address_policy=LOOPBACK_POLICY,
                        enable_quic=False, tracing=TracingConfig(label="A", meter_provider=meters))
    async with nodes(4) as servers, Node(config) as a:
        for server in servers:
            await start_autonat(server, QUIET)
        service = await start_autonat(a, dataclasses.replace(
            FAST, client_v2=False, retry_interval=0.05, min_probe_gap=0.0))
        with a.events.subscribe(ReachabilityChanged) as changes, trio.fail_after(30):
            for server in servers:
                await a.connect(server.addrs[0])
            change = await changes.next()
        assert (change.reachability, change.previous, change.confidence) == (
            Reachability.PUBLIC, Reachability.UNKNOWN, 3)
        assert (service.reachability, service.confidence) == (Reachability.PUBLIC, 3)
        probes = [p for p in service.probes if p.version == 1]
        assert [p.observation for p in probes] == [Observation.PUBLIC] * 4
        assert {p.server for p in probes} == {s.peer_id for s in servers}  # four servers
        await service.aclose()
        assert V1_PROTOCOL not in a.protocols()
    data = reader.get_metrics_data()
    assert data is not None
    names = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    assert names["libp2p_autonat_reachability_status"].data.data_points[0].value == 1
    received = names["libp2p_autonat_received_dial_response"].data.data_points
    assert [(dict(p.attributes), p.value) for p in received] == [({"response_status": "OK"}, 4)]


async def test_manual_checks_need_a_running_service() -> None:
    async with nodes(1) as (a,):
        service = AutoNATService(a, QUIET)
        with pytest.raises(LocalProtocolError, match="start the AutoNAT service"):
            await service.check()
        await service.start()
        assert await service.check() is None  # no server to ask
        with pytest.raises(LocalProtocolError, match="already running"):
            await service.run()
        off = AutoNATService(a, dataclasses.replace(QUIET, client_v2=False, server_v1=False,
                                                    server_v2=False))
        with pytest.raises(LocalProtocolError, match="client_v2=False"):
            await off.check_address(a.listen_addrs()[0])


async def test_the_node_can_dial_from_an_ephemeral_port() -> None:
    """The hook the dial-backs need: ``reuse_port=False`` through ``Node.connect``."""
    async with nodes(2) as (a, b):
        with trio.fail_after(20):
            usual = await a.connect(b.addrs[0])
            fresh = await a.connect(b.addrs[0], force_new=True, reuse_port=False)
        listen_port = a.listen_addrs()[0].host_port()[1]
        assert usual.local_addr.host_port()[1] == listen_port
        assert fresh is not usual and fresh.local_addr.host_port()[1] != listen_port

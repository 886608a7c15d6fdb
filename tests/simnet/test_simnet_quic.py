"""QUIC (aioquic, libp2p TLS) on simulated UDP sockets, on MockClock.

The loopback QUIC node tests (tests/transports/quic/test_quic_node.py) run here unchanged,
each node on its own simulated host; then what only simnet can show: a DCUtR-style QUIC
hole punch between two nodes behind NATs (B punches from its listen socket, A dials).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import trio
import trio.testing

pytest.importorskip("aioquic")

from simnet_helpers import on_simnet

from flarelab.multiaddr import Multiaddr
from flarelab.node import Node, NodeConfig
from flarelab.simnet import Network
from flarelab.transports.quic import QuicConfig, QuicTransport
from flarelab.transports.quic.config import LOOPBACK_DATAGRAM_SIZE

QUIC_SUITE = Path(__file__).resolve().parents[1] / "transports" / "quic" / "test_quic_node.py"
#: the loopback QUIC tests that run here, with their arguments (parametrized ones repeated)
CASES = {
    "test_identify_ping_perf_over_quic": [()],
    "test_custom_protocol_is_byte_exact_both_ways": [()],
    "test_quic_is_preferred_when_a_peer_offers_both": [(True, "quic"), (False, "tcp")],
}


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_quic_suite_on_simnet", QUIC_SUITE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


quic_suite = _load()


@pytest.mark.parametrize(
    ("name", "args"),
    [(name, args) for name, runs in CASES.items() for args in runs
     if hasattr(quic_suite, name)],
)
async def test_loopback_quic_suite_on_simnet(
    name: str, args: tuple[object, ...], autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with Network(seed=1) as net:
        _, on_host = on_simnet(net)

        def node(config: NodeConfig | None = None) -> Node:
            # loopback's conditions: QUIC picks 16000-byte datagrams towards loopback
            config = config or NodeConfig()
            if config.quic is None:
                config = dataclasses.replace(config, quic=QuicConfig(
                    max_datagram_size=LOOPBACK_DATAGRAM_SIZE))
            return on_host(config)  # type: ignore[operator, no-any-return]

        monkeypatch.setattr(quic_suite, "Node", node)
        await getattr(quic_suite, name)(*args)


def _quic(node: object) -> QuicTransport:
    return next(t for t in node.transports if isinstance(t, QuicTransport))  # type: ignore[attr-defined]


@pytest.mark.parametrize(("kind", "expected"), [("home_router", True), ("symmetric", False)])
async def test_quic_hole_punch_between_two_nats(
    kind: str, expected: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """DCUtR over QUIC: B sends random-byte datagrams to A's observed address from its
    listen socket while A dials B's observed address; through home routers the dial
    gets a direct connection, through symmetric NATs it cannot."""
    async with Network(seed=2) as net:
        server = net.add_host("S")
        a_host = net.add_router("NAT A", kind).add_host("A")
        b_host = net.add_router("NAT B", kind).add_host("B")
        async with server.node() as s, a_host.node() as a, b_host.node() as b:
            s_quic = next(x for x in s.addrs if "quic-v1" in str(x))
            with trio.fail_after(30):
                a_seen = (await a.identify_peer(s_quic)).observed_addr
                b_seen = (await b.identify_peer(s_quic)).observed_addr
            assert a_seen is not None and b_seen is not None
            assert str(a_seen).endswith("/udp/4001/quic-v1") is expected  # kept its port?

            async def punch() -> None:
                for _ in range(20):
                    await _quic(b).punch(a_seen)
                    await trio.sleep(b_host.random.uniform(0.010, 0.200))

            connected = None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(punch)
                await trio.sleep(0.05)  # B's first datagrams leave before A's Initial arrives
                with trio.move_on_after(10):
                    connected = await a.connect(
                        Multiaddr(f"{b_seen}/p2p/{b.peer_id}"), force_new=True)
                nursery.cancel_scope.cancel()
            assert (connected is not None) is expected
            if connected is not None:
                assert connected.transport == "quic"
                assert connected.remote_addr == b_seen
                assert len(await a.ping(b.peer_id, 2)) == 2

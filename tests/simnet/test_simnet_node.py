"""Real flarelab nodes (TCP + Noise + Yamux) on the simulated network, on MockClock (tier 3).

The loopback suite (tests/node/test_node_loopback.py) runs here unchanged: its ``nodes``
helper and ``Node`` are swapped for ones that put each node on its own simulated host, so
every test of it -- present and future -- also proves itself over simnet. The tests after
it cover what only a simulated internet can show: NATs between the nodes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import trio
import trio.testing
from simnet_helpers import on_simnet

from flarelab.errors import DialError
from flarelab.multiaddr import Multiaddr
from flarelab.simnet import Link, Network
from flarelab.tracing import spans
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.clock import TrioClock
from flarelab.tracing.provider import TracingConfig

LOOPBACK_SUITE = Path(__file__).resolve().parents[1] / "node" / "test_node_loopback.py"
#: loopback tests that depend on real sockets, with their simnet counterpart here
NOT_ON_SIMNET = {
    "test_dial_self_and_unreachable": "finds a free port with a real socket "
                                      "(see test_dial_self_and_a_closed_port)",
}

#: loopback tests that latency makes fail, for a reason outside simnet (strict: an XPASS
#: after the fix fails, so the entry gets removed)
#: loopback tests that a real network's latency exposes as races (none known now)
KNOWN_RACES: dict[str, str] = {}


def _load_loopback_suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_loopback_suite_on_simnet", LOOPBACK_SUITE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


loopback = _load_loopback_suite()
SUITE = sorted(name for name in vars(loopback)
               if name.startswith("test_") and name not in NOT_ON_SIMNET)


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_RACES[name], strict=True))
     if name in KNOWN_RACES else name for name in SUITE],
)
async def test_loopback_suite_on_simnet(
    name: str, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Network(seed=1) as net:
        nodes, node = on_simnet(net)
        monkeypatch.setattr(loopback, "nodes", nodes)
        monkeypatch.setattr(loopback, "Node", node)
        await getattr(loopback, name)()


def test_the_loopback_suite_is_found() -> None:
    assert {"test_dial_identify_ping_perf", "test_spans_tell_the_story"} <= set(SUITE)


async def test_dial_self_and_a_closed_port(autojump_clock: trio.testing.MockClock) -> None:
    async with Network() as net:
        host = net.add_host("A")
        async with host.node() as a:
            with pytest.raises(Exception, match="cannot dial itself"):
                await a.connect(a.addrs[0])
            with trio.fail_after(10), pytest.raises(DialError) as info:
                await a.connect(f"/ip4/{host.ip}/tcp/9")
            assert "refused" in str(info.value).lower()


# ---------------------------------------------------------------- NATs between nodes
async def test_nodes_behind_nats_see_each_other_through_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with Network(seed=2) as net:
        home = net.add_router("NAT A", "home_router")
        symmetric = net.add_router("NAT B", "symmetric")
        ha, hb, hs = home.add_host("A"), symmetric.add_host("B"), net.add_host("S")
        async with ha.node() as a, hb.node() as b, hs.node() as s:
            with trio.fail_after(30):
                info_a = await a.identify_peer(s.addrs[0])
                info_b = await b.identify_peer(s.addrs[0])
                rtts = await a.ping(s.peer_id, 3)
                result = await b.perf(s.peer_id, upload=1_000_003, download=500_001)
            # the port-preserving home router keeps the listen port; the symmetric NAT not
            assert info_a.observed_addr == Multiaddr(f"/ip4/{home.public_ip}/tcp/4001")
            assert info_b.observed_addr is not None
            assert info_b.observed_addr.ip_address.compressed == symmetric.public_ip  # type: ignore[union-attr]
            assert info_b.observed_addr != Multiaddr(f"/ip4/{symmetric.public_ip}/tcp/4001")
            # 0.5 + 10 + 10 ms each way
            assert rtts == pytest.approx([41.0, 41.0, 41.0], abs=0.01)
            assert (result.upload_bytes, result.download_bytes) == (1_000_003, 500_001)
            # S sees A at the NAT's address, as the connection's remote address
            conn = s.connections(a.peer_id)[0]
            assert conn.remote_addr == Multiaddr(f"/ip4/{home.public_ip}/tcp/4001")
            # nobody outside can dial A: the home router drops the SYNs
            with trio.fail_after(60), pytest.raises(DialError):
                await s.connect(Multiaddr(f"/ip4/{home.public_ip}/tcp/4001/p2p/{a.peer_id}"),
                                force_new=True)
            assert home.refused >= 1


async def test_lossy_jittery_links_still_carry_perf_byte_exact(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link = Link(latency=0.02, jitter=0.01, loss=0.02)
    async with Network(seed=4, wan_link=link) as net:
        ha, hb = net.add_host("A"), net.add_host("B")
        async with ha.node() as a, hb.node() as b:
            with trio.fail_after(300):
                result = await a.perf(b.addrs[0], upload=2_000_000, download=1_000_000)
                assert (result.upload_bytes, result.download_bytes) == (2_000_000, 1_000_000)
                assert len(await a.ping(b.peer_id, 3)) == 3
        assert net.stats.lost > 10


async def test_router_spans_explain_what_happened(autojump_clock: trio.testing.MockClock) -> None:
    bus = SpanBus()
    tracing = TracingConfig(bus=bus, clock=TrioClock(epoch_ns=0))
    async with Network(seed=3, tracing=tracing) as net:
        router = net.add_router("NAT A", "answering_router")
        ha, hs = router.add_host("A"), net.add_host("S")
        async with ha.node() as a, hs.node() as s:
            with trio.fail_after(30):
                await a.ping(s.addrs[0])
                with pytest.raises(DialError):
                    await s.connect(Multiaddr(f"/ip4/{router.public_ip}/tcp/4001/p2p/{a.peer_id}"),
                                    force_new=True)
            await trio.sleep(20)  # the router's session for its RST expires (10 s)
    records = [r for r in bus.history() if r.ended and r.node_label == "NAT A"]
    sessions = [r for r in records if r.name == spans.NAT_SESSION]
    outbound = next(r for r in sessions
                    if r.attributes[spans.LIBP2P_NAT_ORIGIN] == "outbound")
    assert outbound.attributes[spans.LIBP2P_NAT_EXTERNAL] == f"{router.public_ip}:4001"
    assert outbound.attributes[spans.LIBP2P_NAT_PORT_PRESERVED] is True
    events = [(e.name, e.attributes.get(spans.LIBP2P_NAT_PACKET)) for e in outbound.events]
    assert events[:3] == [(spans.NAT_MAPPING_CREATED, None), (spans.NAT_TRANSLATED, "SYN"),
                          (spans.NAT_TRANSLATED, "SYN-ACK")]
    assert outbound.attributes[spans.LIBP2P_CLOSE_REASON] == "network closed"
    answered = next(r for r in sessions if r.attributes[spans.LIBP2P_NAT_ORIGIN] == "router")
    assert any(e.name == spans.NAT_ANSWERED for e in answered.events)
    assert answered.attributes[spans.LIBP2P_CLOSE_REASON] == "expired"
    # ended at its expiry in virtual time: created by S's SYN, 10 s after the last one
    assert answered.duration_ns is not None and answered.duration_ns >= 10e9
    node_labels = {r.node_label for r in bus.history()}
    assert {"A", "S", "NAT A"} <= node_labels

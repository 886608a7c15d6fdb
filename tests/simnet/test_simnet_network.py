"""Topology, links, routing and NAT routers on a running network (tier 3, MockClock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from flarelab.errors import LocalProtocolError
from flarelab.identity import Ed25519PrivateKey
from flarelab.multiaddr import AddressScope
from flarelab.node import NodeConfig
from flarelab.simnet import Host, Link, NatBehavior, Network, seed_trio_scheduler


async def _send_and_receive(src: Host, dst: Host, dst_ip: str | None = None,
                            port: int = 7000, payload: bytes = b"hi"
                            ) -> tuple[bytes, tuple, float]:  # type: ignore[type-arg]
    """Send one datagram from ``src`` to ``dst`` and return (data, source, delay)."""
    ip = dst_ip or dst.ip
    assert ip is not None and src.ip is not None
    with dst.udp_socket(("0.0.0.0", port)) as inbox, src.udp_socket((src.ip, port)) as outbox:
        start = trio.current_time()
        await outbox.sendto(payload, (ip, port))
        with trio.fail_after(5):
            data, source = await inbox.recvfrom(2048)
        return data, source, trio.current_time() - start


async def test_latency_adds_up_along_the_path(autojump_clock: trio.testing.MockClock) -> None:
    async with Network(wan_link=Link(latency=0.010), lan_link=Link(latency=0.001)) as net:
        server = net.add_host("S", link=Link(latency=0.030))
        router = net.add_router("NAT", "full_cone", link=Link(latency=0.005))
        inside = router.add_host("A")
        _, source, delay = await _send_and_receive(inside, server)
        assert delay == pytest.approx(0.001 + 0.005 + 0.030)
        assert source == (router.public_ip, 7000)
        _, _, back = await _send_and_receive(server, inside, router.public_ip)
        assert back == pytest.approx(0.036)


def test_loss_and_jitter_follow_the_seed() -> None:
    async def arrivals(seed: int) -> list[tuple[int, float]]:
        async with Network(seed=seed, wan_link=Link(latency=0.01, jitter=0.005, loss=0.3)) as net:
            a, b = net.add_host("A"), net.add_host("B")
            assert b.ip is not None
            got: list[tuple[int, float]] = []
            with a.udp_socket() as out, b.udp_socket(("0.0.0.0", 9)) as inbox:
                for i in range(50):
                    await out.sendto(bytes([i]), (b.ip, 9))
                with trio.move_on_after(1):
                    while True:
                        data, _ = await inbox.recvfrom(10)
                        got.append((data[0], round(trio.current_time(), 9)))
            assert net.stats.lost + len(got) == 50
            return got

    def run(seed: int) -> list[tuple[int, float]]:
        return trio.run(arrivals, seed, clock=trio.testing.MockClock(autojump_threshold=0))

    first, again, other = run(7), run(7), run(8)
    assert first == again != other
    assert 15 < len(first) < 35  # 0.7 * 0.7 of them cross both links
    order = [i for i, _ in first]
    assert order != sorted(order)  # jitter reorders


async def test_hosts_on_one_lan_talk_directly(autojump_clock: trio.testing.MockClock) -> None:
    async with Network() as net:
        router = net.add_router("NAT", "symmetric")
        a, b = router.add_host("A"), router.add_host("B")
        data, source, _ = await _send_and_receive(a, b)
        assert data == b"hi" and source == (a.ip, 7000)
        assert router.sessions() == []


async def test_nested_nat_carrier_grade(autojump_clock: trio.testing.MockClock) -> None:
    async with Network() as net:
        server = net.add_host("S")
        isp = net.add_router("ISP", "home_router", lan="100.64.0.0/24")
        home = isp.add_router("home", "full_cone")
        a = home.add_host("A")
        assert home.public_ip.startswith("100.64.0.")
        _, source, _ = await _send_and_receive(a, server)
        assert source[0] == isp.public_ip
        assert len(home.sessions()) == 1 and len(isp.sessions()) == 1
        assert isp.sessions()[0].internal == (home.public_ip, 7000)


async def test_hairpinning_on_and_off(autojump_clock: trio.testing.MockClock) -> None:
    async with Network() as net:
        server = net.add_host("S")
        cone = net.add_router("cone", "full_cone")
        a, b = cone.add_host("A"), cone.add_host("B")
        # B's mapping exists (it talked to S); A reaches B through the public address
        await _send_and_receive(b, server, port=7001)
        with net.capture() as cap:
            data, source, _ = await _send_and_receive(a, b, cone.public_ip, port=7001)
        a_session = cone.table.find("udp", (a.ip, 7001), (cone.public_ip, 7001))  # type: ignore[arg-type]
        assert a_session is not None  # (A's port 7001 was taken by B, so A got another)
        assert data == b"hi" and source == a_session.external  # REQ-9: the external source
        assert [e.event for e in cap.where(where="cone")] == ["hairpinned"]
        linux = net.add_router("linux", "home_router")
        c, d = linux.add_host("C"), linux.add_host("D")
        await _send_and_receive(d, server, port=7002)
        assert c.ip is not None and d.ip is not None
        with c.udp_socket((c.ip, 7002)) as out, net.capture() as cap:
            await out.sendto(b"hi", (linux.public_ip, 7002))
            await trio.sleep(1)
        assert [e.event for e in cap.where(where="linux")] == ["answered"]


async def test_ipv6_behind_a_router_is_routed_through_its_firewall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with Network(ipv6=True) as net:
        server = net.add_host("S")
        router = net.add_router("R", "port_restricted_cone", lan6=True)
        a = router.add_host("A")
        assert a.ip6 is not None and a.ip6.startswith("2001:db8:1::")
        assert server.ip6 is not None
        with a.udp_socket(("::", 7000)) as sa, server.udp_socket(("::", 7000)) as ss:
            await sa.sendto(b"out", (server.ip6, 7000))
            data, source = await ss.recvfrom(100)
            assert data == b"out" and source[:2] == (a.ip6, 7000)  # not translated
            await ss.sendto(b"back", source[:2])
            assert (await sa.recvfrom(100))[0] == b"back"
        assert router.firewall6 is not None and len(router.firewall6) == 1
        intruder = net.add_host("I")
        assert intruder.ip6 is not None
        with intruder.udp_socket(("::", 7000)) as si, net.capture() as cap:
            await si.sendto(b"in?", (a.ip6, 7000))
            await trio.sleep(1)
        assert [e.event for e in cap.where(where="R")] == ["filtered"]


async def test_capture_and_stats(autojump_clock: trio.testing.MockClock) -> None:
    async with Network() as net:
        s = net.add_host("S")
        router = net.add_router("NAT", "port_restricted_cone")
        a = router.add_host("A")
        with net.capture() as cap:
            await _send_and_receive(a, s)
        assert [(e.event, e.where) for e in cap.events] == [
            ("sent", "A"), ("translated", "NAT"), ("delivered", "S")]
        assert net.stats.sent == net.stats.delivered == 1
        with s.udp_socket(("0.0.0.0", 9)) as out, net.capture() as cap:
            await out.sendto(b"?", (router.public_ip, 12345))
            await out.sendto(b"?", ("198.51.100.250", 1))
            await trio.sleep(1)
        assert [e.note for e in cap.where("filtered")] == ["no mapping for 203.0.113.1:12345"]
        assert [e.packet.dst for e in cap.where("unroutable")] == [("198.51.100.250", 1)]


def test_topology_errors_and_address_policy() -> None:
    net = Network()
    net.add_host("A", ip="198.51.100.77")
    with pytest.raises(LocalProtocolError, match="exists already"):
        net.add_host("A")
    with pytest.raises(LocalProtocolError, match="in use"):
        net.add_host("B", ip="198.51.100.77")
    router = net.add_router("R", NatBehavior.preset("symmetric"))
    with pytest.raises(LocalProtocolError, match="not in"):
        router.add_host("C", ip="10.9.9.9")
    with pytest.raises(LocalProtocolError, match="unknown NAT preset"):
        net.add_router("R2", "no such thing")
    text = net.describe()
    assert "- host A 198.51.100.77 (10 ms)" in text
    assert "- router R 203.0.113.1 (10 ms): symmetric; APDM/APDF, random ports" in text
    policy = net.address_policy
    assert policy.scope("198.51.100.77") is AddressScope.PUBLIC
    assert policy.scope(router.public_ip) is AddressScope.PUBLIC
    assert policy.scope("192.168.1.2") is AddressScope.PRIVATE


def test_a_seeded_run_repeats_packet_for_packet() -> None:
    """Same network seed, same node keys, seeded trio scheduler: the same packets, times."""
    keys = [Ed25519PrivateKey.generate() for _ in range(2)]

    async def scenario() -> list[tuple[float, str, str, int]]:
        async with Network(seed=9, wan_link=Link(latency=0.01, jitter=0.005, loss=0.05)) as net:
            a = net.add_router("NAT", "home_router").add_host("A")
            b = net.add_host("B")
            with net.capture() as cap:
                async with a.node(NodeConfig(key=keys[0])) as na, b.node(
                    NodeConfig(key=keys[1])
                ) as nb:
                    await na.ping(nb.addrs[0], 3)
                    await na.perf(nb.peer_id, upload=100_000, download=50_000)
            return [(e.time, e.event, e.where, e.packet.size) for e in cap.events]

    def run(seed: int) -> list[tuple[float, str, str, int]]:
        assert seed_trio_scheduler(seed)
        return trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))

    first, again, other = run(1), run(1), run(2)
    assert len(first) > 200
    assert first == again
    assert first != other  # trio's task order changed; packets, not outcomes, differ


async def test_a_flood_beyond_the_in_flight_bound_is_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with Network(max_in_flight=50) as net:
        a, b = net.add_host("A"), net.add_host("B")
        assert b.ip is not None
        with a.udp_socket() as out, b.udp_socket(("0.0.0.0", 9), receive_buffer=1 << 20) as inbox:
            for _ in range(200):
                await out.sendto(b"x", (b.ip, 9))
            await trio.sleep(1)
            assert inbox._queued_bytes == 50
        assert net.stats.lost == 150

"""Simulated TCP streams and UDP sockets on a running network (tier 2/3, MockClock).

Rules: every test runs on ``autojump_clock`` (virtual time, no sleeps of real time) and
bounds its waits with ``trio.fail_after``.
"""

from __future__ import annotations

import errno
import socket

import pytest
import trio
import trio.testing

from flarelab.errors import LocalProtocolError
from flarelab.simnet import Link, Network, SimTcpStream, TcpConfig, TcpState


async def _pair(net: Network, port: int = 4001) -> tuple[SimTcpStream, SimTcpStream]:
    a, b = net.hosts["A"], net.hosts["B"]
    listener = b.tcp._listeners.get(("0.0.0.0", port)) or b.listen_tcp(port)
    async with trio.open_nursery() as nursery:
        accepted: list[SimTcpStream] = []

        async def accept() -> None:
            accepted.append(await listener.accept())

        nursery.start_soon(accept)
        assert b.ip is not None
        client = await a.connect_tcp(b.ip, port)
    return client, accepted[0]


@pytest.mark.parametrize(
    "link",
    [Link(), Link(latency=0.01, jitter=0.004), Link(latency=0.003, jitter=0.002, loss=0.05)],
    ids=["instant", "latency-jitter", "lossy"],
)
async def test_tcp_streams_pass_trios_half_closeable_stream_checks(
    autojump_clock: trio.testing.MockClock, link: Link
) -> None:
    config = TcpConfig(mss=1000, send_buffer=16384, receive_buffer=16384)
    async with Network(seed=3, wan_link=link, tcp=config) as net:
        net.add_host("A")
        net.add_host("B")

        async def maker() -> tuple[SimTcpStream, SimTcpStream]:
            return await _pair(net)

        async def clogged() -> tuple[SimTcpStream, SimTcpStream]:
            s, r = await _pair(net)
            for stream in (s, r):  # fill both ways: send buffer and the peer's window
                with trio.move_on_after(60):
                    await stream.send_all(b"x" * 1_000_000)
            return s, r

        await trio.testing.check_half_closeable_stream(maker, clogged)


async def test_connect_to_a_closed_port_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    async with Network() as net:
        a, b = net.add_host("A"), net.add_host("B")
        assert b.ip is not None
        with trio.fail_after(5), pytest.raises(ConnectionRefusedError):
            await a.connect_tcp(b.ip, 9)
        assert net.stats.refused == 1


async def test_connect_to_nobody_times_out_after_the_syn_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with Network() as net:
        a = net.add_host("A")
        start = trio.current_time()
        with trio.fail_after(600), pytest.raises(TimeoutError):
            await a.connect_tcp("198.51.100.200", 4001)
        assert trio.current_time() - start == pytest.approx(127.0)  # 1+2+4+8+16+32+64
        assert net.stats.unroutable == 7


async def test_a_busy_four_tuple_and_time_wait(autojump_clock: trio.testing.MockClock) -> None:
    async with Network() as net:
        a, b = net.add_host("A"), net.add_host("B")
        assert a.ip is not None and b.ip is not None
        listener = b.listen_tcp(4001)
        a.listen_tcp(5000)
        first = await a.connect_tcp(b.ip, 4001, source=(a.ip, 5000))  # shares the listen port
        accepted = await listener.accept()
        assert first.getsockname() == (a.ip, 5000)
        with pytest.raises(OSError, match="exists already") as info:
            await a.connect_tcp(b.ip, 4001, source=(a.ip, 5000))
        assert info.value.errno == errno.EADDRNOTAVAIL
        await first.aclose()  # A closes first: A's side waits in TIME-WAIT
        await accepted.aclose()
        await trio.sleep(1)
        assert first.state is TcpState.TIME_WAIT
        with pytest.raises(OSError, match="exists already"):
            await a.connect_tcp(b.ip, 4001, source=(a.ip, 5000))
        await trio.sleep(60)
        assert first.state is TcpState.CLOSED
        with trio.fail_after(5):
            again = await a.connect_tcp(b.ip, 4001, source=(a.ip, 5000))
        assert again.state is TcpState.ESTABLISHED


async def test_listener_backlog_drops_syns_beyond_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with Network() as net:
        a, b = net.add_host("A"), net.add_host("B")
        assert b.ip is not None
        listener = b.listen_tcp(4001, backlog=2)
        ok: list[SimTcpStream] = []

        async def dial() -> None:
            with trio.move_on_after(0.5):
                ok.append(await a.connect_tcp(b.ip, 4001))  # type: ignore[arg-type]

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(dial)
        assert len(ok) == 2 and listener.dropped_syns >= 2
        await listener.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await listener.accept()
        with pytest.raises(trio.BrokenResourceError):  # queued connections were reset
            await ok[0].receive_some()


async def test_network_shutdown_breaks_waiting_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = Network()
    net.add_host("A")
    net.add_host("B")
    async with net:
        client, _ = await _pair(net)
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some()
    with pytest.raises(LocalProtocolError, match="not running"):
        await net.hosts["A"].connect_tcp("198.51.100.2", 1)


async def test_the_network_must_run() -> None:
    net = Network()
    a = net.add_host("A")
    with pytest.raises(LocalProtocolError, match="async with network"):
        await a.connect_tcp("198.51.100.2", 1)


# ---------------------------------------------------------------- UDP
async def test_udp_sockets_look_like_trio_sockets(autojump_clock: trio.testing.MockClock) -> None:
    async with Network(wan_link=Link(latency=0.02)) as net:
        a, b = net.add_host("A", ip6=True), net.add_host("B", ip6=True)
        assert a.ip and b.ip and a.ip6 and b.ip6
        with a.udp_socket() as sa, b.udp_socket(("0.0.0.0", 4001)) as sb:
            assert sa.getsockname()[0] == "0.0.0.0" and 32768 <= sa.getsockname()[1] <= 60999
            assert sb.getsockname() == ("0.0.0.0", 4001)
            start = trio.current_time()
            assert await sa.sendto(b"hello world", (b.ip, 4001)) == 11
            data, source = await sb.recvfrom(5)  # truncated, like a real socket
            assert data == b"hello" and source == (a.ip, sa.getsockname()[1])
            assert trio.current_time() - start == pytest.approx(0.04)
            with pytest.raises(OSError, match="in use") as info:
                b.udp_socket((b.ip, 4001))
            assert info.value.errno == errno.EADDRINUSE
            with pytest.raises(OSError, match="from a socket bound to"):
                await sa.sendto(b"x", (b.ip6, 1))  # an IPv4 socket cannot reach IPv6
            with pytest.raises(OSError, match="too long") as info:
                await sa.sendto(b"x" * 70_000, (b.ip, 4001))
            assert info.value.errno == errno.EMSGSIZE
        with a.udp_socket(("::", 0)) as s6, b.udp_socket((b.ip6, 5000)) as r6:
            await s6.sendto(b"v6", (b.ip6, 5000))
            data, source = await r6.recvfrom(100)
            assert data == b"v6" and source == (a.ip6, s6.getsockname()[1], 0, 0)
        with pytest.raises(OSError, match="Bad file descriptor") as info:
            sa.getsockname()
        assert info.value.errno == errno.EBADF


async def test_udp_close_wakes_a_receiver_and_a_full_queue_drops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with Network() as net:
        a, b = net.add_host("A"), net.add_host("B")
        assert b.ip is not None
        sock = b.udp_socket(("0.0.0.0", 4001), receive_buffer=100)
        sender = a.udp_socket()
        for _ in range(3):
            await sender.sendto(b"x" * 40, (b.ip, 4001))
        await trio.sleep(1)
        assert sock.dropped == 1
        assert (await sock.recvfrom(100))[0] == b"x" * 40
        assert (await sock.recvfrom(100))[0] == b"x" * 40

        async def close_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()
            sock.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_soon)
            with pytest.raises(trio.ClosedResourceError):
                await sock.recvfrom(100)
        with pytest.raises(OSError, match="Bad file descriptor"):
            await sock.recvfrom(100)
        with pytest.raises(OSError, match="Bad file descriptor"):
            await sock.sendto(b"x", (b.ip, 1))


async def test_udp_socket_factory_for_transports(autojump_clock: trio.testing.MockClock) -> None:
    """The QUIC transport's factory shape: ``await factory(family, (host, port))``."""
    async with Network() as net:
        a, b = net.add_host("A", ip6=True), net.add_host("B")
        assert b.ip is not None
        sock = await a.open_udp_socket(socket.AF_INET, ("0.0.0.0", 4001))
        assert sock.getsockname() == ("0.0.0.0", 4001)
        six = await a.open_udp_socket(socket.AF_INET6, ("::", 0))
        assert six.getsockname()[0] == "::" and six.family == socket.AF_INET6
        inbox = b.udp_socket(("0.0.0.0", 9))
        await sock.send_batch([(b"one", (b.ip, 9)), (b"two", (b.ip, 9))])
        await sock.sendto(b"three", (b.ip, 9))
        await trio.sleep(1)
        batch = await inbox.receive_batch(2)
        assert [data for data, _ in batch] == [b"one", b"two"]
        assert [data for data, _ in await inbox.receive_batch(10)] == [b"three"]

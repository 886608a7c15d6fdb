"""Hole punches between two simulated hosts, with plain sockets timed as DCUtR times them.

These are the experiments of :mod:`flarelab.simnet.theory` (read its docstring for the
scenario), run for real on the simulated network -- the same measurements the real NAT lab
made with plain sockets (DESIGN.md, "Real NAT lab"):

    async with Network(seed=1) as net:
        server = net.add_host("S")
        a = net.add_router("NAT A", "home_router").add_host("A")
        b = net.add_router("NAT B", "home_router").add_host("B")
        async with observer(server) as observe:
            result = await tcp_punch(a, b, observe, order="sync")

``order`` delays one side so its peer's first packet arrives first (``a_first`` /
``b_first``), or starts both together (``sync``). ``timing=DcutrTiming(relay)`` starts them
the way DCUtR does instead: over TCP connections through a relay host, B sends CONNECT, A
answers (after ``a_answer_delay``, its processing time), B measures the RTT, sends SYNC and
waits RTT/2 before it punches; A punches when SYNC arrives.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import trio

from .host import Host
from .packet import Endpoint
from .tcp import SimTcpListener, SimTcpStream
from .udp import SimUdpSocket

__all__ = [
    "OBSERVER_PORT",
    "DcutrTiming",
    "Delays",
    "Observe",
    "PunchResult",
    "observer",
    "tcp_punch",
    "udp_punch",
]

OBSERVER_PORT = 3478
Observe = Callable[[Host, int, str], Awaitable[Endpoint]]
PunchOrder = Literal["sync", "a_first", "b_first"]


@dataclass
class PunchResult:
    """How a punch went: ``success``, when (trio time since start), and what was seen."""

    transport: str
    success: bool
    a_observed: Endpoint
    b_observed: Endpoint
    elapsed: float | None = None
    #: the connection's endpoints as A saw them (TCP), or B's answer's source (UDP)
    a_local: Endpoint | None = None
    a_remote: Endpoint | None = None
    notes: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def observer(server: Host, port: int = OBSERVER_PORT) -> AsyncIterator[Observe]:
    """Run a STUN-like service on ``server``; yield ``observe(host, port, proto)``.

    ``observe`` sends from ``host``'s ``port`` to the server over ``proto`` ("udp" or
    "tcp") and returns the endpoint the server saw -- the host's observed address.
    """
    sock = server.udp_socket(("0.0.0.0", port))
    listener = server.listen_tcp(port)

    async def serve_udp() -> None:
        while True:
            _, source = await sock.recvfrom(2048)
            await sock.sendto(f"{source[0]} {source[1]}".encode(), source[:2])

    async def serve_tcp_one(stream: SimTcpStream) -> None:
        async with stream:
            ip, seen_port = stream.getpeername()
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(f"{ip} {seen_port}".encode())

    async def serve_tcp(nursery: trio.Nursery) -> None:
        while True:
            nursery.start_soon(serve_tcp_one, await listener.accept())

    async def observe(host: Host, local_port: int, proto: str) -> Endpoint:
        assert server.ip is not None and host.ip is not None
        if proto == "udp":
            with host.udp_socket((host.ip, local_port)) as s:
                with trio.fail_after(10):
                    await s.sendto(b"?", (server.ip, port))
                    data, _ = await s.recvfrom(100)
        else:
            with trio.fail_after(10):
                stream = await host.connect_tcp(server.ip, port, source=(host.ip, local_port))
                async with stream:
                    data = b""
                    while chunk := await stream.receive_some():
                        data += chunk
        ip, seen = data.decode().split()
        return ip, int(seen)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_udp)
        nursery.start_soon(serve_tcp, nursery)
        try:
            yield observe
        finally:
            nursery.cancel_scope.cancel()
            sock.close()
            await listener.aclose()


class Delays:
    """Start A and B after fixed delays (seconds from the start of the punch)."""

    def __init__(self, a: float, b: float) -> None:
        self.a, self.b = a, b

    @classmethod
    def for_order(cls, order: PunchOrder, head_start: float) -> Delays:
        """``a_first``: B waits ``head_start``; ``b_first``: A waits; ``sync``: nobody."""
        if order == "a_first":
            return cls(0.0, head_start)
        if order == "b_first":
            return cls(head_start, 0.0)
        return cls(0.0, 0.0)

    async def run(self, go_a: trio.Event, go_b: trio.Event) -> None:
        """Set each event when that side must start."""
        first, second = sorted([(self.a, 0, go_a), (self.b, 1, go_b)], key=lambda t: t[:2])
        start = trio.current_time()
        for when, _, event in (first, second):
            await trio.sleep_until(start + when)
            event.set()


class DcutrTiming:
    """Start A and B as DCUtR does, over TCP connections through ``relay``.

    The relay host forwards bytes between A's and B's connections to it. B sends CONNECT,
    A answers after ``a_answer_delay``, B takes the RTT, sends SYNC and starts RTT/2 later;
    A starts when SYNC arrives. ``rtt`` holds the measured RTT afterwards.
    """

    def __init__(self, relay: Host, a: Host, b: Host, *, a_answer_delay: float = 0.0,
                 port: int = 4002) -> None:
        self.relay, self.a, self.b = relay, a, b
        self.a_answer_delay = a_answer_delay
        self.port = port
        self.rtt: float | None = None

    async def run(self, go_a: trio.Event, go_b: trio.Event) -> None:
        """Connect both sides to the relay, exchange CONNECT/SYNC, set the events."""
        assert self.relay.ip is not None
        listener = self.relay.listen_tcp(self.port)
        try:
            to_a = await self.a.connect_tcp(self.relay.ip, self.port)
            from_a = await listener.accept()
            to_b = await self.b.connect_tcp(self.relay.ip, self.port)
            from_b = await listener.accept()
            async with to_a, to_b, from_a, from_b, trio.open_nursery() as nursery:
                nursery.start_soon(_pipe, from_a, from_b)
                nursery.start_soon(_pipe, from_b, from_a)
                nursery.start_soon(self._side_a, to_a, go_a)
                sent = trio.current_time()
                await to_b.send_all(b"CONNECT\n")
                await _read_line(to_b)
                self.rtt = trio.current_time() - sent
                await to_b.send_all(b"SYNC\n")
                await trio.sleep(self.rtt / 2)
                go_b.set()
                await go_a.wait()
                nursery.cancel_scope.cancel()
        finally:
            await listener.aclose()

    async def _side_a(self, stream: SimTcpStream, go: trio.Event) -> None:
        await _read_line(stream)  # CONNECT
        await trio.sleep(self.a_answer_delay)
        await stream.send_all(b"CONNECT\n")
        await _read_line(stream)  # SYNC
        go.set()


async def _pipe(source: SimTcpStream, sink: SimTcpStream) -> None:
    while data := await source.receive_some():
        await sink.send_all(data)


async def _read_line(stream: SimTcpStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            raise trio.BrokenResourceError("the relayed connection closed")
        line += chunk
    return line


Timing = Delays | DcutrTiming


async def udp_punch(a: Host, b: Host, observe: Observe, *, order: PunchOrder = "sync",
                    port: int = 4001, head_start: float = 0.1, duration: float = 5.0,
                    timing: Timing | None = None) -> PunchResult:
    """A dials B over UDP (QUIC-like) while B punches toward A; see the module docstring."""
    a_obs = await observe(a, port, "udp")
    b_obs = await observe(b, port, "udp")
    timing = timing or Delays.for_order(order, head_start)
    go_a, go_b = trio.Event(), trio.Event()
    result = PunchResult("udp", False, a_obs, b_obs)
    assert a.ip is not None and b.ip is not None
    sock_a = a.udp_socket((a.ip, port))
    sock_b = b.udp_socket((b.ip, port))
    start = trio.current_time()
    done = trio.Event()

    async def dial() -> None:
        await go_a.wait()
        while True:
            await sock_a.sendto(b"dial", b_obs)
            await trio.sleep(0.2)

    async def wait_for_answer() -> None:
        while True:
            data, source = await sock_a.recvfrom(100)
            if data == b"answer" and source[:2] == b_obs:
                result.success = True
                result.elapsed = trio.current_time() - start
                result.a_remote = (source[0], source[1])
                done.set()
                return
            if data == b"answer":
                result.notes.append(f"answer from unexpected {source[:2]}")

    async def punch_and_answer() -> None:
        await go_b.wait()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_punch, sock_b, a_obs, b)
            while True:
                data, source = await sock_b.recvfrom(100)
                if data == b"dial":
                    await sock_b.sendto(b"answer", source[:2])

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timing.run, go_a, go_b)
            nursery.start_soon(dial)
            nursery.start_soon(wait_for_answer)
            nursery.start_soon(punch_and_answer)
            with trio.move_on_after(duration):
                await done.wait()
            nursery.cancel_scope.cancel()
    finally:
        sock_a.close()
        sock_b.close()
    return result


async def _punch(sock: SimUdpSocket, target: Endpoint, host: Host) -> None:
    """DCUtR's QUIC punch: random bytes at random 10-200 ms intervals."""
    while True:
        size = host.random.randint(8, 64)
        await sock.sendto(host.random.randbytes(size), target)
        await trio.sleep(host.random.uniform(0.010, 0.200))


async def tcp_punch(a: Host, b: Host, observe: Observe, *, order: PunchOrder = "sync",
                    port: int = 4001, head_start: float = 0.1, duration: float = 5.0,
                    timing: Timing | None = None) -> PunchResult:
    """TCP simultaneous open: both connect from their listen port to the other's observed
    endpoint; success when any connection between them is established."""
    a_obs = await observe(a, port, "tcp")
    b_obs = await observe(b, port, "tcp")
    timing = timing or Delays.for_order(order, head_start)
    go_a, go_b = trio.Event(), trio.Event()
    result = PunchResult("tcp", False, a_obs, b_obs)
    assert a.ip is not None and b.ip is not None
    listener_a = a.listen_tcp(port, a.ip)
    listener_b = b.listen_tcp(port, b.ip)
    start = trio.current_time()
    won: list[tuple[str, SimTcpStream]] = []
    done = trio.Event()

    def got(side: str, stream: SimTcpStream) -> None:
        won.append((side, stream))
        done.set()

    async def dial(host: Host, target: Endpoint, go: trio.Event, side: str) -> None:
        await go.wait()
        assert host.ip is not None
        try:
            stream = await host.connect_tcp(*target, source=(host.ip, port))
        except OSError as exc:
            result.notes.append(f"{side}'s connect failed: {exc.strerror or exc}")
            return
        got(f"{side} connect", stream)

    async def accept(listener: SimTcpListener, side: str) -> None:
        stream = await listener.accept()
        got(f"{side} accept", stream)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timing.run, go_a, go_b)
            nursery.start_soon(dial, a, b_obs, go_a, "A")
            nursery.start_soon(dial, b, a_obs, go_b, "B")
            nursery.start_soon(accept, listener_a, "A")
            nursery.start_soon(accept, listener_b, "B")
            with trio.move_on_after(duration):
                await done.wait()
            nursery.cancel_scope.cancel()
        if won:
            side, stream = won[0]
            result.success = True
            result.elapsed = trio.current_time() - start
            result.notes.append(f"established by {side}")
            if side.startswith("A"):
                result.a_local, result.a_remote = stream.getsockname(), stream.getpeername()
    finally:
        for _, stream in won:
            await stream.aclose()
        await listener_a.aclose()
        await listener_b.aclose()
    return result

"""Hole punches in the real lab, with plain sockets timed as DCUtR times them.

The experiment of :mod:`flarelab.simnet.punch` (read :mod:`flarelab.simnet.theory` for the
scenario), on real kernel sockets through real nftables routers. These functions run in
the lab's namespaces (``lab.agent(host).call(...)``):

* :func:`observer_server` -- a STUN-like service: it answers each UDP datagram, and each
  TCP connection, with the ``ip port`` it came from (the sender's *observed* endpoint).
* :func:`rendezvous_server` -- the relay: two clients that send ``JOIN <session> <role>``
  get ``PAIRED`` when both are there, then their TCP connections are joined and they talk
  as over a relayed connection.
* :func:`punch_side` -- one side of one trial. Both sides first observe their endpoint
  from the port they will punch from (TCP: listening on it, with ``SO_REUSEPORT``, as a
  libp2p node does), then meet at the relay and run DCUtR's exchange: B sends
  ``CONNECT <B's endpoint>``, A answers ``CONNECT <A's endpoint>`` (after
  ``answer_delay``: A's processing time), B measures the RTT, sends ``SYNC`` and waits
  RTT/2 (or ``b_wait``) before it punches; A punches when SYNC arrives (after
  ``a_wait``). TCP: both connect from their port to the other's observed endpoint while
  listening on it -- success is a connection on which both sides' hellos arrive
  (simultaneous open, or one SYN accepted). UDP (QUIC's way): A sends ``dial`` datagrams
  every 200 ms, B sends random bytes every 10-200 ms and answers each ``dial``; success is
  an answer reaching A. The side that finishes tells the other (``DONE``) over the relay.

Each side reports when it sent its first punch packet (``time.monotonic()``, one clock for
every namespace), so the lab can tell whose packet reached the other's router first.
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import trio

from .agent import LabContext

__all__ = [
    "OBSERVER_PORT",
    "RENDEZVOUS_PORT",
    "observer_server",
    "punch_side",
    "rendezvous_server",
]

OBSERVER_PORT: Final = 3478
RENDEZVOUS_PORT: Final = 4002
#: the longest line either service accepts
MAX_LINE: Final = 256
#: sessions the rendezvous holds at once
MAX_SESSIONS: Final = 1024
#: how often A repeats its UDP dial (a QUIC Initial's retransmission)
UDP_DIAL_INTERVAL: Final = 0.2

Role = Literal["a", "b"]


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _any(family: socket.AddressFamily) -> str:
    return "::" if family == socket.AF_INET6 else "0.0.0.0"


def _endpoint(address: Any) -> tuple[str, int]:
    return str(address[0]), int(address[1])


def _reusable(sock: trio.socket.SocketType) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


async def _read_line(stream: trio.abc.ReceiveStream, buffer: bytearray) -> str:
    """Read one ``\\n``-terminated line (at most MAX_LINE bytes); leave the rest in buffer."""
    while b"\n" not in buffer:
        if len(buffer) > MAX_LINE:
            raise ValueError("line too long")
        chunk = await stream.receive_some(MAX_LINE)
        if not chunk:
            raise EOFError("the connection closed")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode(errors="replace")


# ---------------------------------------------------------------------- the services
async def observer_server(ctx: LabContext, port: int = OBSERVER_PORT) -> dict[str, int]:
    """Tell every UDP sender and TCP client its observed endpoint; run until stopped."""
    served = {"udp": 0, "tcp": 0}
    udp = []
    for ip in ctx.host.addresses():
        family = _family(ip)
        sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        await sock.bind((_any(family), port))
        udp.append(sock)

    async def serve_udp(sock: trio.socket.SocketType) -> None:
        while True:
            _, source = await sock.recvfrom(2048)
            ip, seen = _endpoint(source)
            served["udp"] += 1
            with contextlib.suppress(OSError):
                await sock.sendto(f"{ip} {seen}".encode(), source)

    async def serve_tcp(stream: trio.SocketStream) -> None:
        ip, seen = _endpoint(stream.socket.getpeername())
        served["tcp"] += 1
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(f"{ip} {seen}".encode())
        await stream.aclose()  # the server closes first: TIME_WAIT stays here

    listeners = await trio.open_tcp_listeners(port)
    async with trio.open_nursery() as nursery:
        for sock in udp:
            nursery.start_soon(serve_udp, sock)
        nursery.start_soon(trio.serve_listeners, serve_tcp, listeners)
        ctx.ready({"port": port, "addresses": ctx.host.addresses()})
        await ctx.wait_stop()
        nursery.cancel_scope.cancel()
    for sock in udp:
        sock.close()
    return served


@dataclass(eq=False)
class _Session:
    """Two sides of one relayed conversation: the first waits for the second to join."""

    first: trio.SocketStream
    first_rest: bytes
    joined: trio.Event = field(default_factory=trio.Event)
    finished: trio.Event = field(default_factory=trio.Event)
    second: trio.SocketStream | None = None
    second_rest: bytes = b""


async def _pipe(source: trio.SocketStream, sink: trio.SocketStream, first: bytes) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        if first:
            await sink.send_all(first)
        while data := await source.receive_some(65536):
            await sink.send_all(data)
        await sink.send_eof()


async def rendezvous_server(ctx: LabContext, port: int = RENDEZVOUS_PORT) -> dict[str, int]:
    """Join the connections of the two sides of each session; run until stopped."""
    waiting: dict[str, _Session] = {}
    stats = {"sessions": 0, "refused": 0}

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            buffer = bytearray()
            try:
                with trio.fail_after(30):
                    words = (await _read_line(stream, buffer)).split()
            except (ValueError, EOFError, trio.TooSlowError, trio.BrokenResourceError):
                words = []
            if len(words) != 3 or words[0] != "JOIN" or words[2] not in ("a", "b"):
                stats["refused"] += 1
                return
            session = waiting.pop(words[1], None)
            if session is not None:  # the second side: hand over, wait for the end
                session.second, session.second_rest = stream, bytes(buffer)
                session.joined.set()
                await session.finished.wait()
                return
            if len(waiting) >= MAX_SESSIONS:
                stats["refused"] += 1
                return
            session = waiting[words[1]] = _Session(stream, bytes(buffer))
            try:
                with trio.move_on_after(60):
                    await session.joined.wait()
            finally:
                waiting.pop(words[1], None)
            if session.second is None:
                stats["refused"] += 1
                return
            stats["sessions"] += 1
            try:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(b"PAIRED\n")
                    await session.second.send_all(b"PAIRED\n")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pipe, stream, session.second, session.first_rest)
                    nursery.start_soon(_pipe, session.second, stream, session.second_rest)
            finally:
                session.finished.set()

    listeners = await trio.open_tcp_listeners(port)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        ctx.ready({"port": port, "addresses": ctx.host.addresses()})
        await ctx.wait_stop()
        nursery.cancel_scope.cancel()
    return stats


# ---------------------------------------------------------------------- one side of a trial
def _same(a: tuple[str, int], b: tuple[str, int]) -> bool:
    import ipaddress

    return (ipaddress.ip_address(a[0]), a[1]) == (ipaddress.ip_address(b[0]), b[1])


def _parse_endpoint(text: str) -> tuple[str, int]:
    ip, port = text.split()
    return ip, int(port)


async def _observe_udp(sock: trio.socket.SocketType, observer: tuple[str, int]
                       ) -> tuple[str, int]:
    for _ in range(3):
        await sock.sendto(b"?", observer)
        with trio.move_on_after(1.0):
            while True:
                data, source = await sock.recvfrom(2048)
                if _same(_endpoint(source), observer):
                    return _parse_endpoint(data.decode())
    raise TimeoutError(f"the observer {observer} did not answer over UDP")


async def _observe_tcp(family: socket.AddressFamily, local: tuple[str, int],
                       observer: tuple[str, int]) -> tuple[str, int]:
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    _reusable(sock)
    await sock.bind(local)
    with trio.fail_after(5):
        await sock.connect(observer)
        async with trio.SocketStream(sock) as stream:
            data = b""
            while chunk := await stream.receive_some(MAX_LINE):
                data += chunk
    return _parse_endpoint(data.decode())


class _Trial:
    """One side's state during a punch: the result it will report, and when it ends."""

    def __init__(self, role: Role, result: dict[str, Any]) -> None:
        self.role = role
        self.other = "b" if role == "a" else "a"
        self.result = result
        self.done = trio.Event()

    def note(self, text: str) -> None:
        self.result["notes"].append(text)

    def sent_first(self) -> None:
        if self.result["first_send"] is None:
            self.result["first_send"] = time.monotonic()

    def succeed(self, via: str, remote: tuple[str, int] | None = None) -> None:
        if self.result["success"]:
            return
        self.result.update(success=True, via=via,
                           elapsed=time.monotonic() - self.result["go"],
                           remote=list(remote) if remote else None)
        self.done.set()


async def _tcp_punch(trial: _Trial, family: socket.AddressFamily, local: tuple[str, int],
                     listener: trio.socket.SocketType, peer: tuple[str, int]) -> None:
    async def verify(sock: trio.socket.SocketType, via: str) -> None:
        remote = _endpoint(sock.getpeername())
        async with trio.SocketStream(sock) as stream:
            try:
                await stream.send_all(f"HELLO {trial.role}\n".encode())
                line = await _read_line(stream, bytearray())
            except (trio.BrokenResourceError, EOFError, ValueError) as exc:
                trial.note(f"{via} from {remote[0]}:{remote[1]} broke: {exc}")
                return
            if line == f"HELLO {trial.other}":
                trial.succeed(via, remote)
                await trial.done.wait()
            else:
                trial.note(f"{via}: unexpected greeting {line!r}")

    async def connect(nursery: trio.Nursery) -> None:
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        _reusable(sock)
        await sock.bind(local)
        trial.sent_first()
        try:
            await sock.connect(peer)
        except OSError as exc:
            trial.note(f"{trial.role.upper()}'s connect failed: {exc.strerror or exc}")
            sock.close()
            return
        nursery.start_soon(verify, sock, "connect")

    async def accept(nursery: trio.Nursery) -> None:
        while True:
            sock, _ = await listener.accept()
            nursery.start_soon(verify, sock, "accept")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(connect, nursery)
        nursery.start_soon(accept, nursery)
        await trial.done.wait()
        nursery.cancel_scope.cancel()


async def _udp_punch(trial: _Trial, sock: trio.socket.SocketType, peer: tuple[str, int]
                     ) -> None:
    counts = trial.result.setdefault("datagrams", {"sent": 0, "received": 0})

    async def send_loop() -> None:
        rng = random.Random()
        while True:
            trial.sent_first()
            if trial.role == "a":  # the QUIC client: an Initial, repeated
                await sock.sendto(b"dial", peer)
                await trio.sleep(UDP_DIAL_INTERVAL)
            else:  # DCUtR's QUIC punch: random bytes at random 10-200 ms intervals
                await sock.sendto(rng.randbytes(rng.randint(8, 64)), peer)
                await trio.sleep(rng.uniform(0.010, 0.200))
            counts["sent"] += 1

    async def receive_loop() -> None:
        while True:
            data, source = await sock.recvfrom(2048)
            counts["received"] += 1
            source = _endpoint(source)
            if trial.role == "b" and data == b"dial":
                with contextlib.suppress(OSError):
                    await sock.sendto(b"answer", source)
                if not trial.result["success"]:
                    trial.result.update(success=True, via="dial received",
                                        elapsed=time.monotonic() - trial.result["go"],
                                        remote=list(source))
            elif trial.role == "a" and data == b"answer":
                if _same(source, peer):
                    trial.succeed("answer", source)
                else:
                    trial.note(f"answer from unexpected {source[0]}:{source[1]}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_loop)
        nursery.start_soon(receive_loop)
        await trial.done.wait()
        nursery.cancel_scope.cancel()


async def punch_side(
    ctx: LabContext,
    role: Role,
    transport: Literal["tcp", "udp"],
    *,
    port: int,
    observer: list[Any],
    rendezvous: list[Any],
    session: str,
    answer_delay: float = 0.0,
    a_wait: float = 0.0,
    b_wait: float | None = None,
    duration: float = 2.0,
) -> dict[str, Any]:
    """Run one side of one punch trial (see the module docstring); return what it saw.

    ``observer`` and ``rendezvous`` are ``[ip, port]``; their address family is the one
    punched over. The result holds ``success``, ``via`` (connect / accept / answer / dial
    received), ``elapsed`` (from this side's start), ``first_send`` (monotonic time of
    its first punch packet), its ``observed`` endpoint and the peer's, ``rtt`` (B) and
    ``notes``.
    """
    if role not in ("a", "b") or transport not in ("tcp", "udp"):
        raise ValueError(f"bad role {role!r} or transport {transport!r}")
    observer_ep = (str(observer[0]), int(observer[1]))
    family = _family(observer_ep[0])
    own_ip = ctx.host.ip6 if family == socket.AF_INET6 else ctx.host.ip
    if own_ip is None:
        raise ValueError(f"{ctx.host.name} has no IPv6 address")
    local = (own_ip, port)
    result: dict[str, Any] = {
        "role": role, "transport": transport, "host": ctx.host.name, "port": port,
        "success": False, "via": None, "elapsed": None, "first_send": None, "go": None,
        "rtt": None, "observed": None, "peer_observed": None, "remote": None, "notes": [],
    }
    trial = _Trial(role, result)
    async with contextlib.AsyncExitStack() as stack:
        sock = trio.socket.socket(family, socket.SOCK_STREAM if transport == "tcp"
                                  else socket.SOCK_DGRAM)
        stack.callback(sock.close)
        _reusable(sock)
        await sock.bind(local)
        if transport == "tcp":
            sock.listen(16)
            observed = await _observe_tcp(family, local, observer_ep)
        else:
            observed = await _observe_udp(sock, observer_ep)
        result["observed"] = list(observed)

        relay = await trio.open_tcp_stream(str(rendezvous[0]), int(rendezvous[1]))
        stack.push_async_callback(relay.aclose)
        buffer = bytearray()
        with trio.fail_after(30):
            # as on a relayed connection, both sides are there before B sends CONNECT
            await relay.send_all(f"JOIN {session} {role}\n".encode())
            if (await _read_line(relay, buffer)) != "PAIRED":
                raise ValueError("expected PAIRED from the relay")
            connect_line = f"CONNECT {observed[0]} {observed[1]}\n".encode()
            if role == "b":
                await relay.send_all(connect_line)
                sent = time.monotonic()
                words = (await _read_line(relay, buffer)).split()
                result["rtt"] = time.monotonic() - sent
                await relay.send_all(b"SYNC\n")
                wait = result["rtt"] / 2 if b_wait is None else b_wait
            else:
                words = (await _read_line(relay, buffer)).split()
                await trio.sleep(answer_delay)
                await relay.send_all(connect_line)
                if (await _read_line(relay, buffer)) != "SYNC":
                    raise ValueError("expected SYNC")
                wait = a_wait
        if len(words) != 3 or words[0] != "CONNECT":
            raise ValueError(f"expected CONNECT, got {words!r}")
        peer = (words[1], int(words[2]))
        result["peer_observed"] = list(peer)
        await trio.sleep(wait)
        result["go"] = time.monotonic()

        async def peer_done() -> None:
            with contextlib.suppress(EOFError, ValueError, trio.BrokenResourceError):
                if (await _read_line(relay, buffer)).startswith("DONE"):
                    trial.note(f"{trial.other.upper()} finished first")
            await trio.sleep(0.3)  # a grace to finish our side of the exchange
            trial.done.set()

        with trio.move_on_after(duration) as window:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer_done)
                if transport == "tcp":
                    await _tcp_punch(trial, family, local, sock, peer)
                else:
                    await _udp_punch(trial, sock, peer)
                nursery.cancel_scope.cancel()
        if window.cancelled_caught:
            trial.note(f"no success within {duration:g} s")
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await relay.send_all(f"DONE {'ok' if result['success'] else 'fail'}\n".encode())
    return result

"""Helpers for the QUIC tests: core pairs without I/O, and an in-memory UDP network.

Rules for the QUIC tests (as trio-websocket states them): the cores talk through
:func:`pump` (no sockets, time passed in); the drivers talk through :class:`FakeUdpNetwork`
on trio's MockClock (``autojump_clock``) or through real loopback sockets on port 0 under
``trio.fail_after`` bounds. No wall-clock sleeps.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.connection import QuicConnection as AioquicConnection
from aioquic.quic.packet import pull_quic_header
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flarelab.identity import Ed25519PrivateKey, PeerId, PrivateKey
from flarelab.transports.quic.config import QuicConfig
from flarelab.transports.quic.core import QuicCore, utc_now
from flarelab.transports.quic.tls import generate_credentials

CLIENT_ADDR = ("10.0.0.1", 4001)
SERVER_ADDR = ("10.0.0.2", 4002)


# ------------------------------------------------------------------ cores in pairs


def pump(
    client: AioquicConnection,
    server: AioquicConnection,
    now: float = 0.0,
    *,
    rounds: int = 100,
    sizes: list[int] | None = None,
    on_events: Callable[[AioquicConnection], None] | None = None,
) -> None:
    """Move datagrams both ways until neither side has anything to send.

    ``on_events(core)`` runs after each delivery, as a driver takes events right after
    ``receive_datagram`` (before it asks the core what to send).
    """
    for _ in range(rounds):
        moved = False
        for sender, receiver, source in (
            (client, server, CLIENT_ADDR),
            (server, client, SERVER_ADDR),
        ):
            for data, _ in sender.datagrams_to_send(now):
                if sizes is not None:
                    sizes.append(len(data))
                receiver.receive_datagram(data, source, now)
                if on_events is not None:
                    on_events(receiver)
                moved = True
        if not moved:
            return
    raise AssertionError("the cores kept talking for too many rounds")


def drain(core: AioquicConnection) -> list[events.QuicEvent]:
    """All pending events of a core."""
    out = []
    while (event := core.next_event()) is not None:
        out.append(event)
    return out


@dataclass
class CorePair:
    """A client and a server core, connected through :func:`pump`."""

    client: AioquicConnection
    server: AioquicConnection
    client_key: PrivateKey
    server_key: PrivateKey
    client_events: list[events.QuicEvent] = field(default_factory=list)
    server_events: list[events.QuicEvent] = field(default_factory=list)

    def pump(self, now: float = 0.0, sizes: list[int] | None = None) -> None:
        pump(self.client, self.server, now, sizes=sizes, on_events=self._take_events)

    def run(self, until: float, step: float = 0.01, start: float = 0.0) -> float:
        """Pump at ``start``, ``start + step``, ... up to ``until``; return the last time."""
        now = start
        while now < until:
            now = round(now + step, 6)
            self.pump(now)
        return now

    def _take_events(self, core: AioquicConnection) -> None:
        if core is self.client:
            self.client_events += drain(core)
        else:
            self.server_events += drain(core)

    def server_data(self, stream_id: int) -> bytes:
        return b"".join(
            e.data
            for e in self.server_events
            if isinstance(e, events.StreamDataReceived) and e.stream_id == stream_id
        )


def make_server(
    first_datagram: bytes, key: PrivateKey, config: QuicConfig, datagram_size: int = 1452,
    cls: type[QuicCore] = QuicCore,
) -> QuicCore:
    """A server core for the client whose first datagram this is."""
    header = pull_quic_header(Buffer(data=first_datagram), 8)
    return cls(
        credentials=generate_credentials(key, now=utc_now()),
        config=config,
        is_client=False,
        datagram_size=datagram_size,
        original_destination_connection_id=header.destination_cid,
    )


def core_pair(
    *,
    client: AioquicConnection | None = None,
    client_key: PrivateKey | None = None,
    server_key: PrivateKey | None = None,
    expected_peer: PeerId | bool | None = True,
    client_config: QuicConfig | None = None,
    server_config: QuicConfig | None = None,
    datagram_size: int = 1452,
    server_cls: type[QuicCore] = QuicCore,
    client_cls: type[QuicCore] = QuicCore,
    handshake: bool = True,
) -> CorePair:
    """Make a client and a server core (and run the handshake unless told not to)."""
    client_key = client_key or Ed25519PrivateKey.generate()
    server_key = server_key or Ed25519PrivateKey.generate()
    if expected_peer is True:
        expected_peer = PeerId.from_public_key(server_key.public_key)
    if client is None:
        client = client_cls(
            credentials=generate_credentials(client_key, now=utc_now()),
            config=client_config or QuicConfig(),
            is_client=True,
            datagram_size=datagram_size,
            expected_peer=expected_peer or None,
        )
    client.connect(SERVER_ADDR, now=0.0)
    first = client.datagrams_to_send(0.0)
    server = make_server(
        first[0][0], server_key, server_config or QuicConfig(), datagram_size, server_cls
    )
    for data, _ in first:
        server.receive_datagram(data, CLIENT_ADDR, 0.0)
    pair = CorePair(client, server, client_key, server_key)
    if handshake:
        pair.pump()
    return pair


# ------------------------------------------------------------------ an in-memory UDP network


class FakeUdpSocket:
    """A UDP socket of :class:`FakeUdpNetwork`, with trio.socket's small interface."""

    def __init__(self, net: FakeUdpNetwork, family: int, addr: tuple[str, int]) -> None:
        self.net = net
        self.family = family
        self.addr = addr
        self._send, self._receive = trio.open_memory_channel[tuple[bytes, tuple[str, int]]](
            net.queue_limit
        )
        self.closed = False
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def getsockname(self) -> tuple[str, int]:
        return self.addr

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.net.sockets.pop(self.addr, None)
            self._send.close()

    async def sendto(self, data: bytes, address: tuple[Any, ...], /) -> int:
        if self.closed:
            raise OSError(9, "socket closed")
        await trio.lowlevel.checkpoint()
        self.sent.append((bytes(data), (address[0], address[1])))
        self.net.deliver(bytes(data), self.addr, (address[0], address[1]))
        return len(data)

    async def recvfrom(self, bufsize: int, /) -> tuple[bytes, tuple[str, int]]:
        try:
            data, source = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise OSError(9, "socket closed") from None
        return data[:bufsize], source


@dataclass
class FakeUdpNetwork:
    """Loopback-like UDP in memory: optional drop/mangle hook, bounded receive queues."""

    queue_limit: int = 1000
    #: called with (data, source, destination); return the bytes to deliver or None to drop
    filter: Callable[[bytes, tuple[str, int], tuple[str, int]], bytes | None] | None = None
    sockets: dict[tuple[str, int], FakeUdpSocket] = field(default_factory=dict)
    delivered: int = 0
    _next_port: int = 40000

    async def factory(self, family: int, local: tuple[Any, ...]) -> FakeUdpSocket:
        host, port = str(local[0]), int(local[1])
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if family == socket.AF_INET else "::1"
        if port == 0:
            self._next_port += 1
            port = self._next_port
        if (host, port) in self.sockets:
            raise OSError(98, "address in use")
        sock = FakeUdpSocket(self, family, (host, port))
        self.sockets[(host, port)] = sock
        await trio.lowlevel.checkpoint()
        return sock

    def deliver(self, data: bytes, source: tuple[str, int], dest: tuple[str, int]) -> None:
        if self.filter is not None:
            filtered = self.filter(data, source, dest)
            if filtered is None:
                return
            data = filtered
        self.deliver_raw(data, source, dest)

    def deliver_raw(self, data: bytes, source: tuple[str, int], dest: tuple[str, int]) -> None:
        """Deliver without the filter (a filter re-injecting a datagram it held back)."""
        sock = self.sockets.get(dest)
        if sock is None:
            return
        try:
            sock._send.send_nowait((data, source))
            self.delivered += 1
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # a full queue drops, as UDP does


# ------------------------------------------------------------------ spans


@contextmanager
def recording_tracer() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    """A tracer whose finished spans land in an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield provider.get_tracer("test"), exporter
    finally:
        provider.shutdown()


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


# ------------------------------------------------------------------ connected drivers


@dataclass
class QuicPair:
    """Two QuicTransports on one network, a listener on ``server``, one connection."""

    client_transport: Any
    server_transport: Any
    client: Any  # QuicConnection
    server: Any  # QuicConnection
    listener: Any
    server_conns: Any  # trio.MemoryReceiveChannel of later inbound connections
    #: what each connection's run() raised (a RemoteProtocolError when the peer broke QUIC)
    errors: dict[str, BaseException] = field(default_factory=dict)


async def _run(conn: Any, pair: QuicPair) -> None:
    from flarelab.errors import RemoteProtocolError

    try:
        await conn.run()
    except RemoteProtocolError as exc:
        pair.errors["client" if conn is pair.client else "server"] = exc


@asynccontextmanager
async def quic_pair(
    net: FakeUdpNetwork | None = None,
    *,
    client_config: QuicConfig | None = None,
    server_config: QuicConfig | None = None,
    client_key: PrivateKey | None = None,
    server_key: PrivateKey | None = None,
    tracer: Any = None,
    listen: str = "/ip4/127.0.0.1/udp/0/quic-v1",
) -> AsyncIterator[QuicPair]:
    """Connect a client to a listening server (fake network unless ``net`` is None)."""
    from flarelab.multiaddr import Multiaddr
    from flarelab.tracing import spans
    from flarelab.transports.quic import QuicTransport

    tracer = tracer or spans.NO_TRACER
    factory = net.factory if net is not None else None
    client_t = QuicTransport(
        client_key or Ed25519PrivateKey.generate(), config=client_config,
        socket_factory=factory, tracer=tracer,
    )
    server_key = server_key or Ed25519PrivateKey.generate()
    server_t = QuicTransport(
        server_key, config=server_config, socket_factory=factory, tracer=tracer
    )
    send, receive = trio.open_memory_channel[Any](100)

    async def on_inbound(secured: Any) -> None:
        await send.send(secured.muxer)

    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            server_t.listen, Multiaddr(listen), on_inbound, nursery
        )
        addr = listener.addrs[0].with_peer_id(PeerId.from_public_key(server_key.public_key))
        secured = await client_t.dial(addr)
        client = secured.muxer
        pair = QuicPair(client_t, server_t, client, None, listener, receive)
        nursery.start_soon(_run, client, pair)
        pair.server = server = await receive.receive()
        nursery.start_soon(_run, server, pair)
        try:
            yield pair
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await client.aclose()
                await server.aclose()
            nursery.cancel_scope.cancel()


async def echo_all(stream: Any) -> None:
    """Echo everything until EOF, then close our side."""
    while data := await stream.receive_some():
        await stream.send_all(data)
    await stream.send_eof()


async def echo_server(conn: Any, nursery: trio.Nursery) -> None:
    """Accept streams and echo each one until the connection closes."""
    from flarelab.errors import ConnectionClosedError

    while True:
        try:
            stream = await conn.accept_stream()
        except ConnectionClosedError:
            return
        nursery.start_soon(echo_all, stream)


async def send_and_collect(stream: Any, payload: bytes, read_size: int = 65536) -> bytes:
    """Send ``payload`` and EOF while reading everything back."""
    got = bytearray()
    async with trio.open_nursery() as nursery:

        async def writer() -> None:
            view = memoryview(payload)
            for start in range(0, len(payload), 50_000):
                await stream.send_all(view[start : start + 50_000])
            await stream.send_eof()

        nursery.start_soon(writer)
        while data := await stream.receive_some(read_size):
            got += data
    return bytes(got)


async def send_until_broken(stream: Any, rounds: int = 100) -> None:
    """Keep sending (with pauses) until the stream breaks; fail if it never does."""
    for _ in range(rounds):
        await stream.send_all(b"z" * 10_000)
        await trio.sleep(0.01)
    raise AssertionError("the stream never broke")


async def receive_until_broken(stream: Any, rounds: int = 1000) -> None:
    """Keep reading until the stream breaks; fail if it ends or never breaks."""
    for _ in range(rounds):
        if not await stream.receive_some():
            raise AssertionError("the stream ended cleanly instead of breaking")
    raise AssertionError("the stream never broke")

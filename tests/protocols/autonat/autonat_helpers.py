"""Helpers for the AutoNAT tests: stand-ins for a node, connections and streams (tier 2),
and node factories for loopback and simnet tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.multiaddr import AddressPolicy, Multiaddr
from flarelab.node import NodeConfig
from flarelab.tracing import spans
from flarelab.tracing.records import SpanRecord

LAB_POLICY = AddressPolicy(treat_as_public=("198.51.100.0/24", "203.0.113.0/24"))
LOOPBACK_POLICY = AddressPolicy(treat_as_public=("127.0.0.0/8",))


def peer(seed: int) -> PeerId:
    """A fixed peer id."""
    return PeerId.from_public_key(Ed25519PrivateKey.from_seed(bytes([seed]) * 32).public_key)


class Traces:
    """An SDK tracer whose finished spans a test can read."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


def events(span: ReadableSpan | SpanRecord) -> list[tuple[str, str]]:
    """(event name, message type) of a span's message events, in order."""
    out = []
    for event in span.events:
        attrs = event.attributes or {}
        if spans.MESSAGE_TYPE in attrs:
            out.append((event.name, str(attrs[spans.MESSAGE_TYPE])))
    return out


# ---------------------------------------------------------------- a node stand-in (tier 2)
class _Transport:
    name = "tcp"
    supports_reuse_port = True


@dataclass
class _Dialer:
    can: Callable[[Multiaddr], bool]

    def dialable(self, addrs: list[Multiaddr]) -> list[tuple[Multiaddr, _Transport]]:
        return [(a, _Transport()) for a in addrs if self.can(a)]


@dataclass
class FakeNode:
    """What the AutoNAT servers use of a node: policy, dialer, listen addresses, tracer."""

    tracer: Any = spans.NO_TRACER
    listen: list[Multiaddr] = field(
        default_factory=lambda: [Multiaddr("/ip4/198.51.100.1/tcp/4001")])
    can_dial: Callable[[Multiaddr], bool] = lambda a: "tcp" in a.protocol_names()
    config: NodeConfig = field(default_factory=lambda: NodeConfig(address_policy=LAB_POLICY))

    def __post_init__(self) -> None:
        self.dialer = _Dialer(self.can_dial)

    def listen_addrs(self) -> list[Multiaddr]:
        return list(self.listen)


_ids = itertools.count(1000)


@dataclass(eq=False)
class FakeConnection:
    """A connection whose new streams are served by ``serve`` on the other end."""

    remote_peer: PeerId
    local_addr: Multiaddr
    direction: str = "inbound"
    limited: bool = False
    opened_at: float = 0.0
    serve: Callable[[Any], Any] | None = None
    nursery: trio.Nursery | None = None
    closed: bool = False
    id: int = field(default_factory=lambda: next(_ids))

    async def new_stream(self, protocol: str) -> trio.abc.HalfCloseableStream:
        ours, theirs = trio.testing.memory_stream_pair()
        assert self.serve is not None and self.nursery is not None
        self.nursery.start_soon(self.serve, FakeNetStream(theirs, self))
        return ours

    async def aclose(self, reason: str = "") -> None:
        self.closed = True


class FakeNetStream(trio.abc.HalfCloseableStream):
    """A stream with the ``connection`` and ``remote_peer`` a handler looks at."""

    def __init__(self, stream: trio.abc.HalfCloseableStream, connection: Any) -> None:
        self._stream = stream
        self.connection = connection

    @property
    def remote_peer(self) -> PeerId:
        return self.connection.remote_peer  # type: ignore[no-any-return]

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def reset(self) -> None:
        await self._stream.aclose()


def pair() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
    """Two connected in-memory half-closeable streams."""
    return trio.testing.memory_stream_pair()  # type: ignore[return-value]

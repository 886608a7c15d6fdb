"""Helpers for the relay tests: a relay and its clients, on loopback or on simnet."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from flarelab.identity import PeerId
from flarelab.node import Node, NodeConfig
from flarelab.node.connection import NetStream
from flarelab.protocols.relay import (
    HOP_PROTOCOL,
    RelayClientConfig,
    RelayService,
    RelayServiceConfig,
    RelayTransport,
)
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.provider import TracingConfig
from flarelab.tracing.records import SpanRecord
from flarelab.wire import StreamReader, length_prefixed

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
#: a Unix clock that follows trio's (MockClock) time, for expirations in simulations
EPOCH = 1_800_000_000.0


def trio_unix_time() -> float:
    return EPOCH + trio.current_time()


def loopback_config(label: str, bus: SpanBus | None = None, **overrides: Any) -> NodeConfig:
    tracing = TracingConfig(label=label, bus=bus) if bus is not None else None
    return NodeConfig(listen_addrs=[LOOPBACK], label=label, enable_quic=False,
                      tracing=tracing, **overrides)


@dataclass
class Trio:
    """A relay R and two clients A and B (B usually listens through R)."""

    relay: Node
    a: Node
    b: Node
    service: RelayService
    transports: dict[str, RelayTransport] = field(default_factory=dict)

    @property
    def relay_addr(self) -> str:
        return str(self.relay.addrs[0])

    def circuit_to(self, peer: PeerId) -> str:
        return f"{self.relay_addr}/p2p-circuit/p2p/{peer}"


@contextlib.asynccontextmanager
async def loopback_trio(
    *,
    service_config: RelayServiceConfig | None = None,
    client_config: RelayClientConfig | None = None,
    bus: SpanBus | None = None,
) -> AsyncIterator[Trio]:
    async with (
        Node(loopback_config("relay", bus)) as relay,
        Node(loopback_config("A", bus)) as a,
        Node(loopback_config("B", bus)) as b,
    ):
        service = RelayService(relay, service_config)
        trio_ = Trio(relay, a, b, service)
        for name, node in (("A", a), ("B", b)):
            trio_.transports[name] = RelayTransport.install(node, client_config)
        yield trio_


async def raw_hop(node: Node, relay: Node | str, payload: bytes) -> tuple[bytes, bool]:
    """Open a hop stream to ``relay``, send ``payload`` as is; return (reply bytes, EOF)."""
    target = relay.addrs[0] if isinstance(relay, Node) else relay
    stream = await node.new_stream(target, HOP_PROTOCOL)
    await stream.send_all(payload)
    reader = StreamReader(stream)
    with trio.fail_after(5):
        body = await reader.read_length_prefixed(4096)
        eof = await reader.at_eof()
    await stream.aclose()
    return body, eof


def framed(body: bytes) -> bytes:
    return length_prefixed(body)


def ended(bus: SpanBus, name: str, label: str | None = None,
          where: Callable[[SpanRecord], bool] | None = None) -> list[SpanRecord]:
    """Ended spans called ``name`` (of the node ``label``), oldest first."""
    return [r for r in bus.history()
            if r.ended and r.name == name and (label is None or r.node_label == label)
            and (where is None or where(r))]


def events(record: SpanRecord) -> list[tuple[str, str]]:
    """(event name, message type) of a span's message events, in order."""
    return [(e.name, str(e.attributes.get("message.type"))) for e in record.events
            if e.name.startswith("message.")]


async def sink(stream: NetStream) -> None:
    """A handler that reads to EOF (or until the stream breaks) and echoes nothing."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while await stream.receive_some(65536):
            pass

"""The arena of the bad-input tests: a node under attack, a well-behaved peer, attackers.

:func:`arena` starts the node under attack ("T", on loopback, with a span bus) and a
well-behaved peer ("G") with an open connection and an open echo stream to it;
:meth:`Arena.assert_contained` proves afterwards that G's connection and stream still
carry data and that T still accepts newcomers and answers pings. :func:`attacker_node`
is a real node a test makes misbehave; :func:`raw_yamux` a hand-written Yamux client
(:class:`~crafted.RawYamux`) on a real Noise channel.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import trio
from crafted import (
    YAMUX,
    RawYamux,
    secure_channel,
    tcp_connect,
)

from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.mss import MULTISTREAM_PROTOCOL, encode_message
from flarelab.node import Connection, NetStream, Node, NodeConfig
from flarelab.protocols.ping import PING_PROTOCOL, PING_SIZE
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.provider import TracingConfig

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
ECHO = "/echo/1.0.0"
NOISE = "/noise"
MSS = MULTISTREAM_PROTOCOL
#: the bound on every wait for something that must happen promptly
PROMPT = 10.0
#: a node timeout the tests shorten, so that waiting for it on the real clock stays quick
SHORT = 1.0


async def echo(stream: NetStream) -> None:
    """Echo until EOF."""
    while data := await stream.receive_some(65536):
        await stream.send_all(data)


async def roundtrip(stream: trio.abc.Stream, payload: bytes) -> None:
    """Send ``payload`` on an echo stream and check that exactly it comes back."""
    await stream.send_all(payload)
    got = bytearray()
    while len(got) < len(payload):
        data = await stream.receive_some(len(payload) - len(got))
        assert data, "the echo stream ended"
        got += data
    assert got == payload


@dataclass
class Arena:
    """The node under attack, its span bus, and a well-behaved peer with an open stream."""

    node: Node
    bus: SpanBus
    good: Node
    good_conn: Connection  # G's end of its connection to T
    node_conn: Connection  # T's end of it
    good_stream: NetStream  # an echo stream G opened before the attack

    async def assert_contained(self) -> None:
        """Prove G's connection and stream are untouched and that T still serves newcomers."""
        with trio.fail_after(PROMPT):
            for size in (1, 4096, 100_000):
                await roundtrip(self.good_stream, os.urandom(size))
            assert not self.good_conn.is_closed and not self.node_conn.is_closed
            assert self.node.connections(self.good.peer_id) == [self.node_conn]
            assert len(await self.good.ping(self.node.peer_id, 2)) == 2
            assert self.good.connections(self.node.peer_id) == [self.good_conn]
            async with Node(NodeConfig(label="N")) as newcomer:
                assert len(await newcomer.ping(self.node.addrs[0], 2)) == 2
                stream = await newcomer.new_stream(self.node.peer_id, ECHO)
                await roundtrip(stream, b"still serving")
                await stream.aclose()


@contextlib.asynccontextmanager
async def arena(**overrides: object) -> AsyncIterator[Arena]:
    """Start T (with ``overrides`` in its config) and G, connected, with an echo stream."""
    bus = SpanBus()
    config = NodeConfig(
        listen_addrs=[LOOPBACK],
        label="T",
        tracing=TracingConfig(bus=bus),
        **overrides,  # type: ignore[arg-type]
    )
    async with Node(config) as node, Node(NodeConfig(label="G")) as good:
        node.set_handler(ECHO, echo)
        with trio.fail_after(PROMPT):
            good_conn = await good.connect(node.addrs[0])
            good_stream = await good.new_stream(node.peer_id, ECHO)
            await roundtrip(good_stream, b"before the attack")
            (node_conn,) = node.connections(good.peer_id)
        yield Arena(node, bus, good, good_conn, node_conn, good_stream)
    bus.close()


@contextlib.asynccontextmanager
async def attacker_node(**overrides: object) -> AsyncIterator[Node]:
    """A real node that the test makes misbehave through its handlers or raw streams."""
    async with Node(NodeConfig(label="X", **overrides)) as node:  # type: ignore[arg-type]
        yield node


def new_key() -> Ed25519PrivateKey:
    """Return a fresh identity key."""
    return Ed25519PrivateKey.generate()


def peer_of(key: Ed25519PrivateKey) -> PeerId:
    """Return the peer id of ``key``."""
    return PeerId.from_public_key(key.public_key)


MSS_HEADER = encode_message(MSS)


async def drain_until_reset(stream: trio.abc.ReceiveStream) -> None:
    """Read until the stream fails; a clean EOF is a test failure."""
    while await stream.receive_some(65536):
        pass
    raise AssertionError("the stream ended cleanly instead of being reset")


@contextlib.asynccontextmanager
async def raw_yamux(a: Arena) -> AsyncIterator[tuple[RawYamux, PeerId]]:
    """A hand-written Yamux client on a real Noise channel, proven to work with one ping."""
    key = new_key()
    with trio.fail_after(PROMPT):
        tcp = await tcp_connect(a.node)
        secure = await secure_channel(tcp, key, a.node, muxers=(YAMUX,))
        assert secure.early_muxer == YAMUX
    raw = RawYamux(secure)
    async with trio.open_nursery() as nursery:
        await nursery.start(raw.run)
        with trio.fail_after(PROMPT):
            sid = await raw.open_stream(PING_PROTOCOL)
            payload = os.urandom(PING_SIZE)
            assert await raw.exchange(sid, payload) == payload
        yield raw, peer_of(key)
        nursery.cancel_scope.cancel()
    await tcp.aclose()

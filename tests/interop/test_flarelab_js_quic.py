"""flarelab against real js-libp2p 3.x peers over QUIC (quic-v1, libp2p TLS, native streams).

js-libp2p runs @chainsafe/libp2p-quic (quinn under the hood): both dial directions, with
identify, ping, a 10 MiB perf each way (exact byte counts on both sides) and a 1 MiB echo
of random bytes compared byte for byte; a connection kept across js-libp2p's 10 s
connection-monitor ping; and a dial to the wrong peer id refused by the TLS check.

Real processes and sockets, so trio's real clock: every wait is bounded.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from jspeer import JsPeer, run_js_peer

from flarelab.errors import DialError, PeerIdMismatchError
from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.multiaddr import Multiaddr
from flarelab.node import ConnectionOpened, NetStream, Node, NodeConfig
from flarelab.protocols.perf import PERF_PROTOCOL
from flarelab.tracing import spans
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.provider import TracingConfig

pytestmark = pytest.mark.interop

QUIC_LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"
ECHO_PROTOCOL = "/flarelab/echo/1.0.0"
PERF_BYTES = 10 * 1024 * 1024
ECHO_BYTES = 1024 * 1024 + 17
JS_AGENT = "flarelab-interop/js-quic"
TEST_TIMEOUT = 60.0
JS_MONITOR_WAIT = 16.0  # js-libp2p pings every connection every 10 s and drops it on failure


def quic_addr(js: JsPeer) -> str:
    """The js peer's QUIC listen address (with /p2p/)."""
    addrs = [a for a in js.addrs if "/quic-v1" in a]
    assert addrs, js.describe("the js peer does not listen on QUIC")
    return addrs[0]


async def serve_echo(stream: NetStream) -> None:
    while data := await stream.receive_some(65536):
        await stream.send_all(data)
    await stream.send_eof()


@asynccontextmanager
async def quic_node(bus: SpanBus) -> AsyncIterator[Node]:
    config = NodeConfig(listen_addrs=[QUIC_LISTEN], tracing=TracingConfig(bus=bus))
    async with Node(config) as node:
        node.set_handler(ECHO_PROTOCOL, serve_echo)
        yield node


def assert_no_errors(js: JsPeer, bus: SpanBus) -> None:
    assert not js.events_named("error"), js.describe("js-libp2p reported errors")
    bad = [
        f"{r.name}: {r.description}" for r in bus.history() if r.ended and r.status == "error"
    ]
    assert not bad, "flarelab spans marked error:\n" + "\n".join(bad)


async def echo_through(node: Node, peer: PeerId, payload: bytes) -> bytes:
    stream = await node.new_stream(peer, ECHO_PROTOCOL)
    received = bytearray()

    async def send() -> None:
        for start in range(0, len(payload), 100_000):
            await stream.send_all(payload[start : start + 100_000])
        await stream.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while data := await stream.receive_some(1 << 20):
            received += data
    await stream.aclose()
    return bytes(received)


async def test_flarelab_dials_js_over_quic() -> None:
    bus = SpanBus()
    async with quic_node(bus) as node, run_js_peer("--quic", "--agent", JS_AGENT) as js:
        js_peer = PeerId.from_string(js.peer_id)
        with trio.fail_after(TEST_TIMEOUT):
            conn = await node.connect(quic_addr(js))
            assert (conn.remote_peer, conn.transport, conn.security) == (
                js_peer, "quic", "/tls/1.0.0"
            )
            assert str(conn.remote_addr) == quic_addr(js).split("/p2p/")[0]
            opened = await js.next_event("connection:open")
            assert opened["peerId"] == str(node.peer_id)
            assert opened["direction"] == "inbound"
            assert opened["remoteAddr"].split("/p2p/")[0].endswith("/quic-v1")

            info = await node.identify_peer(js_peer)
            assert info.agent_version == JS_AGENT
            assert {PERF_PROTOCOL, ECHO_PROTOCOL} <= set(info.protocols)
            assert quic_addr(js).split("/p2p/")[0] in [str(a) for a in info.listen_addrs]
            # js saw us at our listen socket: the dial left from it (hole punching needs that)
            assert info.observed_addr == conn.local_addr.with_peer_id(node.peer_id)
            assert conn.local_addr == node.listen_addrs()[0]
            ident = await js.next_event("peer:identify", where=lambda e: not e["push"])
            assert str(node.addrs[0].without_peer_id()) in ident["listenAddrs"]

            rtts = await node.ping(js_peer, 5)
            assert len(rtts) == 5 and all(0 < rtt < 1000 for rtt in rtts)

            result = await node.perf(js_peer, upload=PERF_BYTES, download=PERF_BYTES)
            assert (result.upload_bytes, result.download_bytes) == (PERF_BYTES, PERF_BYTES)
            served = await js.next_event("perf:served")
            assert served["uploadBytes"] == served["downloadBytes"] == PERF_BYTES

            payload = random.Random("quic echo").randbytes(ECHO_BYTES)
            echoed = await echo_through(node, js_peer, payload)
            assert len(echoed) == ECHO_BYTES and echoed == payload
            served = await js.next_event("echo:served")
            assert served["bytes"] == ECHO_BYTES

            assert node.connections(js_peer) == [conn]
            assert_no_errors(js, bus)
            datagram = conn.muxer.core.datagram_size  # type: ignore[attr-defined]
            assert 1200 <= datagram <= 1472  # quinn announces max_udp_payload_size 1472


async def test_js_dials_flarelab_over_quic() -> None:
    bus = SpanBus()
    async with quic_node(bus) as node:
        with node.events.subscribe(ConnectionOpened) as opened:
            args = (
                f"--agent {JS_AGENT} --dial {node.addrs[0]} --identify --ping 3"
                f" --echo {ECHO_BYTES} --perf-upload {PERF_BYTES} --perf-download {PERF_BYTES}"
            )
            async with run_js_peer(*args.split()) as js:
                js_peer = PeerId.from_string(js.peer_id)
                with trio.fail_after(TEST_TIMEOUT):
                    done = await js.next_event("done", timeout=TEST_TIMEOUT)
                    assert done["ok"], js.describe("an action against flarelab failed")
                    conn = (await opened.next(ConnectionOpened)).connection
                    assert (conn.remote_peer, conn.direction, conn.transport) == (
                        js_peer, "inbound", "quic"
                    )
                    dialled = js.events_named("connection:open")
                    assert len(dialled) == 1 and dialled[0]["direction"] == "outbound"
                    assert dialled[0]["remoteAddr"] == str(node.addrs[0])
                    ident = js.events_named("peer:identify")
                    assert ident and ident[0]["peerId"] == str(node.peer_id)
                    assert [p["seq"] for p in js.events_named("ping")] == [1, 2, 3]
                    echo = js.events_named("echo")
                    assert echo[0]["ok"] and echo[0]["bytes"] == ECHO_BYTES
                    perf = js.events_named("perf")
                    assert perf[0]["ok"]
                    assert perf[0]["uploadBytes"] == perf[0]["downloadBytes"] == PERF_BYTES
                    ours = [
                        r for r in bus.history()
                        if r.ended and r.name == spans.PERF
                        and r.attributes.get(spans.LIBP2P_ROLE) == "responder"
                    ]
                    assert ours[-1].attributes[spans.LIBP2P_BYTES_RECEIVED] == PERF_BYTES
                    assert ours[-1].attributes[spans.LIBP2P_BYTES_SENT] == PERF_BYTES
                    # and we can use the connection js opened
                    assert len(await node.ping(js_peer, 2)) == 2
                    assert_no_errors(js, bus)


async def test_quic_connection_survives_the_js_connection_monitor() -> None:
    bus = SpanBus()
    async with quic_node(bus) as node, run_js_peer("--quic") as js:
        js_peer = PeerId.from_string(js.peer_id)
        with trio.fail_after(TEST_TIMEOUT):
            conn = await node.connect(quic_addr(js))
            await trio.sleep(JS_MONITOR_WAIT)  # real time: js-libp2p's monitor must ping us
            assert not conn.is_closed
            assert not js.events_named("connection:close"), js.describe("js dropped us")
            assert len(await node.ping(js_peer, 1)) == 1
            assert_no_errors(js, bus)


async def test_wrong_peer_id_is_refused_by_tls() -> None:
    bus = SpanBus()
    async with quic_node(bus) as node, run_js_peer("--quic") as js:
        wrong = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
        addr = Multiaddr(quic_addr(js)).without_peer_id().with_peer_id(wrong)
        with trio.fail_after(TEST_TIMEOUT), pytest.raises(DialError) as info:
            await node.connect(addr)
        mismatch = info.value.__cause__
        assert isinstance(mismatch, PeerIdMismatchError)
        assert (mismatch.expected, str(mismatch.actual)) == (wrong, js.peer_id)
        # the real peer id still connects
        conn = await node.connect(quic_addr(js))
        assert conn.remote_peer == PeerId.from_string(js.peer_id)

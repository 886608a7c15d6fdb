"""flarelab against real js-libp2p 3.x peers: TCP + Noise + Yamux/Mplex, both dial directions.

Each test runs a flarelab :class:`~flarelab.node.Node` and one or more js-libp2p peers
(``interop/js/peer.mjs`` through ``jspeer.py``) on loopback: dial, identify (every field,
both ways), ping, perf (10 MiB each way), a byte-exact 1 MiB echo, identify push both
ways, and a connection kept up across js-libp2p's 10 s connection-monitor ping.

Real processes and sockets, so trio's real clock: every wait is bounded (``fail_after``
or a ``next_event`` timeout) and nothing sleeps. The address each side reports having seen
the other at is checked against the kernel's own table of TCP connections.

Two tests guard fixes made for js-libp2p's sake: a js-libp2p dialer that lacks our first
muxer must still connect (our Noise responder offers its whole muxer list), and a FIN sent
right behind a lazily negotiated stream's data must not reach js-libp2p before the
multistream answer (it would lose the data and the end of the stream).
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from jspeer import JsPeer, run_js_peer

from flarelab.identity import PeerId
from flarelab.node import (
    Connection,
    ConnectionClosed,
    ConnectionOpened,
    NetStream,
    Node,
    NodeConfig,
    PeerIdentified,
)
from flarelab.protocols.identify import IdentifyInfo
from flarelab.protocols.perf import PERF_PROTOCOL
from flarelab.protocols.ping import PING_PROTOCOL
from flarelab.tracing import spans
from flarelab.tracing.bus import SpanBus
from flarelab.tracing.provider import TracingConfig
from flarelab.tracing.records import SpanRecord

pytestmark = pytest.mark.interop

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
ECHO_PROTOCOL = "/flarelab/echo/1.0.0"
YAMUX, MPLEX = "/yamux/1.0.0", "/mplex/6.7.0"
MUXER_IDS = {"yamux": YAMUX, "mplex": MPLEX}
#: what every peer.mjs peer serves (see interop/js/README.md)
JS_PROTOCOLS = {
    "/ipfs/id/1.0.0",
    "/ipfs/id/push/1.0.0",
    "/ipfs/ping/1.0.0",
    PERF_PROTOCOL,
    ECHO_PROTOCOL,
}
OUR_AGENT = "flarelab-interop/py"
JS_AGENT = "flarelab-interop/js"
PROTOCOL_VERSION = "ipfs/0.1.0"  # js-libp2p's default, and ours
PERF_BYTES = 10 * 1024 * 1024
ECHO_BYTES = 1024 * 1024 + 17  # not a multiple of any frame, window or block size
TEST_TIMEOUT = 40.0
#: js-libp2p's connection monitor pings every connection every 10 s from node start
JS_MONITOR_WAIT = 16.0


# ---------------------------------------------------------------------------- helpers


def without_p2p(addr: str) -> str:
    """Drop the trailing /p2p/<id> of a multiaddr string."""
    return addr.split("/p2p/")[0]


def _proc_endpoint(text: str) -> str:
    ip_hex, port_hex = text.split(":")
    ip = socket.inet_ntoa(struct.pack("<I", int(ip_hex, 16)))  # /proc/net/tcp is host order
    return f"/ip4/{ip}/tcp/{int(port_hex, 16)}"


def kernel_tcp_connections() -> set[tuple[str, str]]:
    """Return the kernel's established IPv4 TCP connections as (local, remote) multiaddrs."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01":  # TCP_ESTABLISHED
            out.add((_proc_endpoint(fields[1]), _proc_endpoint(fields[2])))
    return out


def assert_real_socket(conn: Connection) -> None:
    """Check ``conn``'s addresses are those of a TCP connection the kernel has, both ends."""
    local, remote = str(conn.local_addr), str(conn.remote_addr)
    table = kernel_tcp_connections()
    assert (local, remote) in table, f"{conn}: ({local}, {remote}) is not a kernel connection"
    assert (remote, local) in table, f"{conn}: the far end ({remote}, {local}) is missing"


async def serve_echo(stream: NetStream) -> None:
    """Echo every byte until the remote closes its write side, then close ours."""
    while data := await stream.receive_some(65536):
        await stream.send_all(data)
    await stream.send_eof()


async def echo_through(node: Node, peer: PeerId, payload: bytes) -> bytes:
    """Send ``payload`` on the echo protocol while reading the answer; return what came back."""
    stream = await node.new_stream(peer, ECHO_PROTOCOL)
    received = bytearray()

    async def send() -> None:
        view = memoryview(payload)
        for start in range(0, len(view), 100_000):
            await stream.send_all(view[start : start + 100_000])
        await stream.send_eof()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while data := await stream.receive_some(1 << 20):
                received += data
                assert len(received) <= len(payload), "echo sent back more than it was sent"
    finally:
        await stream.aclose()
    return bytes(received)


@asynccontextmanager
async def flarelab_node(bus: SpanBus | None = None, **overrides: Any) -> AsyncIterator[Node]:
    """Run a flarelab node on 127.0.0.1 that also serves the echo protocol."""
    config = NodeConfig(
        listen_addrs=[LOOPBACK],
        agent_version=OUR_AGENT,
        tracing=TracingConfig(bus=bus) if bus is not None else None,
        **overrides,
    )
    async with Node(config) as node:
        node.set_handler(ECHO_PROTOCOL, serve_echo)
        yield node


def error_spans(bus: SpanBus) -> list[SpanRecord]:
    """Return the ended spans marked error."""
    return [r for r in bus.history() if r.ended and r.status == "error"]


def assert_healthy(js: JsPeer, bus: SpanBus) -> None:
    """Check neither side recorded an error: no JS ``error`` event, no error span of ours."""
    assert not js.events_named("error"), js.describe("js-libp2p reported errors")
    bad = [f"{r.name}: {r.description} {dict(r.attributes)}" for r in error_spans(bus)]
    assert not bad, "flarelab spans marked error:\n" + "\n".join(bad)
    assert not js.events_named("connection:close"), js.describe("a connection closed")


def check_js_identify(
    info: IdentifyInfo, js: JsPeer, conn: Connection, *, node: Node, push: bool = False
) -> None:
    """Check what js-libp2p told us in identify (or a push) against what it really is."""
    js_peer = PeerId.from_string(js.peer_id)
    js_listen = [without_p2p(a) for a in js.addrs]
    assert info.skipped == (), f"fields js sent that we dropped: {info.skipped}"
    assert set(info.protocols) >= JS_PROTOCOLS
    assert [str(a) for a in info.listen_addrs] == js_listen
    assert info.agent_version == JS_AGENT
    assert info.protocol_version == PROTOCOL_VERSION
    # the signed peer record: PeerRecord.open checked the envelope signature, domain and
    # payload type, decode_identify that it is js's own; it certifies the listen addrs
    record = info.signed_record
    assert record is not None, "no (valid) signed peer record"
    assert record.peer_id == js_peer
    assert [str(a) for a in record.addrs] == js_listen
    assert record.seq > 0
    if push:
        # js-libp2p leaves the key and the observed address out of a push
        assert info.public_key is None
        assert info.observed_addr is None
        return
    assert info.public_key is not None and js_peer.matches(info.public_key)
    # js saw us at the far end of its socket, and sends it with our /p2p/ id
    assert info.observed_addr == conn.local_addr.with_peer_id(node.peer_id)


def check_our_identify(event: dict[str, Any], node: Node, conn: Connection) -> None:
    """Check what js-libp2p learned from our identify (its ``peer:identify`` event)."""
    ours = [str(a) for a in node.listen_addrs()]
    assert event["peerId"] == str(node.peer_id)
    assert event["push"] is False
    assert sorted(event["protocols"]) == node.protocols()
    assert event["listenAddrs"] == ours
    assert event["agentVersion"] == OUR_AGENT
    assert event["protocolVersion"] == PROTOCOL_VERSION
    record = event["signedPeerRecord"]
    assert record["present"] and record["verified"], "js did not take our signed peer record"
    assert record["addrs"] == ours
    assert isinstance(record["seq"], int) and record["seq"] > 0
    # we told js the address we see it at: the far end of our socket
    assert event["observedAddr"] == str(conn.remote_addr)
    assert bytes.fromhex(event["observedAddrHex"]) == conn.remote_addr.to_bytes()
    assert without_p2p(event["remoteAddr"]) == str(conn.local_addr)


async def check_clean_close(node: Node, js: JsPeer, conn: Connection, bus: SpanBus) -> None:
    """Stop the js peer; our connection must close without any error on our side."""
    with node.events.subscribe(ConnectionClosed) as closed:
        assert await js.stop() == 0, js.describe("js did not stop cleanly")
        event = await closed.next(ConnectionClosed)
    assert event.connection is conn
    assert not node.connections()
    bad = [f"{r.name}: {r.description}" for r in error_spans(bus)]
    assert not bad, f"closing ({event.reason}) marked spans error: {bad}"


def perf_server_spans(bus: SpanBus) -> list[SpanRecord]:
    """Return the ended perf spans of our perf server."""
    return [
        r
        for r in bus.history()
        if r.ended and r.name == spans.PERF and r.attributes.get(spans.LIBP2P_ROLE) == "responder"
    ]


# ---------------------------------------------------------------------------- dial directions


@pytest.mark.parametrize("muxer", ["yamux", "mplex"])
async def test_flarelab_dials_js(muxer: str) -> None:
    """Dial a js-libp2p listener; identify, ping, perf and echo over the one connection.

    Over mplex js-libp2p takes at most 5 new inbound streams a second: we open identify,
    ping, perf and echo, one each.
    """
    bus = SpanBus()
    async with (
        flarelab_node(bus) as node,
        run_js_peer("--muxer", muxer, "--agent", JS_AGENT) as js,
    ):
        js_peer = PeerId.from_string(js.peer_id)
        with trio.fail_after(TEST_TIMEOUT):
            conn = await node.connect(js.addr)
            assert (conn.remote_peer, conn.direction) == (js_peer, "outbound")
            assert (conn.security, conn.muxer_protocol) == ("/noise", MUXER_IDS[muxer])
            assert str(conn.remote_addr) == without_p2p(js.addr)
            assert_real_socket(conn)
            opened = await js.next_event("connection:open")
            assert opened["peerId"] == str(node.peer_id)
            assert (opened["direction"], opened["muxer"]) == ("inbound", MUXER_IDS[muxer])
            assert opened["remoteAddr"] == str(conn.local_addr.with_peer_id(node.peer_id))

            info = await node.identify_peer(js_peer)
            check_js_identify(info, js, conn, node=node)
            stored = node.peerstore.get(js_peer)
            assert stored is not None
            assert stored.peer_record == info.signed_record
            assert stored.protocols >= JS_PROTOCOLS
            assert stored.agent_version == JS_AGENT
            check_our_identify(
                await js.next_event("peer:identify", where=lambda e: not e["push"]), node, conn
            )

            rtts = await node.ping(js_peer, 5)
            assert len(rtts) == 5 and all(0 < rtt < 1000 for rtt in rtts)

            result = await node.perf(js_peer, upload=PERF_BYTES, download=PERF_BYTES)
            assert (result.upload_bytes, result.download_bytes) == (PERF_BYTES, PERF_BYTES)
            served = await js.next_event("perf:served")
            assert served["peerId"] == str(node.peer_id)
            assert served["uploadBytes"] == served["downloadBytes"] == PERF_BYTES

            payload = random.Random(f"echo {muxer}").randbytes(ECHO_BYTES)
            echoed = await echo_through(node, js_peer, payload)
            assert len(echoed) == ECHO_BYTES
            assert echoed == payload, "the echo came back with different bytes"
            served = await js.next_event("echo:served")
            assert (served["peerId"], served["bytes"]) == (str(node.peer_id), ECHO_BYTES)

            assert node.connections(js_peer) == [conn]
            assert_healthy(js, bus)
            await check_clean_close(node, js, conn, bus)


# a flarelab responder offers only its first muxer in the Noise handshake (see
# test_js_mplex_dialer_reaches_a_default_flarelab_node), so the mplex node prefers mplex
@pytest.mark.parametrize(("muxer", "our_muxers"), [("yamux", (YAMUX, MPLEX)), ("mplex", (MPLEX,))])
async def test_js_dials_flarelab(muxer: str, our_muxers: tuple[str, ...]) -> None:
    """A js-libp2p peer dials us and runs identify, ping, echo and perf; then we ping it."""
    bus = SpanBus()
    async with flarelab_node(bus, muxers=our_muxers) as node:
        with node.events.subscribe(ConnectionOpened) as opened:
            args = (
                f"--muxer {muxer} --agent {JS_AGENT} --dial {node.addrs[0]} --identify --ping 3"
                f" --echo {ECHO_BYTES} --perf-upload {PERF_BYTES} --perf-download {PERF_BYTES}"
            )
            async with run_js_peer(*args.split()) as js:
                js_peer = PeerId.from_string(js.peer_id)
                with trio.fail_after(TEST_TIMEOUT):
                    done = await js.next_event("done", timeout=TEST_TIMEOUT)
                    assert done["ok"], js.describe("an action against flarelab failed")
                    conn = (await opened.next(ConnectionOpened)).connection
                    assert (conn.remote_peer, conn.direction) == (js_peer, "inbound")
                    assert conn.muxer_protocol == MUXER_IDS[muxer]
                    assert_real_socket(conn)
                    dialled = js.events_named("connection:open")
                    assert len(dialled) == 1, js.describe("expected one connection")
                    assert dialled[0]["direction"] == "outbound"
                    assert dialled[0]["muxer"] == MUXER_IDS[muxer]
                    assert dialled[0]["remoteAddr"] == str(node.addrs[0])

                    # identify both ways: js asked us (--identify waited for it), we asked js
                    check_our_identify(
                        await js.next_event("peer:identify", where=lambda e: not e["push"]),
                        node,
                        conn,
                    )
                    info = await node.identify.wait_identified(conn)  # type: ignore[union-attr]
                    check_js_identify(info, js, conn, node=node)

                    pings = js.events_named("ping")
                    assert [p["seq"] for p in pings] == [1, 2, 3]
                    assert all(isinstance(p["rtt"], int) and 0 <= p["rtt"] < 1000 for p in pings)

                    echo = js.events_named("echo")
                    assert len(echo) == 1, js.describe("expected one echo")
                    # js compares byte for byte what our echo handler sent back
                    assert (echo[0]["ok"], echo[0]["bytes"]) == (True, ECHO_BYTES)

                    perf = js.events_named("perf")
                    assert len(perf) == 1, js.describe("expected one perf")
                    assert perf[0]["ok"]
                    assert perf[0]["uploadBytes"] == perf[0]["downloadBytes"] == PERF_BYTES
                    (served,) = perf_server_spans(bus)
                    assert served.attributes[spans.LIBP2P_BYTES_RECEIVED] == PERF_BYTES
                    assert served.attributes[spans.LIBP2P_BYTES_SENT] == PERF_BYTES

                    # and we ping js over the connection it opened
                    rtts = await node.ping(js_peer, 3)
                    assert len(rtts) == 3 and all(0 < rtt < 1000 for rtt in rtts)
                    assert node.connections(js_peer) == [conn]
                    assert_healthy(js, bus)
                    await check_clean_close(node, js, conn, bus)


async def test_js_mplex_dialer_reaches_a_default_flarelab_node() -> None:
    """A js-libp2p peer that speaks only mplex connects to a node with the default muxers.

    Our defaults are yamux then mplex, so mplex is common ground; the spec has the
    responder list the muxers it supports and fail only when the lists share none.
    """
    async with flarelab_node() as node:
        args = f"--muxer mplex --dial {node.addrs[0]} --identify --ping 1"
        async with run_js_peer(*args.split()) as js:
            done = await js.next_event("done", timeout=TEST_TIMEOUT)
            assert done["ok"], js.describe("js could not talk to a default flarelab node")
            (opened,) = js.events_named("connection:open")
            assert opened["muxer"] == MPLEX
            assert [c.muxer_protocol for c in node.connections()] == [MPLEX]


async def test_reversed_muxer_preference_both_directions() -> None:
    """js-libp2p preferring mplex and flarelab preferring yamux agree on one muxer both ways.

    js-libp2p's Noise initiator takes the first muxer of the *responder's* list, against
    the spec (see interop/js/README.md), so a responder that offered both muxers and
    picked by the spec's rule would run mplex while js runs yamux. Whoever dials, both
    ends must run the same muxer: ours (yamux), and the connection must carry pings.
    """
    async with (
        flarelab_node() as node,
        run_js_peer("--muxer", "mplex,yamux") as listener,
        run_js_peer(
            "--muxer", "mplex,yamux", "--dial", str(node.addrs[0]), "--ping", "2"
        ) as dialer,
    ):
        with trio.fail_after(TEST_TIMEOUT):
            conn = await node.connect(listener.addr)
            assert conn.muxer_protocol == YAMUX
            assert len(await node.ping(conn.remote_peer, 2)) == 2
            assert (await listener.next_event("connection:open"))["muxer"] == YAMUX
            done = await dialer.next_event("done", timeout=TEST_TIMEOUT)
            assert done["ok"], dialer.describe("js could not ping us")
            assert (await dialer.next_event("connection:open"))["muxer"] == YAMUX
            inbound = node.connections(PeerId.from_string(dialer.peer_id))
            assert [c.muxer_protocol for c in inbound] == [YAMUX]


async def test_half_close_right_after_a_lazy_open() -> None:
    """Small exchanges that half-close at once, on protocols identify told us js speaks.

    After identify, ``node.new_stream`` skips the multistream round trip (go-libp2p's
    lazy client), so header, protocol, data and FIN can all reach js-libp2p together.
    Each exchange must still work: an echo, a small perf, a ping whose stream ends.
    """
    async with flarelab_node() as node, run_js_peer("--agent", JS_AGENT) as js:
        js_peer = PeerId.from_string(js.peer_id)
        with trio.fail_after(TEST_TIMEOUT):
            await node.connect(js.addr)
            await node.identify_peer(js_peer)
        with trio.fail_after(5):
            assert await echo_through(node, js_peer, b"hello, js") == b"hello, js"
            result = await node.perf(js_peer, upload=1000, download=2000)
            assert (result.upload_bytes, result.download_bytes) == (1000, 2000)
            # @libp2p/ping's own handler: it echoes, and ends its side after our EOF
            stream = await node.new_stream(js_peer, PING_PROTOCOL)
            payload = bytes(range(32))
            await stream.send_all(payload)
            await stream.send_eof()
            echoed = b""
            while data := await stream.receive_some(64):
                echoed += data
            assert echoed == payload


# ---------------------------------------------------------------------------- identify push


async def test_js_identify_push_is_applied() -> None:
    """js-libp2p pushes on command; we take the new signed record and keep the rest."""
    bus = SpanBus()
    async with flarelab_node(bus) as node, run_js_peer("--agent", JS_AGENT) as js:
        js_peer = PeerId.from_string(js.peer_id)
        with trio.fail_after(TEST_TIMEOUT):
            conn = await node.connect(js.addr)
            first = await node.identify_peer(js_peer)
            await js.next_event("peer:identify", where=lambda e: not e["push"])
            assert first.signed_record is not None
            with node.events.subscribe(PeerIdentified) as events:
                await js.send_command({"cmd": "push"})
                sent = await js.next_event("identify-push:sent")
                assert sent["connections"] == 1
                event = await events.next(
                    PeerIdentified,
                    predicate=lambda e: (
                        e.push
                        and e.info.signed_record is not None
                        and e.info.signed_record.seq >= sent["seqAtLeast"]
                    ),
                )
            assert event.peer == js_peer
            check_js_identify(event.info, js, conn, node=node, push=True)
            assert event.info.signed_record.seq > first.signed_record.seq
            stored = node.peerstore.get(js_peer)
            assert stored is not None
            assert stored.peer_record == event.info.signed_record  # the newer record won
            assert stored.protocols >= JS_PROTOCOLS
            assert stored.public_key is not None and js_peer.matches(stored.public_key)
            assert [str(a) for a in node.peerstore.addrs(js_peer, trio.current_time())] == [
                without_p2p(a) for a in js.addrs
            ]
            assert node.connections(js_peer) == [conn]
            assert_healthy(js, bus)


async def test_flarelab_identify_push_reaches_js() -> None:
    """A protocol we start (then stop) serving reaches js-libp2p in an identify push."""
    extra = "/flarelab/extra/1.0.0"
    bus = SpanBus()
    async with flarelab_node(bus) as node, run_js_peer("--agent", JS_AGENT) as js:
        js_peer = PeerId.from_string(js.peer_id)
        with trio.fail_after(TEST_TIMEOUT):
            await node.connect(js.addr)
            await node.identify_peer(js_peer)  # we must know js takes pushes
            before = await js.next_event("peer:identify", where=lambda e: not e["push"])
            assert extra not in before["protocols"]

            node.set_handler(extra, serve_echo)
            added = await js.next_event(
                "peer:identify", where=lambda e: e["push"] and extra in e["protocols"]
            )
            assert added["peerId"] == str(node.peer_id)
            assert sorted(added["protocols"]) == node.protocols()
            assert added["listenAddrs"] == [str(a) for a in node.listen_addrs()]
            assert added["agentVersion"] == OUR_AGENT
            assert added["signedPeerRecord"]["verified"]

            node.remove_handler(extra)
            removed = await js.next_event(
                "peer:identify", where=lambda e: e["push"] and extra not in e["protocols"]
            )
            assert sorted(removed["protocols"]) == node.protocols()

            # a new listen address: pushed with a newer signed record, which js keeps
            (new_addr,) = await node.listen(LOOPBACK)
            moved = await js.next_event(
                "peer:identify", where=lambda e: e["push"] and str(new_addr) in e["listenAddrs"]
            )
            ours = [str(a) for a in node.listen_addrs()]
            assert len(ours) == 2
            assert moved["listenAddrs"] == ours
            assert moved["signedPeerRecord"]["addrs"] == ours
            assert moved["signedPeerRecord"]["seq"] > added["signedPeerRecord"]["seq"]
            assert_healthy(js, bus)


# ---------------------------------------------------------------------------- keepalive


async def test_connections_survive_js_keepalive() -> None:
    """Yamux and mplex connections stay up through js-libp2p's connection-monitor ping.

    js-libp2p pings every connection every 10 s (counted from its start) and aborts the
    connection when that ping fails. Both yamux ends also ping as soon as the connection
    opens (js for keepalive, we to measure the RTT); the next yamux keepalive is 30 s
    away, too long to wait for here. Two nodes, one per muxer, dial one js peer; we wait
    (bounded, no sleep) until our ping handler has answered the monitor's ping on each
    connection, then check both connections are still the same, still open, and carry
    our pings.
    """
    bus = SpanBus()
    async with (
        flarelab_node(bus, label="yamux") as a,
        flarelab_node(bus, label="mplex", muxers=(MPLEX,)) as b,
        run_js_peer("--agent", JS_AGENT) as js,
    ):
        js_peer = PeerId.from_string(js.peer_id)
        monitor_pinged = {"yamux": trio.Event(), "mplex": trio.Event()}

        def on_span(record: SpanRecord) -> None:
            if (
                record.ended
                and record.name == spans.PING
                and record.attributes.get(spans.LIBP2P_ROLE) == "responder"
                and record.attributes.get(spans.LIBP2P_REMOTE_PEER_ID) == js.peer_id
                and isinstance(count := record.attributes.get("ping.count"), int)
                and count >= 1
                and record.node_label in monitor_pinged
            ):
                monitor_pinged[record.node_label].set()

        bus.add_listener(on_span, replay=True)
        conns = {}
        with trio.fail_after(TEST_TIMEOUT):
            for node in (a, b):
                conns[node.label] = await node.connect(js.addr)
                await node.identify_peer(js_peer)
            assert (conns["yamux"].muxer_protocol, conns["mplex"].muxer_protocol) == (YAMUX, MPLEX)
        with trio.fail_after(JS_MONITOR_WAIT):
            for event in monitor_pinged.values():
                await event.wait()
        with trio.fail_after(TEST_TIMEOUT):
            for node in (a, b):
                conn = conns[node.label]
                assert not conn.is_closed
                assert node.connections(js_peer) == [conn]
                assert len(await node.ping(js_peer, 2)) == 2
            assert conns["yamux"].muxer.rtt is not None  # type: ignore[attr-defined]
            assert len(js.events_named("connection:open")) == 2
            assert_healthy(js, bus)

"""Nodes over QUIC on real loopback: everything above the transport works unchanged.

Identify, ping, perf and a byte-exact custom protocol over quic-v1; QUIC preferred over TCP
(or not); a client whose certificate proves nothing is refused and disturbs nobody.
Real sockets, so the real clock: every wait is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import socket
import ssl
from collections.abc import AsyncIterator

import pytest
import trio
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection as AioquicConnection
from aioquic.quic.events import ConnectionTerminated
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flarelab.errors import DialError
from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.multiaddr import Multiaddr
from flarelab.node import Node, NodeConfig
from flarelab.node.connection import NetStream
from flarelab.protocols.perf import PERF_PROTOCOL
from flarelab.protocols.ping import PING_PROTOCOL
from flarelab.transports.quic import QuicTransport, open_udp_socket
from flarelab.transports.quic.core import BAD_CERTIFICATE
from flarelab.transports.quic.tls import ALPN
from flarelab.transports.tcp import TcpTransport

QUIC = "/ip4/127.0.0.1/udp/0/quic-v1"
TCP = "/ip4/127.0.0.1/tcp/0"
HASH_PROTOCOL = "/flarelab/test/sha256/1.0.0"
LIMIT = 30


@contextlib.asynccontextmanager
async def two_nodes(
    listen: tuple[str, ...] = (QUIC,), **overrides: object
) -> AsyncIterator[tuple[Node, Node]]:
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            Node(NodeConfig(listen_addrs=list(listen), label="A", **overrides))  # type: ignore[arg-type]
        )
        b = await stack.enter_async_context(
            Node(NodeConfig(listen_addrs=[QUIC], label="B", **overrides))  # type: ignore[arg-type]
        )
        yield a, b


async def _serve_hash(stream: NetStream) -> None:
    """Read to EOF, answer with the SHA-256 and the length of what arrived."""
    digest = hashlib.sha256()
    total = 0
    while data := await stream.receive_some():
        digest.update(data)
        total += len(data)
    await stream.send_all(digest.digest() + total.to_bytes(8, "big"))
    await stream.send_eof()


async def test_identify_ping_perf_over_quic() -> None:
    async with two_nodes() as (a, b):
        with trio.fail_after(LIMIT):
            conn = await b.connect(a.addrs[0])
            assert conn.transport == "quic"
            assert conn.security == "/tls/1.0.0"
            assert conn.muxer_protocol == "quic-v1"
            assert conn.remote_addr.protocol_names()[-1] == "quic-v1"
            info = await b.identify_peer(a.peer_id)
            assert {PING_PROTOCOL, PERF_PROTOCOL} <= set(info.protocols)
            assert info.observed_addr is not None
            assert info.observed_addr.value_for("udp") == str(b.listen_addrs()[0].value_for("udp"))
            assert a.addrs[0].without_peer_id() in info.listen_addrs
            rtts = await b.ping(a.peer_id, 5)
            assert len(rtts) == 5 and all(r > 0 for r in rtts)
            result = await b.perf(a.peer_id, upload=10 << 20, download=10 << 20)
            assert result.upload_bytes == result.download_bytes == 10 << 20
            # the inbound side sees the same connection
            inbound = a.connections(b.peer_id)
            assert [c.transport for c in inbound] == ["quic"]


async def test_custom_protocol_is_byte_exact_both_ways() -> None:
    async with two_nodes() as (a, b):
        a.set_handler(HASH_PROTOCOL, _serve_hash)
        b.set_handler(HASH_PROTOCOL, _serve_hash)
        with trio.fail_after(LIMIT):
            await b.connect(a.addrs[0])
            for sender, receiver in ((b, a), (a, b)):
                payload = os.urandom(5 * 1024 * 1024 + 11)
                stream = await sender.new_stream(receiver.peer_id, HASH_PROTOCOL)
                await stream.send_all(payload)
                await stream.send_eof()
                reply = b""
                while data := await stream.receive_some():
                    reply += data
                assert reply[:32] == hashlib.sha256(payload).digest()
                assert int.from_bytes(reply[32:], "big") == len(payload)
                await stream.aclose()


@pytest.mark.parametrize(("prefer_quic", "expected"), [(True, "quic"), (False, "tcp")])
async def test_quic_is_preferred_when_a_peer_offers_both(prefer_quic: bool, expected: str) -> None:
    async with two_nodes((TCP, QUIC), prefer_quic=prefer_quic) as (a, b):
        assert {addr.protocol_names()[1] for addr in a.addrs} == {"tcp", "udp"}
        with trio.fail_after(LIMIT):
            conn = await b.connect(a.peer_id, [a.addrs[0], a.addrs[1]])
        assert conn.transport == expected


def test_dialable_orders_quic_first_or_last() -> None:
    peer = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
    addrs = [
        Multiaddr(f"/ip4/127.0.0.1/tcp/1/p2p/{peer}"),
        Multiaddr(f"/ip4/127.0.0.1/udp/2/quic-v1/p2p/{peer}"),
        Multiaddr(f"/ip4/127.0.0.2/tcp/3/p2p/{peer}"),
    ]
    for prefer, first in ((True, "udp"), (False, "tcp")):
        node = Node(NodeConfig(prefer_quic=prefer))
        order = [addr.protocol_names()[1] for addr, _ in node.dialer.dialable(addrs)]
        assert order[0] == first and sorted(order) == ["tcp", "tcp", "udp"]
        assert [t.name for _, t in node.dialer.dialable(addrs)].count("quic") == 1


def test_quic_can_be_switched_off() -> None:
    node = Node(NodeConfig(enable_quic=False))
    assert [type(t) for t in node.transports] == [TcpTransport]
    assert any(isinstance(t, QuicTransport) for t in Node(NodeConfig()).transports)


async def test_quic_address_without_quic_is_not_dialable() -> None:
    async with two_nodes() as (a, _), Node(NodeConfig(enable_quic=False)) as c:
        with pytest.raises(DialError, match="no dialable address"), trio.fail_after(LIMIT):
            await c.connect(a.addrs[0])


# ------------------------------------------------------------------ a client that proves nothing


def _plain_client_config() -> QuicConfiguration:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")])
    now = datetime.datetime.now(datetime.UTC)
    config = QuicConfiguration(
        is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE, connection_id_length=8
    )
    config.certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    config.private_key = key
    return config


async def _intrude(addr: tuple[str, int]) -> ConnectionTerminated:
    """Drive a plain aioquic client (no libp2p extension) until the node closes it."""
    sock = await open_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
    core = AioquicConnection(configuration=_plain_client_config())
    core.connect(addr, now=trio.current_time())
    try:
        while True:
            for data, dest in core.datagrams_to_send(trio.current_time()):
                await sock.sendto(data, dest)
            while (event := core.next_event()) is not None:
                if isinstance(event, ConnectionTerminated):
                    return event
            timer = core.get_timer()
            with trio.move_on_at(timer if timer is not None else trio.current_time() + 1):
                data, source = await sock.recvfrom(65535)
                core.receive_datagram(data, source, trio.current_time())
                continue
            core.handle_timer(trio.current_time())
    finally:
        sock.close()


async def test_a_client_without_libp2p_certificate_is_refused() -> None:
    async with two_nodes() as (a, b):
        host, port = a.listen_addrs()[0].host_port()
        with trio.fail_after(LIMIT):
            terminated = await _intrude((host, port))
            assert terminated.error_code == BAD_CERTIFICATE
            assert "no libp2p public key extension" in terminated.reason_phrase
            assert a.connections() == []
            # the node goes on serving real peers
            assert await b.ping(a.addrs[0], 1)

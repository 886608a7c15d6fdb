"""QuicTransport on real loopback UDP sockets (IPv4 and IPv6), real clock, bounded waits.

Addresses and their parsing, byte-exact transfers at the loopback datagram size, dials
that leave from the listen socket, hole-punch datagrams, and the real socket's batches.
"""

from __future__ import annotations

import hashlib
import os
import socket

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from quic_helpers import echo_server, quic_pair, send_and_collect

from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.multiaddr import Multiaddr
from flarelab.transports.quic import (
    LOOPBACK_DATAGRAM_SIZE,
    PATH_DATAGRAM_SIZE,
    QuicConfig,
    QuicTransport,
    UdpSocket,
    open_udp_socket,
    quic_target,
)
from flarelab.transports.quic.endpoint import peek_header

LIMIT = 20  # seconds any one test may take


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# ------------------------------------------------------------------ addresses


@pytest.mark.parametrize(
    ("addr", "target"),
    [
        ("/ip4/127.0.0.1/udp/4001/quic-v1", ("ip4", "127.0.0.1", 4001)),
        ("/ip6/::1/udp/4001/quic-v1", ("ip6", "::1", 4001)),
        ("/dns4/localhost/udp/5/quic-v1", ("dns4", "localhost", 5)),
        (
            "/ip4/1.2.3.4/udp/1/quic-v1/p2p/12D3KooWM6CgA9iBFZmcYAHA6A2qvbAxqfkmrYiRQuz3XEsk4Ksv",
            ("ip4", "1.2.3.4", 1),
        ),
        ("/ip4/127.0.0.1/udp/4001/quic", None),  # draft-29 QUIC: not ours
        ("/ip4/127.0.0.1/tcp/4001", None),
        ("/ip4/127.0.0.1/udp/4001/quic-v1/webtransport", None),
        ("/ip4/127.0.0.1/udp/4001", None),
    ],
)
def test_which_addresses_are_quic(addr: str, target: tuple[str, str, int] | None) -> None:
    assert quic_target(Multiaddr(addr)) == target


def test_can_listen_only_on_ip_addresses_without_peer_id() -> None:
    transport = QuicTransport(Ed25519PrivateKey.generate())
    assert transport.can_listen(Multiaddr("/ip4/0.0.0.0/udp/0/quic-v1"))
    assert transport.can_listen(Multiaddr("/ip6/::/udp/0/quic-v1"))
    assert not transport.can_listen(Multiaddr("/dns4/localhost/udp/0/quic-v1"))
    peer = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
    assert not transport.can_listen(Multiaddr("/ip4/0.0.0.0/udp/0/quic-v1").with_peer_id(peer))
    assert transport.can_dial(Multiaddr("/dns4/localhost/udp/1/quic-v1"))


def test_datagram_size_follows_the_path() -> None:
    assert QuicConfig().datagram_size(loopback=True) == LOOPBACK_DATAGRAM_SIZE
    assert QuicConfig().datagram_size(loopback=False) == PATH_DATAGRAM_SIZE
    assert QuicConfig(max_datagram_size=1200).datagram_size(loopback=True) == 1200
    with pytest.raises(Exception, match="max_datagram_size"):
        QuicConfig(max_datagram_size=70000)


# ------------------------------------------------------------------ real sockets


@pytest.mark.parametrize("family", ["ip4", "ip6"])
async def test_loopback_transfer_is_byte_exact(family: str) -> None:
    if family == "ip6" and not _has_ipv6():
        pytest.skip("no IPv6 loopback")
    listen = "/ip4/127.0.0.1/udp/0/quic-v1" if family == "ip4" else "/ip6/::1/udp/0/quic-v1"
    with trio.fail_after(LIMIT):
        async with quic_pair(None, listen=listen) as pair, trio.open_nursery() as nursery:
            nursery.start_soon(echo_server, pair.server, nursery)
            payload = os.urandom(8 * 1024 * 1024 + 3)
            stream = await pair.client.open_stream()
            echoed = await send_and_collect(stream, payload)
            assert len(echoed) == len(payload)
            assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
            assert pair.client.core.datagram_size == LOOPBACK_DATAGRAM_SIZE
            assert pair.server.core.datagram_size == LOOPBACK_DATAGRAM_SIZE
            nursery.cancel_scope.cancel()


async def test_dial_from_the_listen_socket_over_real_udp() -> None:
    a = QuicTransport(Ed25519PrivateKey.generate())
    with trio.fail_after(LIMIT):
        async with quic_pair(None) as pair, trio.open_nursery() as nursery:
            listener = await nursery.start(
                a.listen, Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1"), _ignore, nursery
            )
            secured = await a.dial(pair.listener.addrs[0])
            inbound = await pair.server_conns.receive()
            assert inbound.remote == listener.endpoint.bound
            assert secured.details["odcid"] == inbound.details()["odcid"]
            await secured.muxer.aclose()
            await listener.aclose()
            nursery.cancel_scope.cancel()


async def _ignore(secured: object) -> None:
    await trio.lowlevel.checkpoint()


async def test_punch_from_the_listen_port_over_real_udp() -> None:
    transport = QuicTransport(Ed25519PrivateKey.generate())
    target = await open_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
    port = target.getsockname()[1]
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            listener = await nursery.start(
                transport.listen, Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1"), _ignore, nursery
            )
            await transport.punch(Multiaddr(f"/ip4/127.0.0.1/udp/{port}/quic-v1"), b"punch!")
            data, source = await target.recvfrom(2048)
            assert data == b"punch!"
            assert source[1] == listener.endpoint.bound[1]
            nursery.cancel_scope.cancel()
    target.close()


async def test_real_socket_batches() -> None:
    a = await open_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
    b = await open_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
    assert isinstance(a, UdpSocket) and isinstance(b, UdpSocket)
    to_b = b.getsockname()
    with trio.fail_after(LIMIT):
        await a.send_batch([(bytes([i]) * 100, to_b) for i in range(10)])
        got: list[bytes] = []
        while len(got) < 10:
            got += [data for data, _ in await b.receive_batch(64)]
        assert got == [bytes([i]) * 100 for i in range(10)]
        # an ICMP port-unreachable for an earlier send must not break the socket
        closed = await open_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
        gone = closed.getsockname()
        closed.close()
        await a.send_batch([(b"x", gone)])
        await a.sendto(b"y", gone)
        await b.sendto(b"still fine", a.getsockname())
        assert [d for d, _ in await a.receive_batch(8)] == [b"still fine"]
    a.close()
    b.close()


async def test_garbage_over_real_udp_is_dropped() -> None:
    with trio.fail_after(LIMIT):
        async with quic_pair(None) as pair:
            junk = await open_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
            endpoint = pair.listener.endpoint
            for size in (0, 1, 5, 40, 1200, 1500):
                await junk.sendto(os.urandom(size), endpoint.bound)
            stream = await pair.client.open_stream()
            await stream.send_all(b"alive")
            theirs = await pair.server.accept_stream()
            assert await theirs.receive_some() == b"alive"
            assert endpoint.dropped_malformed + endpoint.dropped_unknown >= 1
            junk.close()


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80", b"\xc0\x00\x00\x00\x01\x15" + b"x" * 30, b"\x00" * 9, b"\x40short"],
)
def test_peek_header_refuses_malformed_headers(data: bytes) -> None:
    assert peek_header(data) is None


@given(st.binary(max_size=120))
def test_peek_header_never_raises(data: bytes) -> None:
    header = peek_header(data)
    if header is not None:
        assert header.destination_cid == (
            data[6 : 6 + data[5]] if header.is_long else data[1:9]
        )


@given(
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=20),
    st.binary(max_size=20),
    st.integers(0, 3),
    st.binary(max_size=40),
)
def test_peek_header_reads_long_headers(
    version: int, dcid: bytes, scid: bytes, kind: int, rest: bytes
) -> None:
    first = 0xC0 | (kind << 4)
    data = bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid
    data += bytes([len(scid)]) + scid + rest
    header = peek_header(data)
    assert header is not None and header.is_long
    assert (header.version, header.destination_cid, header.source_cid) == (version, dcid, scid)
    assert header.is_initial == (version == 1 and kind == 0)
    assert peek_header(data[: 6 + len(dcid)]) is None  # cut before the source id length

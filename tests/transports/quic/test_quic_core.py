"""QuicCore in pairs, no I/O: what flarelab adds to aioquic (pinned 1.7.2).

Mutual authentication with the libp2p certificate, refusals with the TLS alert
bad_certificate, flow control that follows what the application reads, stream limits,
and the peer's max_udp_payload_size. Time is passed in; datagrams move through pump().
"""

from __future__ import annotations

import datetime
import random
import ssl

import pytest
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection as AioquicConnection
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicTransportParameters,
    pull_quic_header,
    pull_quic_transport_parameters,
    push_quic_transport_parameters,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quic_helpers import core_pair, drain, pump

from flarelab.errors import PeerIdMismatchError
from flarelab.identity import Ed25519PrivateKey, PeerId
from flarelab.transports.quic.config import QuicConfig
from flarelab.transports.quic.core import BAD_CERTIFICATE, QuicCore, utc_now
from flarelab.transports.quic.tls import ALPN, CertificateError, generate_credentials

STREAM_LIMIT_ERROR = QuicErrorCode.STREAM_LIMIT_ERROR


def _plain_certificate() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed certificate without the libp2p extension."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not libp2p")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _plain_client(with_certificate: bool) -> AioquicConnection:
    """An aioquic client that speaks ALPN libp2p but not libp2p TLS."""
    config = QuicConfiguration(
        is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE,
        connection_id_length=8,
    )
    if with_certificate:
        config.certificate, config.private_key = _plain_certificate()
    return AioquicConnection(configuration=config)


# ------------------------------------------------------------------ the handshake


def test_handshake_authenticates_both_sides() -> None:
    pair = core_pair()
    client, server = pair.client, pair.server
    assert isinstance(client, QuicCore)
    assert client.handshake_complete and server.handshake_complete
    assert client.remote_peer == PeerId.from_public_key(pair.server_key.public_key)
    assert server.remote_peer == PeerId.from_public_key(pair.client_key.public_key)
    assert server.remote_public_key == pair.client_key.public_key
    # the server really asked for and checked the client's certificate
    assert server.tls._request_client_certificate
    assert server.tls._peer_certificate is not None
    assert client.tls.alpn_negotiated == server.tls.alpn_negotiated == ALPN
    kinds = [type(e) for e in pair.client_events]
    assert events.HandshakeCompleted in kinds
    assert client.auth_error is None and server.auth_error is None


def test_client_offers_two_key_shares_only() -> None:
    pair = core_pair(handshake=False)
    assert len(pair.client.tls._ec_private_keys) == 1  # P-256
    assert pair.client.tls._x25519_private_key is not None
    assert pair.client.tls._x448_private_key is None


def test_client_refuses_the_wrong_server() -> None:
    pair = core_pair(expected_peer=PeerId.from_public_key(Ed25519PrivateKey.generate().public_key))
    client, server = pair.client, pair.server
    assert isinstance(client.auth_error, PeerIdMismatchError)
    assert not client.handshake_complete
    assert not any(isinstance(e, events.HandshakeCompleted) for e in pair.client_events)
    info = client.close_info
    assert info is not None and info.initiator == "local" and info.error_code == BAD_CERTIFICATE
    # the server learns why at once: CONNECTION_CLOSE with the TLS alert
    server_info = server.close_info
    assert server_info is not None and server_info.initiator == "peer"
    assert server_info.error_code == BAD_CERTIFICATE
    assert "libp2p TLS" in server_info.reason


@pytest.mark.parametrize(
    ("with_certificate", "reason"),
    [(False, "no certificate"), (True, "no libp2p public key extension")],
)
def test_server_refuses_a_client_without_libp2p_certificate(
    with_certificate: bool, reason: str
) -> None:
    pair = core_pair(client=_plain_client(with_certificate), expected_peer=None)
    server = pair.server
    assert isinstance(server.auth_error, CertificateError)
    assert reason in str(server.auth_error)
    assert not any(isinstance(e, events.HandshakeCompleted) for e in pair.server_events)
    info = pair.client._close_event
    assert info is not None and info.error_code == BAD_CERTIFICATE


def test_client_refuses_a_server_without_libp2p_certificate() -> None:
    key = Ed25519PrivateKey.generate()
    client = QuicCore(
        credentials=generate_credentials(key, now=utc_now()),
        config=QuicConfig(),
        is_client=True,
        datagram_size=1452,
    )
    client.connect(("10.0.0.2", 4002), now=0.0)
    config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN], connection_id_length=8)
    config.certificate, config.private_key = _plain_certificate()
    first = client.datagrams_to_send(0.0)
    header = pull_quic_header(Buffer(data=first[0][0]), 8)
    server = AioquicConnection(
        configuration=config, original_destination_connection_id=header.destination_cid
    )
    for data, _ in first:
        server.receive_datagram(data, ("10.0.0.1", 4001), 0.0)
    pump(client, server)
    assert isinstance(client.auth_error, CertificateError)
    assert server._close_event is not None
    assert server._close_event.error_code == BAD_CERTIFICATE


# ------------------------------------------------------------------ flow control


def test_receive_window_follows_what_the_application_reads() -> None:
    window = 256 * 1024
    config = QuicConfig(stream_receive_window=window, connection_receive_window=4 * window)
    pair = core_pair(client_config=config, server_config=config)
    client, server = pair.client, pair.server
    assert isinstance(server, QuicCore)
    sid = client.get_next_available_stream_id()
    payload = bytes(range(256)) * (4 * 1024 * 4)  # 4 MiB
    client.send_stream_data(sid, payload, end_stream=True)
    now = pair.run(1.0)
    # nobody read: the peer may not send more than one window
    assert len(pair.server_data(sid)) == window
    read = 0
    while read < len(payload):
        delivered = len(pair.server_data(sid))
        server.release(sid, delivered - read)
        read = delivered
        now = pair.run(now + 0.5, start=now)
        if read < len(payload):
            assert len(pair.server_data(sid)) > read, "reading must let more data in"
            assert len(pair.server_data(sid)) - read <= window
    assert pair.server_data(sid) == payload  # byte-exact, in order


def test_connection_window_bounds_all_streams_together() -> None:
    config = QuicConfig(stream_receive_window=256 * 1024, connection_receive_window=384 * 1024)
    pair = core_pair(client_config=config, server_config=config)
    client = pair.client
    sids = []
    for _ in range(4):
        sid = client.get_next_available_stream_id()
        client.send_stream_data(sid, b"x" * 200_000)
        sids.append(sid)
    pair.run(1.0)
    total = sum(len(pair.server_data(sid)) for sid in sids)
    assert total == 384 * 1024


def test_a_peer_ignoring_our_window_is_closed() -> None:
    config = QuicConfig(stream_receive_window=64 * 1024)
    pair = core_pair(server_config=config)
    client = pair.client
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"")
    client._streams[sid].max_stream_data_remote = 10 << 20  # it pretends we allowed more
    client.send_stream_data(sid, b"y" * (200 * 1024))
    pair.run(1.0)
    info = pair.server.close_info
    assert info is not None and info.error_code == QuicErrorCode.FLOW_CONTROL_ERROR


# ------------------------------------------------------------------ stream limits


def test_stream_limit_blocks_then_refuses_a_peer_that_ignores_it() -> None:
    pair = core_pair(server_config=QuicConfig(max_inbound_streams=3))
    client, server = pair.client, pair.server
    assert isinstance(client, QuicCore)
    for _ in range(3):
        assert client.can_open_stream()
        client.send_stream_data(client.get_next_available_stream_id(), b"hi")
    assert not client.can_open_stream()
    pair.pump(0.1)
    assert server.close_info is None
    # a peer that ignores MAX_STREAMS is closed with STREAM_LIMIT_ERROR
    client._remote_max_streams_bidi = 100
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"one too many")
    pair.pump(0.2)
    info = server.close_info
    assert info is not None and info.error_code == STREAM_LIMIT_ERROR
    assert info.initiator == "local" and info.is_error


def test_finished_streams_let_the_peer_open_more() -> None:
    pair = core_pair(server_config=QuicConfig(max_inbound_streams=2))
    client, server = pair.client, pair.server
    assert isinstance(client, QuicCore) and isinstance(server, QuicCore)
    for _ in range(2):
        sid = client.get_next_available_stream_id()
        client.send_stream_data(sid, b"req", end_stream=True)
    pair.pump(0.1)
    assert not client.can_open_stream()
    for sid in (0, 4):
        server.release(sid, 3)
        server.send_stream_data(sid, b"", end_stream=True)
    for step in range(1, 6):
        pair.pump(0.1 + step * 0.05)
    assert client.can_open_stream()


def test_no_unidirectional_streams() -> None:
    pair = core_pair()
    client, server = pair.client, pair.server
    assert client._remote_max_streams_uni == 0
    client._remote_max_streams_uni = 5
    client.send_stream_data(client.get_next_available_stream_id(is_unidirectional=True), b"u")
    pair.pump(0.1)
    info = server.close_info
    assert info is not None and info.error_code == STREAM_LIMIT_ERROR


# ------------------------------------------------------------------ datagram size


class _SmallPayloadCore(QuicCore):
    """A core that announces max_udp_payload_size 1300, as some peers do."""

    def _serialize_transport_parameters(self) -> bytes:
        params: QuicTransportParameters = pull_quic_transport_parameters(
            Buffer(data=super()._serialize_transport_parameters())
        )
        params.max_udp_payload_size = 1300
        buf = Buffer(capacity=4096)
        push_quic_transport_parameters(buf, params)
        return buf.data


def test_datagrams_respect_the_peers_max_udp_payload_size() -> None:
    pair = core_pair(datagram_size=9000, server_cls=_SmallPayloadCore)
    client, server = pair.client, pair.server
    assert isinstance(client, QuicCore) and isinstance(server, QuicCore)
    # the handshake runs at 1200 bytes; a client switches sizes on HANDSHAKE_DONE
    assert client.datagram_size == 1200
    pair.run(0.1)
    assert client.datagram_size == 1300  # what the server announced, not the path's 9000
    assert server.datagram_size == 9000  # the client announced nothing (no limit)
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"z" * 100_000, end_stream=True)
    sizes = []
    for step in range(1, 30):
        now = step * 0.01
        for data, _ in client.datagrams_to_send(now):
            sizes.append(len(data))
            server.receive_datagram(data, ("10.0.0.1", 4001), now)
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, ("10.0.0.2", 4002), now)
    assert sizes and max(sizes) == 1300
    assert b"".join(
        e.data for e in drain(server) if isinstance(e, events.StreamDataReceived)
    ) == b"z" * 100_000


def test_stats_and_close_info() -> None:
    pair = core_pair()
    client = pair.client
    assert isinstance(client, QuicCore)
    stats = client.stats()
    assert stats.packets_sent > 0 and stats.packets_lost == 0
    assert stats.congestion_window > 0
    client.close(reason_phrase="bye")
    pair.pump(0.01)
    info = client.close_info
    assert info is not None and info.initiator == "local" and not info.is_error
    peer_info = pair.server.close_info
    assert peer_info is not None and peer_info.initiator == "peer" and peer_info.reason == "bye"
    assert "closed by the peer" in peer_info.describe()


# ------------------------------------------------------------------ bad input


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=1500), max_size=8), st.booleans())
def test_garbage_datagrams_never_raise(datagrams: list[bytes], with_cid: bool) -> None:
    pair = core_pair()
    client, server = pair.client, pair.server
    for data in datagrams:
        if with_cid:  # a short header for the server's live connection id
            data = b"\x40" + server.host_cid + data
        server.receive_datagram(data, ("10.0.0.1", 4001), 0.5)
        client.receive_datagram(data, ("10.0.0.2", 4002), 0.5)
    # garbage is dropped: the connection still carries data
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"still here", end_stream=True)
    pair.run(1.0, start=0.5)
    assert server.close_info is None and client.close_info is None
    assert pair.server_data(sid) == b"still here"


def test_truncated_and_corrupted_datagrams_are_dropped() -> None:
    pair = core_pair()
    client, server = pair.client, pair.server
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"payload " * 1000, end_stream=True)
    rng = random.Random(5)
    for step in range(1, 60):
        now = step * 0.01
        for data, _ in client.datagrams_to_send(now):
            cut = data[: rng.randrange(1, len(data))]
            flipped = bytearray(data)
            flipped[rng.randrange(len(data))] ^= 0x10
            server.receive_datagram(cut, ("10.0.0.1", 4001), now)  # truncated: dropped
            server.receive_datagram(bytes(flipped), ("10.0.0.1", 4001), now)  # fails AEAD
            server.receive_datagram(data, ("10.0.0.1", 4001), now)  # the real one
        pair._take_events(server)
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, ("10.0.0.2", 4002), now)
        pair._take_events(client)
    assert server.close_info is None
    assert pair.server_data(sid) == b"payload " * 1000

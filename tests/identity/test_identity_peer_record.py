"""Peer records (RFC 0003): codec, sealing, opening, go interop, the legacy rust form, seq."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference_pb import pb2

from flarelab.errors import LocalProtocolError, RemoteProtocolError
from flarelab.identity import (
    LEGACY_PEER_RECORD_DOMAIN,
    LEGACY_PEER_RECORD_PAYLOAD_TYPE,
    MAX_PEER_RECORD_ADDRS,
    PEER_RECORD_DOMAIN,
    PEER_RECORD_PAYLOAD_TYPE,
    Ed25519PrivateKey,
    Envelope,
    InvalidEnvelopeError,
    InvalidPeerRecordError,
    KeyType,
    PeerId,
    PeerRecord,
    generate_private_key,
    new_seq,
    private_key_from_protobuf,
)
from flarelab.multiaddr import Multiaddr

peer_record_pb2 = pb2("peer_record")

GO = json.loads((Path(__file__).parent / "data" / "go_peer_record.json").read_text())
GO_ENVELOPE = bytes.fromhex(GO["envelope"])
GO_KEY = private_key_from_protobuf(bytes.fromhex(GO["private_key"]))
GO_PEER = PeerId.from_public_key(GO_KEY.public_key)
KEY = Ed25519PrivateKey.from_seed(b"\x05" * 32)
PEER = PeerId.from_public_key(KEY.public_key)
ADDRS = (Multiaddr("/ip4/198.51.100.7/tcp/4001"), Multiaddr("/ip6/2001:db8::1/udp/4001/quic-v1"))
RSA_KEY = generate_private_key(KeyType.RSA)


def raw_record(peer_id: bytes, seq: int, addrs: list[bytes]) -> bytes:
    """Encode a record straight from the protobuf schema, bypassing PeerRecord."""
    msg = peer_record_pb2.PeerRecord(
        peer_id=peer_id,
        seq=seq,
        addresses=[peer_record_pb2.PeerRecord.AddressInfo(multiaddr=a) for a in addrs],
    )
    return msg.SerializeToString()


# ------------------------------------------------------------------ go interop


def test_opens_go_record() -> None:
    record, envelope = PeerRecord.open_with_envelope(GO_ENVELOPE)
    assert record.peer_id == GO_PEER
    assert record.seq == 1598453001624231000
    assert [str(a) for a in record.addrs] == [f"/ip4/1.2.3.4/tcp/{port}" for port in range(10)]
    assert envelope.to_bytes() == GO_ENVELOPE
    assert PeerRecord.open(GO_ENVELOPE) == record
    assert PeerRecord.from_envelope(envelope) == record


def test_seals_exactly_as_go_does() -> None:
    record = PeerRecord.open(GO_ENVELOPE)
    envelope = Envelope.open(GO_ENVELOPE, PEER_RECORD_DOMAIN)
    assert record.to_bytes() == envelope.payload
    assert record.seal(GO_KEY).to_bytes() == GO_ENVELOPE  # Ed25519 signatures are deterministic


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("key_type", list(KeyType))
def test_seal_and_open_every_key_type(key_type: KeyType) -> None:
    key = generate_private_key(key_type) if key_type != KeyType.RSA else RSA_KEY
    peer = PeerId.from_public_key(key.public_key)
    record = PeerRecord(peer, addrs=ADDRS)
    envelope = record.seal(key)
    assert envelope.payload_type == PEER_RECORD_PAYLOAD_TYPE
    assert envelope.verify(PEER_RECORD_DOMAIN)
    assert PeerRecord.open(envelope.to_bytes()) == record


def test_constructor_defaults_and_conversions() -> None:
    before = time.time_ns()
    record = PeerRecord(PEER, addrs=["/ip4/198.51.100.7/tcp/4001", ADDRS[1]])  # type: ignore[arg-type]
    assert record.addrs == ADDRS
    assert isinstance(record.addrs, tuple)
    assert record.seq >= before
    assert PeerRecord(PEER).addrs == ()
    assert PeerRecord(PEER, 0).seq == 0
    assert PeerRecord(PEER, (1 << 64) - 1, ADDRS).to_bytes()
    assert hash(record) == hash(PeerRecord(PEER, record.seq, ADDRS))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"peer_id": str(PEER)},
        {"peer_id": PEER, "seq": -1},
        {"peer_id": PEER, "seq": 1 << 64},
        {"peer_id": PEER, "seq": True},
        {"peer_id": PEER, "seq": 1.5},
        {"peer_id": PEER, "addrs": "/ip4/1.2.3.4/tcp/1"},
        {"peer_id": PEER, "addrs": [1234]},
        {"peer_id": PEER, "addrs": [ADDRS[0]] * (MAX_PEER_RECORD_ADDRS + 1)},
    ],
)
def test_constructor_rejects_misuse(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        PeerRecord(**kwargs)  # type: ignore[arg-type]


def test_seal_with_another_key_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="cannot sign"):
        PeerRecord(PEER, addrs=ADDRS).seal(GO_KEY)


# ------------------------------------------------------------------ verification


def test_record_signed_by_another_peer_is_rejected() -> None:
    # GO_KEY signs a record that claims to be PEER's.
    forged = Envelope.seal(
        GO_KEY, PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, PeerRecord(PEER, 1, ADDRS).to_bytes()
    )
    with pytest.raises(InvalidPeerRecordError, match="is signed by") as info:
        PeerRecord.open(forged.to_bytes())
    assert info.value.peer == GO_PEER
    assert isinstance(info.value, RemoteProtocolError)


@pytest.mark.parametrize(
    ("domain", "payload_type", "match"),
    [
        ("libp2p-relay-rsvp", PEER_RECORD_PAYLOAD_TYPE, "does not verify"),
        (LEGACY_PEER_RECORD_DOMAIN, PEER_RECORD_PAYLOAD_TYPE, "does not verify"),
        (PEER_RECORD_DOMAIN, LEGACY_PEER_RECORD_PAYLOAD_TYPE, "does not verify"),
        (PEER_RECORD_DOMAIN, b"\x03\x02", "not a peer record"),
        (PEER_RECORD_DOMAIN, b"", "not a peer record"),
    ],
)
def test_wrong_domain_or_payload_type(domain: str, payload_type: bytes, match: str) -> None:
    envelope = Envelope.seal(KEY, domain, payload_type, PeerRecord(PEER, 1, ADDRS).to_bytes())
    with pytest.raises(InvalidPeerRecordError, match=match):
        PeerRecord.from_envelope(envelope)
    with pytest.raises(InvalidPeerRecordError, match=match):
        PeerRecord.open(envelope.to_bytes())


def test_opens_the_legacy_rfc_form() -> None:
    # rust-libp2p's identify and rendezvous sign with the pair RFC 0003 names.
    record = PeerRecord(PEER, 7, ADDRS)
    envelope = Envelope.seal(
        KEY, LEGACY_PEER_RECORD_DOMAIN, LEGACY_PEER_RECORD_PAYLOAD_TYPE, record.to_bytes()
    )
    assert PeerRecord.open(envelope.to_bytes()) == record


def test_tampered_payload_is_rejected() -> None:
    envelope = PeerRecord(PEER, 1, ADDRS).seal(KEY)
    other = Envelope(
        envelope.public_key,
        envelope.payload_type,
        PeerRecord(PEER, 2, ADDRS).to_bytes(),
        envelope.signature,
    )
    with pytest.raises(InvalidPeerRecordError, match="does not verify"):
        PeerRecord.from_envelope(other)


def test_malformed_envelope_is_an_envelope_error() -> None:
    with pytest.raises(InvalidEnvelopeError):
        PeerRecord.open(b"\x0a\x00")
    with pytest.raises(InvalidEnvelopeError, match="exceeds"):
        PeerRecord.open(GO_ENVELOPE, max_size=100)


# ------------------------------------------------------------------ record codec


def test_from_bytes_skips_addresses_it_cannot_parse() -> None:
    data = raw_record(
        PEER.to_bytes(),
        5,
        [ADDRS[0].to_bytes(), b"\xff\xff\x03\x01", b"", b"\x04\x01\x02", ADDRS[1].to_bytes()],
    )
    record = PeerRecord.from_bytes(data)
    assert record == PeerRecord(PEER, 5, ADDRS)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "invalid peer id"),
        (raw_record(b"\x12\x20" + bytes(31), 1, []), "invalid peer id"),
        (raw_record(PEER.to_bytes(), 1, [ADDRS[0].to_bytes()] * 129), "129 addresses"),
        (b"\x0a\xff", "malformed"),
        (b"\x0a\x22" + PEER.to_bytes()[:-2], "malformed"),
        (bytes(70_000), "exceeds"),
    ],
)
def test_invalid_records(data: bytes, match: str) -> None:
    with pytest.raises(InvalidPeerRecordError, match=match):
        PeerRecord.from_bytes(data)


def test_new_seq_is_strictly_increasing_and_time_based() -> None:
    start = time.time_ns()
    seqs = [new_seq() for _ in range(2000)]
    assert all(b > a for a, b in itertools.pairwise(seqs))
    assert seqs[0] >= start
    assert seqs[-1] <= time.time_ns() + len(seqs)  # at most one tick ahead per call


# ------------------------------------------------------------------ fuzz


@given(st.binary(max_size=300))
def test_fuzz_from_bytes(data: bytes) -> None:
    try:
        record = PeerRecord.from_bytes(data)
    except InvalidPeerRecordError:
        return
    assert PeerRecord.from_bytes(record.to_bytes()) == record


@given(
    st.one_of(st.just(PEER.to_bytes()), st.binary(max_size=40)),
    st.integers(0, (1 << 64) - 1),
    st.lists(st.one_of(st.sampled_from([a.to_bytes() for a in ADDRS]), st.binary(max_size=30))),
)
def test_fuzz_structured_records(peer_id: bytes, seq: int, addrs: list[bytes]) -> None:
    try:
        record = PeerRecord.from_bytes(raw_record(peer_id, seq, addrs))
    except InvalidPeerRecordError:
        return
    assert record.seq == seq
    assert len(record.addrs) <= len(addrs)
    assert PeerRecord.from_bytes(record.to_bytes()) == record


ipv4_addrs = st.builds(
    lambda a, b, port, proto: Multiaddr(f"/ip4/{a}.{b}.0.1/{proto}/{port}"),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 65535),
    st.sampled_from(["tcp", "udp"]),
)


@given(st.integers(0, (1 << 64) - 1), st.lists(ipv4_addrs, max_size=MAX_PEER_RECORD_ADDRS))
def test_fuzz_round_trip(seq: int, addrs: list[Multiaddr]) -> None:
    record = PeerRecord(PEER, seq, tuple(addrs))
    assert PeerRecord.from_bytes(record.to_bytes()) == record


@given(st.binary(max_size=300))
def test_fuzz_open(data: bytes) -> None:
    try:
        PeerRecord.open(data)
    except InvalidEnvelopeError:
        pass

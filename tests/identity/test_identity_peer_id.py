"""Peer ids: derivation per the spec, the text forms (base58 and CIDs), and strict parsing."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flarelab.encoding import b32_encode, b36_encode, b58_encode
from flarelab.errors import LocalProtocolError, RemoteProtocolError
from flarelab.identity import (
    Ed25519PrivateKey,
    InvalidPeerIdError,
    KeyType,
    PeerId,
    generate_private_key,
    public_key_from_protobuf,
)

DATA = Path(__file__).parent / "data"
SPEC = json.loads((DATA / "peer_ids_key_vectors.json").read_text())["vectors"]

# The examples in libp2p/specs peer-ids/peer-ids.md ("String representation").
SPEC_CID = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"
SPEC_QM = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
SPEC_ED25519 = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
# The example in js-libp2p's peer-id docs (base36 CID of an Ed25519 peer id).
JS_BASE36 = "k51qzi5uqu5dkwkqm42v9j9kqcam2jiuvloi16g72i4i4amoo2m8u3ol3mqu6s"
JS_BASE36_B58 = "12D3KooWNZuG8phqhoNK9KWcUhwfzA3biDKNCUNVWEaJgigr6Acj"


def expected_multihash(key_protobuf: bytes) -> bytes:
    """Compute a peer id straight from the spec's words."""
    if len(key_protobuf) <= 42:
        return b"\x00" + bytes([len(key_protobuf)]) + key_protobuf
    return b"\x12\x20" + hashlib.sha256(key_protobuf).digest()


# ------------------------------------------------------------------ known ids


def test_spec_examples_agree() -> None:
    by_cid = PeerId.from_string(SPEC_CID)
    by_b58 = PeerId.from_string(SPEC_QM)
    assert by_cid == by_b58
    assert str(by_cid) == SPEC_QM
    assert by_b58.to_cid() == SPEC_CID
    assert by_b58.extract_public_key() is None  # sha2-256: the key is not inside

    ed = PeerId.from_string(SPEC_ED25519)
    assert ed.to_base58() == SPEC_ED25519
    key = ed.extract_public_key()
    assert key is not None
    assert key.key_type == KeyType.ED25519
    assert ed.matches(key)
    assert PeerId.from_public_key(key) == ed
    assert PeerId.from_string(ed.to_cid()) == ed


def test_base36_and_base58_cids() -> None:
    peer = PeerId.from_string(JS_BASE36)
    assert str(peer) == JS_BASE36_B58
    cid = bytes((1, 0x72)) + peer.to_bytes()
    assert PeerId.from_string("k" + b36_encode(cid)) == peer
    assert PeerId.from_string("K" + b36_encode(cid).upper()) == peer
    assert PeerId.from_string("z" + b58_encode(cid)) == peer
    assert PeerId.from_string("B" + b32_encode(cid).upper()) == peer
    assert peer.to_cid().startswith("bafzaa")


@pytest.mark.parametrize(
    ("name", "prefix"),
    [("ed25519", "12D3KooW"), ("secp256k1", "16Uiu2HA"), ("ecdsa", "Qm"), ("rsa", "Qm")],
)
def test_peer_ids_of_the_spec_vectors(name: str, prefix: str) -> None:
    encoded = bytes.fromhex(SPEC[f"{name}_public_key"])
    key = public_key_from_protobuf(encoded)
    peer = PeerId.from_public_key(key)
    assert peer.to_bytes() == expected_multihash(encoded)
    assert str(peer).startswith(prefix)
    assert peer.matches(key)
    inlined = len(encoded) <= 42
    assert (peer.extract_public_key() == key) if inlined else peer.extract_public_key() is None
    again = PeerId.from_bytes(peer.to_bytes())
    assert again == peer
    assert again.extract_public_key() == (key if inlined else None)
    assert PeerId.from_string(str(peer)) == peer
    assert PeerId.from_string(peer.to_cid()) == peer


def test_matches_only_its_own_key() -> None:
    a, b = Ed25519PrivateKey.generate(), generate_private_key(KeyType.ECDSA)
    pa, pb = PeerId.from_public_key(a.public_key), PeerId.from_public_key(b.public_key)
    assert pa.matches(a.public_key)
    assert pb.matches(b.public_key)
    assert not pa.matches(b.public_key)
    assert not pb.matches(a.public_key)


# ------------------------------------------------------------------ value semantics


def test_text_forms() -> None:
    peer = PeerId.from_string(SPEC_ED25519)
    assert repr(peer) == f"PeerId('{SPEC_ED25519}')"
    assert str(peer) == SPEC_ED25519
    assert peer.short() == "12D3KooW…AJU5SA"
    assert bytes(peer) == peer.to_bytes()


def test_immutable_hashable_ordered_picklable() -> None:
    ids = [PeerId.from_public_key(Ed25519PrivateKey.generate().public_key) for _ in range(8)]
    ids.append(PeerId.from_string(SPEC_QM))
    assert sorted(ids) == sorted(ids, key=lambda p: p.to_bytes())
    assert min(ids) < max(ids)
    assert max(ids) >= min(ids)
    assert len({*ids, *(PeerId.from_bytes(p.to_bytes()) for p in ids)}) == len(ids)
    peer = ids[0]
    with pytest.raises(AttributeError):
        peer._bytes = b""  # type: ignore[misc]
    with pytest.raises(AttributeError):
        peer.anything = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        del peer._bytes
    assert pickle.loads(pickle.dumps(peer)) == peer
    assert copy.deepcopy(peer) == peer
    assert peer != peer.to_bytes()
    assert peer != str(peer)
    with pytest.raises(TypeError):
        _ = peer < "12D3"  # type: ignore[operator]


# ------------------------------------------------------------------ invalid input

ED_KEY = bytes.fromhex(SPEC["ed25519_public_key"])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"\x13\x20" + bytes(32), "multihash 0x13"),  # sha2-512 code
        (b"\x12\x20" + bytes(31), "exactly 32"),
        (b"\x12\x1f" + bytes(32), "exactly 32"),
        (b"\x12\x20" + bytes(33), "exactly 32"),
        (b"\x00", "malformed"),
        (b"\x00\x80\x00", "malformed"),  # non-minimal varint
        (b"\x00\x25" + ED_KEY, "declares 37 bytes but holds 36"),
        (b"\x00\x23" + ED_KEY, "declares 35 bytes"),
        (b"\x00\x24" + ED_KEY[:-1] + b"\x00", "not a point|invalid key"),
        (b"\x00\x2b" + bytes(43), "too long|at most 42"),
        (b"\x00\x24" + b"\x08\x07" + ED_KEY[2:], "invalid key"),
        (b"\x00\x00", "invalid key"),
        (b"\x00\x24" + bytes(36) + b"\x00" * 30, "too long"),
    ],
)
def test_invalid_binary_peer_ids(data: bytes, match: str) -> None:
    with pytest.raises(InvalidPeerIdError, match=match) as info:
        PeerId.from_bytes(data)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, RemoteProtocolError)


def _cid(version: int, codec: int, multihash: bytes) -> str:
    return "b" + b32_encode(bytes((version, codec)) + multihash)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("Qm" + "0" * 44, "base58"),  # '0' is not in the alphabet
        ("12D3KooW", "malformed|multihash|declares"),
        ("1" * 129, "longer than 128"),
        ("not-a-peer-id", "neither base58btc nor a CID"),
        ("x" + SPEC_CID[1:], "neither"),
        (_cid(1, 0x70, PeerId.from_string(SPEC_QM).to_bytes()), "not libp2p-key"),  # dag-pb
        (_cid(2, 0x72, PeerId.from_string(SPEC_QM).to_bytes()), "version 2"),
        ("b", "malformed CID"),
        (_cid(1, 0x72, PeerId.from_string(SPEC_QM).to_bytes()[:-1]), "exactly 32"),
        (SPEC_CID[:-1], "neither"),  # not a whole number of base32 bytes
        (" " + SPEC_QM, "neither"),
        (SPEC_QM + " ", "base58"),
    ],
)
def test_invalid_text_peer_ids(text: str, match: str) -> None:
    with pytest.raises(InvalidPeerIdError, match=match):
        PeerId.from_string(text)


def test_non_text_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        PeerId.from_string(SPEC_QM.encode())  # type: ignore[arg-type]


# ------------------------------------------------------------------ fuzz


@given(st.binary(max_size=60))
def test_fuzz_from_bytes(data: bytes) -> None:
    try:
        peer = PeerId.from_bytes(data)
    except InvalidPeerIdError:
        return
    assert peer.to_bytes() == data
    assert PeerId.from_string(str(peer)) == peer


@given(st.binary(max_size=50))
def test_fuzz_identity_payloads(payload: bytes) -> None:
    try:
        peer = PeerId.from_bytes(b"\x00" + bytes([len(payload)]) + payload)
    except InvalidPeerIdError:
        return
    key = peer.extract_public_key()
    assert key is not None
    assert key.to_protobuf() == payload
    assert PeerId.from_public_key(key) == peer


@given(st.text(max_size=140))
def test_fuzz_from_string(text: str) -> None:
    try:
        peer = PeerId.from_string(text)
    except InvalidPeerIdError:
        return
    assert PeerId.from_string(peer.to_cid()) == peer


@given(
    st.sampled_from("1Qmbkz"),
    st.text(alphabet="123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz", max_size=80),
)
def test_fuzz_from_string_plausible(prefix: str, body: str) -> None:
    try:
        PeerId.from_string(prefix + body)
    except InvalidPeerIdError:
        pass


@given(st.binary(min_size=32, max_size=32))
def test_fuzz_text_round_trips(digest: bytes) -> None:
    peer = PeerId.from_bytes(b"\x12\x20" + digest)
    cid = bytes((1, 0x72)) + peer.to_bytes()
    for text in (str(peer), peer.to_cid(), "k" + b36_encode(cid), "z" + b58_encode(cid)):
        assert PeerId.from_string(text) == peer

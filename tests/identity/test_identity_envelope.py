"""Signed envelopes (RFC 0002): sealing, opening, domain separation, tampering, go interop.

``data/go_peer_record.json`` is a peer record envelope made by go-libp2p (from js-libp2p's
test "de/serializes the same as a go record") with the key that signed it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flarelab.errors import LocalProtocolError, RemoteProtocolError
from flarelab.identity import (
    Ed25519PrivateKey,
    InvalidEnvelopeError,
    KeyType,
    PeerId,
    PrivateKey,
    generate_private_key,
    private_key_from_protobuf,
)
from flarelab.identity.envelope import MAX_ENVELOPE_SIZE, Envelope, decode_unverified
from flarelab.wire import encode_uvarint

GO = json.loads((Path(__file__).parent / "data" / "go_peer_record.json").read_text())
GO_ENVELOPE = bytes.fromhex(GO["envelope"])
GO_KEY = private_key_from_protobuf(bytes.fromhex(GO["private_key"]))
DOMAIN = "flarelab-test"


@pytest.fixture(scope="module")
def keys() -> dict[KeyType, PrivateKey]:
    """One private key of each type."""
    return {kt: generate_private_key(kt) for kt in KeyType}


def test_opens_go_envelope_and_reencodes_it_exactly() -> None:
    env = Envelope.open(GO_ENVELOPE, "libp2p-peer-record")
    assert env.public_key == GO_KEY.public_key
    assert env.payload_type == b"\x03\x01"
    assert env.peer_id == PeerId.from_public_key(GO_KEY.public_key)
    assert env.to_bytes() == GO_ENVELOPE
    # Ed25519 is deterministic, so sealing the same payload again gives go's very bytes.
    again = Envelope.seal(GO_KEY, "libp2p-peer-record", env.payload_type, env.payload)
    assert again == env
    assert again.to_bytes() == GO_ENVELOPE


def test_go_envelope_is_bound_to_its_domain() -> None:
    # RFC 0003 names "libp2p-routing-state"; go and js sign peer records as "libp2p-peer-record".
    with pytest.raises(InvalidEnvelopeError, match="does not verify"):
        Envelope.open(GO_ENVELOPE, "libp2p-routing-state")


@pytest.mark.parametrize("key_type", list(KeyType))
def test_seal_open_round_trip(keys: dict[KeyType, PrivateKey], key_type: KeyType) -> None:
    key = keys[key_type]
    env = Envelope.seal(key, DOMAIN, b"/flarelab/test", b"payload \x00\xff")
    data = env.to_bytes()
    opened = Envelope.open(data, DOMAIN)
    assert opened == env
    assert opened.public_key == key.public_key
    assert opened.payload == b"payload \x00\xff"
    assert opened.payload_type == b"/flarelab/test"
    assert opened.peer_id.matches(key.public_key)
    assert opened.verify(DOMAIN)
    assert not opened.verify(DOMAIN + "x")


def test_signature_covers_the_rfc_buffer() -> None:
    key = Ed25519PrivateKey.from_seed(bytes(32))
    env = Envelope.seal(key, "dom", b"\x03\x01", b"hi")
    buffer = b"\x03dom" + b"\x02\x03\x01" + b"\x02hi"
    assert env.signature == key.sign(buffer)
    big = b"x" * 300  # lengths are uvarints, not single bytes
    env = Envelope.seal(key, "dom", b"", big)
    assert env.signature == key.sign(b"\x03dom\x00" + encode_uvarint(300) + big)


def test_wrong_domain_fails() -> None:
    env = Envelope.seal(Ed25519PrivateKey.generate(), "libp2p-peer-record", b"\x03\x01", b"x")
    with pytest.raises(InvalidEnvelopeError, match="does not verify") as info:
        Envelope.open(env.to_bytes(), "libp2p-relay-rsvp")
    assert isinstance(info.value, RemoteProtocolError)


def _replace(env: Envelope, **changes: object) -> Envelope:
    fields = {
        "public_key": env.public_key,
        "payload_type": env.payload_type,
        "payload": env.payload,
        "signature": env.signature,
    }
    return Envelope(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"payload": b"tampered"},
        {"payload_type": b"\x03\x02"},
        {"signature": b"\x00" * 64},
        {"signature": b""},
        {"public_key": Ed25519PrivateKey.from_seed(b"\x01" * 32).public_key},
    ],
)
def test_tampered_envelopes_fail(change: dict[str, object]) -> None:
    env = Envelope.seal(Ed25519PrivateKey.generate(), DOMAIN, b"\x03\x01", b"payload")
    bad = _replace(env, **change)
    assert not bad.verify(DOMAIN)
    with pytest.raises(InvalidEnvelopeError, match="does not verify"):
        Envelope.open(bad.to_bytes(), DOMAIN)


def test_tampered_go_envelope_bytes_fail() -> None:
    for pos in range(0, len(GO_ENVELOPE), 7):
        data = bytearray(GO_ENVELOPE)
        data[pos] ^= 0x04
        with pytest.raises(InvalidEnvelopeError):
            Envelope.open(bytes(data), "libp2p-peer-record")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "no public key"),
        (b"\x12\x02\x03\x01", "no public key"),
        (b"\x0a\x02\x08\x01", "invalid key"),  # the key has no Data
        (b"\x0a\x04\x08\x09\x12\x00", "invalid key"),  # unknown key type
        (b"\x0a\x24\x08\x01\x12\x20" + (2).to_bytes(32, "little"), "invalid key"),  # off-curve
        (b"\x0a\x05\x08\x01", "malformed"),  # truncated
        (b"\xff\xff\xff", "malformed"),
        (b"\x0b" * 200 + b"\x0c" * 200, "malformed"),  # deeply nested groups
    ],
)
def test_malformed_envelopes(data: bytes, match: str) -> None:
    with pytest.raises(InvalidEnvelopeError, match=match):
        Envelope.open(data, DOMAIN)


def test_size_limit() -> None:
    key = Ed25519PrivateKey.generate()
    env = Envelope.seal(key, DOMAIN, b"", b"x" * MAX_ENVELOPE_SIZE)
    data = env.to_bytes()
    with pytest.raises(InvalidEnvelopeError, match="exceeds"):
        Envelope.open(data, DOMAIN)
    assert Envelope.open(data, DOMAIN, max_size=len(data)) == env
    with pytest.raises(InvalidEnvelopeError, match="exceeds"):
        Envelope.open(data, DOMAIN, max_size=len(data) - 1)


def test_local_misuse() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(LocalProtocolError):
        Envelope.seal(key, "", b"", b"")
    with pytest.raises(LocalProtocolError):
        Envelope.seal(key, "\udc80", b"", b"")
    with pytest.raises(LocalProtocolError):
        Envelope.open(b"", "")
    with pytest.raises(LocalProtocolError):
        Envelope(key.public_key, "text", b"", b"")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Envelope(key, b"", b"", b"")  # type: ignore[arg-type]


def test_unicode_domain_and_repr() -> None:
    key = Ed25519PrivateKey.generate()
    env = Envelope.seal(key, "flarelab-π", b"\x03\x01", b"x")
    assert Envelope.open(env.to_bytes(), "flarelab-π") == env
    assert repr(env) == f"Envelope(peer={env.peer_id.short()}, payload_type=0301, payload=1 bytes)"


def test_decode_unverified_does_not_check_the_signature() -> None:
    env = Envelope.seal(Ed25519PrivateKey.generate(), DOMAIN, b"t", b"p")
    bad = _replace(env, signature=b"\x01" * 64)
    assert decode_unverified(bad.to_bytes()) == bad


# ------------------------------------------------------------------ fuzz

FUZZ_ENVELOPE = Envelope.seal(GO_KEY, DOMAIN, b"\x03\x01", b"payload")
GO_PAYLOAD = decode_unverified(GO_ENVELOPE).payload


@given(st.binary(max_size=300))
def test_fuzz_open_random(data: bytes) -> None:
    try:
        env = Envelope.open(data, DOMAIN)
    except InvalidEnvelopeError:
        return
    assert env.verify(DOMAIN)


@given(
    st.sampled_from([GO_ENVELOPE, FUZZ_ENVELOPE.to_bytes()]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=3),
    st.integers(0, 8),
    st.binary(max_size=8),
)
def test_fuzz_open_mutated(
    base: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(base)
    for pos, mask in flips:
        data[pos % len(data)] ^= mask
    data = data[: len(data) - cut] + tail
    for domain in (DOMAIN, "libp2p-peer-record"):
        try:
            env = Envelope.open(bytes(data), domain)
        except InvalidEnvelopeError:
            continue
        # Only changes the signature does not cover (the key's framing, unknown fields) or
        # none at all may survive.
        assert env.verify(domain)
        assert env.payload in (FUZZ_ENVELOPE.payload, GO_PAYLOAD)


@given(st.binary(max_size=200), st.binary(max_size=20), st.text(min_size=1, max_size=20))
def test_fuzz_round_trip(payload: bytes, payload_type: bytes, domain: str) -> None:
    try:
        env = Envelope.seal(GO_KEY, domain, payload_type, payload)
    except LocalProtocolError:  # a domain with lone surrogates is not UTF-8
        return
    assert Envelope.open(env.to_bytes(), domain) == env

"""The libp2p Noise handshake payload: codec, signatures, limits, muxer choice; fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference_pb import pb2

from flarelab.errors import HandshakeError, LocalProtocolError
from flarelab.identity import (
    EcdsaPrivateKey,
    Ed25519PrivateKey,
    PrivateKey,
    RsaPrivateKey,
    Secp256k1PrivateKey,
)
from flarelab.security.noise.payload import (
    MAX_MUXERS,
    STATIC_KEY_SIGNATURE_PREFIX,
    HandshakePayload,
    decode_payload,
    encode_payload,
    select_muxer,
    sign_payload,
    validate_muxers,
    verify_payload,
)
from flarelab.wire import encode_uvarint

noise_pb2 = pb2("noise")

STATIC = bytes(range(32))
KEY = Ed25519PrivateKey.from_seed(b"\x07" * 32)


@pytest.fixture(
    scope="module",
    params=[Ed25519PrivateKey, Secp256k1PrivateKey, EcdsaPrivateKey, RsaPrivateKey],
    ids=["ed25519", "secp256k1", "ecdsa", "rsa"],
)
def identity_key(request: pytest.FixtureRequest) -> PrivateKey:
    return request.param.generate()


def test_sign_and_verify_with_every_key_type(identity_key: PrivateKey) -> None:
    payload = sign_payload(identity_key, STATIC, ["/yamux/1.0.0"])
    decoded = decode_payload(encode_payload(payload))
    assert decoded == payload
    assert verify_payload(decoded, STATIC) == identity_key.public_key
    assert identity_key.public_key.verify(
        STATIC_KEY_SIGNATURE_PREFIX + STATIC, payload.identity_sig
    )


def test_signature_over_another_static_key_is_refused(identity_key: PrivateKey) -> None:
    payload = sign_payload(identity_key, STATIC)
    with pytest.raises(HandshakeError, match="does not verify") as info:
        verify_payload(payload, bytes(32))
    assert info.value.protocol == "/noise"


def test_key_of_one_peer_with_signature_of_another_is_refused() -> None:
    other = Ed25519PrivateKey.from_seed(b"\x08" * 32)
    forged = HandshakePayload(
        identity_key=KEY.public_key.to_protobuf(),
        identity_sig=other.sign(STATIC_KEY_SIGNATURE_PREFIX + STATIC),
    )
    with pytest.raises(HandshakeError, match="does not verify"):
        verify_payload(forged, STATIC)


def test_invalid_identity_key_is_a_handshake_error() -> None:
    payload = HandshakePayload(identity_key=b"\x08\x01\x12\x03abc", identity_sig=b"sig")
    with pytest.raises(HandshakeError, match="invalid identity key"):
        verify_payload(payload, STATIC)


def test_wire_format_matches_the_spec_field_numbers() -> None:
    payload = sign_payload(KEY, STATIC, ["/yamux/1.0.0", "/mplex/6.7.0"])
    msg = noise_pb2.NoiseHandshakePayload.FromString(encode_payload(payload))
    assert msg.identity_key == KEY.public_key.to_protobuf()
    assert msg.identity_sig == payload.identity_sig
    assert list(msg.extensions.stream_muxers) == ["/yamux/1.0.0", "/mplex/6.7.0"]
    raw = encode_payload(payload)
    assert raw[0] == 0x0A  # field 1, length-delimited
    assert b"\x22" in raw  # field 4 (extensions), length-delimited


def test_no_extensions_when_there_is_nothing_to_say() -> None:
    msg = noise_pb2.NoiseHandshakePayload.FromString(encode_payload(sign_payload(KEY, STATIC)))
    assert not msg.HasField("extensions")


def test_unknown_fields_are_ignored() -> None:
    payload = sign_payload(KEY, STATIC)
    # field 3 (the old early-data bytes) and field 9 from some future revision
    extra = encode_payload(payload) + b"\x1a\x03abc" + b"\x48\x01"
    assert decode_payload(extra) == payload


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "no identity key"),
        (b"\x12\x03sig", "no identity key"),
        (b"\x0a\x03key", "no identity signature"),
        (b"\x0a\x05key", "malformed"),
        (b"\xff\xff\xff", "malformed"),
        (b"\x0a\x01k\x12\x01s\x22\x04\x12\x02\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_payloads(raw: bytes, reason: str) -> None:
    with pytest.raises(HandshakeError, match=reason):
        decode_payload(raw)


def test_limits_on_what_the_peer_lists() -> None:
    base = sign_payload(KEY, STATIC)
    msg = noise_pb2.NoiseHandshakePayload(
        identity_key=base.identity_key, identity_sig=base.identity_sig
    )
    msg.extensions.stream_muxers.extend(f"/m/{i}" for i in range(MAX_MUXERS + 1))
    with pytest.raises(HandshakeError, match="muxers"):
        decode_payload(msg.SerializeToString())
    msg.extensions.ClearField("stream_muxers")
    msg.extensions.stream_muxers.append("/x" * 1000)
    with pytest.raises(HandshakeError, match="invalid muxer id"):
        decode_payload(msg.SerializeToString())
    msg.extensions.ClearField("stream_muxers")
    msg.extensions.stream_muxers.append("")
    with pytest.raises(HandshakeError, match="invalid muxer id"):
        decode_payload(msg.SerializeToString())
    msg.extensions.ClearField("stream_muxers")
    msg.extensions.webtransport_certhashes.extend([b"h"] * 101)
    with pytest.raises(HandshakeError, match="certificate hashes"):
        decode_payload(msg.SerializeToString())


def test_our_own_muxer_list_is_checked() -> None:
    assert validate_muxers(["/yamux/1.0.0"]) == ("/yamux/1.0.0",)
    with pytest.raises(LocalProtocolError):
        validate_muxers("/yamux/1.0.0")
    with pytest.raises(LocalProtocolError):
        validate_muxers([""])
    with pytest.raises(LocalProtocolError):
        validate_muxers([f"/m/{i}" for i in range(MAX_MUXERS + 1)])


# The cases of go-libp2p's TestHandshakeWithTransportEarlyData (initiator's order wins).
@pytest.mark.parametrize(
    ("initiator", "responder", "expected"),
    [
        ((), (), None),
        (("muxer1",), ("muxer1",), "muxer1"),
        (("muxer1",), (), None),
        ((), ("muxer2",), None),
        (("muxer2",), ("muxer1",), None),
        (("muxer1", "muxer2"), ("muxer2", "muxer1"), "muxer1"),
        (("muxer3", "muxer2", "muxer1"), ("muxer2", "muxer1"), "muxer2"),
        (("muxer1", "muxer2"), ("muxer3",), None),
        (("/yamux/1.0.0", "/mplex/6.7.0"), ("/mplex/6.7.0", "/yamux/1.0.0"), "/yamux/1.0.0"),
    ],
)
def test_select_muxer(
    initiator: tuple[str, ...], responder: tuple[str, ...], expected: str | None
) -> None:
    assert select_muxer(initiator, responder) == expected


_muxer = st.text(min_size=1, max_size=40)


@given(
    key=st.binary(min_size=1, max_size=300),
    sig=st.binary(min_size=1, max_size=300),
    muxers=st.lists(_muxer, max_size=8).map(tuple),
    certhashes=st.lists(st.binary(min_size=1, max_size=64), max_size=4).map(tuple),
)
def test_codec_round_trips(
    key: bytes, sig: bytes, muxers: tuple[str, ...], certhashes: tuple[bytes, ...]
) -> None:
    payload = HandshakePayload(key, sig, muxers, certhashes)
    assert decode_payload(encode_payload(payload)) == payload


@given(st.binary(max_size=400))
def test_decoder_raises_only_handshake_errors(raw: bytes) -> None:
    try:
        payload = decode_payload(raw)
    except HandshakeError:
        return
    assert payload.identity_key
    assert payload.identity_sig
    assert len(payload.stream_muxers) <= MAX_MUXERS
    assert all(isinstance(m, str) and m for m in payload.stream_muxers)


@given(st.binary(max_size=300))
def test_verify_raises_only_handshake_errors(identity_key: bytes) -> None:
    payload = HandshakePayload(identity_key=identity_key or b"\x00", identity_sig=b"\x01" * 64)
    with pytest.raises(HandshakeError):
        verify_payload(payload, STATIC)


def _field(number: int, data: bytes) -> bytes:
    """Encode one length-delimited protobuf field (enough for these messages)."""
    return bytes([(number << 3) | 2]) + encode_uvarint(len(data)) + data


@given(
    key=st.binary(max_size=40),
    sig=st.binary(max_size=40),
    muxers=st.lists(st.binary(max_size=20), max_size=5),
    certhashes=st.lists(st.binary(max_size=20), max_size=3),
)
def test_structured_fuzz_of_every_field(
    key: bytes, sig: bytes, muxers: list[bytes], certhashes: list[bytes]
) -> None:
    extensions = b"".join(_field(1, c) for c in certhashes) + b"".join(_field(2, m) for m in muxers)
    raw = _field(1, key) + _field(2, sig) + _field(4, extensions)
    try:
        payload = decode_payload(raw)
    except HandshakeError:
        return
    assert payload.identity_key == key
    assert payload.stream_muxers == tuple(m.decode() for m in muxers)
    assert payload.webtransport_certhashes == tuple(certhashes)
